import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import {
  applyChange,
  type ChunkRef,
  encodeRecord,
  type FileRecord,
  type JournalChange,
  subtreeIndexing,
  type TreeState,
} from '../src/repo/format.js';
import { StateDb, stampOf } from '../src/state/db.js';
import { ChunkFilter } from '../src/state/chunk-filter.js';
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

  it("a large tree's directory index gives what a look at every path gives, whatever the changes (property-based)", () => {
    // Any changes, also those no writer makes (a put below a file or below nothing, a move onto
    // its own subtree): a repository is untrusted. Each run starts scanning and switches to the
    // index after `after` subtree changes; states changed behind applyChange's back rebuild it.
    const saved = { ...subtreeIndexing };
    try {
      fc.assert(
        fc.property(fc.array(changeArb, { maxLength: 40 }), fc.nat(6), fc.nat(40), (changes, after, meddleAt) => {
          const scanned: TreeState = new Map();
          const indexed: TreeState = new Map();
          changes.forEach((c, i) => {
            Object.assign(subtreeIndexing, { minEntries: Infinity, afterScans: 0 });
            applyChange(scanned, c);
            Object.assign(subtreeIndexing, { minEntries: 0, afterScans: after });
            applyChange(indexed, c);
            if (i === meddleAt) {
              // Changed directly: the index notices (the size differs) and is built again.
              for (const st of [scanned, indexed]) st.set('b/zz', rec('b/zz', 'file', 1));
            }
            assert.deepEqual([...indexed].sort(), [...scanned].sort());
          });
        }),
        {
          numRuns: 500,
          // Found by an earlier run: a file moved away from above a path put below it (the
          // index forgot that path, and the directory's removal after left it in the tree).
          examples: [
            [
              [
                { op: 'put', ...rec('\xff/a', 'file', 0) },
                { op: 'put', ...rec('\xff', 'file', 0) },
                { op: 'move', from: '\xff', path: 'a' },
                { op: 'delete', path: '\xff' },
              ],
              0,
              0,
            ],
          ],
        },
      );
    } finally {
      Object.assign(subtreeIndexing, saved);
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

describe('the chunk filter in front of the chunk index', () => {
  const id = (n: number): string => createHash('sha256').update(String(n)).digest('hex');

  it('never forgets an id it was given, and says "maybe" for few it was not', () => {
    const f = new ChunkFilter(10_000);
    for (let i = 0; i < 10_000; i++) f.add(id(i));
    for (let i = 0; i < 10_000; i++) assert.ok(f.mayHave(id(i)), `id ${i}`);
    let maybe = 0;
    for (let i = 10_000; i < 30_000; i++) if (f.mayHave(id(i))) maybe++;
    // 10 bits and 7 probes per id: about 1% at this load (a check that it filters at all, not a bound).
    assert.ok(maybe < 20_000 * 0.05, `${maybe} of 20,000 ids never added looked present`);
    assert.equal(f.layers, 1);
  });

  it('grows past the size it was made for: no id forgotten, few false "maybe"s at eight times that size', () => {
    const f = new ChunkFilter(10_000);
    for (let i = 0; i < 80_000; i++) f.add(id(i));
    assert.equal(f.count, 80_000);
    assert.equal(f.layers, 3); // 10,000, then 20,000 and 60,000 more
    for (let i = 0; i < 80_000; i++) assert.ok(f.mayHave(id(i)), `id ${i}`);
    let maybe = 0;
    for (let i = 80_000; i < 180_000; i++) if (f.mayHave(id(i))) maybe++;
    // The layers' rates add up (about 1%, 0.3% and 0.1% each, at their nominal loads).
    assert.ok(maybe < 100_000 * 0.03, `${maybe} of 100,000 ids never added looked present`);
  });

  it('finds an id added while the filter is being filled from the index, a step per lookup', () => {
    const dir = tempDir('phx-state-filling-');
    const db = new StateDb(join(dir.path, 'db.sqlite'));
    try {
      const pack = 'ef'.repeat(32);
      const ref = (i: string): { id: string; pack: string; offset: number; length: number } => ({ id: i, pack, offset: 0, length: 1 });
      db.addChunks(Array.from({ length: 20_000 }, (_, i) => ref(id(i))));
      const absent = id(-2);
      // 1,249 lookups (a sixteenth of the index) go to SQLite; the next ones each read a step of ids (4,096) into the filter.
      for (let i = 0; i < 1252; i++) assert.equal(db.chunk(absent), undefined);
      // Sorts before every id read so far: only an insert that goes into the filling filter is found later.
      const early = '0'.repeat(64);
      db.addChunks([ref(early)]);
      for (let i = 0; i < 10; i++) assert.equal(db.chunk(absent), undefined); // the filter is whole by now
      assert.equal(db.chunk(early)?.id, early);
      for (let i = 0; i < 20_000; i += 997) assert.equal(db.chunk(id(i))?.id, id(i), `id ${i}`);
    } finally {
      db.close();
      dir.cleanup();
    }
  });

  it('answers every lookup as the index would, before and after it is built, across commits and a purge', () => {
    const dir = tempDir('phx-state-filter-');
    const db = new StateDb(join(dir.path, 'db.sqlite'));
    try {
      const pack = 'ef'.repeat(32);
      const ref = (n: number): { id: string; pack: string; offset: number; length: number } => ({ id: id(n), pack, offset: n, length: 1 });
      db.addChunks(Array.from({ length: 3000 }, (_, i) => ref(i)));
      // The first 1,024 lookups go to SQLite; the filter is built at the next (from every id in the index).
      for (let i = 0; i < 2000; i++) assert.equal(db.chunk(id(i * 2))?.offset, i * 2 < 3000 ? i * 2 : undefined, `lookup ${i}`);
      // Ids added after it was built, by each way into the index.
      db.applyCommit('s', 'repo', 1, [], [], [ref(5000)]);
      db.addChunks([ref(5001)]);
      db.relocate([{ from: pack, to: { ...ref(5002), pack: 'aa'.repeat(32) } }]);
      db.putRecords('s', [
        { path: 'f', type: 'file', mode: 0o100644, uid: 0, gid: 0, mtimeNs: 1n, size: 1, chunks: [{ ...ref(5003), size: 1 }] },
      ]);
      for (const n of [5000, 5001, 5002, 5003, 0, 2999]) assert.ok(db.chunk(id(n)) !== undefined, `id ${n}`);
      assert.equal(db.chunk(id(5004)), undefined);
      db.purgePacks('deletions/y', [pack]);
      assert.equal(db.chunk(id(0)), undefined, 'a purged chunk is gone, whatever the filter says');
      assert.equal(db.chunk(id(5002))?.pack, 'aa'.repeat(32));
    } finally {
      db.close();
      dir.cleanup();
    }
  });
});

describe('the chunk index: a log merged into the table', () => {
  const id = (n: number): string => createHash('sha256').update(`log ${n}`).digest('hex');
  const packA = 'a1'.repeat(32);
  const packB = 'b2'.repeat(32);
  const ref = (n: number, pack = packA): { id: string; pack: string; offset: number; length: number } => ({
    id: id(n),
    pack,
    offset: n,
    length: 1,
  });
  const rows = (file: string, table: string): number => {
    const raw = new Database(file, { readonly: true });
    try {
      return raw.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
    } finally {
      raw.close();
    }
  };

  it('finds every chunk before and after merges and a reopen, with the newest place of a moved one', () => {
    const dir = tempDir('phx-state-log-');
    const file = join(dir.path, 'db.sqlite');
    let db = new StateDb(file);
    try {
      // 65,536 rows fill the log (an empty table holds fewer than that): the commit that
      // reaches it merges them, and the rest stay in the log.
      for (let c = 0; c < 7; c++)
        db.applyCommit(
          's',
          'repo',
          c + 1,
          [],
          [],
          Array.from({ length: 10_000 }, (_, i) => ref(c * 10_000 + i)),
        );
      // (An id whose 30 key bits another in the log has goes to the table at once: a few here.)
      assert.ok(rows(file, 'chunks') >= 65_536 && rows(file, 'chunk_log') < 70_000 - 65_536 + 100, 'merged once');
      assert.equal(rows(file, 'chunks') + rows(file, 'chunk_log'), 70_000);
      // Moved after the merge (the table has the old place), and moved again while in the log.
      db.relocate([{ from: packA, to: ref(5, packB) }]);
      db.relocate([{ from: packA, to: ref(69_999, packB) }]);
      db.relocate([{ from: packB, to: { ...ref(69_999, packB), offset: 7 } }]);
      const check = (): void => {
        for (let i = 0; i < 70_000; i += 101) assert.equal(db.chunk(id(i))?.offset, i, `id ${i}`);
        assert.deepEqual(db.chunk(id(5)), ref(5, packB));
        assert.deepEqual(db.chunk(id(69_999)), { ...ref(69_999, packB), offset: 7 });
        assert.equal(db.chunk(id(70_000)), undefined);
      };
      check();
      db.close();
      db = new StateDb(file);
      check();
      // Merged again (the newest row of a moved chunk wins).
      db.applyCommit(
        's',
        'repo',
        8,
        [],
        [],
        Array.from({ length: 65_536 }, (_, i) => ref(100_000 + i)),
      );
      const raw = new Database(file, { readonly: true });
      try {
        // Ids and packs as 32 bytes each.
        const place = raw.prepare('SELECT hex(pack), offset FROM chunks WHERE id = ?').raw();
        assert.deepEqual(place.get(Buffer.from(id(5), 'hex')), [packB.toUpperCase(), 5]);
        assert.deepEqual(place.get(Buffer.from(id(69_999), 'hex')), [packB.toUpperCase(), 7]);
      } finally {
        raw.close();
      }
      check();
      // A purge merges the log first: nothing in the deleted pack is found after it, wherever it was.
      assert.equal(db.purgePacks('deletions/z', [packB]), 2);
      assert.equal(rows(file, 'chunk_log'), 0);
      assert.equal(db.chunk(id(5)), undefined);
      assert.equal(db.chunk(id(69_999)), undefined);
      assert.equal(db.chunk(id(6))?.offset, 6);
    } finally {
      db.close();
      dir.cleanup();
    }
  });

  /**
   * Puts chunks into a new state file with `put`, then runs `check`: at once, after a reopen,
   * and after a purge of `pack` (which merges the log first).
   */
  function checkThroughReopenAndMerge(
    prefix: string,
    put: (db: StateDb, file: string) => void,
    check: (db: StateDb) => void,
    pack: string,
  ): void {
    const dir = tempDir(prefix);
    const file = join(dir.path, 'db.sqlite');
    let db = new StateDb(file);
    try {
      put(db, file);
      check(db);
      db.close();
      db = new StateDb(file);
      check(db);
      db.purgePacks('deletions/w', [pack]);
      assert.equal(rows(file, 'chunk_log'), 0);
      check(db);
    } finally {
      db.close();
      dir.cleanup();
    }
  }

  it('keeps two ids whose bits the log is found by are the same apart, through a reopen and a merge', () => {
    // The same characters where the log's key is taken from (16-24), different elsewhere.
    const a = '1'.repeat(16) + 'c'.repeat(48);
    const b = '2'.repeat(16) + 'c'.repeat(48);
    checkThroughReopenAndMerge(
      'phx-state-log-same-',
      (db, file) => {
        db.addChunks([{ id: a, pack: packA, offset: 1, length: 1 }]);
        db.addChunks([{ id: b, pack: packB, offset: 2, length: 1 }]);
        db.addChunks([{ id: a, pack: packB, offset: 3, length: 1 }]); // moved
        assert.equal(rows(file, 'chunks'), 1, 'the second id went to the table');
      },
      (db) => {
        assert.deepEqual(db.chunk(a), { id: a, pack: packB, offset: 3, length: 1 });
        assert.deepEqual(db.chunk(b), { id: b, pack: packB, offset: 2, length: 1 });
      },
      packA, // where `a` was before it moved
    );
  });

  it('puts many chunks in one call as it puts them one at a time: ids with the same key bits, an id twice', () => {
    const a = '3'.repeat(16) + 'd'.repeat(48);
    const b = '4'.repeat(16) + 'd'.repeat(48);
    // Batches of 64 rows to a statement: both ids and the move fall inside the first ones.
    const refs = [
      ...Array.from({ length: 40 }, (_, i) => ref(i)),
      { id: a, pack: packA, offset: 1, length: 1 },
      ...Array.from({ length: 10 }, (_, i) => ref(100 + i)),
      { id: b, pack: packB, offset: 2, length: 1 },
      ...Array.from({ length: 50 }, (_, i) => ref(200 + i)),
      { id: a, pack: packB, offset: 3, length: 1 }, // moved, in the same call
      ...Array.from({ length: 300 }, (_, i) => ref(300 + i)),
    ];
    checkThroughReopenAndMerge(
      'phx-state-log-many-',
      (db, file) => {
        db.addChunks(refs);
        assert.equal(rows(file, 'chunks') + rows(file, 'chunk_log'), refs.length);
      },
      (db) => {
        assert.deepEqual(db.chunk(a), { id: a, pack: packB, offset: 3, length: 1 });
        assert.deepEqual(db.chunk(b), { id: b, pack: packB, offset: 2, length: 1 });
        for (const r of refs) if (r.id !== a && r.id !== b) assert.deepEqual(db.chunk(r.id), r);
      },
      'c3'.repeat(32),
    );
  });

  it('purges the rows another process appended to the log, which this one does not know', () => {
    const dir = tempDir('phx-state-log-two-');
    const file = join(dir.path, 'db.sqlite');
    const purger = new StateDb(file);
    const writer = new StateDb(file);
    try {
      writer.addChunks([ref(1, packB), ref(2)]);
      assert.equal(purger.purgePacks('deletions/q', [packB]), 1);
      assert.equal(writer.chunk(id(1)), undefined, 'a chunk of the deleted pack, found through the log');
      assert.equal(writer.chunk(id(2))?.offset, 2);
    } finally {
      writer.close();
      purger.close();
      dir.cleanup();
    }
  });

  it('drops a log that a deletion plan applied by a build without it may have left naming deleted packs', () => {
    const dir = tempDir('phx-state-log-plan-');
    const file = join(dir.path, 'db.sqlite');
    let db = new StateDb(file);
    try {
      db.addChunks([ref(1), ref(2, packB)]);
      db.close();
      // What an older build does when it applies a plan: purges `chunks`, records the plan.
      const raw = new Database(file);
      raw.exec(`DELETE FROM chunks WHERE pack = x'${packB}'; INSERT INTO plans (key) VALUES ('deletions/old')`);
      raw.close();
      db = new StateDb(file);
      assert.equal(db.chunk(id(2)), undefined, 'a chunk of a pack deleted by the older build');
      assert.equal(db.chunk(id(1)), undefined, 'the rest of the log is dropped too: stored again if seen, never lost');
      db.addChunks([ref(3)]);
      db.close();
      db = new StateDb(file);
      assert.equal(db.chunk(id(3))?.offset, 3, 'a log in step with the plans is kept');
    } finally {
      db.close();
      dir.cleanup();
    }
  });
});

describe('the chunk index: ids of any shape', () => {
  it('keeps ids and packs that are not 64 lowercase hex digits as text, apart from the binary ones', () => {
    const dir = tempDir('phx-state-ids-');
    const db = new StateDb(join(dir.path, 'db.sqlite'));
    try {
      const hex = 'ab'.repeat(32);
      const refs = [
        { id: hex, pack: 'cd'.repeat(32), offset: 1, length: 2 },
        { id: hex.toUpperCase(), pack: 'a pack', offset: 3, length: 4 },
        { id: 'short', pack: 'EF'.repeat(32), offset: 5, length: 6 },
      ];
      db.addChunks(refs);
      for (const r of refs) assert.deepEqual(db.chunk(r.id), r);
      assert.equal(db.chunk('ab'), undefined);
      assert.equal(db.purgePacks('deletions/p', ['a pack', 'EF'.repeat(32)]), 2);
      assert.deepEqual(db.chunk(hex), refs[0]);
      assert.equal(db.chunk(hex.toUpperCase()), undefined);
      assert.equal(db.chunk('short'), undefined);
    } finally {
      db.close();
      dir.cleanup();
    }
  });
});

describe('KnownFiles.childStamps', () => {
  it("gives each directory's children with their stamps, as a lookup per child would (property-based)", () => {
    const dir = tempDir('phx-state-children-');
    const db = new StateDb(join(dir.path, 'db.sqlite'));
    try {
      let run = 0;
      fc.assert(
        fc.property(
          fc.uniqueArray(pathArb, { maxLength: 25 }),
          fc.array(fc.boolean(), { minLength: 25, maxLength: 25 }),
          (paths, vouched) => {
            const source = `s${run++}`;
            // Every parent is a directory of the tree, as in a real cache.
            const all = new Set<string>();
            for (const p of paths) for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) all.add(p.slice(0, i));
            for (const p of paths) all.add(p);
            const dirs = new Set([...all].map((p) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '')));
            const puts = [...all].map((p, i) => ({
              rec: rec(p, dirs.has(p) ? 'dir' : 'file', i),
              ino: String(i),
              ctimeNs: vouched[i % 25] === true ? '7' : '',
            }));
            db.applyCommit(source, 'repo', 1, puts, [], []);
            const known = db.known(source);
            for (const d of dirs) {
              const want = new Map(
                [...all]
                  .filter((p) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '') === d)
                  .map((p) => [d === '' ? p : p.slice(d.length + 1), known.stamp(p)] as const),
              );
              assert.deepEqual(known.childStamps(d), want, `children of ${JSON.stringify(d)}`);
            }
          },
        ),
        { numRuns: 200 },
      );
    } finally {
      db.close();
      dir.cleanup();
    }
  });

  it('reads past a page of rows, and past subdirectories whose subtrees span pages', () => {
    // Rows are read in pages of 16, doubling up to 1,024 (and back to 16 after a subtree):
    // 3,000 files here, with two subdirectories of 1,500 entries among them (one right after
    // the sixth page ends, at row 1,008, one inside a page), at the root and below it.
    const dir = tempDir('phx-state-pages-');
    const db = new StateDb(join(dir.path, 'db.sqlite'));
    try {
      for (const top of ['', 'top']) {
        const at = (n: string): string => (top === '' ? n : `${top}/${n}`);
        const puts = top === '' ? [] : [{ rec: rec(top, 'dir', 0), ino: '1', ctimeNs: '7' }];
        const want = new Map<string, string | undefined>();
        for (let i = 0; i < 3000; i++) {
          const name = `n${String(i).padStart(4, '0')}`;
          puts.push({ rec: rec(at(name), 'file', i), ino: String(i), ctimeNs: i % 7 === 0 ? '' : '7' });
          if (i === 1007 || i === 2000) {
            const sub = `${name}d`;
            puts.push({ rec: rec(at(sub), 'dir', i), ino: String(i), ctimeNs: '7' });
            for (let j = 0; j < 1500; j++) puts.push({ rec: rec(at(`${sub}/x${j}`), 'file', j), ino: String(j), ctimeNs: '7' });
          }
        }
        db.applyCommit(top || 'root', 'repo', 1, puts, [], []);
        const known = db.known(top || 'root');
        for (const p of puts)
          if (p.rec.path.split('/').length === (top === '' ? 1 : 2))
            want.set(p.rec.path.slice(top === '' ? 0 : top.length + 1), known.stamp(p.rec.path));
        const got = known.childStamps(top);
        assert.equal(got.size, 3002);
        assert.deepEqual(got, want);
      }
    } finally {
      db.close();
      dir.cleanup();
    }
  });
});

