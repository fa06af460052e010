import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, openSync, closeSync, readFileSync, renameSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { chunksToKeep } from '../src/archiver/append.js';
import { backup } from '../src/archiver/backup.js';
import { CommitBuilder } from '../src/archiver/commit.js';
import { SealPool } from '../src/archiver/seal-pool.js';
import { lstatEntry } from '../src/scanner/stat.js';
import { MemoryBackend } from '../src/backend/memory.js';
import { DEFAULT_CHUNKER } from '../src/repo/chunker.js';
import { Repository } from '../src/repo/repository.js';
import { restore } from '../src/restore/restore.js';
import { StateDb } from '../src/state/db.js';
import { tempDir } from './helpers.js';

type Op =
  | { op: 'append'; n: number; text: boolean }
  | { op: 'appendMany'; times: number; n: number }
  | { op: 'truncate'; keep: number }
  | { op: 'rewrite'; at: number; n: number }
  | { op: 'replace'; n: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('append' as const),
      n: fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 600_000 })),
      text: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('appendMany' as const),
      times: fc.integer({ min: 2, max: 40 }),
      n: fc.integer({ min: 1, max: 2000 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), keep: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('rewrite' as const),
      at: fc.double({ min: 0, max: 1, noNaN: true }),
      n: fc.integer({ min: 1, max: 5000 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('replace' as const), n: fc.integer({ min: 0, max: 3_000_000 }) }) },
);

const line = (i: number): Buffer =>
  Buffer.from(`2026-12-01T00:00:${String(i % 60).padStart(2, '0')} host app[${i}]: request served in ${i % 97} ms\n`);

function apply(file: string, op: Op): void {
  const size = readFileSync(file).length;
  switch (op.op) {
    case 'append':
      appendFileSync(
        file,
        op.text ? Buffer.concat(Array.from({ length: Math.ceil(op.n / 60) }, (_, i) => line(i))).subarray(0, op.n) : randomBytes(op.n),
      );
      break;
    case 'appendMany':
      for (let i = 0; i < op.times; i++) appendFileSync(file, randomBytes(op.n));
      break;
    case 'truncate':
      truncateSync(file, Math.floor(size * op.keep));
      break;
    case 'rewrite': {
      // Old bytes rewritten in place: same size, same inode.
      const fd = openSync(file, 'r+');
      writeSync(fd, randomBytes(op.n), 0, op.n, Math.floor(size * op.at));
      closeSync(fd);
      break;
    }
    case 'replace':
      writeFileSync(`${file}.new`, randomBytes(op.n));
      renameSync(`${file}.new`, file);
      break;
  }
}

/** `n` pseudo-random bytes, the same for the same seed (xorshift32). */
function seeded(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  return out;
}

