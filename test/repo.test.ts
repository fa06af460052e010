import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  closeSync,
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { backup, planBackup, startScan } from '../src/archiver/backup.js';
import { SealPool, type JobEnd, type SeenStat } from '../src/archiver/seal-pool.js';
import type { Entry } from '../src/model/entry.js';
import { lstatEntry } from '../src/scanner/stat.js';
import { listAll, type Backend } from '../src/backend/backend.js';
import { LocalBackend } from '../src/backend/local.js';
import { FaultyBackend } from '../src/backend/wrappers.js';
import { MemoryBackend } from '../src/backend/memory.js';
import { S3Backend } from '../src/backend/s3.js';
import { PhoenixError } from '../src/errors.js';
import { DEFAULT_CHUNKER, nextCut, referenceCut } from '../src/repo/chunker.js';
import { checkRepository } from '../src/repo/check.js';
import { Keys } from '../src/repo/crypto.js';
import { openBlob } from '../src/repo/pack.js';
import {
  changeJson,
  encodeChange,
  encodeRecord,
  recordJson,
  recordsInOrder,
  type FileRecord,
  type JournalChange,
} from '../src/repo/format.js';
import { Repository } from '../src/repo/repository.js';
import { restore } from '../src/restore/restore.js';
import { StateDb } from '../src/state/db.js';
import { snapshot, tempDir } from './helpers.js';
import { startS3rver, startSwift } from './servers.js';

const PASSWORD = 'correct horse battery staple';
const init = (b: Backend): Promise<Repository> => Repository.init(b, { password: PASSWORD, kdfN: 1024 });
const reopen = (b: Backend, pw = PASSWORD): Promise<Repository> => Repository.open(b, async () => pw);
const code = (c: string) => (e: unknown) => e instanceof PhoenixError && e.code === c;

/** The chunks a seal worker cuts `data` into (written to a file and read back there), opened again. */
async function chunksOf(data: Buffer, keys = Keys.none(), known: string[] = []): Promise<Array<{ id: string; data: Buffer | undefined }>> {
  const dir = tempDir('phx-chunks-');
  const pool = new SealPool(keys);
  try {
    writeFileSync(join(dir.path, 'f'), data);
    const out: Array<{ id: string; data: Buffer | undefined }> = [];
    const end = await pool.readFile(
      Buffer.from(join(dir.path, 'f')),
      data.length,
      known.map((id) => ({ id })),
      {
        chunk: (c) => {
          const opened = c.sealed && openBlob(keys, c.sealed, 'blob');
          assert.equal(opened?.length ?? c.bytes, c.bytes);
          out.push({ id: c.id, data: opened });
        },
        restart: () => assert.fail('the file did not change'),
      },
    );
    assert.equal(end.status, 'ok');
    assert.equal(end.status === 'ok' && end.size, data.length);
    return out;
  } finally {
    await pool.close();
    dir.cleanup();
  }
}

describe('a seal pool that may grow', () => {
  /** Reads a FIFO on `pool`: the worker's open waits in the kernel `ms` (as a read of a cold disk does) for a writer. */
  async function slowRead(pool: SealPool, dir: string, ms: number): Promise<JobEnd> {
    const fifo = join(dir, 'fifo');
    rmSync(fifo, { force: true });
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const end = pool.readFile(Buffer.from(fifo), 0, [], { chunk: () => {}, restart: () => {} });
    await sleep(ms);
    closeSync(openSync(fifo, 'w')); // the worker waits in open(): this returns at once
    return end;
  }

  it('starts another worker when its workers spent their time asleep in the kernel, not on a CPU', async () => {
    const dir = tempDir('phx-grow-');
    const pool = new SealPool(Keys.none(), 1, 2);
    const fixed = new SealPool(Keys.none(), 1);
    try {
      const file = join(dir.path, 'f');
      writeFileSync(file, 'x');
      const handlers = { chunk: () => {}, restart: () => {} };
      for (const p of [pool, fixed]) {
        const slow = await slowRead(p, dir.path, 600);
        assert.ok(slow.status === 'error' && slow.code === 'ESPIPE', 'a pipe cannot be read at an offset');
        assert.equal(p.workers, 1);
        // The pool looks at its workers (every 250 ms, as it is given files) at this file: 600 ms after the last look.
        assert.equal((await p.readFile(Buffer.from(file), 1, [], handlers)).status, 'ok');
      }
      assert.equal(pool.workers, 2, 'a second worker, for a read that waited 600 ms');
      assert.equal(fixed.workers, 1, 'no more than it may have');
    } finally {
      await pool.close();
      await fixed.close();
      dir.cleanup();
    }
  });
});

describe('a seal worker checks its read against the stat taken before it', () => {
  /** Reads `path` with `seen` as the caller's stat: the bytes of the last read, restarts, and the end. */
  async function read(path: string, seen: SeenStat): Promise<{ data: Buffer; restarts: number; end: JobEnd }> {
    const keys = Keys.none();
    const pool = new SealPool(keys, 1);
    try {
      let parts: Buffer[] = [];
      let restarts = 0;
      const end = await pool.readFile(Buffer.from(path), seen, [], {
        chunk: (c) => void parts.push(openBlob(keys, c.sealed as Buffer, 'blob')),
        restart: () => {
          restarts++;
          parts = [];
        },
      });
      return { data: Buffer.concat(parts), restarts, end };
    } finally {
      await pool.close();
    }
  }

  it('reads once when the file is as seen, and again (not torn) when it changed after the stat or is another file', async () => {
    const dir = tempDir('phx-seen-');
    try {
      const f = join(dir.path, 'f');
      writeFileSync(f, 'before');
      const before = lstatEntry(Buffer.from(f)) as Entry;
      let r = await read(f, before);
      assert.equal(r.data.toString(), 'before');
      assert.equal(r.restarts, 0);
      assert.equal(r.end.status === 'ok' && r.end.torn, false);

      writeFileSync(f, 'after, longer'); // changed since `before` was taken: that read is not the file as seen
      r = await read(f, before);
      assert.equal(r.data.toString(), 'after, longer');
      assert.equal(r.restarts, 1);
      assert.ok(r.end.status === 'ok' && !r.end.torn && r.end.size === 13);

      // Same size and times, another inode (a file put in its place): read again too.
      const now = lstatEntry(Buffer.from(f)) as Entry;
      r = await read(f, { ...now, ino: now.ino + 1n });
      assert.equal(r.restarts, 1);
      assert.equal(r.data.toString(), 'after, longer');
      assert.equal(r.end.status === 'ok' && r.end.torn, false);
    } finally {
      dir.cleanup();
    }
  });
});

