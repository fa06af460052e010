import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Entry } from '../model/entry.js';
import { rawFromBuffer, rawToBuffer, type RawPath } from '../model/path.js';
import { ChunkIndex, idKey } from './chunk-index.js';
import { type ChunkRef, type EncodedRecord, type FileRecord, recordJson, type JournalChange } from '../repo/index.js';
import { decodeRow, encodeRow, rowChunks, stampIds, stampString, stampVouches } from './row.js';

/** What the local cache knows of one path: the stored record, plus inode and ctime to skip unchanged files. */
export interface CachedFile {
  rec: FileRecord;
  ino: string;
  /** '' when the cache does not vouch for the content (rebuilt from the repository, or a torn read). */
  ctimeNs: string;
  /** `stampOf(this)`, when it was stored with the row (so checking a file needs no record decoded). */
  readonly stamp?: string;
}

/**
 * What must be equal for a file to be skipped unread: type, mode, owner, mtime, size, inode,
 * ctime and link target. The same string for a cached file and for a scanned entry.
 */
export function stampOf(c: CachedFile): string {
  return stampString(c.rec, c.ino, c.ctimeNs);
}

export function entryStamp(e: Entry): string {
  return `${e.kind}:${e.mode}:${e.uid}:${e.gid}:${e.mtimeNs}:${e.kind === 'file' ? e.size : 0}:${e.ino}:${e.ctimeNs}:${e.target ?? ''}`;
}

/**
 * Whether the cache holds `path` as a directory, given the stamp childStamps gave for it (a
 * row that does not vouch for its content gives none: then the row itself is read).
 */
export function cachedAsDir(known: KnownFiles, path: RawPath, stamp: string | undefined): boolean {
  return stamp === undefined ? known.get(path)?.rec.type === 'dir' : stamp.startsWith('dir:');
}

/** A row of the cache (row.ts): the record is decoded only when used (most of a scan only compares stamps). */
class StoredFile implements CachedFile {
  readonly #path: RawPath;
  readonly #blob: Buffer;
  #rec: FileRecord | undefined;
  // Own fields, not getters: a commit copies a cached file with a spread.
  readonly ino: string;
  readonly ctimeNs: string;

  constructor(
    path: RawPath,
    readonly stamp: string,
    blob: Buffer,
  ) {
    this.#path = path;
    this.#blob = blob;
    ({ ino: this.ino, ctimeNs: this.ctimeNs } = stampIds(stamp));
  }

  get rec(): FileRecord {
    return (this.#rec ??= decodeRow(this.#path, this.stamp, this.#blob));
  }
}

/**
 * Rows read at a time by a range read that may stop early (childStamps): from FIRST_PAGE,
 * doubled with each full page up to PAGE, and back to FIRST_PAGE after a subtree is skipped
 * (a directory of directories reads a row or two of each).
 */
const FIRST_PAGE = 16;
const PAGE = 1024;

/**
 * File rows written by one statement (applyCommit, putRecords): 400,000 rows took about two
 * thirds of the time of a statement per row in a microbenchmark (in a whole first backup, the
 * gain was within the noise of this machine).
 */
const ROW_BATCH = 64;

/** The cache's format (user_version): 1 added files.stamp, 2 made the rows compact (row.ts) and chunk ids binary. */
const STATE_VERSION = 2;

type ChangeStatements = Record<'dropBelow' | 'isDir' | 'toTemp' | 'fromTemp', Database.Statement>;

/** What the cache knows of one source's committed tree (StateDb.known). */
export interface KnownFiles {
  get(path: RawPath): CachedFile | undefined;
  /** The stamp (stampOf) of `path` when the cache vouches for its content, else undefined. */
  stamp(path: RawPath): string | undefined;
  /** Every path strictly below `dir`. */
  below(dir: RawPath): RawPath[];
  /**
   * The stamps of `dir`'s children, by name (undefined where the cache does not vouch for the
   * content): one range read that skips over each subdirectory's subtree, instead of a lookup
   * per child.
   */
  childStamps(dir: RawPath): Map<RawPath, string | undefined>;
  has(path: RawPath): boolean;
}

/** Records as of one instant, read lazily; `close()` when not read to the end. */
export interface Snapshot extends Iterable<EncodedRecord> {
  close(): void;
}

/** One row of the durable queue: a path changed (dirty), a path removed (with what was below it), or a move. */
export interface QueuedChange {
  id: number;
  source: string;
  op: 'path' | 'removed' | 'move';
  path: RawPath;
  from?: RawPath;
  timeMs: number;
  /** Written and still open (a longer settle time). */
  open: boolean;
}

/**
 * The local state: a SQLite cache (WAL) of each source's tree as of its last commit and of
 * where chunks live. It can always be rebuilt from the repository, and is whenever its
 * repository id or commit seq does not match.
 */
export class StateDb {
  readonly #db: Database.Database;
  /** The dedup index (none in a scratch tree). */
  readonly #chunks: ChunkIndex | undefined;
  readonly #putFile: Database.Statement;
  readonly #putFiles: Database.Statement;
  readonly #delFile: Database.Statement;
  readonly #path: string;
  readonly #putQueue: Database.Statement;
  readonly #trimQueue: Database.Statement;
  #lastQueued: number;

