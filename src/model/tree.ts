import type { Entry } from './entry.js';
import { baseName, isWithin, joinRaw, parentOf, type RawPath } from './path.js';

/**
 * A directory tree as a flat map of relative raw paths to entries, with a child index so
 * that a subtree can be listed, moved or dropped without scanning the whole map.
 * The root ('') is not stored as an entry.
 */
export class Tree {
  readonly #entries = new Map<RawPath, Entry>();
  readonly #children = new Map<RawPath, Set<RawPath>>([['', new Set()]]);

  get size(): number {
    return this.#entries.size;
  }

  get(p: RawPath): Entry | undefined {
    return this.#entries.get(p);
  }

  has(p: RawPath): boolean {
    return this.#entries.has(p);
  }

  /** Names directly inside directory `dir` ('' for the root). */
  childNames(dir: RawPath): ReadonlySet<RawPath> {
    return this.#children.get(dir) ?? new Set();
  }

  entries(): IterableIterator<[RawPath, Entry]> {
    return this.#entries.entries();
  }

  /** Sets `p` (its parent must exist in the tree). A directory replaced by a non-directory loses its subtree. */
  set(p: RawPath, e: Entry): void {
    const old = this.#entries.get(p);
    if (old?.kind === 'dir' && e.kind !== 'dir') this.#dropChildren(p);
    this.#entries.set(p, e);
    if (e.kind === 'dir' && !this.#children.has(p)) this.#children.set(p, new Set());
    const parent = parentOf(p);
    let siblings = this.#children.get(parent);
    if (siblings === undefined) {
      siblings = new Set();
      this.#children.set(parent, siblings);
    }
    siblings.add(baseName(p));
  }

  /** Removes `p` and everything below it; returns the removed paths, deepest last-first. */
  delete(p: RawPath): RawPath[] {
    if (!this.#entries.has(p)) return [];
    const removed = this.subtree(p);
    for (const q of removed) {
      this.#entries.delete(q);
      this.#children.delete(q);
    }
    this.#children.get(parentOf(p))?.delete(baseName(p));
    return removed;
  }

  /** `p` and every path below it, parents before children. */
  subtree(p: RawPath): RawPath[] {
    const out: RawPath[] = [];
    const stack = [p];
    while (stack.length > 0) {
      const q = stack.pop() as RawPath;
      if (q !== '') out.push(q);
      const names = this.#children.get(q);
      if (names) for (const n of names) stack.push(joinRaw(q, n));
    }
    return out;
  }

  /**
   * Moves `from` (and its subtree) to `to`, replacing whatever was at `to`. Returns the
   * pairs of old and new paths, so that callers can rewrite their own maps (wd → path).
   */
  move(from: RawPath, to: RawPath): Array<[RawPath, RawPath]> {
    if (from === to || !this.#entries.has(from) || isWithin(to, from)) return [];
    this.delete(to);
    const moved = this.subtree(from).map((q): [RawPath, RawPath] => [q, to + q.slice(from.length)]);
    const saved = moved.map(([q, nq]) => [nq, this.#entries.get(q) as Entry] as const);
    this.delete(from);
    for (const [nq, e] of saved) this.set(nq, e);
    return moved;
  }

  #dropChildren(dir: RawPath): void {
    for (const n of this.childNames(dir)) this.delete(joinRaw(dir, n));
    this.#children.delete(dir);
  }
}