describe('FastCDC chunker (on the seal workers)', () => {
  it('cuts within bounds, deterministically, and an insertion changes only nearby chunks', async () => {
    const data = randomBytes(24 * 2 ** 20);
    const a = (await chunksOf(data)).map((c) => c.data as Buffer);
    assert.ok(Buffer.concat(a).equals(data));
    for (const c of a.slice(0, -1)) assert.ok(c.length >= DEFAULT_CHUNKER.min && c.length <= DEFAULT_CHUNKER.max, `size ${c.length}`);
    const mean = data.length / a.length;
    assert.ok(mean > 0.5 * DEFAULT_CHUNKER.avg && mean < 2 * DEFAULT_CHUNKER.avg, `mean chunk ${mean}`);
    // The same cuts as the reference over the whole buffer: reading in blocks changes nothing.
    const whole: number[] = [];
    for (let pos = 0; pos < data.length;)
      pos += whole[whole.push(referenceCut(data, pos, data.length, DEFAULT_CHUNKER, true)) - 1] as number;
    assert.deepEqual(
      a.map((c) => c.length),
      whole,
    );
    const edited = Buffer.concat([data.subarray(0, 10_000_000), Buffer.from('inserted'), data.subarray(10_000_000)]);
    const b = (await chunksOf(edited)).map((c) => c.data as Buffer);
    const ids = new Set(a.map((c) => createHash('sha256').update(c).digest('hex')));
    const fresh = b.filter((c) => !ids.has(createHash('sha256').update(c).digest('hex')));
    assert.ok(fresh.length <= 2, `${fresh.length} chunks changed`);
    assert.equal((await chunksOf(Buffer.from('small'))).length, 1);
    assert.equal((await chunksOf(Buffer.alloc(0))).length, 0);
  });

  it('native cut points equal the TypeScript reference, with and without the end of data in view', () => {
    const p = { min: 64, avg: 256, max: 1024 };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.nat(), fc.boolean(), (bytes, s, eof) => {
        const start = bytes.length === 0 ? 0 : s % bytes.length;
        assert.equal(nextCut(bytes, start, bytes.length, p, eof), referenceCut(bytes, start, bytes.length, p, eof));
      }),
      { numRuns: 2000 },
    );
  });
});

type Op =
  | { t: 'write'; name: number; size: number; seed: number }
  | { t: 'append'; name: number; size: number }
  | { t: 'truncate'; name: number; size: number }
  | { t: 'delete'; name: number }
  | { t: 'rename'; name: number; to: number }
  | { t: 'mkdir'; name: number }
  | { t: 'movedir'; name: number; to: number }
  | { t: 'chmod'; name: number; mode: number }
  | { t: 'symlink'; name: number; to: number };

const NAMES = ['a', 'b c', 'd/e', 'd/f', Buffer.from([0x66, 0xff, 0x2e]).toString('latin1'), 'g/h/i', 'ünï'];
const DIRS = ['d', 'g', 'g/h', 'k'];
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    t: fc.constant('write' as const),
    name: fc.nat(NAMES.length - 1),
    size: fc.oneof(fc.nat(3000), fc.nat(1_500_000)),
    seed: fc.nat(1000),
  }),
  fc.record({ t: fc.constant('append' as const), name: fc.nat(NAMES.length - 1), size: fc.nat(5000) }),
  fc.record({ t: fc.constant('truncate' as const), name: fc.nat(NAMES.length - 1), size: fc.nat(2000) }),
  fc.record({ t: fc.constant('delete' as const), name: fc.nat(NAMES.length - 1) }),
  fc.record({ t: fc.constant('rename' as const), name: fc.nat(NAMES.length - 1), to: fc.nat(NAMES.length - 1) }),
  fc.record({ t: fc.constant('mkdir' as const), name: fc.nat(DIRS.length - 1) }),
  fc.record({ t: fc.constant('movedir' as const), name: fc.nat(DIRS.length - 1), to: fc.nat(DIRS.length - 1) }),
  fc.record({ t: fc.constant('chmod' as const), name: fc.nat(NAMES.length - 1), mode: fc.constantFrom(0o600, 0o644, 0o755, 0o400) }),
  fc.record({ t: fc.constant('symlink' as const), name: fc.nat(NAMES.length - 1), to: fc.nat(NAMES.length - 1) }),
);

