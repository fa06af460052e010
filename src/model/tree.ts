import type { Entry } from './entry.js';
import { baseName, isWithin, joinRaw, parentOf, type RawPath } from './path.js';
import { SpillStore } from './spill.js';

/**
 * Plain files, packed: 60 bytes each in typed arrays instead of an object with three BigInts
 * (about 300 bytes), for the directories a tree holds in memory.
 * Files whose numbers do not fit (an inode or size past 2^53, a device or id past 2^32) stay
 * objects.
 */
class FileSlab {
  static readonly PACKED = 60;

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

  /** Copies file `i` into `buf` at `off` (PACKED bytes), for the spill store. */
  save(i: number, buf: Buffer, off: number): void {
    const f = i * 4;
    const u = i * 5;
    for (let k = 0; k < 4; k++) buf.writeDoubleLE(this.#f64[f + k] as number, off + 8 * k);
    for (let k = 0; k < 5; k++) buf.writeUInt32LE(this.#u32[u + k] as number, off + 32 + 4 * k);
    buf.writeInt32LE(this.#i32[i * 2] as number, off + 52);
    buf.writeInt32LE(this.#i32[i * 2 + 1] as number, off + 56);
  }

  /** A new file from PACKED bytes of `buf` at `off` (written by save); its index. */
  load(buf: Buffer, off: number): number {
    const i = this.alloc();
    const f = i * 4;
    const u = i * 5;
    for (let k = 0; k < 4; k++) this.#f64[f + k] = buf.readDoubleLE(off + 8 * k);
    for (let k = 0; k < 5; k++) this.#u32[u + k] = buf.readUInt32LE(off + 32 + 4 * k);
    this.#i32[i * 2] = buf.readInt32LE(off + 52);
    this.#i32[i * 2 + 1] = buf.readInt32LE(off + 56);
    return i;
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

/** A non-directory child: a plain file packed in the slab (its index), or any other entry as is. */
type FileSlot = number | Entry;

/**
 * A directory of the tree: its own entry (undefined for a parent not set itself), its
 * subdirectories (always in memory: they grow with directories), and its other children —
 * in memory while the directory is in use, else in the spill store.
 */
interface DirNode {
  readonly id: number;
  entry: Entry | undefined;
  readonly dirs: Map<RawPath, DirNode>;
  /** The files, while in memory; undefined when spilled (or when there are none). */
  files: Map<RawPath, FileSlot> | undefined;
  /** How many files (non-directory children) it has, in memory or not. */
  count: number;
  /** The store holds a copy of its files... */
  stored: boolean;
  /** ...which is out of date. */
  dirty: boolean;
}

export interface TreeOptions {
  /**
   * Files held in memory, over the directories used last; past it, the files of the least
   * recently used directories go to the spill store.
   */
  hotFiles?: number;
  /** Directories used last that stay in memory whatever their size (default 16). */
  keepDirs?: number;
}

const DEFAULT_HOT_FILES = 131_072;
const KEEP_DIRS = 16;

const bigintAsString = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? v.toString() : v);

function entryFromJson(s: string): Entry {
  const o = JSON.parse(s) as Entry & { ino: string; mtimeNs: string; ctimeNs: string };
  return { ...o, ino: BigInt(o.ino), mtimeNs: BigInt(o.mtimeNs), ctimeNs: BigInt(o.ctimeNs) };
}

/**
 * A directory tree: relative raw paths to entries, stored per directory (a directory's
 * children by name), so that a subtree can be listed, moved or dropped without scanning the
 * whole tree, and a move costs the directories below it, not the files. The root ('') is not
 * stored as an entry. Entries handed out are copies: change one with `set`.
 *
 * Memory grows with directories, not files: plain files are packed (FileSlab) while their
 * directory is in use, and a directory not used lately keeps its files in a spill store on
 * disk (one blob per directory: about 70 bytes a file), read back when it is used again. A
 * tree of two million files holds a few tens of MiB in memory; the rest is on disk, in a
 * file that is gone when the process is. If the store cannot be written (the temporary
 * directory is full, say), the tree keeps everything in memory from then on: nothing is lost.
 */
export class Tree {
  readonly #dirs = new Map<RawPath, DirNode>();
  readonly #slab = new FileSlab();
  /** Files with more than one link, for the watcher's hard-link handling (few, usually). */
  readonly #linked = new Set<RawPath>();
  /** Directories whose files are in memory, least recently used first. */
  readonly #hot = new Set<DirNode>();
  #hotFiles = 0;
  /** The directory used last (its place in #hot needs no update). */
  #last: DirNode | undefined;
  readonly #budget: number;
  readonly #keepDirs: number;
  #store: SpillStore | undefined;
  #spilling = true;
  #nextId = 0;
  #size = 0;
  #dirCount = 0;

  constructor(opts: TreeOptions = {}) {
    this.#budget = opts.hotFiles ?? DEFAULT_HOT_FILES;
    this.#keepDirs = Math.max(1, opts.keepDirs ?? KEEP_DIRS);
    this.#dirs.set('', this.#newNode());
  }

  get size(): number {
    return this.#size;
  }

  /** Directories in the tree. */
  get dirCount(): number {
    return this.#dirCount;
  }

  /** Files whose entries are in memory now (for tests and benchmarks). */
  get hotFiles(): number {
    return this.#hotFiles;
  }

  get(p: RawPath): Entry | undefined {
    if (p === '') return undefined;
    const parent = this.#dirs.get(parentOf(p));
    if (parent === undefined) return undefined;
    const name = baseName(p);
    const sub = parent.dirs.get(name);
    if (sub !== undefined) return sub.entry === undefined ? undefined : { ...sub.entry };
    if (parent.count === 0) return undefined;
    const s = this.#filesOf(parent).get(name);
    if (s === undefined) return undefined;
    return typeof s === 'number' ? this.#slab.read(s) : { ...s };
  }

  has(p: RawPath): boolean {
    if (p === '') return false;
    const parent = this.#dirs.get(parentOf(p));
    if (parent === undefined) return false;
    const name = baseName(p);
    return parent.dirs.has(name) || (parent.count > 0 && this.#filesOf(parent).has(name));
  }

  /**
   * Calls `fn` with each child of directory `dir` ('' for the root) and a copy of its entry:
   * its files, then its subdirectories. `fn` must not use the tree: the directory's files are
   * gone through in place (no list of them is made).
   */
  forEachChild(dir: RawPath, fn: (name: RawPath, e: Entry) => void): void {
    const node = this.#dirs.get(dir);
    if (node === undefined) return;
    if (node.count > 0) for (const [name, s] of this.#filesOf(node)) fn(name, typeof s === 'number' ? this.#slab.read(s) : { ...s });
    for (const [name, sub] of node.dirs) if (sub.entry !== undefined) fn(name, { ...sub.entry });
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
    if (e.kind === 'dir') {
      let node = parent.dirs.get(name);
      if (node === undefined) {
        if (parent.count > 0) {
          const files = this.#filesOf(parent);
          const old = files.get(name);
          if (old !== undefined) this.#removeFile(parent, files, name, p, old);
        }
        node = this.#dirs.get(p) ?? this.#newNode();
        this.#dirs.set(p, node);
        parent.dirs.set(name, node);
        this.#size++;
        this.#dirCount++;
      }
      node.entry = { ...e };
      return;
    }
    if (parent.dirs.has(name)) {
      parent.dirs.delete(name);
      this.#size--;
      this.#dirCount--;
      this.#dropDir(p);
    }
    const files = this.#filesOf(parent);
    const old = files.get(name);
    parent.dirty = true;
    if (typeof old === 'number' && FileSlab.fits(e)) {
      this.#slab.write(old, e);
    } else {
      if (typeof old === 'number') this.#slab.release(old);
      if (FileSlab.fits(e)) {
        const i = this.#slab.alloc();
        this.#slab.write(i, e);
        files.set(name, i);
      } else {
        files.set(name, { ...e });
      }
    }
    if (old === undefined) {
      parent.count++;
      this.#hotFiles++;
      this.#size++;
      this.#evict();
    }
    if (e.kind === 'file' && e.nlink > 1) this.#linked.add(p);
    else this.#linked.delete(p);
  }

  /** Removes `p` and everything below it; returns the directories removed (`p` first, when it is one). */
  delete(p: RawPath): RawPath[] {
    if (p === '') return [];
    const parent = this.#dirs.get(parentOf(p));
    if (parent === undefined) return [];
    const name = baseName(p);
    if (parent.dirs.has(name)) {
      parent.dirs.delete(name);
      this.#size--;
      this.#dirCount--;
      return this.#dropDir(p);
    }
    if (parent.count === 0) return [];
    const files = this.#filesOf(parent);
    const old = files.get(name);
    if (old !== undefined) this.#removeFile(parent, files, name, p, old);
    return [];
  }

  /** `p` and every path below it, parents before children. */
  subtree(p: RawPath): RawPath[] {
    return [...this.walk(p)];
  }

  /**
   * `p` (unless '') and every path below it, parents before children, lazily: a directory's
   * files first, then its subdirectories, each in the order they were added.
   */
  *walk(p: RawPath): Generator<RawPath> {
    if (p !== '' && !this.has(p)) return;
    const stack = [p];
    while (stack.length > 0) {
      const q = stack.pop() as RawPath;
      if (q !== '') yield q;
      const node = q === '' ? this.#dirs.get('') : this.#dirs.get(parentOf(q))?.dirs.get(baseName(q));
      if (node === undefined) continue;
      // Reversed onto the stack, so that siblings come out in the order they were added.
      const subs = [...node.dirs.keys()];
      for (let i = subs.length - 1; i >= 0; i--) stack.push(joinRaw(q, subs[i] as RawPath));
      if (node.count === 0) continue;
      const names = [...this.#filesOf(node).keys()];
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
    if (src === undefined) return [];
    const node = src.dirs.get(baseName(from));
    if (node === undefined) {
      const e = this.get(from);
      if (e === undefined) return [];
      this.delete(from);
      this.set(to, e);
      return [];
    }
    this.delete(to);
    src.dirs.delete(baseName(from));
    this.#dirNode(parentOf(to)).dirs.set(baseName(to), node);
    const rebase = (q: RawPath): RawPath => to + q.slice(from.length);
    for (const q of [...this.#linked]) {
      if (!isWithin(q, from)) continue;
      this.#linked.delete(q);
      this.#linked.add(rebase(q));
    }
    const moved: Array<[RawPath, RawPath]> = [];
    for (const q of this.#dirsBelow(from)) {
      const n = this.#dirs.get(q) as DirNode;
      this.#dirs.delete(q);
      moved.push([q, rebase(q)]);
      this.#dirs.set(rebase(q), n);
    }
    return moved;
  }

  /** Closes the spill store. The tree must not be used after. */
  close(): void {
    this.#store?.close();
    this.#store = undefined;
    this.#spilling = false;
  }

  #newNode(): DirNode {
    return { id: this.#nextId++, entry: undefined, dirs: new Map(), files: undefined, count: 0, stored: false, dirty: false };
  }

  /** The node of directory `p`, made (without an entry) if the tree has none yet. */
  #dirNode(p: RawPath): DirNode {
    let node = this.#dirs.get(p);
    if (node === undefined) {
      node = this.#newNode();
      this.#dirs.set(p, node);
    }
    return node;
  }

  /** The files of `node`, read back from the store if they were spilled; it becomes the one used last. */
  #filesOf(node: DirNode): Map<RawPath, FileSlot> {
    let files = node.files;
    if (files !== undefined) {
      if (this.#spilling && this.#last !== node) {
        this.#hot.delete(node);
        this.#hot.add(node);
        this.#last = node;
      }
      return files;
    }
    if (node.stored && this.#store === undefined) throw new Error('a tree was used after close()');
    files = node.stored ? this.#decode((this.#store as SpillStore).get(node.id)) : new Map<RawPath, FileSlot>();
    node.files = files;
    this.#hot.add(node);
    this.#last = node;
    this.#hotFiles += files.size;
    this.#evict();
    return files;
  }

  #removeFile(parent: DirNode, files: Map<RawPath, FileSlot>, name: RawPath, p: RawPath, old: FileSlot): void {
    files.delete(name);
    if (typeof old === 'number') this.#slab.release(old);
    parent.count--;
    parent.dirty = true;
    this.#hotFiles--;
    this.#size--;
    this.#linked.delete(p);
  }

  /** Spills the directories used least recently while more files than the budget are in memory. */
  #evict(): void {
    if (this.#hotFiles <= this.#budget || !this.#spilling) return;
    for (const node of this.#hot) {
      if (this.#hotFiles <= this.#budget || this.#hot.size <= this.#keepDirs) return;
      if (!this.#spill(node)) return;
    }
  }

  /** Writes `node`'s files to the store (if they changed) and lets them go from memory. */
  #spill(node: DirNode): boolean {
    const files = node.files as Map<RawPath, FileSlot>;
    if (node.dirty || (!node.stored && files.size > 0)) {
      try {
        this.#store ??= new SpillStore();
        if (files.size > 0) this.#store.put(node.id, this.#encode(files));
        else if (node.stored) this.#store.delete(node.id);
      } catch {
        this.#spilling = false; // keep everything in memory from now on
        return false;
      }
      node.stored = files.size > 0;
      node.dirty = false;
    }
    this.#unload(node, files);
    return true;
  }

  #unload(node: DirNode, files: Map<RawPath, FileSlot>): void {
    for (const s of files.values()) if (typeof s === 'number') this.#slab.release(s);
    node.files = undefined;
    this.#hot.delete(node);
    if (this.#last === node) this.#last = undefined;
    this.#hotFiles -= files.size;
  }

  /** name length (u16), name, then 0 and the packed file, or 1, a length (u32) and the entry as JSON. */
  #encode(files: Map<RawPath, FileSlot>): Buffer {
    let n = 0;
    const json: string[] = [];
    for (const [name, s] of files) {
      n += 3 + name.length;
      if (typeof s === 'number') {
        n += FileSlab.PACKED;
      } else {
        const j = JSON.stringify(s, bigintAsString);
        json.push(j);
        n += 4 + Buffer.byteLength(j);
      }
    }
    const buf = Buffer.allocUnsafe(n);
    let off = 0;
    let k = 0;
    for (const [name, s] of files) {
      off = buf.writeUInt16LE(name.length, off);
      off += buf.write(name, off, 'latin1');
      if (typeof s === 'number') {
        buf[off++] = 0;
        this.#slab.save(s, buf, off);
        off += FileSlab.PACKED;
      } else {
        buf[off++] = 1;
        const j = json[k++] as string;
        const len = buf.write(j, off + 4, 'utf8');
        buf.writeUInt32LE(len, off);
        off += 4 + len;
      }
    }
    return buf;
  }

  #decode(buf: Buffer): Map<RawPath, FileSlot> {
    const files = new Map<RawPath, FileSlot>();
    let off = 0;
    while (off < buf.length) {
      const len = buf.readUInt16LE(off);
      const name = buf.toString('latin1', off + 2, off + 2 + len);
      off += 2 + len;
      if (buf[off++] === 0) {
        files.set(name, this.#slab.load(buf, off));
        off += FileSlab.PACKED;
      } else {
        const l = buf.readUInt32LE(off);
        files.set(name, entryFromJson(buf.toString('utf8', off + 4, off + 4 + l)));
        off += 4 + l;
      }
    }
    return files;
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
      for (const name of node.dirs.keys()) stack.push(joinRaw(q, name));
    }
    return out;
  }

  /** Forgets what is below directory `dir` and its node (the caller has unlinked it from its parent). */
  #dropDir(dir: RawPath): RawPath[] {
    const dirs = this.#dirsBelow(dir);
    for (const q of dirs) {
      const node = this.#dirs.get(q) as DirNode;
      this.#size -= node.count + node.dirs.size;
      this.#dirCount -= node.dirs.size;
      if (node.files !== undefined) this.#unload(node, node.files);
      if (node.stored) {
        try {
          this.#store?.delete(node.id);
        } catch {
          // a blob left behind in a file that goes with the process: harmless
        }
      }
      node.count = 0;
      node.stored = false;
      this.#dirs.delete(q);
    }
    if (this.#linked.size > 0) for (const q of [...this.#linked]) if (isWithin(q, dir)) this.#linked.delete(q);
    return dirs;
  }
}
