import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RawPath } from '../model/path.js';
import { decodeRecord, TreeDigest, type FileRecord, type JournalChange, type Keys, type TrackedTree } from '../repo/index.js';
import { StateDb, type KnownFiles, type Snapshot } from './db.js';
import { processAlive } from '../util/process.js';

/** The tree's rows, as one source of the scratch StateDb. */
const TREE = 'tree';

/**
 * A whole tree kept on disk for a while (forget's working tree): a SQLite file of its own,
 * deleted at close(). Memory holds what is being changed, never the tree; a directory's removal
 * or move is a range of rows (StateDb.applyChanges).
 */
export class ScratchTree implements TrackedTree {
  readonly #dir: string;
  readonly #db: StateDb;
  readonly #rows: KnownFiles;

  /** `parent`: where the file goes (default: the system's temporary directory). */
  constructor(parent: string = tmpdir()) {
    mkdirSync(parent, { recursive: true, mode: 0o700 });
    removeStale(parent);
    this.#dir = mkdtempSync(join(parent, `phoenix-tree-${process.pid}-`));
    this.#db = new StateDb(join(this.#dir, 'tree.sqlite'), { scratch: true });
    this.#rows = this.#db.known(TREE);
  }

  get(p: RawPath): FileRecord | undefined {
    return this.#rows.get(p)?.rec;
  }

  below(dir: RawPath): RawPath[] {
    return this.#rows.below(dir);
  }

  size(): number {
    return this.#db.count(TREE);
  }

  /** Empties the tree, then fills it with `records` (a checkpoint's, say). */
  async load(records: AsyncIterable<FileRecord> | Iterable<FileRecord>): Promise<void> {
    this.#db.clearSource(TREE);
    let batch: FileRecord[] = [];
    for await (const r of records) {
      if (batch.push(r) < 4096) continue;
      this.#db.putRecords(TREE, batch);
      batch = [];
    }
    this.#db.putRecords(TREE, batch);
  }

  /** Applies a change as it is (applyTracked follows one with a digest and before-images). */
  apply(ch: JournalChange): void {
    this.#db.applyChanges(TREE, [ch]);
  }

  applyAll(changes: Iterable<JournalChange>): void {
    this.#db.applyChanges(TREE, changes);
  }

  /** Marks the tree as it is now: rewind() brings it back (no reads of all rows in between: records(), digest()). */
  fork(): void {
    this.#db.fork();
  }

  rewind(): void {
    this.#db.rewind();
  }

  /** The digest of the whole tree (one pass over its rows). */
  digest(keys: Keys): TreeDigest {
    const d = new TreeDigest(keys);
    for (const r of this.records()) d.add(decodeRecord(JSON.parse(r.json) as Record<string, unknown>));
    return d;
  }

  /** The records in byte order of path, encoded (as checkpoints store them), lazily. */
  records(): Snapshot {
    return this.#db.snapshot(TREE);
  }

  close(): void {
    this.#db.close();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** Scratch trees left by processes that are gone (killed before close()). */
function removeStale(parent: string): void {
  for (const name of readdirSync(parent)) {
    const pid = Number(/^phoenix-tree-(\d+)-/.exec(name)?.[1] ?? 0);
    if (pid === 0 || pid === process.pid || processAlive(pid)) continue;
    rmSync(join(parent, name), { recursive: true, force: true });
  }
}
