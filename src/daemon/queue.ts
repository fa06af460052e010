import type { Change } from '../model/change.js';
import type { QueuedChange, StateDb } from '../state/db.js';
import type { PendingChanges } from './pending.js';

/**
 * One source's durable queue: every change the watcher reports gets a row (written within the
 * tick, in one transaction per tick) before it waits in the pending set, so a change seen is
 * never lost to a crash; rows leave once the commit that holds them is durable.
 */
export class DurableQueue {
  #buffer: QueuedChange[] = [];
  #lastRow = 0;

  constructor(
    readonly db: StateDb,
    readonly source: string,
    /** The queue cannot be written (a full disk): the changes still wait in memory. */
    readonly onProblem: (message: string) => void,
  ) {}

  /** The id of the newest row handed out: a commit that starts now trims up to it. */
  get lastRow(): number {
    return this.#lastRow;
  }

  /** What the last run saw but did not commit, oldest first. */
  replay(): QueuedChange[] {
    const queued = this.db.queued(this.source);
    this.#lastRow = queued.at(-1)?.id ?? 0;
    return queued;
  }

  /** A row for `c` (written at the end of the tick); its id. */
  record(c: Exclude<Change, { type: 'rescan' }>, now: number): number {
    const id = this.db.nextQueueId();
    const op = c.type === 'moved' ? 'move' : c.type === 'removed' ? 'removed' : 'path';
    const q: QueuedChange = { id, source: this.source, op, path: c.path, timeMs: now, open: c.type === 'modified' && !c.closed };
    if (c.type === 'moved') q.from = c.from;
    if (this.#buffer.push(q) === 1) setImmediate(() => this.flush());
    this.#lastRow = id;
    return id;
  }

  /** Writes the rows of this tick. */
  flush(): void {
    if (this.#buffer.length === 0) return;
    try {
      this.db.enqueue(this.#buffer);
      this.#buffer = [];
    } catch (err) {
      // A full disk, say: the changes are still pending in memory (and are committed); they are
      // only not safe from a crash until the queue can be written again, at the next flush.
      this.onProblem(`cannot write the durable queue (${this.#buffer.length} changes wait in memory): ${(err as Error).message}`);
    }
  }

  /**
   * After a commit of the rows up to `maxRow` (inside its SQLite transaction): they leave the
   * queue, and what is still pending of them gets a row again.
   */
  trim(maxRow: number, pending: PendingChanges): void {
    this.db.trimQueue(this.source, maxRow);
    const keep = pending.requeue(maxRow, () => (this.#lastRow = this.db.nextQueueId()));
    this.db.enqueue(
      keep.map((k) => ({
        id: k.row,
        source: this.source,
        op: k.replaced ? 'removed' : 'path',
        path: k.path,
        timeMs: k.firstMs,
        open: k.open,
      })),
    );
  }
}

/** A queued row as the change it stands for (moves are not replayed: the start-up reconcile finds their effect). */
export function fromQueued(q: QueuedChange): Change {
  if (q.op === 'removed') return { type: 'removed', path: q.path, kind: 'file' };
  return { type: 'modified', path: q.path, kind: 'file', closed: !q.open };
}
