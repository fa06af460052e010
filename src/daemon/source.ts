import { setTimeout as sleep } from 'node:timers/promises';
import { CommitBuilder } from '../archiver/commit.js';
import { syncCache } from '../archiver/backup.js';
import { CheckpointPolicy } from '../archiver/checkpoints.js';
import type { SealPool } from '../archiver/seal-pool.js';
import { isTransient } from '../backend/backend.js';
import { messageOf, PhoenixError } from '../errors.js';
import type { Change } from '../model/change.js';
import { Filter } from '../model/filter.js';
import { displayPath, isWithin, joinRaw, parentOf, toFsPath, type RawPath } from '../model/path.js';
import type { Tree } from '../model/tree.js';
import { LEASE_TTL_MS, type Repository } from '../repo/index.js';
import { lstatEntry } from '../scanner/stat.js';
import { cachedAsDir, entryStamp, type KnownFiles, type StateDb } from '../state/db.js';
import { Watcher, type WatcherOptions, type WatcherState } from '../watcher/watcher.js';
import { fillCommit } from './batch.js';
import { DEFAULT_GUARD, GuardPins, type GuardOptions, type GuardTrip } from './guard.js';
import { LeaseKeeper } from './lease-keeper.js';
import { PendingChanges, type Batch, type SettleTimes } from './pending.js';
import { DurableQueue, fromQueued } from './queue.js';

export interface SourceConfig {
  /** The source's name in the repository (default: its absolute path). */
  name: string;
  path: string;
  exclude: string[];
  oneFileSystem: boolean;
  /** The mass-change guard's thresholds (default DEFAULT_GUARD); null: off. */
  guard?: GuardOptions | null;
  /** A retention policy from the configuration: written to the repository at start. */
  retention?: { policy: string; minAge: string };
}

/** A commit made: `oldestMs`, how long its oldest change waited to be durable; `kinds`, its journal entries by op. */
export interface CommitReport {
  seq: number;
  timeMs: number;
  files: number;
  bytes: number;
  changes: number;
  oldestMs: number | undefined;
  kinds: { put: number; delete: number; move: number };
}

/** What a source reports to the daemon (logs, status). */
export interface SourceEvents {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  /** Every change, batch and read, when tracing (undefined otherwise: costs nothing). */
  trace?: ((msg: string, fields: Record<string, unknown>) => void) | undefined;
  /** A path that could not be backed up, or a commit that failed. */
  problem(path: string | undefined, message: string, code?: string): void;
  committed(c: CommitReport): void;
  /** Every change the watcher reports, rescans included (the dashboard's timeline, the metrics). */
  seen?(c: Change, timeMs: number): void;
  /** Bytes of file content read. */
  bytesRead(n: number): void;
  /** The source cannot go on (its directory is gone, or another writer took the lease). */
  fatal(err: PhoenixError): void;
}

export interface SourceOptions {
  settle: SettleTimes;
  /** A full reconcile scan this often (0: never). */
  reconcileMs: number;
  /** Paths per commit at most, so one commit stays a bounded amount of work and memory. */
  maxBatch?: number;
  /** Longest wait between retries while the store fails. */
  maxBackoffMs?: number;
  /** How often the lease is renewed (and prune's deletion plans looked for). */
  leaseRenewMs?: number;
  /** How long the lease lasts without a renewal. */
  leaseTtlMs?: number;
  /** Where changes come from (default: a Watcher on the source's directory; tests script a stream). */
  changes?: ChangeSourceFactory;
}

/** What a source's changes come from: its watcher, or a scripted stream in tests. */
export interface ChangeSource {
  /** The source's directory, as bytes. */
  readonly root: RawPath;
  /** Everything that exists now, as far as the changes reported so far tell. */
  readonly tree: Tree;
  readonly state: WatcherState;
  /** Resolves once the tree is complete and every later change will be reported. */
  start(): Promise<void>;
  close(): void;
  stats(): { watches: number; unwatched: number };
}

