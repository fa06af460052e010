import Database from 'better-sqlite3';

/**
 * Where a tree keeps the files of the directories it has not used lately: one blob per
 * directory in a private SQLite database that SQLite makes in its temporary directory
 * (SQLITE_TMPDIR, TMPDIR, else /var/tmp) and unlinks at once, so nothing is left behind even
 * after a kill -9. Nothing in it needs to survive: a tree is rebuilt by a scan at every start.
 */
export class SpillStore {
  readonly #db: Database.Database;
  readonly #put: Database.Statement;
  readonly #get: Database.Statement;
  readonly #del: Database.Statement;

  constructor() {
    this.#db = new Database('');
    this.#db.pragma('journal_mode = OFF');
    this.#db.pragma('synchronous = OFF');
    this.#db.pragma('cache_size = -2048'); // 2 MiB of pages in memory; the rest is the page cache's
    this.#db.exec('CREATE TABLE dirs (id INTEGER PRIMARY KEY, files BLOB NOT NULL)');
    this.#put = this.#db.prepare('INSERT OR REPLACE INTO dirs (id, files) VALUES (?, ?)');
    this.#get = this.#db.prepare('SELECT files FROM dirs WHERE id = ?').pluck();
    this.#del = this.#db.prepare('DELETE FROM dirs WHERE id = ?');
  }

  put(id: number, files: Buffer): void {
    this.#put.run(id, files);
  }

  get(id: number): Buffer {
    const b = this.#get.get(id) as Buffer | undefined;
    if (b === undefined) throw new Error(`the tree's spill store lost directory ${id}`);
    return b;
  }

  delete(id: number): void {
    this.#del.run(id);
  }

  close(): void {
    this.#db.close();
  }
}
