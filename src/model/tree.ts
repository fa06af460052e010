import type { Entry } from './entry.js';
import { baseName, isWithin, joinRaw, parentOf, type RawPath } from './path.js';

/** A directory of the tree: its own entry (undefined for a parent not set itself) and its children by name. */
interface DirNode {
  entry: Entry | undefined;
  children: Map<RawPath, Slot>;
}

/** A child: a plain file packed in the slab (its index), any other non-directory as is, or a directory. */
type Slot = number | Entry | DirNode;

const isDir = (s: Slot | undefined): s is DirNode => typeof s === 'object' && 'children' in s;

/**
 * Plain files, packed: 60 bytes each in typed arrays instead of an object with three BigInts
 * (about 300 bytes), so that a watcher's tree of two million files fits in a few hundred MiB.
 * Files whose numbers do not fit (an inode or size past 2^53, a device or id past 2^32) stay
 * objects.
 */
class FileSlab {
  #f64 = new Float64Array(4 * 1024); // size, ino, mtime s, ctime s
  #u32 = new Uint32Array(5 * 1024); // mode, uid, gid, nlink, dev
  #i32 = new Int32Array(2 * 1024); // mtime ns, ctime ns (signed: times before 1970, and "stale" -1)
  #next = 0;
  readonly #free: number[] = [];

  static fits(e: Entry): boolean {
    const u32 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
    return (
      e.kind === 'file' &&
      e.target === undefined &&
      Number.isSafeInteger(e.size) &&
      e.size >= 0 &&
      e.ino >= 0n &&
      e.ino <= BigInt(Number.MAX_SAFE_INTEGER) &&
      u32(e.mode) &&
      u32(e.uid) &&
      u32(e.gid) &&
      u32(e.nlink) &&
      u32(e.dev)
    );
  }