export type ChangeSourceFactory = (path: string, opts: WatcherOptions) => ChangeSource;

export type SourceState = 'starting' | 'scanning' | 'watching' | 'degraded' | 'stopping' | 'stopped' | 'failed';

/** Pending paths above which changes count as a stream, and commits are spaced. */
const BUSY_PENDING = 100;
const COMMIT_SPACING_MS = 100;

/**
 * Keeps one source's journal up to date: every change its watcher reports goes to the durable
 * queue and the pending set; settled paths are read and committed in batches; a failing store
 * is retried with backoff while the queue waits on disk. The lease (LeaseKeeper), the queue
 * (DurableQueue), the batch's reading (fillCommit) and the guard's pins (GuardPins) are apart;
 * this class schedules commits and wires them.
 */
export class SourceRunner {
  readonly #repo: Repository;
  readonly #db: StateDb;
  readonly #pool: SealPool;
  readonly #events: SourceEvents;
  readonly #opts: Required<SourceOptions>;
  readonly #filter: Filter;
  readonly pending: PendingChanges;
  readonly #queue: DurableQueue;
  readonly #lease: LeaseKeeper;
  #watcher: ChangeSource | undefined;
  #known: KnownFiles;
  #seq = 0;
  #state: SourceState = 'starting';
  #timer: NodeJS.Timeout | undefined;
  #timerAt = 0;
  #lastCommitEnd = 0;
  #committing: Promise<void> | undefined;
  #backoffMs = 0;
  #retryAt = 0;
  /** A commit failed: check the journal before the next one. */
  #verify = false;
  #checkpoints = new CheckpointPolicy();
  #checkpointWriting = Promise.resolve();
  /** Files seen rewritten in place, and how often (CommitBuilder cuts them finely after a few). */
  readonly #inPlace = new Map<RawPath, number>();
  /** About how many entries the tree has (counted exactly when a checkpoint may be due), from the start-up reconcile on. */
  #entries = 0;
  lastCommit: { seq: number; timeMs: number } | undefined;
  #guard: GuardPins | undefined;
  overflows = 0;
  /** Commits fail (the store is unreachable, the disk is full): since when, why, the next try. */
  failing: { sinceMs: number; error: string; retryAtMs: number; attempts: number } | undefined;
  /** Paths that could not be backed up, until a later commit has them. */
  readonly #skipped = new Map<RawPath, string>();
  /** The start-up backlog (what changed while Phoenix was not running), until it is committed. */
  #backlog: { changes: number; startMs: number } | undefined;

