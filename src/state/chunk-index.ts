import type Database from 'better-sqlite3';
import { type ChunkRef, HEX_ID } from '../repo/index.js';
import { ChunkFilter } from './chunk-filter.js';

/** Ids read from the index into a filter being built, per lookup (about 6 ms). */
const FILTER_STEP = 4096;

/** The log is merged into the table when it holds as many rows as the table, within these bounds. */
const LOG_MIN = 65_536;
const LOG_MAX = 524_288;

/** Log rows written by one statement (putMany). */
const LOG_BATCH = 64;

/**
 * Where each chunk lives, by id (the state's dedup index): two SQLite tables and a little memory.
 *
 * - `chunks`, keyed by id. Ids are random, so an insert lands on a random page of its B-tree:
 *   once the table outgrows the page cache, a commit of 20,000 new chunks dirties about as many
 *   pages, and writes each to the WAL (and again at the checkpoint). On a first backup of
 *   2,000,000 files that was about 60 s of the main thread, growing with the table.
 * - `chunk_log`, rows appended in insert order (each commit writes a few pages at its end), and
 *   found through `#logged` (30 bits of the id → the row). When it holds as many rows as the
 *   table (at least LOG_MIN, at most LOG_MAX), it is merged into `chunks` in id order, which
 *   writes each page of the table about once, in the same transaction as the insert that filled
 *   it. Every merge rewrites the whole table, so they are few: a first backup of 2,000,000 files
 *   merged 13 times (9.1 million rows written) when the log was merged at a quarter of the
 *   table, and 6 times (3.6 million) now; it took 114 and 106 s instead of 130 and 123. LOG_MAX
 *   bounds the memory (`#logged`, 14 MiB): once the table holds that many, a merge comes every
 *   LOG_MAX rows.
 * - A Bloom filter (ChunkFilter) of every id, once lookups are many: most chunks of a first
 *   backup are new, and "no" needs no SQLite at all. It is read from the index once per
 *   process, and grows with the inserts after that.
 *
 * Ids and pack ids are stored as 32 bytes (IdKey), and `chunks` is one B-tree (WITHOUT ROWID):
 * 2,000,000 chunks took 314 MB instead of 652 (hex text, a table and its index), in the same
 * time (18.3–18.7 s against 18.3–18.8 for their rows and lookups, alternated).
 *
 * A miss here can only make a chunk be stored twice, never lost (another process writing the
 * same state file meanwhile has log rows this one does not know). A hit must name a pack that
 * still exists: a purge removes the pack's rows from both tables, and a log an older build
 * (which knows only `chunks`) may have left stale by applying a deletion plan is dropped at open.
 */
export class ChunkIndex {
  readonly #db: Database.Database;
  readonly #get: Database.Statement;
  readonly #put: Database.Statement;
  readonly #append: Database.Statement;
  readonly #appendMany: Database.Statement;
  readonly #logRow: Database.Statement;
  /** 30 bits of an id → its newest row in chunk_log (ids whose bits collide go to `chunks` instead). */
  readonly #logged = new Map<number, number>();
  #logRows = 0;
  #tableRows: number | undefined;