  /** A scratch tree (ScratchTree): no chunk index kept, its changes in one open transaction. */
  readonly #scratch: boolean;

  /**
   * `scratch`: a working tree of no value after a crash (forget's): no chunk index kept, and no
   * waiting for the disk.
   */
  constructor(path: string, opts: { scratch?: boolean } = {}) {
    this.#scratch = opts.scratch === true;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#path = path;
    this.#db = new Database(path);
    // `prefix` followed by `path` without its first `skip` bytes (SQL's string functions are not for arbitrary bytes).
    this.#db.function('phx_rebase', { deterministic: true }, (prefix: unknown, path: unknown, skip: unknown) =>
      Buffer.concat([prefix as Uint8Array, (path as Buffer).subarray(Number(skip))]),
    );
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma(this.#scratch ? 'synchronous = OFF' : 'synchronous = NORMAL');
    // A scratch tree is read back path by path as it is changed: 64 MiB of pages stay in memory.
    if (this.#scratch) this.#db.pragma('cache_size = -65536');
    // Version 1 added files.stamp; version 2 made the rows compact (row.ts) and the chunk index's
    // ids binary. Older caches are dropped, and rebuilt from the repository (the queue is kept).
    const version = this.#db.pragma('user_version', { simple: true }) as number;
    if (version < 2)
      this.#db.exec(
        'DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS chunks; DROP TABLE IF EXISTS chunk_log; DROP TABLE IF EXISTS chunk_log_plans;',
      );
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS meta (source TEXT PRIMARY KEY, repo_id TEXT NOT NULL, seq INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS files (source TEXT NOT NULL, path BLOB NOT NULL, stamp TEXT NOT NULL, rec BLOB NOT NULL, PRIMARY KEY (source, path)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, source TEXT NOT NULL, op TEXT NOT NULL, path BLOB NOT NULL, from_path BLOB, time_ms INTEGER NOT NULL, open INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS plans (key TEXT PRIMARY KEY);
      CREATE TABLE IF NOT EXISTS doomed_parts (id TEXT PRIMARY KEY);
    `);
    this.#db.pragma(`user_version = ${STATE_VERSION}`);
    this.#putQueue = this.#db.prepare('INSERT INTO queue (id, source, op, path, from_path, time_ms, open) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.#trimQueue = this.#db.prepare('DELETE FROM queue WHERE source = ? AND id <= ?');
    this.#lastQueued = (this.#db.prepare('SELECT max(id) AS id FROM queue').get() as { id: number | null }).id ?? 0;
    this.#chunks = this.#scratch ? undefined : new ChunkIndex(this.#db);
    this.#putFile = this.#db.prepare('INSERT OR REPLACE INTO files (source, path, stamp, rec) VALUES (?, ?, ?, ?)');
    this.#putFiles = this.#db.prepare(
      `INSERT OR REPLACE INTO files (source, path, stamp, rec) VALUES ${Array(ROW_BATCH).fill('(?, ?, ?, ?)').join(', ')}`,
    );
    this.#delFile = this.#db.prepare('DELETE FROM files WHERE source = ? AND path = ?');
    // A scratch tree's changes stay in one open transaction (a commit per change costs more than
    // the change), made visible to other connections only when they read: snapshot().
    if (this.#scratch) this.#db.exec('BEGIN');
  }

  /** A scratch tree: marks the rows as they are now (rewind() goes back to them). */
  fork(): void {
    this.#db.exec('SAVEPOINT phx_fork');
  }

  /** A scratch tree: back to the rows as they were at fork(). */
  rewind(): void {
    this.#db.exec('ROLLBACK TO phx_fork');
    this.#db.exec('RELEASE phx_fork');
  }

  /** Commits a scratch tree's open transaction (and opens the next), so that other connections see its rows. */
  #publish(): void {
    if (!this.#scratch || !this.#db.inTransaction) return;
    this.#db.exec('COMMIT');
    this.#db.exec('BEGIN');
  }

  /** The seq the cache holds for `source` in repository `repoId`, or undefined when it is not in sync. */
  seq(source: string, repoId: string): number | undefined {
    const row = this.#db.prepare('SELECT repo_id, seq FROM meta WHERE source = ?').get(source) as
      { repo_id: string; seq: number } | undefined;
    return row?.repo_id === repoId ? row.seq : undefined;
  }

  files(source: string): Map<RawPath, CachedFile> {
    const out = new Map<RawPath, CachedFile>();
    const rows = this.#db.prepare('SELECT path, stamp, rec FROM files WHERE source = ?').raw().all(source) as Array<
      [Buffer, string, Buffer]
    >;
    for (const [p, stamp, rec] of rows) {
      const path = rawFromBuffer(p);
      out.set(path, new StoredFile(path, stamp, rec));
    }
    return out;
  }

  chunk(id: string): ChunkRef | undefined {
    return this.#chunks?.get(id);
  }

  #putChunkRow(c: ChunkRef): void {
    this.#chunks?.put(c);
  }

  #putChunkRows(chunks: Iterable<ChunkRef>): void {
    this.#chunks?.putMany(chunks);
  }

  /** Records a commit: files put and deleted, chunks added, the new seq — atomically. */
  applyCommit(
    source: string,
    repoId: string,
    seq: number,
    put: Iterable<CachedFile>,
    deleted: Iterable<RawPath>,
    chunks: Iterable<ChunkRef>,
    inTransaction?: () => void,
  ): void {
    this.#db.transaction(() => {
      inTransaction?.();
      for (const p of deleted) this.#delFile.run(source, rawToBuffer(p));
      this.#putFileRows(source, put);
      this.#putChunkRows(chunks);
      this.#setSeq(source, repoId, seq);
    })();
  }

  /** The deletion plans (keys) whose packs were purged from the chunk index already. */
  plansApplied(): Set<string> {
    return new Set((this.#db.prepare('SELECT key FROM plans').raw().all() as Array<[string]>).map(([k]) => k));
  }

  /** Deletion plans purged from the chunk index by this process so far (a commit compares it with the count when it began). */
  get purges(): number {
    return this.#purges;
  }

  #purges = 0;

  /**
   * Forgets every chunk in `packs` (prune deletes them): deduplication must not name them again.
   * Remembers the metadata `parts` the plan named (never to be written again under their names:
   * partDoomed), and records the plan as applied, in the same transaction.
   */
  purgePacks(plan: string, packs: Iterable<string>, parts: Iterable<string> = []): number {
    this.#purges++;
    let n = 0;
    this.#db.exec('CREATE TEMP TABLE IF NOT EXISTS doomed (pack BLOB PRIMARY KEY)');
    const add = this.#db.prepare('INSERT OR IGNORE INTO doomed (pack) VALUES (?)');
    this.#db.transaction(() => {
      for (const p of packs) add.run(idKey(p));
      // One pass over the index, whatever the number of packs.
      n = this.#chunks?.purgeDoomed() ?? 0;
      this.#db.exec('DELETE FROM doomed');
      const part = this.#db.prepare('INSERT OR IGNORE INTO doomed_parts (id) VALUES (?)');
      for (const id of parts) part.run(id);
      this.#db.prepare('INSERT OR IGNORE INTO plans (key) VALUES (?)').run(plan);
      this.#chunks?.planApplied();
    })();
    return n;
  }

  /** Whether a deletion plan this cache applied named metadata part `id`. */
  partDoomed(id: string): boolean {
    this.#partDoomed ??= this.#db.prepare('SELECT 1 FROM doomed_parts WHERE id = ?').pluck();
    return this.#partDoomed.get(id) !== undefined;
  }

  #partDoomed: Database.Statement | undefined;

  /**
   * Points the cached records at where repacking moved their chunks (and the chunk index too),
   * so that this writer's next checkpoints and commits name the new places.
   */
  relocate(moved: ReadonlyArray<{ from: string; to: ChunkRef }>): number {
    const byPack = new Map<string, Map<string, ChunkRef>>();
    for (const m of moved) {
      let ids = byPack.get(m.from);
      if (ids === undefined) byPack.set(m.from, (ids = new Map()));
      ids.set(m.to.id, m.to);
    }
    let n = 0;
    // One pass over the rows, whatever the number of packs moved: a row is decoded whole only
    // when one of its chunk refs names a moved chunk.
    const changed: Array<[Buffer, string, Buffer]> = [];
    const packs = new Map<string, string>();
    const rows = this.#db.prepare('SELECT source, path, stamp, rec FROM files').raw().iterate() as IterableIterator<
      [string, Buffer, string, Buffer]
    >;
    for (const [source, path, stamp, blob] of rows) {
      const chunks = rowChunks(blob, packs);
      if (!chunks.some((c) => byPack.get(c.pack)?.has(c.id) === true)) continue;
      const moved = chunks.map((c) => {
        const to = byPack.get(c.pack)?.get(c.id);
        if (to === undefined) return c;
        const ref: ChunkRef = { id: to.id, pack: to.pack, offset: to.offset, length: to.length };
        if (c.size !== undefined) ref.size = c.size;
        return ref;
      });
      changed.push([encodeRow({ ...decodeRow(rawFromBuffer(path), stamp, blob), chunks: moved }), source, path]);
    }
    const update = this.#db.prepare('UPDATE files SET rec = ? WHERE source = ? AND path = ?');
    this.#db.transaction(() => {
      for (const row of changed) n += update.run(...row).changes;
      for (const m of moved) this.#putChunkRow(m.to);
    })();
    return n;
  }

  addChunks(chunks: Iterable<ChunkRef>): void {
    this.#db.transaction(() => this.#putChunkRows(chunks))();
  }

  /**
   * The records of `source` in byte order of path, as the cache holds them now: a snapshot (a
   * read transaction on a second connection) that later commits do not change, read lazily so
   * that a checkpoint of any size is written in bounded memory. Consume it to the end (or call
   * `return()`), which ends the read transaction.
   */
  snapshot(source: string): Snapshot {
    const packs = new Map<string, string>();
    return this.#rows(source, 'path, stamp, rec', 'ORDER BY path', (r) => {
      const [p, stamp, blob] = r as [Buffer, string, Buffer];
      const path = rawFromBuffer(p);
      return { path, json: recordJson(decodeRow(path, stamp, blob, packs)) };
    });
  }

  /**
   * What the cache knows of `source`, read from SQLite path by path as it is asked for: the
   * committed tree is never held in memory (a commit's own changes are, until it is durable).
   */
  known(source: string): KnownFiles {
    const one = this.#db.prepare('SELECT stamp, rec FROM files WHERE source = ? AND path = ?').raw();
    const stamp = this.#db.prepare('SELECT stamp FROM files WHERE source = ? AND path = ?').pluck();
    const below = this.#db.prepare('SELECT path FROM files WHERE source = ? AND path > ? AND path < ?').pluck();
    const all = this.#db.prepare('SELECT path FROM files WHERE source = ?').pluck();
    // Pages of rows, not a row at a time: iterate() cost a third more per row.
    const from = this.#db.prepare('SELECT path, stamp FROM files WHERE source = ? AND path >= ? ORDER BY path LIMIT ?').raw();
    const fromTo = this.#db
      .prepare('SELECT path, stamp FROM files WHERE source = ? AND path >= ? AND path < ? ORDER BY path LIMIT ?')
      .raw();
    const exists = this.#db.prepare('SELECT 1 FROM files WHERE source = ? AND path = ?').pluck();
    return {
      get: (path) => {
        const r = one.get(source, rawToBuffer(path)) as [string, Buffer] | undefined;
        return r === undefined ? undefined : new StoredFile(path, r[0], r[1]);
      },
      stamp: (path) => {
        const s = stamp.get(source, rawToBuffer(path)) as string | undefined;
        return s === undefined || !stampVouches(s) ? undefined : s;
      },
      below: (dir) =>
        ((dir === '' ? all.all(source) : below.all(source, rawToBuffer(`${dir}/`), rawToBuffer(`${dir}0`))) as Buffer[]).map(rawFromBuffer),
      childStamps: (dir) => {
        const out = new Map<RawPath, string | undefined>();
        const prefix = dir === '' ? '' : `${dir}/`;
        const end = dir === '' ? undefined : rawToBuffer(`${dir}0`);
        let lo: RawPath | undefined = prefix;
        let limit = FIRST_PAGE;
        while (lo !== undefined) {
          const rows = (
            end === undefined ? from.all(source, rawToBuffer(lo), limit) : fromTo.all(source, rawToBuffer(lo), end, limit)
          ) as Array<[Buffer, string]>;
          const at: RawPath = lo;
          lo = undefined;
          let name = '';
          for (const [p, stamp] of rows) {
            name = rawFromBuffer(p).slice(prefix.length);
            if (name === '') continue; // `dir` itself (only '' could be: it is not stored)
            const slash = name.indexOf('/');
            if (slash >= 0) {
              // Inside a subdirectory: go on after its subtree ('0' follows '/').
              const next = `${prefix}${name.slice(0, slash)}0`;
              if (next > at) lo = next;
              limit = FIRST_PAGE;
              break;
            }
            out.set(name, stampVouches(stamp) ? stamp : undefined);
          }
          // A full page: the next one starts just after its last path (no path holds a NUL byte).
          if (lo === undefined && rows.length === limit) {
            lo = `${prefix}${name}\0`;
            limit = Math.min(PAGE, limit * 2);
          }
        }
        return out;
      },
      has: (path) => exists.get(source, rawToBuffer(path)) !== undefined,
    };
  }

  /**
   * Rows of `source` (`columns`, mapped by `map`), lazily, as of one instant: a read transaction
   * on a connection of its own, so that reads may overlap each other and the commits that go on.
   */
  #rows<T>(source: string, columns: string, order: string, map: (row: unknown) => T): Iterable<T> & { close(): void } {
    this.#publish();
    const reader = new Database(this.#path, { readonly: true, fileMustExist: true });
    reader.prepare('BEGIN').run();
    reader.prepare('SELECT 1 FROM meta LIMIT 1').get(); // the snapshot starts with the first read
    const stmt = reader.prepare(`SELECT ${columns} FROM files WHERE source = ? ${order}`);
    const rows = (columns.includes(',') ? stmt.raw() : stmt.pluck()).iterate(source) as IterableIterator<unknown>;
    let open = true;
    const close = (): void => {
      if (!open) return;
      open = false;
      rows.return?.();
      reader.close(); // ends the read transaction
    };
    return {
      close,
      *[Symbol.iterator]() {
        try {
          for (const r of rows) yield map(r);
        } finally {
          close();
        }
      },
    };
  }

  /** How many entries the cache holds for `source` (a pass over its rows: `holdsAny` only asks whether there are some). */
  count(source: string): number {
    return (this.#db.prepare('SELECT count(*) FROM files WHERE source = ?').pluck().get(source) as number) ?? 0;
  }

  /** Whether the cache holds any entry of `source`. */
  holdsAny(source: string): boolean {
    return this.#db.prepare('SELECT 1 FROM files WHERE source = ? LIMIT 1').pluck().get(source) !== undefined;
  }

  /** Forgets what the cache knows of `source` (a rebuild follows; until it ends the cache is out of sync). */
  clearSource(source: string): void {
    this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM meta WHERE source = ?').run(source);
      this.#db.prepare('DELETE FROM files WHERE source = ?').run(source);
    })();
  }

  /**
   * Applies journal changes to the rows of `source` as docs/FORMAT.md defines them, in SQL: a
   * directory's removal or move is a range of rows, never a walk in memory. Rows put here are
   * not vouched for (no inode or ctime): the next look at such a file reads it.
   */
  applyChanges(source: string, changes: Iterable<JournalChange>): void {
    const db = this.#db;
    const range = (p: RawPath): [Buffer, Buffer] => [rawToBuffer(`${p}/`), rawToBuffer(`${p}0`)];
    const { dropBelow, isDir, toTemp, fromTemp } = (this.#changeStatements ??= this.#prepareChanges());
    const apply = (): void => {
      for (const c of changes) {
        if (c.op === 'put') {
          const { op: _op, ...rec } = c;
          if (rec.type !== 'dir' && isDir.get(source, rawToBuffer(c.path)) !== undefined) dropBelow.run(source, ...range(c.path));
          this.#putFileRow(source, { rec, ino: '', ctimeNs: '' });
          for (const ch of rec.chunks) this.#putChunkRow(ch);
        } else if (c.op === 'delete') {
          this.#delFile.run(source, rawToBuffer(c.path));
          dropBelow.run(source, ...range(c.path));
        } else if (c.from !== c.path) {
          // Through the temporary prefix, so that the target may hold the source (a/b onto a).
          toTemp.run(rawToBuffer(c.from).length, source, rawToBuffer(c.from), ...range(c.from));
          this.#delFile.run(source, rawToBuffer(c.path));
          dropBelow.run(source, ...range(c.path));
          fromTemp.run(rawToBuffer(c.path), source); // (a row's record does not hold its path)
        }
      }
    };
    // A scratch tree is in a transaction already (one per change would cost more than the change).
    if (this.#scratch && db.inTransaction) apply();
    else db.transaction(apply)();
  }

  #changeStatements: ChangeStatements | undefined;

  #prepareChanges(): ChangeStatements {
    const db = this.#db;
    const under = 'path > ? AND path < ?'; // `dir/` < p < `dir0`: everything under dir
    return {
      dropBelow: db.prepare(`DELETE FROM files WHERE source = ? AND ${under}`),
      isDir: db.prepare("SELECT 1 FROM files WHERE source = ? AND path = ? AND substr(stamp, 1, 4) = 'dir:'"),
      // A moved subtree passes through paths that start with '/', which no relative path does.
      toTemp: db.prepare(`UPDATE files SET path = phx_rebase(X'2F', path, ?) WHERE source = ? AND (path = ? OR (${under}))`),
      fromTemp: db.prepare("UPDATE files SET path = phx_rebase(?, path, 1) WHERE source = ? AND path >= X'2F' AND path < X'30'"),
    };
  }

  /** Adds records as they are in the repository (a checkpoint being read into the cache). */
  putRecords(source: string, records: Iterable<FileRecord>): void {
    const chunks: ChunkRef[] = [];
    function* rows(): Generator<CachedFile> {
      for (const rec of records) {
        for (const c of rec.chunks) chunks.push(c);
        yield { rec, ino: '', ctimeNs: '' };
      }
    }
    this.#db.transaction(() => {
      this.#putFileRows(source, rows());
      this.#putChunkRows(chunks);
    })();
  }

  /** Marks the cache of `source` as holding commit `seq` of repository `repoId`. */
  setSeq(source: string, repoId: string, seq: number): void {
    this.#setSeq(source, repoId, seq);
  }

  #putFileRow(source: string, f: CachedFile): void {
    this.#putFile.run(source, rawToBuffer(f.rec.path), stampOf(f), encodeRow(f.rec));
  }

  /** Rows in order, ROW_BATCH to a statement (the rest one by one). */
  #putFileRows(source: string, files: Iterable<CachedFile>): void {
    const args: Array<string | Buffer> = [];
    for (const f of files) {
      args.push(source, rawToBuffer(f.rec.path), stampOf(f), encodeRow(f.rec));
      if (args.length === 4 * ROW_BATCH) {
        this.#putFiles.run(args);
        args.length = 0;
      }
    }
    for (let i = 0; i < args.length; i += 4) this.#putFile.run(args.slice(i, i + 4));
  }

  #setSeq(source: string, repoId: string, seq: number): void {
    this.#db.prepare('INSERT OR REPLACE INTO meta (source, repo_id, seq) VALUES (?, ?, ?)').run(source, repoId, seq);
  }

  // ---- the durable queue of changes seen but not yet committed (phoenix watch) ----

  /** The id the next queued row gets: ids grow, so rows replay in the order they were seen. */
  nextQueueId(): number {
    return ++this.#lastQueued;
  }

  /** Appends rows (ids from nextQueueId) in one transaction. */
  enqueue(rows: readonly QueuedChange[]): void {
    if (rows.length === 0) return;
    this.#db.transaction(() => {
      for (const r of rows)
        this.#putQueue.run(
          r.id,
          r.source,
          r.op,
          rawToBuffer(r.path),
          r.from === undefined ? null : rawToBuffer(r.from),
          r.timeMs,
          r.open ? 1 : 0,
        );
    })();
  }

  /** Drops the rows of `source` up to `id` (call within applyCommit's transaction, with enqueue for what stays pending). */
  trimQueue(source: string, id: number): void {
    this.#trimQueue.run(source, id);
  }

  queued(source: string): QueuedChange[] {
    const rows = this.#db
      .prepare('SELECT id, op, path, from_path, time_ms, open FROM queue WHERE source = ? ORDER BY id')
      .all(source) as Array<{
      id: number;
      op: QueuedChange['op'];
      path: Buffer;
      from_path: Buffer | null;
      time_ms: number;
      open: number;
    }>;
    return rows.map((r) => {
      const q: QueuedChange = { id: r.id, source, op: r.op, path: rawFromBuffer(r.path), timeMs: r.time_ms, open: r.open === 1 };
      if (r.from_path !== null) q.from = rawFromBuffer(r.from_path);
      return q;
    });
  }

  /** Runs `fn` in one transaction. */
  atomically(fn: () => void): void {
    this.#db.transaction(fn)();
  }

  close(): void {
    if (this.#scratch && this.#db.inTransaction) this.#db.exec('COMMIT');
    this.#db.close();
  }
}
