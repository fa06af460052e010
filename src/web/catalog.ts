/**
 * What the dashboard and the WebDAV server read from a repository: the commits of a source,
 * its tree at any instant (a few kept loaded, each with a per-directory index so a folder
 * lists in time proportional to its entries), a file's bytes (ranges read only the chunks
 * they cover), and the deletions of a period.
 */

import { PhoenixError } from '../errors.js';
import { compareRaw, isWithin, parentOf, type RawPath } from '../model/path.js';
import {
  applyChange,
  chunkWhat,
  type CommitInfo,
  type FileRecord,
  mapLimited,
  openChunk,
  type Repository,
  seqAt,
  type TreeState,
} from '../repo/index.js';
import { ChunkFetcher } from '../restore/fetch.js';

/** A source's tree after one commit. */
export class Snapshot {
  #children: Map<RawPath, FileRecord[]> | undefined;

  constructor(
    readonly source: string,
    readonly seq: number,
    readonly timeMs: number,
    readonly state: TreeState,
  ) {}

  get(path: RawPath): FileRecord | undefined {
    return this.state.get(path);
  }

  /** True for the root and for directories of the tree. */
  isDir(path: RawPath): boolean {
    return path === '' || this.state.get(path)?.type === 'dir';
  }

  /** The entries directly inside `dir`, by name (the index is built at the first call: O(tree)). */
  children(dir: RawPath): FileRecord[] {
    if (this.#children === undefined) {
      const idx = new Map<RawPath, FileRecord[]>();
      for (const r of this.state.values()) {
        const p = parentOf(r.path);
        let list = idx.get(p);
        if (list === undefined) idx.set(p, (list = []));
        list.push(r);
      }
      for (const list of idx.values()) list.sort((a, b) => compareRaw(a.path, b.path));
      this.#children = idx;
    }
    return this.#children.get(dir) ?? [];
  }

  /** Everything at or below `path`, in path order. */
  below(path: RawPath): FileRecord[] {
    return [...this.state.values()].filter((r) => isWithin(r.path, path)).sort((a, b) => compareRaw(a.path, b.path));
  }
}

export interface Deletion {
  path: RawPath;
  type: FileRecord['type'];
  size: number;
  /** Entries it held, for a directory (itself included). */
  entries: number;
  seq: number;
  timeMs: number;
  /** The last commit's time before the deletion: restore --at it gives the entry back. */
  restoreAtMs: number;
}

const COMMITS_FRESH_MS = 1000;
const SNAPSHOTS_KEPT = 4;
/** Entries kept loaded at most over those trees (about 1 KiB each); the tree asked for last always stays. */
const ENTRIES_KEPT = 1_000_000;

export class Catalog {
  readonly #commits = new Map<string, { at: number; list: Promise<CommitInfo[]> }>();
  /** Loaded trees, most recently used last. */
  readonly #snapshots = new Map<string, Promise<Snapshot>>();
  /** Entries of the loaded trees, by key. */
  readonly #sizes = new Map<string, number>();
  /** The repository's relocations when the loaded trees were read. */
  #relocations = 0;

  constructor(readonly repo: Repository) {}

  sources(): Promise<string[]> {
    return this.repo.sources();
  }

