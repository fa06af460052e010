import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Entry, Kind } from '../src/model/entry.js';
import { isWithin } from '../src/model/path.js';
import { Tree } from '../src/model/tree.js';

const e = (kind: Kind): Entry => ({ kind, mode: 0, uid: 0, gid: 0, nlink: 1, size: 0, ino: 1n, dev: 1, mtimeNs: 0n, ctimeNs: 0n });

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
    assert.deepEqual([...t.childNames('')], ['x']);
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

  it('keeps entries, sizes and subtrees right through random sets, deletes and moves (against a plain map)', () => {
    const names = ['a', 'b', 'c'];
    let seed = 7;
    const rnd = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    const t = new Tree();
    const m = new Map<string, Kind>();
    const path = (): string => Array.from({ length: 1 + rnd(3) }, () => names[rnd(3)]).join('/');
    const parentOk = (p: string): boolean => !p.includes('/') || m.get(p.slice(0, p.lastIndexOf('/'))) === 'dir';
    for (let i = 0; i < 5000; i++) {
      const p = path();
      const op = rnd(3);
      if (op === 0 && parentOk(p)) {
        const k: Kind = rnd(2) === 0 ? 'dir' : 'file';
        t.set(p, { ...e(k), size: i });
        if (m.get(p) === 'dir' && k !== 'dir') for (const q of [...m.keys()]) if (q !== p && isWithin(q, p)) m.delete(q);
        m.set(p, k);
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
        }
      }
      assert.equal(t.size, m.size, `size after step ${i}`);
      assert.equal(t.dirCount, [...m.values()].filter((k) => k === 'dir').length, `directories after step ${i}`);
      assert.deepEqual([...t.entries()].map(([q, x]) => `${q}:${x.kind}`).sort(), [...m].map(([q, k]) => `${q}:${k}`).sort(), `step ${i}`);
    }
  });
});