/** Applies one operation to the tree at `root`; operations that do not apply are skipped. */
function applyOp(root: string, op: Op): void {
  const p = (rel: string): Buffer => Buffer.from(`${root}/${rel}`, 'latin1');
  const parent = (rel: string): void => {
    const i = rel.lastIndexOf('/');
    if (i > 0) mkdirSync(p(rel.slice(0, i)), { recursive: true });
  };
  const name = NAMES[op.name] as string;
  try {
    switch (op.t) {
      case 'write': {
        parent(name);
        const block = createHash('sha256').update(String(op.seed)).digest();
        const data = Buffer.alloc(op.size);
        for (let i = 0; i < op.size; i += 32) block.copy(data, i); // compressible, and the same seed dedupes
        rmSync(p(name), { force: true, recursive: true });
        writeFileSync(p(name), data);
        break;
      }
      case 'append':
        if (lstatSync(p(name)).isFile()) appendFileSync(p(name), randomBytes(op.size));
        break;
      case 'truncate':
        if (lstatSync(p(name)).isFile()) truncateSync(p(name), op.size);
        break;
      case 'delete':
        rmSync(p(name), { recursive: true, force: true });
        break;
      case 'rename': {
        const to = NAMES[op.to] as string;
        if (to === name || to.startsWith(`${name}/`)) break;
        parent(to);
        rmSync(p(to), { recursive: true, force: true });
        renameSync(p(name), p(to));
        break;
      }
      case 'mkdir':
        mkdirSync(p(DIRS[op.name] as string), { recursive: true });
        break;
      case 'movedir': {
        const from = DIRS[op.name] as string;
        const to = `${DIRS[op.to] as string}-moved`;
        if (to.startsWith(`${from}/`) || !lstatSync(p(from)).isDirectory()) break;
        parent(to);
        rmSync(p(to), { recursive: true, force: true });
        renameSync(p(from), p(to));
        break;
      }
      case 'chmod':
        if (!lstatSync(p(name)).isSymbolicLink()) chmodSync(p(name), op.mode);
        break;
      case 'symlink':
        parent(name);
        rmSync(p(name), { recursive: true, force: true });
        symlinkSync(Buffer.from(NAMES[op.to] as string, 'latin1'), p(name));
        break;
    }
  } catch (err) {
    const c = (err as NodeJS.ErrnoException).code;
    if (c !== 'ENOENT' && c !== 'ENOTDIR' && c !== 'EEXIST' && c !== 'EISDIR') throw err;
  }
}

/** Random trees and changes, a backup after each step; every commit restores to its step's tree. */
async function roundTrip(open: () => Promise<{ backend: Backend; cleanup?: () => Promise<void> }>, runs: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 12 }), async (ops) => {
      const { backend, cleanup } = await open();
      const src = tempDir('phx-prop-src-');
      const state = tempDir('phx-prop-state-');
      const out = tempDir('phx-prop-out-');
      const repo = await init(backend);
      const db = new StateDb(join(state.path, 'db.sqlite'));
      try {
        const expected = new Map<number, Map<string, string>>();
        for (const op of ops) {
          applyOp(src.path, op);
          const r = await backup(repo, db, src.path, 'prop');
          const seq = r.commit?.seq ?? Math.max(0, ...expected.keys());
          expected.set(seq, snapshot(src.path));
        }
        assert.deepEqual((await checkRepository(repo, { readData: true })).errors, [], 'check finds nothing wrong');
        for (const [seq, tree] of expected) {
          if (seq === 0) continue;
          const dir = join(out.path, String(seq));
          const { state: st } = await repo.loadState('prop', seq);
          await restore(repo, st, dir);
          assert.deepEqual(snapshot(dir), tree, `commit ${seq}`);
        }
      } finally {
        db.close();
        await backend.close();
        await cleanup?.();
        src.cleanup();
        state.cleanup();
        out.cleanup();
      }
    }),
    { numRuns: runs, verbose: 1 }, // verbose: a failure prints the error that broke the property
  );
}

describe('sealing and chunk ids (native, on OpenSSL) agree with node:crypto', () => {
  it('blobs open both ways, ids are HMAC-SHA-256, a changed byte or another key fails, keys may alternate', () => {
    const a = Keys.fromMaster(randomBytes(64));
    const b = Keys.fromMaster(randomBytes(64));
    const nodeOpen = (key: Buffer, s: Buffer): Buffer => {
      const d = createDecipheriv('aes-256-gcm', key, s.subarray(0, 12));
      d.setAuthTag(s.subarray(s.length - 16));
      return Buffer.concat([d.update(s.subarray(12, s.length - 16)), d.final()]);
    };
    const nodeSeal = (key: Buffer, data: Buffer): Buffer => {
      const iv = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', key, iv);
      return Buffer.concat([iv, c.update(data), c.final(), c.getAuthTag()]);
    };
    for (const n of [0, 1, 15, 16, 17, 4095, 65_537, 2 ** 20 + 3]) {
      const data = randomBytes(n);
      for (const keys of [a, b]) {
        // The keys alternate from call to call: each thread keeps the last key's schedule.
        const encKey = keys.encKey as Buffer;
        const sealed = keys.sealParts([data.subarray(0, n >> 1), data.subarray(n >> 1)]);
        assert.equal(sealed.length, n + 28);
        assert.ok(nodeOpen(encKey, sealed).equals(data), `size ${n}`);
        assert.ok(keys.open(nodeSeal(encKey, data), 'blob').equals(data), `size ${n}`);
        const into = Buffer.alloc(n + 5);
        assert.ok(keys.open(sealed, 'blob', into).equals(data));
        assert.equal(
          keys.id(data).toString('hex'),
          createHmac('sha256', keys.macKey as Buffer)
            .update(data)
            .digest('hex'),
        );
        for (const at of [0, 12, sealed.length - 1]) {
          const bad = Buffer.from(sealed);
          bad[at] = (bad[at] as number) ^ 1;
          assert.throws(() => keys.open(bad, 'blob'), { code: 'PHX_CORRUPT' });
        }
        assert.throws(() => (keys === a ? b : a).open(sealed, 'blob'), { code: 'PHX_CORRUPT' });
      }
    }
    assert.throws(() => a.open(Buffer.alloc(27), 'blob'), { code: 'PHX_CORRUPT' });
  });
});

