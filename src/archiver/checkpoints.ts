import type { CommitInfo, Repository } from '../repo/index.js';

/** Commits between checkpoints at least (floor) and at most (ceiling), whatever their bytes. */
export const CHECKPOINT_FLOOR = 16;
export const CHECKPOINT_CEILING = 4096;
/** A reader may fetch this many checkpoints' worth (checkpoint and commits after it) before a new checkpoint is due. */
export const CHECKPOINT_READ_LIMIT = 2;
/** What a record costs in a checkpoint before one is written (then: what the last one cost). */
const BYTES_PER_ENTRY_GUESS = 50;

/**
 * When to write a checkpoint: by cost, not by count and clock. A reader of the tree at any
 * instant fetches the newest checkpoint before it and the commits after that (all commits when
 * there is none). A checkpoint is due once that costs CHECKPOINT_READ_LIMIT times what a new
 * checkpoint would (estimated from the last one's bytes per entry, or a guess before the first),
 * and at least FLOOR, at most CEILING commits after the last. So a restore reads at most about
 * two checkpoints' worth, and the metadata written a day grows with the changes, not with the
 * tree's size × minutes; a checkpoint stores again only the parts that changed.
 */
export class CheckpointPolicy {
  #baseSeq = 0;
  #baseBytes = 0;
  #perEntry = BYTES_PER_ENTRY_GUESS;
  #entries = 0;
  #sinceBytes = 0;
  #sinceCommits = 0;

  /** The policy's state from the repository (the newest checkpoint and the commits after it) and the tree's size. */
  static async load(repo: Repository, source: string, commits: readonly CommitInfo[], entries: number): Promise<CheckpointPolicy> {
    const p = new CheckpointPolicy();
    p.#entries = entries;
    const newest = Math.max(0, ...(await repo.checkpointSeqs(source)));
    if (newest > 0) {
      const cp = await repo.checkpointInfo(source, newest).catch(() => undefined);
      p.#baseSeq = newest;
      p.#baseBytes = cp?.bytes ?? 0;
      if (cp !== undefined && cp.entries > 0) p.#perEntry = cp.bytes / cp.entries;
    }
    for (const c of commits) {
      if (c.seq <= p.#baseSeq) continue;
      p.#sinceBytes += c.size ?? 0;
      p.#sinceCommits++;
    }
    return p;
  }

  /** Commit `seq`, of `bytes`, was written; the tree now has `entries` entries. */
  committed(bytes: number, entries: number): void {
    this.#sinceBytes += bytes;
    this.#sinceCommits++;
    this.#entries = entries;
  }

  /** The tree has `entries` entries (counted). */
  resized(entries: number): void {
    this.#entries = entries;
  }

  /** A checkpoint after the last commit is due. */
  due(): boolean {
    if (this.#sinceCommits < CHECKPOINT_FLOOR) return false;
    if (this.#sinceCommits >= CHECKPOINT_CEILING) return true;
    return this.#baseBytes + this.#sinceBytes >= CHECKPOINT_READ_LIMIT * this.#entries * this.#perEntry;
  }

  /** A checkpoint after commit `seq` is being written (its cost, once known, comes with `sized`). */
  writing(seq: number): void {
    this.#baseSeq = seq;
    this.#baseBytes = this.#entries * this.#perEntry;
    this.#sinceBytes = 0;
    this.#sinceCommits = 0;
  }

  /** The checkpoint after `seq` was written: `entries` records, fetched for `bytes`. */
  sized(seq: number, bytes: number, entries: number): void {
    if (seq !== this.#baseSeq) return;
    this.#baseBytes = bytes;
    if (entries > 0) this.#perEntry = bytes / entries;
  }
}
