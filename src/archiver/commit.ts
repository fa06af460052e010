import { hostname } from 'node:os';
import { PhoenixError } from '../errors.js';
import type { Entry } from '../model/entry.js';
import { isWithin, parentOf, type RawPath } from '../model/path.js';
import {
  type ChunkRef,
  ChunkWriter,
  type Commit,
  type CommitInfo,
  type CommitStats,
  type FileRecord,
  type JournalChange,
  type Repository,
} from '../repo/index.js';
import { entryStamp, stampOf, type CachedFile, type KnownFiles, type StateDb } from '../state/db.js';
import { readFile, TORN_RETRIES } from './read.js';
import type { SealPool } from './seal-pool.js';

export interface CommitBuilderOptions {
  /** A path that could not be backed up (it keeps its last version). */
  /** `code`: the errno code of a read that failed (EACCES, EIO …), when there is one. */
  onProblem?: (path: RawPath, message: string, code?: string) => void;
  /** Bytes of file content read. */
  onBytes?: (n: number) => void;
  /** The directory backed up, recorded in the commit with the host name (phoenix sources shows them). */
  root?: string;
  /**
   * How often each path was seen rewritten in place (bytes before its end changed), kept by the
   * caller across commits: a large file rewritten in place twice is cut finely from then on.
   */
  inPlace?: Map<RawPath, number>;
  /** A chunk stored by a commit still being written (not in the cache yet): its ref, or undefined. */
  pendingChunk?: (id: string) => ChunkRef | undefined;
}

/** In-place rewrites seen before a large file is cut finely. */
const HOT_AFTER = 2;

export type AddResult = 'unchanged' | 'added' | 'vanished' | 'error';

/** The largest file backed up: about two million chunk refs, whose record must fit in one JSON string. */
export const MAX_FILE_BYTES = 2 * 2 ** 40;

/**
 * Builds one commit of one source on top of what the cache knows (`known`, the tree as of the
 * last commit, in SQLite): entries added (files read, chunked, deduplicated, sealed and packed),
 * removed and moved. `commit()` makes it durable — packs, then the commit object, then the
 * cache. Until then the cache is left alone, so a commit that fails can simply be built again.
 *
 * Moves and removals must come before the adds of the same commit (journal order: moves and
 * deletes as called, then puts).
 */
export class CommitBuilder {
  readonly stats: CommitStats = { files: 0, dirs: 0, deleted: 0, bytesUploaded: 0, bytesTotal: 0 };
  /** Paths changed by this commit: a new cache row, or null when removed. */
  readonly #overlay = new Map<RawPath, CachedFile | null>();
  readonly #structural: JournalChange[] = [];
  /** Puts by path: a later removal or move of the same path in this commit takes them along. */
  readonly #puts = new Map<RawPath, PutChange>();
  /** Records with refs of new chunks, whose packs are named only once they are cut. */
  readonly #unresolved: FileRecord[] = [];
  readonly #newChunks = new Map<string, ChunkRef>();
  readonly #writer: ChunkWriter;

  constructor(
    readonly repo: Repository,
    readonly db: StateDb,
    readonly pool: SealPool,
    readonly source: string,
    readonly known: KnownFiles,
    readonly opts: CommitBuilderOptions = {},
  ) {
    this.#writer = new ChunkWriter(repo);
    this.purgesAtStart = db.purges;
  }

  /** The deletion plans the cache had purged when this builder began deduplicating against it (see leaseStillGood). */
  readonly purgesAtStart: number;

  /** The entry at `path` as of this commit so far. */
  get(path: RawPath): CachedFile | undefined {
    const o = this.#overlay.get(path);
    return o === null ? undefined : (o ?? this.known.get(path));
  }

  /** True when the commit would change the journal. */
  get changed(): boolean {
    return this.#structural.length > 0 || this.#puts.size > 0;
  }

  get size(): number {
    return this.#structural.length + this.#puts.size;
  }

  /** Paths this commit holds in memory: its changes, and files read again that did not change (their cache rows). */
  get held(): number {
    return this.#overlay.size;
  }