describe('sealing on worker threads', () => {
  it('gives back exactly the blob the main thread would seal, for every size (small blobs live in a shared pool)', async () => {
    const keys = Keys.fromMaster(randomBytes(64));
    for (const n of [1, 100, 3000, 4095, 4096, 5000, 300_000, 9 * 2 ** 20 + 7]) {
      const data = n % 2 === 0 ? Buffer.alloc(n, 'compressible ') : randomBytes(n);
      const chunks = await chunksOf(data, keys);
      assert.ok(Buffer.concat(chunks.map((c) => c.data as Buffer)).equals(data), `size ${n}`);
      // Each blob opened (authenticated) in chunksOf; a blob carrying extra bytes would not.
      for (const c of chunks) assert.equal(c.id, keys.id(c.data as Buffer).toString('hex'), `size ${n}`);
      // Chunks the file's last version has are not sealed again.
      const again = await chunksOf(
        data,
        keys,
        chunks.slice(0, 1).map((c) => c.id),
      );
      assert.equal(again[0]?.data, undefined);
      assert.deepEqual(
        again.map((c) => c.id),
        chunks.map((c) => c.id),
      );
    }
  });
});

describe('backup and restore (property-based)', () => {
  it('memory backend', async () => roundTrip(async () => ({ backend: new MemoryBackend() }), 12));
  it('local backend', async () =>
    roundTrip(async () => {
      const d = tempDir('phx-prop-repo-');
      return { backend: new LocalBackend(d.path), cleanup: async () => d.cleanup() };
    }, 6));
  it('S3 backend (OpenStack Swift s3api)', async (ctx) => {
    const server = await startSwift();
    if (typeof server === 'string') {
      console.log(`\n*** ${server} ***\n`);
      ctx.skip(server);
      return;
    }
    try {
      let n = 0;
      await roundTrip(
        async () => ({
          backend: new S3Backend({
            bucket: server.bucket,
            prefix: `prop${n++}`,
            endpoint: server.endpoint,
            credentials: server.credentials,
          }),
        }),
        3,
      );
    } finally {
      await server.stop();
    }
  });
  it('S3 backend (s3rver)', async () => {
    const server = await startS3rver();
    try {
      let n = 0;
      await roundTrip(
        async () => ({ backend: new S3Backend({ bucket: server.bucket, prefix: `prop${n++}`, endpoint: server.endpoint }) }),
        3,
      );
    } finally {
      await server.stop();
    }
  });
});

describe('records written straight to JSON', () => {
  // Any record, also one no writer makes (decoded from a tampered repository: NaN, -0, huge
  // numbers, odd strings in ids and types): the text is JSON.stringify's of the object form.
  const num = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(Number.NaN, -0, Infinity, -Infinity, 1e21, 2 ** 53));
  const text = fc.oneof(
    fc.string(),
    fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex')),
    fc.constantFrom('"', '\\', '\u2028', '</'),
  );
  const raw = fc.uint8Array({ maxLength: 12 }).map((b) => Buffer.from(b).toString('latin1'));
  const ref = fc.record(
    { id: text, pack: text, offset: num, length: num, size: fc.option(num, { nil: undefined }) },
    { requiredKeys: ['id', 'pack', 'offset', 'length'] },
  );
  const rec = fc.record(
    {
      path: raw,
      type: fc.oneof(fc.constantFrom('file', 'dir', 'symlink', 'other'), fc.string()),
      mode: num,
      uid: num,
      gid: num,
      mtimeNs: fc.bigInt(),
      size: num,
      chunks: fc.array(ref, { maxLength: 3 }),
      target: raw,
      fine: fc.boolean(),
    },
    { requiredKeys: ['path', 'type', 'mode', 'uid', 'gid', 'mtimeNs', 'size', 'chunks'] },
  ) as fc.Arbitrary<FileRecord>;
  const change: fc.Arbitrary<JournalChange> = fc.oneof(
    rec.map((r) => ({ ...r, op: 'put' as const })),
    raw.map((path) => ({ op: 'delete' as const, path })),
    fc.tuple(raw, raw).map(([from, path]) => ({ op: 'move' as const, from, path })),
  );

  it('equal what JSON.stringify makes of encodeRecord and encodeChange', () => {
    fc.assert(
      fc.property(rec, (r) => recordJson(r) === JSON.stringify(encodeRecord(r))),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(change, (c) => changeJson(c) === JSON.stringify(encodeChange(c))),
      { numRuns: 2000 },
    );
  });
});