const hash = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('appends', () => {
  it('chunksToKeep keeps every chunk of a file that only grew, and merges its pieces as they accumulate', () => {
    const p = DEFAULT_CHUNKER;
    let sizes = [1_048_576, 2_000_000, 300_000];
    let size = sizes.reduce((a, b) => a + b, 0);
    let rewritten = 0;
    let most = 0;
    for (let i = 0; i < 20_000; i++) {
      size += 107;
      const keep = chunksToKeep(sizes, size, p);
      assert.ok(keep >= 2, 'the natural chunks are never cut again');
      const kept = sizes.slice(0, keep).reduce((a, b) => a + b, 0);
      rewritten += size - kept;
      // What FastCDC makes of the rest, roughly: no cut before the minimum.
      const rest = size - kept;
      sizes = [...sizes.slice(0, keep), ...(rest >= p.min * 2 ? [p.min, rest - p.min] : [rest])];
      most = Math.max(most, sizes.length);
    }
    assert.ok(most <= 3 + 24, `at most 24 pieces after the old chunks (saw ${most - 3})`);
    assert.ok(
      rewritten / (20_000 * 107) < 10,
      `each appended byte is stored a few times at most (${(rewritten / (20_000 * 107)).toFixed(1)})`,
    );
    // A record that does not say its chunk sizes keeps nothing; a file that shrank keeps what fits.
    assert.equal(chunksToKeep([undefined, 5], 10, p), 0);
    assert.equal(chunksToKeep([300_000, 300_000, 300_000], 700_000, p), 2);
    // The same size (a rewrite in place, or only the mtime): every chunk is checked, none is kept unchecked.
    assert.equal(chunksToKeep([300_000, 300_000], 600_000, p), 2);
    assert.equal(chunksToKeep([300_000, 100], 300_100, p), 2);
  });

  it('a log that gets small appends stores about the appended bytes per commit, and every commit restores it', async () => {
    const src = tempDir('phx-log-');
    const state = tempDir('phx-log-state-');
    const out = tempDir('phx-log-out-');
    const repo = await Repository.init(new MemoryBackend(), { password: 'pw', kdfN: 1024 });
    const db = new StateDb(join(state.path, 'db.sqlite'));
    try {
      const file = join(src.path, 'app.log');
      writeFileSync(file, Buffer.concat(Array.from({ length: 40_000 }, (_, i) => line(i)))); // ~2.6 MiB of log lines
      await backup(repo, db, src.path, 'log');
      const expected = new Map<number, string>();
      let uploaded = 0;
      let appended = 0;
      for (let i = 0; i < 150; i++) {
        const l = line(40_000 + i);
        appendFileSync(file, l);
        appended += l.length;
        const r = await backup(repo, db, src.path, 'log');
        uploaded += r.stats.bytesUploaded;
        expected.set(r.commit!.seq, hash(readFileSync(file)));
      }
      // Today's file's whole last chunk would be stored again each time (~100 KiB): here it is not.
      process.stdout.write(`${uploaded} bytes of pack data uploaded for ${appended} appended\n`);
      assert.ok(uploaded < appended * 12, `uploaded ${uploaded} bytes of pack data for ${appended} appended`);
      const { state: last } = await repo.loadState('log');
      const chunks = last.get('app.log')!.chunks.length;
      assert.ok(chunks <= 3 + 24, `${chunks} chunks after 150 appends`);
      for (const [seq, h] of [...expected].filter((_, i) => i % 10 === 0 || i === expected.size - 1)) {
        const dir = join(out.path, String(seq));
        await restore(repo, (await repo.loadState('log', seq)).state, dir);
        assert.equal(hash(readFileSync(join(dir, 'app.log'))), h, `commit ${seq}`);
      }
    } finally {
      db.close();
      src.cleanup();
      state.cleanup();
      out.cleanup();
    }
  });

  it('a large file rewritten in place again and again is cut finely: a 4 KiB write then costs a small chunk, and every version restores', async () => {
    const src = tempDir('phx-hot-');
    const state = tempDir('phx-hot-state-');
    const out = tempDir('phx-hot-out-');
    const repo = await Repository.init(new MemoryBackend(), { insecureNoEncryption: true });
    const db = new StateDb(join(state.path, 'db.sqlite'));
    const pool = new SealPool(repo.keys);
    try {
      const file = join(src.path, 'disk.img');
      writeFileSync(file, seeded(24 * 2 ** 20, 1)); // the same bytes every run: the chunk boundaries are too
      const inPlace = new Map<string, number>();
      const versions = new Map<number, string>();
      const uploaded: number[] = [];
      for (let seq = 1; seq <= 8; seq++) {
        if (seq > 1) {
          const fd = openSync(file, 'r+');
          writeSync(fd, seeded(4096, seq + 1), 0, 4096, 12 * 2 ** 20 + seq * 40_000);
          closeSync(fd);
        }
        const builder = new CommitBuilder(repo, db, pool, 'hot', db.known('hot'), { inPlace });
        assert.equal(await builder.add('disk.img', Buffer.from(file), lstatEntry(Buffer.from(file))!), 'added');
        const done = await builder.commit(seq);
        uploaded.push(done!.commit.stats.bytesUploaded);
        versions.set(seq, hash(readFileSync(file)));
      }
      // Commits 2 and 3 see rewrites in place; the third rewrite (commit 4) switches to fine chunks.
      process.stdout.write(`uploaded per commit: ${uploaded.join(', ')}\n`);
      const last = (await repo.loadState('hot')).state.get('disk.img')!;
      assert.equal(last.fine, true);
      // A write costs the fine chunk it falls in (two when it straddles a boundary), not a MiB.
      const after = uploaded.slice(4);
      for (const [i, n] of after.entries())
        assert.ok(n <= 2 * 192 * 1024 + 16 * 1024, `commit ${i + 5} uploaded ${n} bytes for a 4 KiB write`);
      assert.ok(after.reduce((a, b) => a + b, 0) / after.length <= 256 * 1024, `uploaded ${after.join(', ')} for 4 KiB writes`);
      for (const [seq, h] of versions) {
        const dir = join(out.path, String(seq));
        await restore(repo, (await repo.loadState('hot', seq)).state, dir);
        assert.equal(hash(readFileSync(join(dir, 'disk.img'))), h, `commit ${seq}`);
      }
    } finally {
      await pool.close();
      db.close();
      src.cleanup();
      state.cleanup();
      out.cleanup();
    }
  });

  it('random appends, truncations, rewrites of old bytes and replacements: every commit restores the file (property-based)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.integer({ min: 0, max: 3_000_000 }), fc.constantFrom(0, 1, 262_144, 1_048_576, 4_194_304, 4_194_305)),
        fc.array(opArb, { minLength: 1, maxLength: 14 }),
        async (initial, ops) => {
          const src = tempDir('phx-app-');
          const state = tempDir('phx-app-state-');
          const out = tempDir('phx-app-out-');
          const repo = await Repository.init(new MemoryBackend(), { insecureNoEncryption: true });
          const db = new StateDb(join(state.path, 'db.sqlite'));
          try {
            const file = join(src.path, 'f');
            writeFileSync(file, randomBytes(initial));
            const expected = new Map<number, string>();
            const first = await backup(repo, db, src.path, 'p');
            expected.set(first.commit!.seq, hash(readFileSync(file)));
            for (const op of ops) {
              apply(file, op);
              const r = await backup(repo, db, src.path, 'p');
              if (r.commit !== undefined) expected.set(r.commit.seq, hash(readFileSync(file)));
            }
            for (const [seq, h] of expected) {
              const dir = join(out.path, String(seq));
              await restore(repo, (await repo.loadState('p', seq)).state, dir);
              assert.equal(hash(readFileSync(join(dir, 'f'))), h, `commit ${seq}`);
            }
          } finally {
            db.close();
            src.cleanup();
            state.cleanup();
            out.cleanup();
          }
        },
      ),
      { numRuns: 12, verbose: 1 },
    );
  });
});