  constructor(db: Database.Database) {
    this.#db = db;
    db.exec(`
      CREATE TABLE IF NOT EXISTS chunks (id BLOB PRIMARY KEY, pack BLOB NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS chunk_log (n INTEGER PRIMARY KEY, id BLOB NOT NULL, pack BLOB NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS chunk_log_plans (n INTEGER NOT NULL);
    `);
    this.#get = db.prepare('SELECT pack, offset, length FROM chunks WHERE id = ?').raw();
    this.#put = db.prepare('INSERT OR REPLACE INTO chunks (id, pack, offset, length) VALUES (?, ?, ?, ?)');
    this.#append = db.prepare('INSERT INTO chunk_log (id, pack, offset, length) VALUES (?, ?, ?, ?)');
    this.#appendMany = db.prepare(
      `INSERT INTO chunk_log (id, pack, offset, length) VALUES ${Array(LOG_BATCH).fill('(?, ?, ?, ?)').join(', ')}`,
    );
    this.#logRow = db.prepare('SELECT id, pack, offset, length FROM chunk_log WHERE n = ?').raw();
    db.transaction(() => {
      // Deletion plans applied (by any build) since this log was last in step with them: an
      // older build purged `chunks` only, so the log may name deleted packs. Dropping it loses
      // deduplication of its chunks, nothing else.
      const plans = db.prepare('SELECT count(*) FROM plans').pluck().get() as number;
      const mark = db.prepare('SELECT n FROM chunk_log_plans').pluck().get() as number | undefined;
      if (mark !== plans) {
        db.exec('DELETE FROM chunk_log; DELETE FROM chunk_log_plans');
        db.prepare('INSERT INTO chunk_log_plans (n) VALUES (?)').run(plans);
      }
    })();
  }

  /** Whether the log's rows are in `#logged` (read at the first lookup or insert, not at open). */
  #loaded = false;

  /**
   * Reads the log's rows into `#logged`, once. Not at open: a backup in which nothing changed
   * never looks a chunk up, and reading a log of 20,000 rows was an eighth of such a backup of
   * 20,000 files (half a million rows at most: seconds).
   */
  #load(): void {
    if (this.#loaded) return;
    this.#loaded = true;
    let collided = false;
    const rows = this.#db.prepare('SELECT n, id FROM chunk_log ORDER BY n').raw().iterate() as Iterable<[number, IdKey]>;
    for (const [n, key] of rows) {
      const k = keyOf(idOf(key));
      if (this.#takenByAnother(k, key)) collided = true;
      this.#logged.set(k, n);
      this.#logRows++;
    }
    if (collided) this.#db.transaction(() => this.#merge())();
  }

  get(id: string): ChunkRef | undefined {
    this.#load();
    if (!this.#mayHave(id)) return undefined;
    const key = idKey(id);
    const n = this.#logged.get(keyOf(id));
    if (n !== undefined) {
      const r = this.#logRowAt(n);
      // Not this id: the row was merged (by another process too) and its number reused.
      if (r !== undefined && sameKey(r[0], key)) return { id, pack: idOf(r[1]), offset: r[2], length: r[3] };
    }
    const r = this.#get.get(key) as [IdKey, number, number] | undefined;
    return r ? { id, pack: idOf(r[0]), offset: r[1], length: r[2] } : undefined;
  }

  /** Adds or moves a chunk. Inside the caller's transaction; every insert goes through here, so the filter never misses an id. */
  put(c: ChunkRef): void {
    this.#load();
    const k = keyOf(c.id);
    const key = idKey(c.id);
    if (this.#takenByAnother(k, key)) {
      // Another id with the same 30 bits (about 1 in 4,000 rows of a full log): straight into the table.
      this.#put.run(key, this.#packKey(c.pack), c.offset, c.length);
      if (this.#tableRows !== undefined) this.#tableRows++;
    } else {
      this.#logged.set(k, Number(this.#append.run(key, this.#packKey(c.pack), c.offset, c.length).lastInsertRowid));
      this.#logRows++;
    }
    this.#addToFilter(c.id);
    this.#mergeIfDue();
  }

  /**
   * put() of many chunks: their log rows go in LOG_BATCH at a time, one statement each (400,000
   * rows took about half the time of a statement per row, in a microbenchmark). Inside the
   * caller's transaction.
   */
  putMany(chunks: Iterable<ChunkRef>): void {
    this.#load();
    const batch: ChunkRef[] = [];
    const keys = new Set<number>();
    const args: Array<IdKey | number> = [];
    const flush = (): void => {
      if (batch.length === LOG_BATCH) {
        // A rowid table gives each new row the largest rowid + 1: the batch's rows are numbered in a row.
        const last = Number(this.#appendMany.run(args).lastInsertRowid);
        for (let i = 0; i < LOG_BATCH; i++) {
          const id = (batch[i] as ChunkRef).id;
          this.#logged.set(keyOf(id), last - LOG_BATCH + 1 + i);
          this.#addToFilter(id);
        }
        this.#logRows += LOG_BATCH;
        this.#mergeIfDue();
      } else for (const c of batch) this.put(c);
      batch.length = 0;
      keys.clear();
      args.length = 0;
    };
    for (const c of chunks) {
      const k = keyOf(c.id);
      if (keys.has(k) || this.#logged.has(k)) {
        // Its log key is taken (by this id, or another: about 1 in 4,000 rows of a full log): put() decides, in order.
        flush();
        this.put(c);
        continue;
      }
      batch.push(c);
      keys.add(k);
      args.push(idKey(c.id), this.#packKey(c.pack), c.offset, c.length);
      if (batch.length === LOG_BATCH) flush();
    }
    flush();
  }

  #mergeIfDue(): void {
    // (The table is counted only once the log is that large: a count is a pass over its index.)
    if (this.#logRows >= LOG_MIN && this.#logRows >= Math.min(LOG_MAX, this.#rows())) this.#merge();
  }

  /** The last pack's key (a commit's chunks are in a few packs). */
  #lastPack: [string, IdKey] = ['', ''];

  #packKey(pack: string): IdKey {
    if (this.#lastPack[0] !== pack) this.#lastPack = [pack, idKey(pack)];
    return this.#lastPack[1];
  }

  /** Row `n` of the log (id, pack, offset, length), or undefined when it is gone. */
  #logRowAt(n: number): [IdKey, IdKey, number, number] | undefined {
    return this.#logRow.get(n) as [IdKey, IdKey, number, number] | undefined;
  }

  /** Whether log key `k` leads to a row of another id than `key` (or to a row gone since). */
  #takenByAnother(k: number, key: IdKey): boolean {
    const n = this.#logged.get(k);
    if (n === undefined) return false;
    const r = this.#logRowAt(n);
    return r === undefined || !sameKey(r[0], key);
  }

  /** Forgets every chunk in the packs listed in temp table `doomed(pack)`; inside the caller's transaction. */
  purgeDoomed(): number {
    this.#merge();
    const n = this.#db.prepare('DELETE FROM chunks WHERE pack IN (SELECT pack FROM doomed)').run().changes;
    if (this.#tableRows !== undefined) this.#tableRows -= n;
    return n;
  }

  /** A deletion plan was recorded as applied (in the caller's transaction): the log is in step with it. */
  planApplied(): void {
    this.#db.exec('UPDATE chunk_log_plans SET n = (SELECT count(*) FROM plans)');
  }

  /**
   * The log's rows into the table, in id order (the newest row of an id wins); inside a
   * transaction. Whatever this process knows of the log: a purge must reach the rows another
   * process appended too.
   */
  #merge(): void {
    this.#db.exec('INSERT OR REPLACE INTO chunks (id, pack, offset, length) SELECT id, pack, offset, length FROM chunk_log ORDER BY id, n');
    this.#db.exec('DELETE FROM chunk_log');
    // Counted once per process (100 ms at 2,000,000 rows, seconds with a cold cache), then kept
    // as an estimate: a merged id that was in the table already counts twice.
    if (this.#tableRows !== undefined) this.#tableRows += this.#logRows;
    this.#logged.clear();
    this.#logRows = 0;
    this.#loaded = true; // (the log is empty now)
  }

  #rows(): number {
    return (this.#tableRows ??= this.#db.prepare('SELECT count(*) FROM chunks').pluck().get() as number);
  }

  /** In front of the index once lookups are many (a first backup): see ChunkFilter. */
  #filter: ChunkFilter | undefined;
  /** A filter being filled a step per lookup: from the log (after row `n`), then from the table (after `id`). */
  #building: { filter: ChunkFilter; n: number; id: IdKey | undefined } | undefined;
  #lookups = 0;
  /** Lookups after which the filter is built: about when they would have cost what reading every id costs. */
  #filterAfter: number | undefined;
  #nextLogIds: Database.Statement | undefined;
  #nextIds: Database.Statement | undefined;

  #mayHave(id: string): boolean {
    if (this.#filter !== undefined) return this.#filter.mayHave(id);
    if (this.#building === undefined) {
      const count = this.#rows() + this.#logRows;
      this.#filterAfter ??= Math.max(1024, count / 16);
      if (++this.#lookups < this.#filterAfter) return true;
      this.#building = { filter: new ChunkFilter(Math.max(2 ** 18, 2 * count)), n: 0, id: undefined };
    }
    // A step at a time (a few ms), so that no one lookup stalls the daemon while the whole
    // index is read (2,000,000 ids take about 3 s); until it is whole, SQLite answers. A merge
    // meanwhile moves log rows not read yet into the table, which is read after the log.
    const b = this.#building;
    if (b.id === undefined) {
      this.#nextLogIds ??= this.#db.prepare('SELECT n, id FROM chunk_log WHERE n > ? ORDER BY n LIMIT ?').raw();
      const rows = this.#nextLogIds.all(b.n, FILTER_STEP) as Array<[number, IdKey]>;
      for (const [, k] of rows) b.filter.add(idOf(k));
      if (rows.length === FILTER_STEP) b.n = (rows[rows.length - 1] as [number, IdKey])[0];
      else b.id = '';
      return true;
    }
    // (Text ids sort before blobs: from '' on, every id comes once.)
    this.#nextIds ??= this.#db.prepare('SELECT id FROM chunks WHERE id > ? ORDER BY id LIMIT ?').pluck();
    const ids = this.#nextIds.all(b.id, FILTER_STEP) as IdKey[];
    for (const k of ids) b.filter.add(idOf(k));
    if (ids.length === FILTER_STEP) {
      b.id = ids[ids.length - 1] as IdKey;
      return true;
    }
    this.#filter = b.filter;
    this.#building = undefined;
    return this.#filter.mayHave(id);
  }

  #addToFilter(id: string): void {
    // Into a filter being filled too: the id may sort before the last one read into it. (It
    // grows as it fills: see ChunkFilter.)
    (this.#filter ?? this.#building?.filter)?.add(id);
  }
}

/**
 * 30 bits of a hex id (ids are uniformly random): a small integer, which V8 keeps in the Map's
 * slot itself (no string or heap number per id): 28 bytes a row, 14 MiB for a full log.
 */
function keyOf(id: string): number {
  return parseInt(id.slice(16, 24), 16) & 0x3fffffff;
}

/**
 * How an id (of a chunk or a pack) is stored: 32 bytes when it is 64 lowercase hex digits (every
 * id Phoenix makes), else as it is, text (a repository is untrusted). SQLite keeps each value
 * as given in a BLOB column, and a text value never equals a blob.
 */
export type IdKey = Buffer | string;

export function idKey(id: string): IdKey {
  return HEX_ID.test(id) ? Buffer.from(id, 'hex') : id;
}

export function idOf(key: IdKey): string {
  return typeof key === 'string' ? key : key.toString('hex');
}

function sameKey(a: IdKey, b: IdKey): boolean {
  return typeof a === 'string' || typeof b === 'string' ? a === b : a.equals(b);
}