  /**
   * Records `e` (found at `path`, readable at `fsPath`) if it differs from what is known.
   * Files are read; one that changed while read is read again (torn content is never
   * committed as whole); 'vanished' when it is gone, 'error' when unreadable (it keeps its last
   * version, and the problem is reported).
   */
  async add(path: RawPath, fsPath: Buffer, e: Entry): Promise<AddResult> {
    const o = this.#overlay.get(path);
    const committed = o === undefined ? this.known.get(path) : undefined; // one look at the cache
    const before = o === null ? undefined : (o ?? committed);
    if (before !== undefined && unchanged(before, e)) return 'unchanged';
    let entry = e;
    let rec: PutChange;
    let torn = false;
    if (e.kind === 'file' && e.size > MAX_FILE_BYTES) {
      // Its record (a chunk ref per MiB) would not fit in one JSON line: said before any read.
      this.opts.onProblem?.(
        path,
        `is ${(e.size / 2 ** 40).toFixed(1)} TiB; Phoenix backs up files of up to 2 TiB (README, Limits); it keeps its last version, if any`,
      );
      return 'error';
    }
    if (e.kind === 'file') {
      const last = (o === undefined ? committed : this.known.get(path))?.rec; // committed: its chunk refs are final
      const previous = last?.type === 'file' ? last.chunks : [];
      const how = { fine: last?.fine === true, hot: (this.opts.inPlace?.get(path) ?? 0) >= HOT_AFTER };
      const read = await readFile(this.pool, fsPath, e, previous, this.#refFor, this.#writer, this.#onBytes, how);
      if (read.status === 'vanished') return 'vanished';
      if (read.status === 'error') {
        this.opts.onProblem?.(path, read.message, read.code);
        return 'error';
      }
      torn = read.torn;
      if (torn)
        this.opts.onProblem?.(
          path,
          `kept changing while read ${TORN_RETRIES} times; backed up as last read, and read again at its next change`,
        );
      entry = read.entry;
      // Ids now (to compare with the last version); packs and offsets once the packs are cut.
      rec = record(path, entry, read.chunks);
      if (read.fine) rec.fine = true;
      const seen = this.opts.inPlace;
      if (seen !== undefined && read.inPlace && !read.fine) {
        if (seen.size >= 4096 && !seen.has(path)) seen.delete(seen.keys().next().value as RawPath); // bounded: the oldest goes
        seen.set(path, (seen.get(path) ?? 0) + 1);
      }
      if (read.chunks.some((c) => c.pack === '')) this.#unresolved.push(rec);
    } else {
      rec = record(path, e, []);
    }
    // A torn read is kept, but the cache does not vouch for it: the next look reads it again.
    this.#overlay.set(path, { rec, ino: entry.ino.toString(), ctimeNs: torn ? '' : entry.ctimeNs.toString() });
    if (before !== undefined && sameRecord(before.rec, rec)) return 'unchanged'; // only inode or ctime moved
    if (before?.rec.type === 'file' && rec.type === 'file' && !this.#puts.has(path)) this.rewritten.push(path);
    this.#dropPut(path);
    this.#puts.set(path, rec);
    if (rec.type === 'dir') this.stats.dirs++;
    else this.stats.files++;
    this.stats.bytesTotal += rec.size;
    return 'added';
  }

  /** `path` and everything below it are gone. */
  remove(path: RawPath): void {
    const gone = this.#subtree(path);
    if (gone.length > 0) this.removeMany(gone);
  }

  /** Everything below `path` is gone (`path` itself stays as it is). */
  removeBelow(path: RawPath): void {
    const gone = this.#below(path);
    if (gone.length > 0) this.removeMany(gone);
  }

  /**
   * Removes a set of paths that holds the whole subtree of each of its directories (as a
   * scan's diff gives): one journal delete per topmost path.
   */
  removeMany(paths: readonly RawPath[]): void {
    const set = new Set(paths);
    for (const p of paths) {
      if (this.get(p) === undefined) continue;
      this.#overlay.set(p, null);
      this.#dropPut(p);
      this.removed++;
      if (p !== '' && set.has(parentOf(p))) continue;
      this.#structural.push({ op: 'delete', path: p });
      this.stats.deleted++;
    }
  }

  /**
   * The entry at `from` (a whole directory with its subtree) now stands at `to`: no data moves.
   * What stood at `to` is gone either way, as rename(2) replaces it. False when nothing is
   * known at `from` (moved away already in this batch, or made since the last commit): then
   * what stands at `to` now must be added.
   */
  move(from: RawPath, to: RawPath): boolean {
    if (from === to || isWithin(to, from)) return false;
    const moving = this.#subtree(from).map((p) => [p, this.get(p) as CachedFile] as const);
    if (moving.length === 0) {
      this.remove(to);
      return false;
    }
    const replaced = this.#subtree(to);
    for (const [p] of moving) this.#overlay.set(p, null);
    for (const p of replaced) {
      this.#overlay.set(p, null);
      this.#dropPut(p);
    }
    for (const [p, c] of moving) {
      const np = to + p.slice(from.length);
      const put = this.#puts.get(p);
      if (put === c.rec) {
        // Put by this commit: the same record (its chunks are resolved later) moves along.
        this.#puts.delete(p);
        put.path = np;
        this.#puts.set(np, put);
        this.#overlay.set(np, c);
      } else {
        this.#overlay.set(np, { ...c, rec: { ...c.rec, path: np } });
      }
    }
    this.#structural.push({ op: 'move', from, path: to });
    return true;
  }

  /**
   * Makes the commit durable as `seq` (packs, then the commit object, then the cache, with
   * `inTransaction` run in the cache's transaction). `beforeWrite` runs once the packs are
   * durable, just before the commit object is written (the lease's last word). Returns
   * undefined when nothing changed (then only the cache rows are updated, under `seq - 1`).
   */
  /** Files that existed and were put again with other content or metadata (the mass-change guard counts them). */
  rewritten: RawPath[] = [];
  /** Entries removed, those below a removed directory included (stats.deleted counts journal deletes). */
  removed = 0;

  async commit(
    seq: number,
    inTransaction?: () => void,
    beforeWrite?: () => Promise<void>,
  ): Promise<{ info: CommitInfo; commit: Commit } | undefined> {
    await this.#writer.flush();
    await beforeWrite?.();
    // Every pack is cut by now (this builder's by flush(), the one before's by its commit), and
    // its refs, which the records hold, name it.
    for (const rec of this.#unresolved)
      for (const r of rec.chunks)
        if (r.pack === '') throw new PhoenixError('PHX_INTERNAL', `internal: chunk ${r.id} has no pack at commit`);
    const puts: CachedFile[] = [];
    const deleted: RawPath[] = [];
    for (const [p, c] of this.#overlay) {
      if (c === null) deleted.push(p);
      else puts.push(c);
    }
    const repoId = this.repo.config.id;
    if (!this.changed) {
      this.db.applyCommit(this.source, repoId, seq - 1, puts, deleted, [], inTransaction);
      return undefined;
    }
    this.stats.bytesUploaded = this.#writer.bytesUploaded;
    const changes: JournalChange[] = [...this.#structural, ...this.#puts.values()];
    const commit: Commit = {
      source: this.source,
      seq,
      timeMs: Date.now(),
      packs: this.#writer.packs,
      changes,
      stats: this.stats,
      host: hostname(),
    };
    if (this.opts.root !== undefined) commit.root = this.opts.root;
    const info = await this.repo.writeCommit(commit);
    this.db.applyCommit(this.source, repoId, seq, puts, deleted, this.#newChunks.values(), inTransaction);
    return { info, commit };
  }

  /**
   * Directories that entries of this commit lie in but that are not committed themselves
   * (moved into a directory that is new, or put before their directory settled). Every
   * committed entry's directory must be committed too: moves and removals rely on it.
   */
  missingParents(): RawPath[] {
    const out = new Set<RawPath>();
    for (const [p, c] of this.#overlay) {
      if (c === null) continue;
      const dir = parentOf(p);
      if (dir !== '' && this.get(dir)?.rec.type !== 'dir') out.add(dir);
    }
    return [...out];
  }

  /** Orders the puts (the journal lists them in this order). */
  sortPuts(compare: (a: RawPath, b: RawPath) => number): void {
    const sorted = [...this.#puts.values()].sort((a, b) => compare(a.path, b.path));
    this.#puts.clear();
    for (const r of sorted) this.#puts.set(r.path, r);
  }

  #dropPut(path: RawPath): void {
    const r = this.#puts.get(path);
    if (r === undefined) return;
    this.#puts.delete(path);
    if (r.type === 'dir') this.stats.dirs--;
    else this.stats.files--;
    this.stats.bytesTotal -= r.size;
  }

  /** `path` and every known path below it (as of this commit). */
  #subtree(path: RawPath): RawPath[] {
    const top = this.get(path);
    if (top === undefined) {
      // Nothing committed lies below a path that is not (callers keep every parent committed),
      // but entries moved in by this commit may, below a directory that is new.
      const out: RawPath[] = [];
      for (const [k, c] of this.#overlay) if (c !== null && k !== path && isWithin(k, path)) out.push(k);
      return out;
    }
    if (top.rec.type !== 'dir') return [path];
    return [path, ...this.#below(path)];
  }

  /** Every path below `path` (not itself) as of this commit: a range of the cache, and this commit's own. */
  #below(path: RawPath): RawPath[] {
    const out = new Set<RawPath>();
    const under = (k: RawPath): boolean => k !== path && isWithin(k, path);
    for (const k of this.known.below(path)) if (this.#overlay.get(k) !== null) out.add(k);
    for (const [k, c] of this.#overlay) if (c !== null && under(k)) out.add(k);
    return [...out];
  }

  readonly #onBytes = (n: number): void => this.opts.onBytes?.(n);

  /** The ref of a chunk this commit stores, or undefined. */
  newChunk(id: string): ChunkRef | undefined {
    return this.#newChunks.get(id);
  }

  /** A chunk by id: known (its ref at once), or new (its ref once its pack is cut), uploaded once. */
  readonly #refFor = (id: string, sealed: Buffer, size: number): ChunkRef => {
    let r = this.#newChunks.get(id);
    if (r === undefined) {
      const stored = this.db.chunk(id); // a ref of its own
      if (stored !== undefined) {
        stored.size = size;
        return stored;
      }
      // The builder before's ref (its pack named when cut), with the size: the same id, the same bytes.
      const pending = this.opts.pendingChunk?.(id);
      if (pending !== undefined) return pending;
      r = this.#writer.add(id, sealed, size);
      this.#newChunks.set(id, r);
    }
    return r;
  };
}

/** The cache says this entry was committed as it stands now: nothing to read. */
export function unchanged(c: CachedFile, e: Entry): boolean {
  return c.ctimeNs !== '' && (c.stamp ?? stampOf(c)) === entryStamp(e);
}

/** A record as a commit puts it (the journal change itself: no copy of it per file at commit). */
type PutChange = Extract<JournalChange, { op: 'put' }>;

function record(path: RawPath, e: Entry, chunks: ChunkRef[]): PutChange {
  const r: PutChange = {
    op: 'put',
    path,
    type: e.kind,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    mtimeNs: e.mtimeNs,
    size: e.kind === 'file' ? e.size : 0,
    chunks,
  };
  if (e.target !== undefined) r.target = e.target;
  return r;
}

function sameRecord(a: FileRecord, b: FileRecord): boolean {
  return (
    a.type === b.type &&
    a.mode === b.mode &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.mtimeNs === b.mtimeNs &&
    a.size === b.size &&
    a.target === b.target &&
    a.chunks.length === b.chunks.length &&
    a.chunks.every((c, i) => c.id === b.chunks[i]?.id)
  );
}