  /** The commits of `source`, listed again at most once a second (and at once after `invalidate`). */
  commits(source: string): Promise<CommitInfo[]> {
    const now = Date.now();
    const c = this.#commits.get(source);
    if (c !== undefined && now - c.at < COMMITS_FRESH_MS) return c.list;
    const list = this.repo.commitList(source);
    this.#commits.set(source, { at: now, list });
    list.catch(() => this.#commits.delete(source));
    return list;
  }

  /** A commit was made: the next question lists again. */
  invalidate(source: string): void {
    this.#commits.delete(source);
  }

  /** The tree at `atMs` (the last commit at or before it; the latest when undefined), or after commit `seq`. */
  async snapshot(source: string, at: { atMs?: number | undefined; seq?: number | undefined } = {}): Promise<Snapshot> {
    const commits = await this.commits(source);
    const seq = at.seq ?? seqAt(commits, at.atMs);
    const info = commits.find((c) => c.seq === seq);
    if (seq === undefined || info === undefined) {
      const first = commits[0];
      throw new PhoenixError(
        'PHX_NOT_IN_REPO',
        at.seq !== undefined
          ? `${JSON.stringify(source)} has no commit ${at.seq}`
          : `there is no commit of ${JSON.stringify(source)} at or before ${new Date(at.atMs ?? 0).toISOString()}`,
        { hint: first ? `the first is commit ${first.seq}, from ${new Date(first.timeMs).toISOString()}` : 'nothing is backed up yet' },
      );
    }
    if (this.#relocations !== this.repo.relocationsRead) {
      // Prune repacked since: the trees loaded before name chunks at their old places.
      this.#snapshots.clear();
      this.#sizes.clear();
      this.#relocations = this.repo.relocationsRead;
    }
    const key = `${source}\0${seq}`;
    let p = this.#snapshots.get(key);
    if (p !== undefined) {
      this.#snapshots.delete(key);
      this.#snapshots.set(key, p);
      return p;
    }
    p = this.repo.loadState(source, seq).then(({ state }) => {
      this.#sizes.set(key, state.size);
      this.#evict(key);
      return new Snapshot(source, seq, info.timeMs, state);
    });
    this.#snapshots.set(key, p);
    p.catch(() => this.#snapshots.delete(key));
    this.#evict(key);
    return p;
  }

  /** Drops the least recently used trees beyond SNAPSHOTS_KEPT or ENTRIES_KEPT, never `keep`. */
  #evict(keep: string): void {
    const total = (): number => [...this.#snapshots.keys()].reduce((n, k) => n + (this.#sizes.get(k) ?? 0), 0);
    for (const k of [...this.#snapshots.keys()]) {
      if (this.#snapshots.size <= 1 || (this.#snapshots.size <= SNAPSHOTS_KEPT && total() <= ENTRIES_KEPT)) break;
      if (k === keep) continue;
      this.#snapshots.delete(k);
      this.#sizes.delete(k);
    }
  }

  /**
   * The bytes of a file record, `offset`…`end` (exclusive), a chunk at a time. Chunks before
   * the range are skipped without a read when the record knows their sizes.
   */
  async *content(r: FileRecord, offset = 0, end = r.size): AsyncGenerator<Buffer> {
    let pos = 0;
    let first = 0;
    while (first < r.chunks.length) {
      const size = r.chunks[first]?.size;
      if (size === undefined || pos + size > offset) break;
      pos += size;
      first++;
    }
    const refs = r.chunks.slice(first);
    const fetcher = new ChunkFetcher(this.repo, refs);
    for (const ref of refs) {
      if (pos >= end) return;
      const data = openChunk(this.repo.keys, ref.id, await fetcher.get(ref), chunkWhat(ref));
      const from = Math.max(0, offset - pos);
      const to = Math.min(data.length, end - pos);
      pos += data.length;
      if (to > from) yield data.subarray(from, to);
    }
    if (pos < end) {
      throw new PhoenixError('PHX_CORRUPT', `the chunks of ${r.path} hold ${pos} bytes, the record says ${r.size}`, {
        hint: 'run phoenix check --read-data',
      });
    }
  }

  /** A file's first `end` bytes, in one buffer. */
  async head(r: FileRecord, end: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const b of this.content(r, 0, Math.min(end, r.size))) parts.push(Buffer.from(b));
    return Buffer.concat(parts);
  }

  /** A whole file, when it is at most `max` bytes. */
  bytes(r: FileRecord, max: number): Promise<Buffer | undefined> {
    return r.size > max ? Promise.resolve(undefined) : this.head(r, r.size);
  }

  /** What was deleted (removed, not moved) between `fromMs` and `toMs`, newest first. */
  async deletions(source: string, fromMs: number, toMs: number, limit = 1000): Promise<Deletion[]> {
    const commits = await this.commits(source);
    const startSeq = seqAt(commits, fromMs);
    const state: TreeState = startSeq === undefined ? new Map() : new Map((await this.snapshot(source, { seq: startSeq })).state);
    const range = commits.filter((c) => c.timeMs > fromMs && c.timeMs <= toMs && (startSeq === undefined || c.seq > startSeq));
    const out: Deletion[] = [];
    let prevMs = commits.find((c) => c.seq === startSeq)?.timeMs ?? 0;
    const all = await mapLimited(range, 8, (c) => this.repo.readCommit(c));
    for (const c of all) {
      for (const ch of c.changes) {
        if (ch.op === 'delete') {
          const old = state.get(ch.path);
          if (old !== undefined) {
            let entries = 0;
            if (old.type === 'dir') for (const p of state.keys()) if (isWithin(p, ch.path)) entries++;
            out.push({
              path: ch.path,
              type: old.type,
              size: old.size,
              entries: Math.max(1, entries),
              seq: c.seq,
              timeMs: c.timeMs,
              restoreAtMs: prevMs,
            });
          }
        }
        applyChange(state, ch);
      }
      prevMs = c.timeMs;
    }
    // Deleted and not there again at the end of the period.
    const seen = new Set<RawPath>();
    return out
      .reverse()
      .filter((d) => !state.has(d.path) && !seen.has(d.path) && seen.add(d.path))
      .slice(0, limit);
  }
}
