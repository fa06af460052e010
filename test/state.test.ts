import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { applyChange, type FileRecord, type JournalChange, type TreeState } from '../src/repo/format.js';
import { StateDb } from '../src/state/db.js';
import { tempDir } from './helpers.js';

// Paths over a small alphabet, so that moves and removals hit each other's subtrees; one
// name is not valid UTF-8, and 'a0' sorts right after every 'a/…' (the range bound).
const names = ['a', 'b', 'a0', '\xff'];
const pathArb = fc.array(fc.constantFrom(...names), { minLength: 1, maxLength: 3 }).map((p) => p.join('/'));
const rec = (path: string, type: FileRecord['type'], size: number): FileRecord => ({
  path,
  type,
  mode: type === 'dir' ? 0o40755 : 0o100644,
  uid: 1,
  gid: 2,
  mtimeNs: BigInt(size) * 1000n,
  size,
  chunks: type === 'file' ? [{ id: 'ab'.repeat(32), pack: 'cd'.repeat(32), offset: size, length: 10, size: 3 }] : [],
});
const changeArb: fc.Arbitrary<JournalChange> = fc.oneof(
  fc
    .record({ path: pathArb, type: fc.constantFrom('file', 'dir' as const), size: fc.nat(99) })
    .map(({ path, type, size }): JournalChange => ({ op: 'put', ...rec(path, type, size) })),
  pathArb.map((path): JournalChange => ({ op: 'delete', path })),
  fc.record({ from: pathArb, path: pathArb }).map(({ from, path }): JournalChange => ({ op: 'move', from, path })),
);

describe('state cache', () => {
  it('applies journal changes in SQL exactly as the format defines them (property-based)', () => {
    const dir = tempDir();
    const db = new StateDb(join(dir.path, 'state.db'));
    try {
      fc.assert(
        fc.property(fc.array(changeArb, { maxLength: 30 }), (changes) => {
          // Only changes a writer can make: a put's parent exists (as a directory), a move's target's parent too.
          const state: TreeState = new Map();
          const valid: JournalChange[] = [];
          for (const c of changes) {
            const parent = c.path.includes('/') ? c.path.slice(0, c.path.lastIndexOf('/')) : '';
            if (c.op !== 'delete' && parent !== '' && state.get(parent)?.type !== 'dir') continue;
            if (c.op === 'move' && (!state.has(c.from) || c.path === c.from || c.path.startsWith(`${c.from}/`))) continue;
            applyChange(state, c);
            valid.push(c);
          }
          db.clearSource('s');
          db.applyChanges('s', valid);
          const got = [...db.files('s')].map(([p, f]) => [p, f.rec] as const).sort(([a], [b]) => (a < b ? -1 : 1));
          const want = [...state].sort(([a], [b]) => (a < b ? -1 : 1));
          assert.deepEqual(got, want);
          // The snapshot (what checkpoints are written from) lists the same, in byte order.
          assert.deepEqual(
            [...db.snapshot('s')].map((r) => r.path),
            want.map(([p]) => p),
          );
        }),
        { numRuns: 300 },
      );
    } finally {
      db.close();
      dir.cleanup();
    }
  });

  it('a snapshot does not see commits made after it was taken', () => {
    const dir = tempDir();
    const db = new StateDb(join(dir.path, 'state.db'));
    try {
      db.applyChanges('s', [{ op: 'put', ...rec('a', 'file', 1) }]);
      const snap = db.snapshot('s');
      db.applyChanges('s', [
        { op: 'put', ...rec('b', 'file', 2) },
        { op: 'delete', path: 'a' },
      ]);
      assert.deepEqual(
        [...snap].map((r) => r.path),
        ['a'],
      );
      assert.deepEqual(
        [...db.snapshot('s')].map((r) => r.path),
        ['b'],
      );
    } finally {
      db.close();
      dir.cleanup();
    }
  });
});

describe('StateDb.relocate and purgePacks', () => {
  it('point the cached records and the chunk index at where repacking moved chunks, and forget deleted packs', () => {
    const dir = tempDir('phx-state-reloc-');
    const db = new StateDb(join(dir.path, 'db.sqlite'));
    try {
      const h = (n: number): string => n.toString(16).padStart(64, '0');
      const chunks = [
        { id: h(1), pack: h(100), offset: 0, length: 9, size: 5 },
        { id: h(2), pack: h(200), offset: 9, length: 9, size: 5 },
        { id: h(3), pack: h(100), offset: 18, length: 9, size: 5 },
      ];
      db.putRecords('s', [{ path: 'a', type: 'file', mode: 0o100644, uid: 0, gid: 0, mtimeNs: 1n, size: 15, chunks }]);
      db.addChunks(chunks);
      // Chunk 1 moved out of pack 100; chunk 3 (same pack) did not: it stays where it was.
      assert.equal(db.relocate([{ from: h(100), to: { id: h(1), pack: h(300), offset: 7, length: 9 } }]), 1);
      assert.deepEqual(db.known('s').get('a')?.rec.chunks, [
        { id: h(1), pack: h(300), offset: 7, length: 9, size: 5 },
        chunks[1],
        chunks[2],
      ]);
      assert.equal(db.chunk(h(1))?.pack, h(300));
      assert.equal(db.purgePacks('deletions/x', [h(100), h(200)]), 2, 'the chunks left in the deleted packs');
      assert.equal(db.chunk(h(2)), undefined);
      assert.equal(db.chunk(h(1))?.pack, h(300));
      assert.ok(db.plansApplied().has('deletions/x'));
    } finally {
      db.close();
      dir.cleanup();
    }
  });
});
