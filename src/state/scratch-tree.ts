import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RawPath } from '../model/path.js';
import { decodeRecord, recordOf, TreeDigest, type FileRecord, type JournalChange, type Keys } from '../repo/index.js';
import { StateDb, type KnownFiles, type Snapshot } from './db.js';
import { processAlive } from '../util/process.js';

/**
 * Whole trees kept on disk for a while (forget's working trees), in named slots: a SQLite file
 * of its own, deleted at close(). Memory holds what is being changed, never the tree; a
 * directory's removal or move is a range of rows (StateDb.applyChanges).
 */
export class ScratchTree {
  readonly #dir: string;
  readonly #db: StateDb;
  readonly #known = new Map<string, KnownFiles>();

  /** `parent`: where the file goes (default: the system's temporary directory). */
  constructor(parent: string = tmpdir()) {
    mkdirSync(parent, { recursive: true, mode: 0o700 });
    removeStale(parent);
    this.#dir = mkdtempSync(join(parent, `phoenix-tree-${process.pid}-`));
    this.#db = new StateDb(join(this.#dir, 'tree.sqlite'), { scratch: true });
  }

  #slot(slot: string): KnownFiles {
    let k = this.#known.get(slot);
    if (k === undefined) this.#known.set(slot, (k = this.#db.known(slot)));
    return k;
  }

  get(slot: string, p: RawPath): FileRecord | undefined {
    return this.#slot(slot).get(p)?.rec;
  }

  /** `slot` as something to look paths up in. */
  view(slot: string): { get(p: RawPath): FileRecord | undefined } {
    return { get: (p) => this.get(slot, p) };
  }

  size(slot: string): number {
    return this.#db.count(slot);
  }

  /** Empties `slot`, then fills it with `records` (a checkpoint's, say) and `changes` applied after them. */
  async load(slot: string, records: AsyncIterable<FileRecord> | Iterable<FileRecord>): Promise<void> {
    this.#db.clearSource(slot);
    let batch: FileRecord[] = [];
    for await (const r of records) {
      if (batch.push(r) < 4096) continue;
      this.#db.putRecords(slot, batch);
      batch = [];
    }
    this.#db.putRecords(slot, batch);
  }

  /** Applies changes as they are (nothing tracked). */
  applyAll(slot: string, changes: Iterable<JournalChange>): void {
    this.#db.applyChanges(slot, changes);
  }

  /**
   * Applies `ch`, keeping `digest` in step with it and noting in `before` what each path it
   * affects held before its first change (null: nothing) — applyTracked, on disk.
   */
  apply(slot: string, ch: JournalChange, digest?: TreeDigest, before?: Map<RawPath, FileRecord | null>): void {
    const k = this.#slot(slot);
    const below = (p: RawPath): RawPath[] => k.below(p);
    let paths: RawPath[];
    if (ch.op === 'put') {
      const old = k.get(ch.path)?.rec;
      paths = old?.type === 'dir' && ch.type !== 'dir' ? [ch.path, ...below(ch.path)] : [ch.path];
    } else if (ch.op === 'delete') {
      paths = [ch.path, ...below(ch.path)];
    } else {
      const moving = [ch.from, ...below(ch.from)];
      paths = [...new Set([...moving, ch.path, ...below(ch.path), ...moving.map((p) => ch.path + p.slice(ch.from.length))])];
    }
    for (const p of paths) {
      const r = k.get(p)?.rec;
      if (before !== undefined && !before.has(p)) before.set(p, r ?? null);
      if (r !== undefined) digest?.remove(r);
    }
    this.#db.applyChanges(slot, [ch]);
    if (digest === undefined) return;
    // A put of one path stores the record it carries: no need to read it back.
    if (ch.op === 'put' && paths.length === 1) return digest.add(recordOf(ch));
    for (const p of paths) {
      const r = k.get(p)?.rec;
      if (r !== undefined) digest.add(r);
    }
  }

  /** Marks every slot as it is now: rewind() brings them back (no reads of all rows in between: records(), digest()). */
  fork(): void {
    this.#db.fork();
  }

  rewind(): void {
    this.#db.rewind();
  }

  /** The digest of the whole tree in `slot` (one pass over its rows). */
  digest(slot: string, keys: Keys): TreeDigest {
    const d = new TreeDigest(keys);
    for (const r of this.records(slot)) d.add(decodeRecord(JSON.parse(r.json) as Record<string, unknown>));
    return d;
  }

  /** The records of `slot` in byte order of path, encoded (as checkpoints store them), lazily. */
  records(slot: string): Snapshot {
    return this.#db.snapshot(slot);
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
