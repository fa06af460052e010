import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { isNotFound, isTransient, listAll, type Backend } from '../src/backend/backend.js';
import { PhoenixError } from '../src/errors.js';

export interface SuiteTarget {
  backend: Backend;
  /** Size above which the backend uploads in parts (to test one object above it). */
  multipartThreshold?: number;
  cleanup?: () => Promise<void>;
}

const code = (err: unknown): string | undefined => (err instanceof PhoenixError ? err.code : undefined);

/** The conformance suite every backend runs in one line (like kopia's VerifyStorage). */
export function backendConformance(name: string, open: () => Promise<SuiteTarget | string>): void {
  describe(`backend conformance: ${name}`, () => {
    let t: SuiteTarget | undefined;
    let skip: string | undefined;
    before(async () => {
      const r = await open();
      if (typeof r === 'string') skip = r;
      else t = r;
    });
    after(async () => {
      await t?.backend.close();
      await t?.cleanup?.();
    });
    const test = (title: string, fn: (b: Backend, target: SuiteTarget) => Promise<void>): void => {
      it(title, async (ctx) => {
        if (skip !== undefined || t === undefined) {
          ctx.skip(skip);
          return;
        }
        await fn(t.backend, t);
      });
    };

    test('a missing object is not found, for get, ranged get and stat; delete of a missing key succeeds', async (b) => {
      await assert.rejects(b.get('nope/x'), (e) => isNotFound(e));
      await assert.rejects(b.get('nope/x', { offset: 0, length: 1 }), (e) => isNotFound(e));
      await assert.rejects(b.stat('nope/x'), (e) => isNotFound(e));
      await b.delete('nope/x');
      await b.delete('nope/x');
    });

    test('round-trips sizes 0, 1, 1000, 10 MB and one above the multipart threshold', async (b, target) => {
      const sizes = [0, 1, 1000, 10_000_000];
      if (target.multipartThreshold !== undefined) sizes.push(target.multipartThreshold * 2 + 12345);
      for (const size of sizes) {
        const data = randomBytes(size);
        await b.put(`sizes/${size}`, data);
        assert.equal((await b.stat(`sizes/${size}`)).size, size);
        assert.ok((await b.get(`sizes/${size}`)).equals(data), `content of ${size} bytes`);
      }
    });

    test('a body in parts is stored back to back (empty parts, and more parts than one writev takes)', async (b) => {
      const parts = [
        randomBytes(10),
        Buffer.alloc(0),
        randomBytes(70_000),
        ...Array.from({ length: 1500 }, (_, i) => randomBytes(1 + (i % 7))),
      ];
      await b.put('parts/obj', parts);
      assert.ok((await b.get('parts/obj')).equals(Buffer.concat(parts)));
    });

    test('ranged reads at the edges; a read past the end fails permanently', async (b) => {
      const data = randomBytes(1000);
      await b.put('range/obj', data);
      const cases: Array<[number, number]> = [
        [0, 1],
        [999, 1],
        [0, 1000],
        [500, 500],
        [1000, 0],
        [0, 0],
        [123, 456],
      ];
      for (const [offset, length] of cases) {
        assert.ok((await b.get('range/obj', { offset, length })).equals(data.subarray(offset, offset + length)), `${offset}+${length}`);
      }
      for (const [offset, length] of [
        [999, 2],
        [1000, 1],
        [5000, 10],
        [0, 1001],
      ] as Array<[number, number]>) {
        await assert.rejects(
          b.get('range/obj', { offset, length }),
          (e) => code(e) === 'PHX_PAST_END' && !isTransient(e),
          `${offset}+${length}`,
        );
      }
    });

    test('ranged reads into a buffer of the caller: the bytes asked for, in place or not, at any alignment', async (b) => {
      const data = randomBytes(3 * 2 ** 20 + 123);
      await b.put('into/obj', data);
      const MiB = 2 ** 20;
      const cases: Array<[number, number]> = [
        [0, MiB],
        [1, MiB + 7],
        [4095, MiB],
        [4097, 2 * MiB - 3],
        [data.length - MiB - 5, MiB + 5], // to the end, which is not on a block boundary
        [data.length - 100, 100],
        [0, data.length],
      ];
      for (const [offset, length] of cases) {
        for (const room of [0, 16 * 1024]) {
          for (const memory of [new ArrayBuffer(length + room + 7), new SharedArrayBuffer(length + room + 7)]) {
            const into = Buffer.from(memory, 7); // not aligned itself
            const got = await b.get('into/obj', { offset, length, into });
            assert.ok(got.equals(data.subarray(offset, offset + length)), `${offset}+${length}, ${room} bytes of room`);
          }
        }
      }
      await assert.rejects(
        b.get('into/obj', { offset: data.length - MiB, length: MiB + 1, into: Buffer.alloc(2 * MiB) }),
        (e) => code(e) === 'PHX_PAST_END',
      );
    });

    test('an overwrite replaces the object; create-only refuses an existing one where claimed', async (b) => {
      await b.put('over/x', Buffer.from('one'));
      await b.put('over/x', Buffer.from('two!'));
      assert.equal((await b.get('over/x')).toString(), 'two!');
      if (b.capabilities.createOnly) {
        await assert.rejects(b.put('over/x', Buffer.from('three'), { createOnly: true }), (e) => code(e) === 'PHX_EXISTS');
        assert.equal((await b.get('over/x')).toString(), 'two!');
        await b.put('over/new', Buffer.from('fresh'), { createOnly: true });
        assert.equal((await b.get('over/new')).toString(), 'fresh');
      }
      await b.delete('over/x');
      await assert.rejects(b.get('over/x'), (e) => isNotFound(e));
    });

    test('list returns exactly the expected set, with and without prefix, across more than 1,000 keys', async (b) => {
      const keys: string[] = [];
      for (let i = 0; i < 1100; i++) keys.push(`many/${String(i).padStart(4, '0')}`);
      for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => b.put(k, Buffer.from(k))));
      await b.put('manyother/x', Buffer.from('x'));
      const listed = await listAll(b, 'many/');
      assert.deepEqual(listed.map((o) => o.key).sort(), keys);
      assert.ok(listed.every((o) => o.size === 9));
      // Modification times on the store's clock: retention judges ages by them.
      const near = (t: number | undefined): boolean => t !== undefined && Math.abs(t - Date.now()) < 10 * 60_000;
      assert.ok(
        listed.every((o) => near(o.mtimeMs)),
        `every listed object has a modification time near now (${listed[0]?.mtimeMs})`,
      );
      assert.ok(near((await b.stat(keys[0] as string)).mtimeMs), 'stat gives the modification time');
      const sub = await listAll(b, 'many/10');
      assert.deepEqual(
        sub.map((o) => o.key).sort(),
        keys.filter((k) => k.startsWith('many/10')),
      );
      const everything = (await listAll(b, '')).map((o) => o.key);
      for (const k of [...keys, 'manyother/x']) assert.ok(everything.includes(k), `unprefixed list holds ${k}`);
      assert.deepEqual(await listAll(b, 'nothing-here/'), []);
    });

    test('parallel puts and gets', async (b) => {
      const blobs = Array.from({ length: 32 }, (_, i) => [`par/${i}`, randomBytes(1000 + i * 3000)] as const);
      await Promise.all(blobs.map(([k, d]) => b.put(k, d)));
      const got = await Promise.all(blobs.map(([k]) => b.get(k)));
      got.forEach((g, i) => assert.ok(g.equals(blobs[i]![1])));
    });

    test('keys with spaces, unicode, % and +', async (b) => {
      const keys = ['odd/with space', 'odd/ünïcödé-日本', 'odd/100%', 'odd/a+b', 'odd/%2F'];
      for (const k of keys) await b.put(k, Buffer.from(k));
      for (const k of keys) assert.equal((await b.get(k)).toString(), k);
      assert.deepEqual((await listAll(b, 'odd/')).map((o) => o.key).sort(), [...keys].sort());
    });
  });
}