  constructor(
    readonly config: SourceConfig,
    repo: Repository,
    db: StateDb,
    pool: SealPool,
    events: SourceEvents,
    opts: SourceOptions,
  ) {
    this.#repo = repo;
    this.#db = db;
    this.#pool = pool;
    this.#events = events;
    this.#opts = {
      maxBatch: 5000,
      maxBackoffMs: 60_000,
      leaseRenewMs: 60_000,
      leaseTtlMs: LEASE_TTL_MS,
      changes: (path, o) => new Watcher(path, o),
      ...opts,
    };
    this.#filter = new Filter(config);
    this.pending = new PendingChanges(opts.settle);
    this.#known = db.known(config.name);
    this.#queue = new DurableQueue(db, config.name, (m) => events.problem(undefined, m));
    this.#lease = new LeaseKeeper(
      repo,
      db,
      config.name,
      { renewMs: this.#opts.leaseRenewMs, ttlMs: this.#opts.leaseTtlMs },
      {
        info: (m, f) => events.info(m, f),
        warn: (m) => events.warn(m),
        lost: (err) => this.#fail(err),
        inFlight: async () => {
          await this.#committing?.catch(() => {});
          await this.#checkpointWriting;
        },
      },
    );
  }

  /** The mass-change guard's trips: this run's, and those pinned in the repository before. */
  get guards(): readonly GuardTrip[] {
    return this.#guard?.trips ?? [];
  }

  get state(): SourceState {
    if (this.#state === 'watching' && this.#watcher?.state === 'degraded') return 'degraded';
    return this.#state;
  }

  get watches(): number {
    return this.#watcher?.stats().watches ?? 0;
  }

  /** Directories the watch limit left unwatched (rescanned periodically instead). */
  get unwatched(): number {
    return this.#watcher?.stats().unwatched ?? 0;
  }

  get seq(): number {
    return this.#seq;
  }

  /** What could not be backed up (and no later commit has), with why. */
  skipped(): Array<{ path: RawPath; message: string }> {
    return [...this.#skipped].map(([path, message]) => ({ path, message }));
  }

  /**
   * Takes the lease, brings the cache in line with the repository, replays the durable queue,
   * starts watching, and queues whatever differs between the tree and the last commit (what
   * changed while Phoenix was not running).
   */
  async start(): Promise<void> {
    const name = this.config.name;
    await this.#lease.acquire();
    const commits = await syncCache(this.#repo, this.#db, name);
    // Nothing is in flight yet: the plans syncCache applied are acknowledged at once.
    await this.#lease.acknowledgeApplied();
    const last = commits.at(-1);
    this.#seq = last?.seq ?? 0;
    this.lastCommit = last && { seq: last.seq, timeMs: last.timeMs };
    const guard = this.config.guard === null ? null : (this.config.guard ?? DEFAULT_GUARD);
    this.#guard = new GuardPins(this.#repo, name, guard, this.lastCommit, (m) => this.#events.warn(m));
    await this.#guard.load();
    if (this.config.retention !== undefined) {
      const stored = await this.#repo.storedPolicy(name);
      if (stored?.policy !== this.config.retention.policy || stored.minAge !== this.config.retention.minAge)
        await this.#repo.setPolicy(name, this.config.retention.policy, this.config.retention.minAge);
    }
    // The tree's size comes with the reconcile below: a count of the cache's rows took 40 ms at
    // 400,000 files, 134 ms with a cold page cache (as at a boot).
    this.#checkpoints = await CheckpointPolicy.load(this.#repo, name, commits, 0);
    // What the last run saw but did not commit. Its moves are not replayed: the reconcile below
    // compares the tree with the last commit and finds their effect (a removal and an addition,
    // no data uploaded), where a replayed move could name what is long gone.
    const queued = this.#queue.replay();
    for (const q of queued) if (q.op !== 'move') this.pending.add(fromQueued(q), q.timeMs, q.id);
    if (queued.length > 0) this.#events.info('replaying the queue of the last run', { changes: queued.length });

    this.#state = 'scanning';
    this.#watcher = this.#opts.changes(this.config.path, {
      exclude: this.config.exclude,
      oneFileSystem: this.config.oneFileSystem,
      periodicScanMs: this.#opts.reconcileMs,
      onChange: (c) => this.#onChange(c),
      onWarning: (w) => this.#events.problem(undefined, `${w.message}${w.hint ? ` (${w.hint})` : ''}`),
      onFatal: (err) => this.#fail(err),
    });
    await this.#watcher.start();
    // The reconcile: the tree as it is now against the last commit, directory by directory:
    // one range read of the cache per directory (no lookup per path, no pass over every row).
    const now = Date.now();
    const tree = this.#watcher.tree;
    let differ = 0;
    const note = (type: 'created' | 'removed', p: RawPath): void => {
      this.#record({ type, path: p, kind: 'file' }, now);
      differ++;
    };
    for (const dir of tree.dirs()) {
      const kids = this.#known.childStamps(dir);
      tree.forEachChild(dir, (name, e) => {
        const had = kids.has(name);
        const stamp = kids.get(name);
        kids.delete(name);
        if (had && stamp === entryStamp(e)) return;
        const p = joinRaw(dir, name);
        // A directory that is something else now: removed with its subtree, then read as it is.
        note(had && e.kind !== 'dir' && cachedAsDir(this.#known, p, stamp) ? 'removed' : 'created', p);
      });
      // What the cache has and the tree does not (a directory with its subtree).
      for (const name of kids.keys()) note('removed', joinRaw(dir, name));
    }
    this.#events.info('reconciled with the last commit', { entries: tree.size, changed: differ, seq: this.#seq });
    // About what the tree will hold once the backlog is committed (counted exactly when a checkpoint may be due).
    this.#entries = tree.size;
    this.#checkpoints.resized(this.#entries);
    if (this.pending.size > 0) this.#backlog = { changes: this.pending.size, startMs: now };
    if (this.#state === 'scanning') this.#state = 'watching';
    this.#schedule();
  }

  /**
   * Stops watching, commits everything pending (ready or not) until `deadlineMs`, releases the
   * lease. False when something was left pending (it stays in the durable queue).
   */
  async stop(deadlineMs: number): Promise<boolean> {
    if (this.#state === 'stopped') return true;
    const failed = this.#state === 'failed';
    this.#state = 'stopping';
    this.#watcher?.close();
    clearTimeout(this.#timer);
    this.#queue.flush();
    while (!failed && this.pending.size > 0 && Date.now() < deadlineMs) {
      await this.#committing;
      if (this.#retryAt > Date.now()) await sleep(Math.min(this.#retryAt, deadlineMs) - Date.now());
      if (Date.now() >= deadlineMs) break;
      await this.#commit(true);
    }
    await this.#committing;
    await this.#checkpointWriting;
    this.#lease.stop();
    const clean = this.pending.size === 0;
    if (!failed) await this.#lease.release();
    this.#state = 'stopped';
    return clean;
  }

  #onChange(c: Change): void {
    this.#events.trace?.('change', { change: c });
    this.#events.seen?.(c, Date.now());
    if (c.type === 'rescan') {
      if (c.reason === 'overflow') {
        this.overflows++;
        this.#events.warn('the kernel event queue overflowed: rescanning', { path: displayPath(c.path) });
      } else if (c.reason !== 'periodic') {
        this.#events.info('rescanning', { path: displayPath(c.path), reason: c.reason });
      }
      return;
    }
    const now = Date.now();
    this.#record(c, now);
    // An entry added, removed or renamed changes its directory's mtime, which is committed too
    // (the root's own metadata is not part of a source).
    if (c.type === 'created' || c.type === 'removed' || c.type === 'moved') {
      const parents = new Set([parentOf(c.path), c.type === 'moved' ? parentOf(c.from) : '']);
      for (const dir of parents) if (dir !== '') this.#record({ type: 'attributes', path: dir, kind: 'dir' }, now);
    }
    this.#schedule(true);
  }

  /** Into the durable queue (written within the tick), then into the pending set. */
  #record(c: Exclude<Change, { type: 'rescan' }>, now: number): void {
    this.pending.add(c, now, this.#queue.record(c, now));
  }

  /**
   * Sets the timer for the next commit. `soon`: a change just came, and nothing it touched can
   * be ready before `closedMs` from now — a timer already set to fire by then is left alone
   * (a full look at the pending set per event would cost O(n²) in a burst).
   */
  #schedule(soon = false): void {
    if (this.#committing !== undefined || this.#state === 'stopping' || this.#state === 'stopped' || this.#state === 'failed') return;
    const now = Date.now();
    if (soon && this.#timer !== undefined && this.#timerAt <= now + this.pending.settle.closedMs) return;
    const ready = this.pending.nextReadyMs();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (ready === undefined) return;
    // In a stream of many changes, commits are at least COMMIT_SPACING_MS apart, so a burst
    // costs a few large commits rather than one every settle time; a lone change is not held.
    const spaced = this.pending.size > BUSY_PENDING ? this.#lastCommitEnd + COMMIT_SPACING_MS : 0;
    this.#timerAt = Math.max(now, ready, this.#retryAt, spaced);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#commit(false);
    }, this.#timerAt - now);
  }

  /** Commits what is ready (or everything pending when `all`). */
  #commit(all: boolean): Promise<void> {
    const run = this.#commitOnce(all).finally(() => {
      this.#committing = undefined;
      this.#lastCommitEnd = Date.now();
      this.#schedule();
    });
    this.#committing = run;
    return run;
  }

  async #commitOnce(all: boolean): Promise<void> {
    this.#queue.flush();
    const maxRow = this.#queue.lastRow;
    const batch = this.pending.take(Date.now(), all, this.#opts.maxBatch);
    const name = this.config.name;
    const trimQueue = (): void => this.#queue.trim(maxRow, this.pending);
    if (batch.moves.length === 0 && batch.paths.length === 0) {
      this.pending.done(true);
      this.#db.atomically(trimQueue);
      return;
    }
    const root = this.#watcherRoot();
    try {
      if (this.#verify) await this.#resync();
      const builder = new CommitBuilder(this.#repo, this.#db, this.#pool, name, this.#known, {
        root: this.config.path,
        inPlace: this.#inPlace,
        onProblem: (p, m, code) => {
          this.#skipped.set(p, m);
          this.#events.problem(displayPath(p), m, code);
        },
        onBytes: (n) => this.#events.bytesRead(n),
      });
      await fillCommit(builder, batch, {
        tree: this.#watcher?.tree,
        root,
        filter: this.#filter,
        lstat: (p) => this.#lstat(root, p),
        trace: this.#events.trace,
      });
      const done = await builder.commit(this.#seq + 1, trimQueue, this.#lease.check(builder.purgesAtStart));
      this.#landed(done, batch, builder);
    } catch (err) {
      this.#failed(err);
    }
  }

  /**
   * The last attempt failed, perhaps after its commit object landed (a lost response): if the
   * journal moved on, takes the cache from the repository before building on it (syncCache
   * rebuilds the cache when the journal's latest seq is not the cache's).
   */
  async #resync(): Promise<void> {
    const last = (await syncCache(this.#repo, this.#db, this.config.name)).at(-1);
    if ((last?.seq ?? 0) !== this.#seq) {
      this.#events.warn('the journal has a commit this daemon did not see complete: reloaded the cache', {
        seq: this.#seq,
        latest: last?.seq,
      });
      this.#seq = last?.seq ?? 0;
      this.lastCommit = last && { seq: last.seq, timeMs: last.timeMs };
    }
    this.#verify = false;
  }

  /** A commit was made (or found nothing to write): the queue, the pending set, the reports, the guard and the checkpoint policy hear of it. */
  #landed(done: Awaited<ReturnType<CommitBuilder['commit']>>, batch: Batch, builder: CommitBuilder): void {
    this.pending.done(true);
    this.#backoffMs = 0;
    this.#retryAt = 0;
    if (this.failing !== undefined) {
      this.#events.info(`commits succeed again after ${((Date.now() - this.failing.sinceMs) / 1000).toFixed(1)} s of failures`, {
        attempts: this.failing.attempts,
      });
      this.failing = undefined;
    }
    if (done !== undefined && this.#skipped.size > 0) {
      for (const ch of done.commit.changes) {
        if (ch.op === 'put') this.#skipped.delete(ch.path);
        else for (const p of this.#skipped.keys()) if (isWithin(p, ch.op === 'move' ? ch.from : ch.path)) this.#skipped.delete(p);
      }
    }
    if (this.#backlog !== undefined && this.pending.size === 0) {
      this.#events.info(
        `start-up backlog done: ${this.#backlog.changes} changes committed in ${((Date.now() - this.#backlog.startMs) / 1000).toFixed(1)} s`,
      );
      this.#backlog = undefined;
    }
    if (done !== undefined) {
      this.#seq = done.commit.seq;
      this.lastCommit = { seq: done.commit.seq, timeMs: done.commit.timeMs };
      const s = done.commit.stats;
      const kinds = { put: 0, delete: 0, move: 0 };
      for (const ch of done.commit.changes) kinds[ch.op]++;
      this.#events.committed({
        kinds,
        seq: this.#seq,
        timeMs: done.commit.timeMs,
        files: s.files,
        bytes: s.bytesUploaded,
        changes: done.commit.changes.length,
        oldestMs: batch.oldestMs === undefined ? undefined : done.commit.timeMs - batch.oldestMs,
      });
      // The tree's size, roughly (a modified file counts as new), and exactly when it matters.
      this.#entries += done.commit.stats.files + done.commit.stats.dirs - done.commit.stats.deleted;
      this.#guard?.committed(
        { seq: this.#seq, timeMs: done.commit.timeMs, removed: builder.removed, rewritten: builder.rewritten },
        this.#entries,
      );
      this.#checkpoints.committed(done.info.size ?? 0, this.#entries);
      if (this.#checkpoints.due()) {
        this.#entries = this.#db.count(this.config.name);
        this.#checkpoints.resized(this.#entries);
        if (this.#checkpoints.due()) this.#checkpoint();
      }
    }
  }

  /** A commit failed: retried with backoff (the changes wait in the durable queue), unless another writer took the source. */
  #failed(err: unknown): void {
    this.pending.done(false);
    this.#verify = true;
    if (err instanceof PhoenixError && err.code === 'PHX_LOCKED') {
      this.#fail(err);
      return;
    }
    this.#backoffMs = Math.min(this.#opts.maxBackoffMs, Math.max(1000, this.#backoffMs * 2));
    this.#retryAt = Date.now() + this.#backoffMs;
    const transient = isTransient(err);
    const error = `${transient ? 'the store is unreachable: ' : ''}${messageOf(err)}`;
    this.failing = {
      sinceMs: this.failing?.sinceMs ?? Date.now(),
      error,
      retryAtMs: this.#retryAt,
      attempts: (this.failing?.attempts ?? 0) + 1,
    };
    this.#events.problem(undefined, `commit failed (${error}); retrying in ${Math.round(this.#backoffMs / 1000)} s`);
  }

  #lstat(root: RawPath, p: RawPath): ReturnType<typeof lstatEntry> | 'error' {
    try {
      return lstatEntry(toFsPath(root, p));
    } catch (err) {
      this.#events.problem(displayPath(p), `cannot stat: ${(err as Error).message}`);
      return 'error';
    }
  }

  #watcherRoot(): RawPath {
    if (this.#watcher === undefined) throw new Error('not started');
    return this.#watcher.root;
  }

  /** The instants this source's guard is pinning or may pin: forget keeps them as if pinned. */
  heldInstants(): number[] {
    return this.#guard?.held() ?? [];
  }

  /** Writes the checkpoint after the last commit, in the background: commits go on meanwhile. */
  #checkpoint(): void {
    const seq = this.#seq;
    // Taken now, so it is the tree after `seq` whatever is committed while it is written.
    const records = this.#db.snapshot(this.config.name);
    this.#checkpoints.writing(seq);
    this.#checkpointWriting = this.#checkpointWriting
      .then(() => this.#repo.writeCheckpoint(this.config.name, seq, records))
      .then((w) => this.#checkpoints.sized(seq, w.bytes, w.entries))
      .catch((err: unknown) => {
        records.close(); // ends the snapshot's read transaction
        this.#events.warn(`cannot write checkpoint ${seq}: ${(err as Error).message}`); // only a slower restore
      });
  }

  #fail(err: PhoenixError): void {
    if (this.#state === 'failed' || this.#state === 'stopped') return;
    this.#state = 'failed';
    this.#watcher?.close();
    clearTimeout(this.#timer);
    this.#lease.stop();
    this.#events.fatal(err);
  }
}