describe('a cache row (compact, version 2)', () => {
  // Hex ids and small numbers take the binary form; anything else (a repository is untrusted) the JSON one.
  const hex = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));
  const id = fc.oneof(hex, fc.string({ maxLength: 70 }));
  const num = fc.oneof(fc.nat(5000), fc.constantFrom(0xffff_fffe, 0xffff_ffff, 2 ** 33, 1.5));
  const chunkArb = fc
    .record({ id, pack: id, offset: num, length: num, size: fc.option(num, { nil: undefined }) })
    .map(({ size, ...c }): ChunkRef => (size === undefined ? { ...c } : { ...c, size }));
  const rawName = fc.array(fc.integer({ min: 0x20, max: 0xff }), { minLength: 1, maxLength: 6 }).map((b) => String.fromCharCode(...b));
  const recArb = fc
    .record({
      path: rawName,
      type: fc.constantFrom('file', 'dir', 'symlink', 'other' as const),
      mode: fc.nat(0o177777),
      uid: fc.nat(2 ** 32 - 1),
      gid: fc.nat(2 ** 32 - 1),
      mtimeNs: fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n),
      size: fc.nat(),
      target: fc.option(fc.oneof(rawName, fc.constant('a:b::c')), { nil: undefined }),
      fine: fc.option(fc.constant(true), { nil: undefined }),
      chunks: fc.array(chunkArb, { maxLength: 3 }),
    })
    .map((r) => {
      const out: FileRecord = {
        path: r.path.replace(/\//g, '_'),
        type: r.type,
        mode: r.mode,
        uid: r.uid,
        gid: r.gid,
        mtimeNs: r.mtimeNs,
        size: r.size,
        chunks: r.chunks,
      };
      if (r.target !== undefined) out.target = r.target;
      if (r.fine !== undefined) out.fine = true;
      return out;
    });

  it('gives back the record, inode, ctime and checkpoint JSON it was given (property-based)', () => {
    const dir = tempDir('phx-state-row-');
    const db = new StateDb(join(dir.path, 'db.sqlite'));
    try {
      let run = 0;
      fc.assert(
        fc.property(recArb, fc.constantFrom('', '1700000000123456789'), (r, ctimeNs) => {
          const source = `s${run++}`;
          db.applyCommit(source, 'repo', 1, [{ rec: r, ino: ctimeNs === '' ? '' : '42', ctimeNs }], [], []);
          const got = db.known(source).get(r.path);
          assert.deepEqual(got?.rec, r);
          assert.equal(got?.ino, ctimeNs === '' ? '' : '42');
          assert.equal(got?.ctimeNs, ctimeNs);
          assert.equal(db.known(source).stamp(r.path), ctimeNs === '' ? undefined : stampOf({ rec: r, ino: '42', ctimeNs }));
          assert.deepEqual([...db.snapshot(source)], [{ path: r.path, json: JSON.stringify(encodeRecord(r)) }]);
        }),
        { numRuns: 300 },
      );
    } finally {
      db.close();
      dir.cleanup();
    }
  });

  it('a cache of version 1 (records as JSON) is dropped, to be rebuilt; the queue is kept', () => {
    const dir = tempDir('phx-state-v1-');
    const path = join(dir.path, 'db.sqlite');
    try {
      let db = new StateDb(path);
      db.applyCommit('s', 'repo', 3, [{ rec: rec('a', 'file', 1), ino: '1', ctimeNs: '2' }], [], []);
      db.enqueue([{ id: db.nextQueueId(), source: 's', op: 'path', path: 'a', timeMs: 1, open: false }]);
      db.close();
      const old = new Database(path);
      old.exec(
        'DROP TABLE files; CREATE TABLE files (source TEXT NOT NULL, path BLOB NOT NULL, rec TEXT NOT NULL, ino TEXT NOT NULL, ctime TEXT NOT NULL, stamp TEXT NOT NULL, PRIMARY KEY (source, path));',
      );
      old.exec(`INSERT INTO files VALUES ('s', x'61', '{"p":"YQ==","t":"file","m":33188,"u":1,"g":2,"mt":"1000","s":1}', '1', '2', 'x')`);
      old.pragma('user_version = 1');
      old.close();
      db = new StateDb(path);
      assert.equal(db.seq('s', 'repo'), undefined, 'out of sync: rebuilt from the repository');
      assert.equal(db.count('s'), 0);
      assert.deepEqual(
        db.queued('s').map((q) => q.path),
        ['a'],
      );
      db.applyCommit('s', 'repo', 4, [{ rec: rec('b', 'file', 1), ino: '1', ctimeNs: '2' }], [], []);
      assert.deepEqual(db.known('s').get('b')?.rec, rec('b', 'file', 1));
      db.close();
    } finally {
      dir.cleanup();
    }
  });
});
