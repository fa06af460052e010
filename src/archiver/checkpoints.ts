import type { CommitInfo, Repository } from '../repo/repository.js';

/** Commits between checkpoints at least (floor) and at most (ceiling), whatever their bytes. */
export const CHECKPOINT_FLOOR = 16;
export const CHECKPOINT_CEILING = 4096;
/** A checkpoint is due when the commits since the last one hold this fraction of its bytes. */
export const CHECKPOINT_FRACTION = 1;

/**
 * When to write a checkpoint: by cost, not by count and clock. A reader of the tree at any
 * instant fetches the newest checkpoint before it and the commits after that; a checkpoint is
 * written once those commits hold as many bytes as the checkpoint itself (at least FLOOR
 * commits after it, at most CEILING), so a restore reads at most about two checkpoints'
 * worth, and the metadata written a day grows with the changes, not with the tree's size.
 * Commit 1 holds a whole tree: with no checkpoint yet, it is the base.
 */
export class CheckpointPolicy {
  #baseSeq = 0;
  #baseBytes = 0;
  #sinceBytes = 0;
  #sinceCommits = 0;

  /** The policy's state from the repository: the newest checkpoint's size and the commits after it. */
  static async load(repo: Repository, source: string, commits: readonly CommitInfo[]): Promise<CheckpointPolicy> {
    const p = new CheckpointPolicy();
    const newest = Math.max(0, ...(await repo.checkpointSeqs(source)));
    if (newest > 0) {
      p.#baseSeq = newest;
      p.#baseBytes = await repo.checkpointBytes(source, newest).catch(() => 0);
    } else if (commits[0] !== undefined) {
      p.#baseSeq = 1;
      p.#baseBytes = commits[0].size ?? 0;
    }
    for (const c of commits) {
      if (c.seq <= p.#baseSeq) continue;
      p.#sinceBytes += c.size ?? 0;
      p.#sinceCommits++;
    }
    return p;
  }

  get baseSeq(): number {
    return this.#baseSeq;
  }

  /** Commit `seq`, of `bytes`, was written. */
  committed(seq: number, bytes: number): void {
    if (this.#baseSeq === 0) {
      this.#baseSeq = seq;
      this.#baseBytes = bytes;
      return;
    }
    this.#sinceBytes += bytes;
    this.#sinceCommits++;
  }

  /** A checkpoint after the last commit is due. */
  due(): boolean {
    if (this.#sinceCommits < CHECKPOINT_FLOOR) return false;
    return this.#sinceCommits >= CHECKPOINT_CEILING || this.#sinceBytes >= CHECKPOINT_FRACTION * this.#baseBytes;
  }

  /** A checkpoint after commit `seq` is being written (its size, once known, comes with `sized`). */
  writing(seq: number): void {
    this.#baseSeq = seq;
    this.#sinceBytes = 0;
    this.#sinceCommits = 0;
  }

  /** The checkpoint after `seq` was written, and fetching it costs `bytes`. */
  sized(seq: number, bytes: number): void {
    if (seq === this.#baseSeq) this.#baseBytes = bytes;
  }
}