describe('repository', () => {
  it('restores mtimes to the microsecond, also just above a microsecond boundary', async () => {
    const src = tempDir('phx-mtime-src-');
    const out = tempDir('phx-mtime-out-');
    const state = tempDir('phx-mtime-state-');
    const repo = await init(new MemoryBackend());
    const db = new StateDb(join(state.path, 'db.sqlite'));
    try {
      const want = new Map<string, bigint>();
      for (let i = 0; i < 40; i++) {
        const f = join(src.path, `f${i}`);
        writeFileSync(f, 'x');
        const ns = `1795479900${String(692000 + i * 7).padStart(6, '0')}001`; // 1 ns past a microsecond
        assert.equal(spawnSync('touch', ['-m', '-d', `@${ns.slice(0, 10)}.${ns.slice(10)}`, f]).status, 0);
        want.set(`f${i}`, BigInt(ns) / 1000n);
      }
      await backup(repo, db, src.path, 'mtimes');
      await restore(repo, (await repo.loadState('mtimes')).state, out.path);
      for (const [name, us] of want) assert.equal(lstatSync(join(out.path, name), { bigint: true }).mtimeNs / 1000n, us, name);
    } finally {
      db.close();
      src.cleanup();
      out.cleanup();
      state.cleanup();
    }
  });

  async function fixture() {
    const repoDir = tempDir('phx-repo-');
    const src = tempDir('phx-src-');
    const state = tempDir('phx-state-');
    mkdirSync(join(src.path, 'docs'));
    writeFileSync(join(src.path, 'docs/big'), randomBytes(3 * 2 ** 20));
    writeFileSync(join(src.path, 'small'), 'small');
    const backend = new LocalBackend(repoDir.path);
    const repo = await init(backend);
    const db = new StateDb(join(state.path, 'db.sqlite'));
    const first = await backup(repo, db, src.path, 'src');
    return {
      repoDir,
      src,
      state,
      backend,
      repo,
      db,
      first,
      done: () => {
        db.close();
        for (const d of [repoDir, src, state]) d.cleanup();
      },
    };
  }

  it('a backup of many commits reads on while each commit is written: it restores exactly, and content met again across commits is stored once', async () => {
    const repoDir = tempDir('phx-repo-');
    const src = tempDir('phx-src-');
    const state = tempDir('phx-state-');
    const out = tempDir('phx-out-');
    const repo = await init(new LocalBackend(repoDir.path));
    const db = new StateDb(join(state.path, 'db.sqlite'));
    try {
      // 12 directories of 30 files; the last 6 repeat the contents of the first 6, in commits
      // after the ones that stored them (180 files later: more than a backup reads at a time),
      // some while that commit is still being written.
      for (let d = 0; d < 12; d++) {
        mkdirSync(join(src.path, `d${d}`));
        for (let f = 0; f < 30; f++) {
          const k = ((d % 6) * 30 + f) % 180;
          writeFileSync(join(src.path, `d${d}/f${f}`), `content ${k} `.repeat(50 + (k % 7)));
        }
      }
      const first = await backup(repo, db, src.path, 'many', { commitEntries: 25 });
      const commits = await repo.commitList('many');
      assert.ok(commits.length >= 12, `one commit per 25 entries (${commits.length} commits)`);
      assert.equal(first.commit?.seq, commits.at(-1)?.seq);
      const { state: st } = await repo.loadState('many');
      await restore(repo, st, join(out.path, 'first'));
      assert.deepEqual(snapshot(join(out.path, 'first')), snapshot(src.path));
      const where = new Map<string, Set<string>>();
      for (const rec of st.values())
        for (const c of rec.chunks) where.set(c.id, (where.get(c.id) ?? new Set()).add(`${c.pack}@${c.offset}`));
      assert.equal(where.size, 180, 'one chunk per distinct content');
      for (const [id, at] of where) assert.equal(at.size, 1, `chunk ${id} is stored once (${[...at].join(', ')})`);
      // Changes and removals across the commits of a second backup.
      rmSync(join(src.path, 'd3'), { recursive: true });
      for (let d = 5; d < 12; d += 2) writeFileSync(join(src.path, `d${d}/f7`), `changed ${d}`);
      await backup(repo, db, src.path, 'many', { commitEntries: 3 });
      const again = await repo.loadState('many');
      await restore(repo, again.state, join(out.path, 'second'));
      assert.deepEqual(snapshot(join(out.path, 'second')), snapshot(src.path));
      assert.deepEqual((await checkRepository(repo, { readData: true })).errors, []);
    } finally {
      db.close();
      for (const d of [repoDir, src, state, out]) d.cleanup();
    }
  });

  it('a backup of many commits that the store fails in the middle: nothing half-written, the next backup completes it', async () => {
    const src = tempDir('phx-src-');
    const state = tempDir('phx-state-');
    const out = tempDir('phx-out-');
    const faulty = new FaultyBackend(new MemoryBackend());
    const repo = await init(faulty);
    const db = new StateDb(join(state.path, 'db.sqlite'));
    try {
      for (let d = 0; d < 10; d++) {
        mkdirSync(join(src.path, `d${d}`));
        for (let f = 0; f < 30; f++) writeFileSync(join(src.path, `d${d}/f${f}`), `file ${d}/${f} `.repeat(40));
      }
      let failing = false;
      await assert.rejects(
        backup(repo, db, src.path, 'cut', {
          commitEntries: 20,
          onProgress: (p) => {
            // The store goes away while commits are being written and files still read.
            if (p.files >= 120 && !failing) {
              failing = true;
              faulty.add({ kind: 'error-before', op: 'put' });
            }
          },
        }),
        /injected fault/,
      );
      const landed = await repo.commitList('cut');
      assert.ok(landed.length >= 1 && landed.length < 16, `some commits landed before the store failed (${landed.length})`);
      assert.deepEqual((await checkRepository(repo, { readData: true })).errors, [], 'what landed is whole');
      faulty.faults.length = 0;
      const done = await backup(repo, db, src.path, 'cut', { commitEntries: 20 });
      assert.ok(done.commit !== undefined);
      const { state: st } = await repo.loadState('cut');
      await restore(repo, st, out.path);
      assert.deepEqual(snapshot(out.path), snapshot(src.path));
    } finally {
      db.close();
      for (const d of [src, state, out]) d.cleanup();
    }
  });

  it('a source that is not a directory is a clear error', async () => {
    const f = await fixture();
    await assert.rejects(backup(f.repo, f.db, join(f.src.path, 'small'), 'other'), code('PHX_SOURCE_INVALID'));
    await assert.rejects(backup(f.repo, f.db, join(f.src.path, 'nope'), 'other'), code('PHX_SOURCE_INVALID'));
    f.done();
  });

  it('a second backup with no changes writes nothing; losing the local state re-uploads nothing', async () => {
    const f = await fixture();
    assert.equal(f.first.commit?.seq, 1);
    let bytesRead = 0;
    const again = await backup(f.repo, f.db, f.src.path, 'src', { onProgress: (p) => (bytesRead = p.bytes) });
    assert.equal(again.commit, undefined);
    assert.equal(bytesRead, 0, 'the cache vouches for every file: none is read');
    f.db.close();
    rmSync(f.state.path, { recursive: true, force: true });
    const fresh = new StateDb(join(f.state.path, 'db.sqlite'));
    const rebuilt = await backup(f.repo, fresh, f.src.path, 'src');
    assert.equal(rebuilt.commit, undefined, 'the rebuilt cache knows everything is there');
    appendFileSync(join(f.src.path, 'small'), '!');
    writeFileSync(join(f.src.path, 'copy-of-big'), readFileSync(join(f.src.path, 'docs/big')));
    const changed = await backup(f.repo, fresh, f.src.path, 'src');
    assert.equal(changed.commit?.seq, 2);
    assert.ok(changed.stats.bytesUploaded < 10_000, `a copy of known content uploads nothing new (${changed.stats.bytesUploaded} bytes)`);
    fresh.close();
    f.db.close = () => {};
    f.done();
  });

  it('a backup finds what is gone directory by directory: files, subtrees, a directory that is a file or a link now, an excluded or unlisted one', async () => {
    const src = tempDir('phx-gone-src-');
    const state = tempDir('phx-gone-state-');
    const repo = await init(new MemoryBackend());
    const db = new StateDb(join(state.path, 'db.sqlite'));
    const paths = async (): Promise<string[]> => [...(await repo.loadState('gone')).state.keys()].sort();
    try {
      for (const f of ['a/x', 'a/b/c/y', 'a/b/z', 'd/e/z', 'l/m/n', 'f/v', 'keep/k', 'keep/gone', 'top']) {
        mkdirSync(join(src.path, f, '..'), { recursive: true });
        writeFileSync(join(src.path, f), f);
      }
      await backup(repo, db, src.path, 'gone', { commitEntries: 4 });
      assert.equal((await paths()).length, 18);
      rmSync(join(src.path, 'a/b'), { recursive: true }); // a subtree
      rmSync(join(src.path, 'd'), { recursive: true });
      writeFileSync(join(src.path, 'd'), 'a file now'); // a directory that is a file now
      rmSync(join(src.path, 'l'), { recursive: true });
      symlinkSync('keep', join(src.path, 'l')); // and a link
      rmSync(join(src.path, 'keep/gone')); // a file
      const want = ['a', 'a/x', 'd', 'keep', 'keep/k', 'l', 'top'];
      // The dry run tells the same, and writes nothing.
      const plan = await planBackup(repo, db, src.path, 'gone', { exclude: ['f'] });
      const removed = plan.changes.filter((c) => c.change === 'removed').map((c) => c.path);
      assert.deepEqual(removed.sort(), ['a/b', 'a/b/c', 'a/b/c/y', 'a/b/z', 'd/e', 'd/e/z', 'f', 'f/v', 'keep/gone', 'l/m', 'l/m/n']);
      assert.equal((await paths()).length, 18);
      await backup(repo, db, src.path, 'gone', { exclude: ['f'], commitEntries: 2 }); // an excluded directory is gone too
      assert.deepEqual(await paths(), want);
      // Below a directory the walk found but could not list, what the last commit had stays.
      // Below one it found but did not list (gone meanwhile, or another file system), nothing is.
      mkdirSync(join(src.path, 'd2/sub'), { recursive: true });
      writeFileSync(join(src.path, 'd2/sub/s'), 's');
      mkdirSync(join(src.path, 'v/w'), { recursive: true });
      writeFileSync(join(src.path, 'v/w/q'), 'q');
      await backup(repo, db, src.path, 'gone');
      const scan = startScan(src.path);
      // (As root a mode of 000 does not stop a listing: the walk is made to fail there instead.)
      const walked = await scan.done;
      assert.ok(walked.tree.get('d2/sub')?.kind === 'dir' && walked.tree.get('d2/sub/s') === undefined, 'the scan keeps directories only');
      rmSync(join(src.path, 'd2/sub/s'));
      const fake = {
        done: Promise.resolve({ ...walked, problems: [{ path: 'd2/sub', code: 'EACCES', message: 'cannot list directory' }] }),
        async *listings() {
          for await (const [dir, listing] of scan.listings())
            if (dir !== 'd2/sub' && dir !== 'v') yield [dir, listing] as [string, typeof listing];
        },
      };
      const problems: string[] = [];
      await backup(repo, db, src.path, 'gone', { scan: fake, onProblem: (p) => problems.push(p) });
      assert.deepEqual(problems, ['d2/sub']);
      const after = await paths();
      assert.ok(after.includes('d2/sub/s'), 'what an unlisted directory held stays');
      assert.ok(after.includes('v') && !after.includes('v/w') && !after.includes('v/w/q'), after.join(' '));
    } finally {
      db.close();
      src.cleanup();
      state.cleanup();
    }
  });

  it('a state cache of an older build (no stamps) is rebuilt from the repository; its queue is kept', async () => {
    const f = await fixture();
    f.db.close();
    const path = join(f.state.path, 'db.sqlite');
    const old = new Database(path);
    old.exec(
      'DROP TABLE files; CREATE TABLE files (source TEXT NOT NULL, path BLOB NOT NULL, rec TEXT NOT NULL, ino TEXT NOT NULL, ctime TEXT NOT NULL, PRIMARY KEY (source, path));',
    );
    old.exec("INSERT INTO queue (id, source, op, path, from_path, time_ms, open) VALUES (7, 'src', 'path', x'61', NULL, 1, 0)");
    old.pragma('user_version = 0');
    old.close();
    const db = new StateDb(path);
    assert.equal(db.seq('src', f.repo.config.id), undefined, 'the old file cache is gone');
    assert.deepEqual(
      db.queued('src').map((q) => q.id),
      [7],
    );
    const again = await backup(f.repo, db, f.src.path, 'src');
    assert.equal(again.commit, undefined, 'rebuilt: nothing changed');
    assert.equal(db.files('src').size, 3);
    db.close();
    f.db.close = () => {};
    f.done();
  });

  it('restore reads nearby chunks in one request, and files that share chunks get them all', async () => {
    const f = await fixture();
    // More small files than restore sends to its threads at once from one window.
    for (let i = 0; i < 600; i++) writeFileSync(join(f.src.path, `s${i}`), randomBytes(1000 + i));
    for (let i = 0; i < 20; i++) writeFileSync(join(f.src.path, `same${i}`), 'the same bytes in twenty files');
    await backup(f.repo, f.db, f.src.path, 'src');
    const { state } = await f.repo.loadState('src');
    const out = tempDir('phx-out-');
    const r = await restore(f.repo, state, out.path);
    assert.equal(r.files, 622);
    assert.ok(r.reads <= 3, `${r.reads} reads for 600 small files and 3 MiB in one pack`);
    assert.deepEqual(snapshot(out.path), snapshot(f.src.path));
    // Windows of a few chunks, and almost nothing kept: windows are dropped and read again.
    const tight = await restore(f.repo, state, join(out.path, 'tight'), { fetch: { gap: 0, window: 8000, keep: 4000 } });
    assert.ok(tight.reads > 30, `${tight.reads} reads with 8 KB windows`);
    assert.deepEqual(snapshot(join(out.path, 'tight')), snapshot(f.src.path));
    out.cleanup();
    f.done();
  });

  it('restore writes chunks where they go in pack order, reopening files it closed for room, and front to back when records give no chunk sizes', async () => {
    const f = await fixture();
    const big = randomBytes(10 * 2 ** 20);
    writeFileSync(join(f.src.path, 'docs/many'), big);
    await backup(f.repo, f.db, f.src.path, 'src');
    const chunks = (await f.repo.loadState('src')).state.get('docs/many')?.chunks ?? [];
    assert.ok(chunks.length >= 3, `docs/many is ${chunks.length} chunks`);
    // The same chunks, all but the last (which ends at the end of the file, not at a cut) in the
    // opposite order: the pack has them in one order, the files in both.
    const pieces: Buffer[] = [];
    let at = 0;
    for (const c of chunks) {
      const piece = big.subarray(at, at + (c.size as number));
      if (c === chunks.at(-1)) pieces.push(piece);
      else pieces.unshift(piece);
      at += c.size as number;
    }
    writeFileSync(join(f.src.path, 'docs/many2'), big);
    writeFileSync(join(f.src.path, 'docs/rev'), Buffer.concat(pieces));
    writeFileSync(join(f.src.path, 'docs/rev2'), Buffer.concat(pieces));
    // Modes through files closed and reopened: bits the umask would take, none for the owner, set-id.
    chmodSync(join(f.src.path, 'docs/many2'), 0o640);
    chmodSync(join(f.src.path, 'docs/many'), 0o444);
    chmodSync(join(f.src.path, 'docs/rev'), 0o666);
    chmodSync(join(f.src.path, 'docs/rev2'), 0o4755);
    await backup(f.repo, f.db, f.src.path, 'src');
    const { state } = await f.repo.loadState('src');
    const ids = (p: string): string[] => (state.get(p)?.chunks ?? []).map((c) => c.id);
    const many = ids('docs/many');
    assert.deepEqual(ids('docs/rev'), [...many.slice(0, -1).reverse(), many.at(-1)], 'the reordered file is the same chunks');
    const out = tempDir('phx-out-');
    // One open file per thread: each thread gets chunks of two files in turn, so it closes and reopens them.
    const r = await restore(f.repo, state, join(out.path, 'placed'), { openFiles: 1 });
    assert.equal(r.files, 6);
    assert.deepEqual(snapshot(join(out.path, 'placed')), snapshot(f.src.path));
    // Records written before chunk sizes were: no offsets known, written front to back.
    for (const rec of state.values()) for (const c of rec.chunks) delete c.size;
    await restore(f.repo, state, join(out.path, 'old'), { openFiles: 1 });
    assert.deepEqual(snapshot(join(out.path, 'old')), snapshot(f.src.path));
    out.cleanup();
    f.done();
  });

  it('compresses what compresses and stores random bytes as they are', async () => {
    const f = await fixture(); // 3 MiB of random bytes: stored, not bigger than needed
    assert.ok(f.first.stats.bytesUploaded < 3 * 2 ** 20 + 64 * 1024, `random: ${f.first.stats.bytesUploaded}`);
    writeFileSync(join(f.src.path, 'text.log'), 'a line of a log file that repeats\n'.repeat(60_000));
    const r = await backup(f.repo, f.db, f.src.path, 'src');
    assert.ok(r.stats.bytesUploaded < 200_000, `2 MiB of text uploads ${r.stats.bytesUploaded} bytes`);
    f.done();
  });

  it('a wrong password, a missing repository and a second init are clear errors', async () => {
    const f = await fixture();
    await assert.rejects(reopen(f.backend, 'wrong'), code('PHX_WRONG_PASSWORD'));
    await assert.rejects(reopen(new MemoryBackend()), code('PHX_REPO_NOT_INITIALISED'));
    await assert.rejects(init(f.backend), code('PHX_REPO_EXISTS'));
    f.done();
  });

  it('tampering: a flipped byte in a pack, a deleted pack, a truncated commit are detected, never restored wrong', async () => {
    const f = await fixture();
    const packs = (await listAll(f.backend, 'data/')).map((o) => o.key);
    assert.ok(packs.length >= 1);
    const packPath = join(f.repoDir.path, packs[0] as string);
    const original = readFileSync(packPath);
    const flipped = Buffer.from(original);
    flipped[100] = (flipped[100] as number) ^ 1;
    writeFileSync(packPath, flipped);
    const { state } = await f.repo.loadState('src');
    const out = tempDir('phx-out-');
    await assert.rejects(
      restore(f.repo, state, out.path),
      (e) => code('PHX_CORRUPT')(e) && /fails authentication/.test((e as Error).message),
    );
    const checked = await checkRepository(f.repo, { readData: true });
    assert.ok(
      checked.errors.some((e) => /fails authentication/.test(e)),
      checked.errors.join('\n'),
    );
    // A byte flipped in the trailer (the pack's header): the pack no longer matches its name.
    const trailerFlipped = Buffer.from(original);
    trailerFlipped[trailerFlipped.length - 10] = (trailerFlipped[trailerFlipped.length - 10] as number) ^ 1;
    writeFileSync(packPath, trailerFlipped);
    const checked2 = await checkRepository(f.repo, { readData: true });
    assert.ok(
      checked2.errors.some((e) => /does not match its name/.test(e)),
      checked2.errors.join('\n'),
    );
    // Bytes slipped in before the trailer: covered by no header entry.
    writeFileSync(
      packPath,
      Buffer.concat([
        original.subarray(0, original.length - 4 - original.readUInt32LE(original.length - 4)),
        Buffer.from('x'),
        original.subarray(original.length - 4 - original.readUInt32LE(original.length - 4)),
      ]),
    );
    const checked3 = await checkRepository(f.repo, { readData: true });
    assert.ok(
      checked3.errors.some((e) => /no header entry covers/.test(e)),
      checked3.errors.join('\n'),
    );
    unlinkSync(packPath);
    await assert.rejects(
      restore(f.repo, state, join(out.path, '2')),
      (e) => code('PHX_CORRUPT')(e) && /pack is missing/.test((e as Error).message),
    );
    writeFileSync(packPath, original);
    const commits = (await listAll(f.backend, 'journal/')).map((o) => o.key);
    const commitPath = join(f.repoDir.path, commits[0] as string);
    writeFileSync(commitPath, readFileSync(commitPath).subarray(0, 20));
    const [info] = await f.repo.commitList('src');
    await assert.rejects(f.repo.readCommit(info!), (e) => code('PHX_CORRUPT')(e) && (e as Error).message.includes(commits[0] as string));
    await f.repo.writeCheckpoint('src', 1, recordsInOrder(state));
    const [cp] = (await listAll(f.backend, 'checkpoint/')).map((o) => o.key);
    writeFileSync(join(f.repoDir.path, cp as string), 'garbage');
    assert.ok((await checkRepository(f.repo)).errors.some((e) => e.includes(cp as string)));
    await assert.rejects(f.repo.loadState('src'), (e) => code('PHX_CORRUPT')(e) && (e as Error).message.includes(cp as string));
    out.cleanup();
    f.done();
  });

  it('restore refuses paths that would land outside the target', async () => {
    const backend = new MemoryBackend();
    const repo = await init(backend);
    const out = tempDir('phx-out-');
    const evil = { path: '../escaped', type: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtimeNs: 0n, size: 0, chunks: [] };
    await repo.writeCommit({
      source: 'x',
      seq: 1,
      timeMs: Date.now(),
      packs: [],
      changes: [{ op: 'put', ...evil }],
      stats: { files: 1, dirs: 0, deleted: 0, bytesUploaded: 0, bytesTotal: 0 },
    });
    const { state } = await repo.loadState('x');
    await assert.rejects(
      restore(repo, state, join(out.path, 'target')),
      (e) => code('PHX_CORRUPT')(e) && /outside the target/.test((e as Error).message),
    );
    assert.equal(existsSync(join(out.path, 'escaped')), false);
    out.cleanup();
  });

  it('one writer per source: a second lease is refused while the first holds', async () => {
    const repo = await init(new MemoryBackend());
    const lease = await repo.acquireLease('s');
    await assert.rejects(repo.acquireLease('s'), (e) => code('PHX_LOCKED')(e) && /is being written by process/.test((e as Error).message));
    await lease.release();
    await (await repo.acquireLease('s')).release();
    // A lease left by a process of this host that has died is taken over at once.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid as number;
    await repo.backend.put(
      'leases/cw/t',
      Buffer.from(JSON.stringify({ host: hostname(), pid: dead, token: 't', acquiredMs: Date.now(), expiresMs: Date.now() + 60_000 })),
    );
    await (await repo.acquireLease('s')).release();
    assert.deepEqual(await listAll(repo.backend, 'leases/'), [], 'the dead lease was cleaned up, ours released');
  });

  it('one writer per source when several start at the same instant, on a store without conditional puts', async () => {
    const backend = new FaultyBackend(new MemoryBackend()).add({ kind: 'delay', op: 'put', delayMs: 20 });
    const repo = await init(backend);
    const tries = await Promise.allSettled(Array.from({ length: 6 }, () => repo.acquireLease('s')));
    const won = tries.flatMap((t) => (t.status === 'fulfilled' ? [t.value] : []));
    assert.ok(won.length <= 1, `${won.length} writers hold the lease`);
    for (const t of tries) if (t.status === 'rejected') assert.ok(code('PHX_LOCKED')(t.reason), String(t.reason));
    const holder = won[0] ?? (await repo.acquireLease('s'));
    // A rival that asks while the lease is held does not disturb the holder's renewal…
    const other = { host: 'elsewhere', pid: 1, token: 'rival' };
    await backend.put('leases/cw/rival', Buffer.from(JSON.stringify({ ...other, acquiredMs: Date.now(), expiresMs: Date.now() + 60_000 })));
    await holder.renew();
    // …but one that took over after the holder's lease ran out (it could not renew) stops it.
    const later = Date.now() + 10 * 60_000;
    await backend.put('leases/cw/rival', Buffer.from(JSON.stringify({ ...other, acquiredMs: later, expiresMs: later + 60_000 })));
    await assert.rejects(holder.renew(), code('PHX_LOCKED'));
  });
});
