import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Entry, Kind } from '../src/model/entry.js';
import { isWithin } from '../src/model/path.js';
import { Tree } from '../src/model/tree.js';

const e = (kind: Kind): Entry => ({ kind, mode: 0, uid: 0, gid: 0, nlink: 1, size: 0, ino: 1n, dev: 1, mtimeNs: 0n, ctimeNs: 0n });

/** The names directly inside `dir`, as forEachChild gives them. */
function childNames(t: Tree, dir: string): string[] {
  const out: string[] = [];
  t.forEachChild(dir, (name) => out.push(name));
  return out;
}

function build(...paths: string[]): Tree {
  const t = new Tree();
  for (const p of paths) t.set(p.replace(/\/$/, ''), e(p.endsWith('/') ? 'dir' : 'file'));
  return t;
}

describe('Tree', () => {
  it('moves a directory with its subtree, replacing the destination, and reports the directories moved', () => {
    const t = build('a/', 'a/b/', 'a/b/f', 'x/', 'x/old');
    const pairs = t.move('a', 'x');
    assert.deepEqual(
      new Map(pairs),
      new Map([
        ['a', 'x'],
        ['a/b', 'x/b'],
      ]),
    );
    assert.equal(t.size, 3);
    assert.equal(t.dirCount, 2);
    assert.deepEqual([...t.entries()].map(([p]) => p).sort(), ['x', 'x/b', 'x/b/f']);
    assert.deepEqual(childNames(t, ''), ['x']);
  });

  it('deletes subtrees and never confuses a/b with a/bc', () => {
    const t = build('a/', 'a/b/', 'a/b/f', 'a/bc');
    assert.deepEqual(t.delete('a/b'), ['a/b']);
    assert.equal(t.size, 2);
    assert.deepEqual([...t.entries()].map(([p]) => p).sort(), ['a', 'a/bc']);
    assert.equal(isWithin('a/bc', 'a/b'), false);
    assert.equal(isWithin('a/b/c', 'a/b'), true);
  });

  it('a directory replaced by a file loses its subtree', () => {
    const t = build('d/', 'd/f');
    t.set('d', e('file'));
    assert.deepEqual(
      [...t.entries()].map(([p]) => p),
      ['d'],
    );
    assert.equal(t.dirCount, 0);
  });

  it('gives back every field of a packed file exactly, and keeps what does not pack as it is', () => {
    const t = new Tree();
    const f: Entry = {
      kind: 'file',
      mode: 0o100644,
      uid: 4_000_000_000,
      gid: 7,
      nlink: 3,
      size: 2 ** 40 + 5,
      ino: 2n ** 50n + 3n,
      dev: 2049,
      mtimeNs: -1_500_000_000_123_456_789n,
      ctimeNs: 1_700_000_000_999_999_999n,
    };
    t.set('f', f);
    assert.deepEqual(t.get('f'), f);
    const big: Entry = { ...f, ino: 2n ** 63n + 1n };
    t.set('g', big);
    assert.deepEqual(t.get('g'), big);
    const link: Entry = { ...e('symlink'), target: 'x\xff' };
    t.set('l', link);
    assert.deepEqual(t.get('l'), link);
    assert.deepEqual([...t.linked()].sort(), ['f', 'g']);
    // A copy: changing it changes nothing until set.
    (t.get('f') as Entry).size = 1;
    assert.equal(t.get('f')?.size, f.size);
    t.move('f', 'h');
    assert.deepEqual([...t.linked()].sort(), ['g', 'h']);
    t.delete('g');
    t.set('h', { ...f, nlink: 1 });
    assert.deepEqual([...t.linked()], []);
  });

  for (const [label, opts] of [
    ['in memory', {}],
    ['spilling all but one directory to disk', { hotFiles: 2, keepDirs: 1 }],
  ] as const) {
    it(`keeps entries, sizes and subtrees right through random sets, deletes and moves (against a plain map; ${label})`, () => {
      const names = ['a', 'b', 'c', 'd'];
      let seed = 7;
      // 32-bit arithmetic: a product past 2^53 loses its low bits and the sequence collapses.
      const rnd = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) % n;
      const t = new Tree(opts);
      const m = new Map<string, Kind>();
      const sizes = new Map<string, number>();
      let spilled = 0;
      const path = (): string => Array.from({ length: 1 + rnd(3) }, () => names[rnd(names.length)]).join('/');
      const parentOk = (p: string): boolean => !p.includes('/') || m.get(p.slice(0, p.lastIndexOf('/'))) === 'dir';
      for (let i = 0; i < 5000; i++) {
        const p = path();
        // Mostly sets, so that the tree grows: a delete near the root takes a lot with it.
        const op = [0, 0, 0, 0, 0, 0, 0, 1, 2, 2][rnd(10)];
        if (op === 0 && parentOk(p)) {
          // A directory is seldom replaced by a file: that takes its subtree with it.
          const k: Kind = (m.get(p) === 'dir' && rnd(20) > 0) || rnd(2) === 0 ? 'dir' : 'file';
          t.set(p, { ...e(k), size: i });
          if (m.get(p) === 'dir' && k !== 'dir') for (const q of [...m.keys()]) if (q !== p && isWithin(q, p)) m.delete(q);
          m.set(p, k);
          sizes.set(p, i);
        } else if (op === 1) {
          t.delete(p);
          for (const q of [...m.keys()]) if (isWithin(q, p)) m.delete(q);
        } else {
          const to = path();
          if (!m.has(p) || to === p || isWithin(to, p) || isWithin(p, to) || !parentOk(to)) continue;
          t.move(p, to);
          for (const q of [...m.keys()]) if (isWithin(q, to)) m.delete(q);
          for (const [q, k] of [...m]) {
            if (!isWithin(q, p)) continue;
            m.delete(q);
            m.set(to + q.slice(p.length), k);
            sizes.set(to + q.slice(p.length), sizes.get(q) as number);
          }
        }
        assert.equal(t.size, m.size, `size after step ${i}`);
        if (t.hotFiles < [...m.values()].filter((k) => k !== 'dir').length) spilled++;
        assert.equal(t.dirCount, [...m.values()].filter((k) => k === 'dir').length, `directories after step ${i}`);
        assert.deepEqual(
          [...t.entries()].map(([q, x]) => `${q}:${x.kind}:${x.kind === 'dir' ? '' : x.size}`).sort(),
          [...m].map(([q, k]) => `${q}:${k}:${k === 'dir' ? '' : sizes.get(q)}`).sort(),
          `step ${i}`,
        );
      }
      assert.equal(spilled > 1000, 'hotFiles' in opts, `steps with files on disk: ${spilled}`);
      t.close();
    });
  }

  it('keeps the files of directories not used lately on disk, and gives every field back exactly', () => {
    const t = new Tree({ hotFiles: 100, keepDirs: 2 });
    const f = (i: number): Entry => ({
      kind: 'file',
      mode: 0o100644,
      uid: 1000,
      gid: 1000,
      nlink: 1,
      size: i,
      ino: BigInt(i) + 2n ** 40n,
      dev: 2049,
      mtimeNs: 1_700_000_000_000_000_000n + BigInt(i),
      ctimeNs: -1n,
    });
    const odd: Entry = { ...e('symlink'), target: 'x\xff\x00y', ino: 2n ** 63n + 5n, mtimeNs: -5n };
    for (let d = 0; d < 50; d++) {
      t.set(`d${d}`, e('dir'));
      for (let i = 0; i < 100; i++) t.set(`d${d}/f\xfe${i}`, f(d * 100 + i));
      t.set(`d${d}/link`, odd);
    }
    assert.equal(t.size, 50 * 102);
    assert.ok(t.hotFiles <= 2 * 101 + 100, `files in memory: ${t.hotFiles}`);
    for (let d = 0; d < 50; d++) {
      assert.deepEqual(t.get(`d${d}/f\xfe7`), f(d * 100 + 7));
      assert.deepEqual(t.get(`d${d}/link`), odd);
    }
    // A directory moved while its files are on disk keeps them; one dropped forgets them.
    t.set('e', e('dir'));
    t.move('d4', 'e/moved');
    assert.deepEqual(t.get('e/moved/f\xfe1'), f(401));
    assert.equal(childNames(t, 'e/moved').length, 101);
    t.delete('d5');
    assert.equal(t.get('d5/f\xfe1'), undefined);
    assert.equal(t.size, 50 * 102 + 1 - 102);
    t.close();
  });
});