  alloc(): number {
    const i = this.#free.pop() ?? this.#next++;
    if (i * 4 >= this.#f64.length) this.#grow();
    return i;
  }

  release(i: number): void {
    this.#free.push(i);
  }

  write(i: number, e: Entry): void {
    const f = i * 4;
    this.#f64[f] = e.size;
    this.#f64[f + 1] = Number(e.ino);
    this.#f64[f + 2] = Number(e.mtimeNs / 1_000_000_000n);
    this.#f64[f + 3] = Number(e.ctimeNs / 1_000_000_000n);
    const u = i * 5;
    this.#u32[u] = e.mode;
    this.#u32[u + 1] = e.uid;
    this.#u32[u + 2] = e.gid;
    this.#u32[u + 3] = e.nlink;
    this.#u32[u + 4] = e.dev;
    this.#i32[i * 2] = Number(e.mtimeNs % 1_000_000_000n);
    this.#i32[i * 2 + 1] = Number(e.ctimeNs % 1_000_000_000n);
  }

  read(i: number): Entry {
    const f = i * 4;
    const u = i * 5;
    const ns = (s: number, n: number): bigint => BigInt(s) * 1_000_000_000n + BigInt(n);
    return {
      kind: 'file',
      mode: this.#u32[u] as number,
      uid: this.#u32[u + 1] as number,
      gid: this.#u32[u + 2] as number,
      nlink: this.#u32[u + 3] as number,
      dev: this.#u32[u + 4] as number,
      size: this.#f64[f] as number,
      ino: BigInt(this.#f64[f + 1] as number),
      mtimeNs: ns(this.#f64[f + 2] as number, this.#i32[i * 2] as number),
      ctimeNs: ns(this.#f64[f + 3] as number, this.#i32[i * 2 + 1] as number),
    };
  }

  #grow(): void {
    const grow = <T extends Float64Array | Uint32Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(a.length * 2);
      b.set(a);
      return b;
    };
    this.#f64 = grow(this.#f64, (n) => new Float64Array(n));
    this.#u32 = grow(this.#u32, (n) => new Uint32Array(n));
    this.#i32 = grow(this.#i32, (n) => new Int32Array(n));
  }
}

/**
 * A directory tree: relative raw paths to entries, stored per directory (a directory's
 * children by name), so that a subtree can be listed, moved or dropped without scanning the
 * whole tree, and a move costs the directories below it, not the files. Plain files are packed
 * (FileSlab). The root ('') is not stored as an entry. Entries handed out are copies: change
 * one with `set`.
 */
export class Tree {
  readonly #dirs = new Map<RawPath, DirNode>([['', { entry: undefined, children: new Map() }]]);
  readonly #slab = new FileSlab();
  /** Files with more than one link, for the watcher's hard-link handling (few, usually). */
  readonly #linked = new Set<RawPath>();
  #size = 0;
  #dirCount = 0;

  get size(): number {
    return this.#size;
  }

  /** Directories in the tree. */
  get dirCount(): number {
    return this.#dirCount;
  }

  get(p: RawPath): Entry | undefined {
    const s = this.#slot(p);
    if (s === undefined) return undefined;
    if (typeof s === 'number') return this.#slab.read(s);
    if (isDir(s)) return s.entry === undefined ? undefined : { ...s.entry };
    return { ...s };
  }

  has(p: RawPath): boolean {
    return this.#slot(p) !== undefined;
  }

  /** Names directly inside directory `dir` ('' for the root). */
  childNames(dir: RawPath): ReadonlySet<RawPath> {
    return new Set(this.#dirs.get(dir)?.children.keys());
  }

  /** Every entry, parents before children. */
  *entries(): IterableIterator<[RawPath, Entry]> {
    for (const p of this.walk('')) yield [p, this.get(p) as Entry];
  }

  /** The directories ('' first, then every directory entry), in no set order. */
  *dirs(): Generator<RawPath> {
    yield '';
    for (const [p, node] of this.#dirs) if (p !== '' && node.entry !== undefined) yield p;
  }

  /** Paths of files with more than one link. */
  linked(): ReadonlySet<RawPath> {
    return this.#linked;
  }

  /** Sets `p`. A directory replaced by a non-directory loses its subtree. */
  set(p: RawPath, e: Entry): void {
    const parentPath = parentOf(p);
    const name = baseName(p);
    const parent = this.#dirNode(parentPath);
    const old = parent.children.get(name);
    if (old === undefined) this.#size++;
    if (e.kind === 'dir') {
      if (old !== undefined && !isDir(old)) this.#releaseSlot(p, old);
      let node = isDir(old) ? old : this.#dirs.get(p);
      if (node === undefined) node = { entry: undefined, children: new Map() };
      if (!isDir(old)) this.#dirCount++;
      node.entry = { ...e };
      this.#dirs.set(p, node);
      parent.children.set(name, node);
      return;
    }
    if (isDir(old)) {
      this.#dropDir(p);
      this.#dirCount--;
    }
    if (typeof old === 'number' && FileSlab.fits(e)) {
      this.#slab.write(old, e);
    } else {
      if (old !== undefined && !isDir(old)) this.#releaseSlot(p, old);
      if (FileSlab.fits(e)) {
        const i = this.#slab.alloc();
        this.#slab.write(i, e);
        parent.children.set(name, i);
      } else {
        parent.children.set(name, { ...e });
      }
    }
    if (e.kind === 'file' && e.nlink > 1) this.#linked.add(p);
    else this.#linked.delete(p);
  }

  /** Removes `p` and everything below it; returns the directories removed (`p` first, when it is one). */
  delete(p: RawPath): RawPath[] {
    const parent = this.#dirs.get(parentOf(p));
    const s = parent?.children.get(baseName(p));
    if (parent === undefined || s === undefined) return [];
    parent.children.delete(baseName(p));
    this.#size--;
    if (!isDir(s)) {
      this.#releaseSlot(p, s);
      return [];
    }
    this.#dirCount--;
    return this.#dropDir(p);
  }

  /** `p` and every path below it, parents before children. */
  subtree(p: RawPath): RawPath[] {
    return [...this.walk(p)];
  }

  /** `p` (unless '') and every path below it, parents before children, lazily. */
  *walk(p: RawPath): Generator<RawPath> {
    if (p !== '' && !this.has(p)) return;
    const stack = [p];
    while (stack.length > 0) {
      const q = stack.pop() as RawPath;
      if (q !== '') yield q;
      const node = q === '' || isDir(this.#slot(q)) ? this.#dirs.get(q) : undefined;
      if (node === undefined) continue;
      // Reversed onto the stack, so that siblings come out in the order they were added.
      const names = [...node.children.keys()];
      for (let i = names.length - 1; i >= 0; i--) stack.push(joinRaw(q, names[i] as RawPath));
    }
  }

  /**
   * Moves `from` (and its subtree) to `to`, replacing whatever was at `to`. Returns the pairs of
   * old and new paths of the directories moved (`from` first, when it is one), so that callers
   * can rewrite their own maps (wd → path). Costs the directories below `from`, not the files.
   */
  move(from: RawPath, to: RawPath): Array<[RawPath, RawPath]> {
    if (from === to || isWithin(to, from)) return [];
    const src = this.#dirs.get(parentOf(from));
    const s = src?.children.get(baseName(from));
    if (src === undefined || s === undefined) return [];
    this.delete(to);
    src.children.delete(baseName(from));
    const dst = this.#dirNode(parentOf(to));
    dst.children.set(baseName(to), s);
    const rebase = (q: RawPath): RawPath => to + q.slice(from.length);
    for (const q of [...this.#linked]) {
      if (!isWithin(q, from)) continue;
      this.#linked.delete(q);
      this.#linked.add(rebase(q));
    }
    if (!isDir(s)) return [];
    const moved: Array<[RawPath, RawPath]> = [];
    for (const q of this.#dirsBelow(from)) {
      const node = this.#dirs.get(q) as DirNode;
      this.#dirs.delete(q);
      moved.push([q, rebase(q)]);
      this.#dirs.set(rebase(q), node);
    }
    return moved;
  }

  /** The slot of `p` in its parent. */
  #slot(p: RawPath): Slot | undefined {
    if (p === '') return undefined;
    return this.#dirs.get(parentOf(p))?.children.get(baseName(p));
  }

  /** The node of directory `p`, made (without an entry) if the tree has none yet. */
  #dirNode(p: RawPath): DirNode {
    let node = this.#dirs.get(p);
    if (node === undefined) {
      node = { entry: undefined, children: new Map() };
      this.#dirs.set(p, node);
    }
    return node;
  }

  #releaseSlot(p: RawPath, s: number | Entry): void {
    if (typeof s === 'number') this.#slab.release(s);
    this.#linked.delete(p);
  }

  /** Directory `dir` and the directories below it, parents first. */
  #dirsBelow(dir: RawPath): RawPath[] {
    const out: RawPath[] = [];
    const stack = [dir];
    while (stack.length > 0) {
      const q = stack.pop() as RawPath;
      const node = this.#dirs.get(q);
      if (node === undefined) continue;
      out.push(q);
      for (const [name, s] of node.children) if (isDir(s)) stack.push(joinRaw(q, name));
    }
    return out;
  }

  /** Forgets what is below directory `dir` and its node (the caller has unlinked it from its parent). */
  #dropDir(dir: RawPath): RawPath[] {
    const dirs = this.#dirsBelow(dir);
    for (const q of dirs) {
      const node = this.#dirs.get(q) as DirNode;
      for (const [name, s] of node.children) {
        this.#size--;
        if (isDir(s)) this.#dirCount--;
        else this.#releaseSlot(joinRaw(q, name), s);
      }
      this.#dirs.delete(q);
    }
    return dirs;
  }
}
