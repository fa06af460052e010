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
  it('moves a directory with its subtree, replacing the destination, and reports the path pairs', () => {
    const t = build('a/', 'a/b/', 'a/b/f', 'x/', 'x/old');
    const pairs = t.move('a', 'x');
    assert.deepEqual(new Map(pairs), new Map([['a', 'x'], ['a/b', 'x/b'], ['a/b/f', 'x/b/f']]));
    assert.deepEqual([...t.entries()].map(([p]) => p).sort(), ['x', 'x/b', 'x/b/f']);
    assert.deepEqual([...t.childNames('')], ['x']);
  });

  it('deletes subtrees and never confuses a/b with a/bc', () => {
    const t = build('a/', 'a/b/', 'a/b/f', 'a/bc');
    assert.deepEqual(t.delete('a/b').sort(), ['a/b', 'a/b/f']);
    assert.deepEqual([...t.entries()].map(([p]) => p).sort(), ['a', 'a/bc']);
    assert.equal(isWithin('a/bc', 'a/b'), false);
    assert.equal(isWithin('a/b/c', 'a/b'), true);
  });

  it('a directory replaced by a file loses its subtree', () => {
    const t = build('d/', 'd/f');
    t.set('d', e('file'));
    assert.deepEqual([...t.entries()].map(([p]) => p), ['d']);
  });
});
