import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Keys } from '../repo/index.js';
import { decodeResults, JobEncoder, type ResultHandlers, type WorkerMessage } from './seal-wire.js';

/** How many times a file that changes while read is read again before its last read is kept. */
export const TORN_RETRIES = 3;

/** Sealed bytes one worker may have sent that the main thread has not yet packed. */
const CREDIT = 16 * 2 ** 20;

/** A file's stat taken before its read began (a scan's or the daemon's lstat). */
export interface SeenStat {
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

/** The file's metadata as it stood when the read ended. */
export interface ReadStat {
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

export type JobEnd =
  /** `fine`: cut with FINE_CHUNKER (from some chunk on); `inPlace`: bytes before its last chunk changed. */
  | { status: 'ok'; size: number; st: ReadStat; torn: boolean; fine: boolean; inPlace: boolean }
  | { status: 'vanished' }
  | { status: 'cancelled' }
  | { status: 'error'; message: string; code?: string };

export interface ChunkOut {
  id: string;
  /** Plaintext length. */
  bytes: number;
  /** Undefined when the id is one of the last version's. */
  sealed: Buffer | undefined;
}

export interface FileHandlers {
  /** A chunk, in file order; the worker waits for room while the returned promise is pending. */
  chunk(c: ChunkOut): Promise<void> | void;
  /** The file changed while read: forget its chunks so far, it is read again. */
  restart(): void;
}

interface Slot {
  worker: Worker;
  /** [0] credit in bytes, [1] a job to cancel (-1: none). */
  ctl: Int32Array;
  /** Bytes of the files queued on this worker, to send the next file to the least busy one. */
  queued: number;
  /** Jobs not yet posted: they go out together once the current turn of the event loop ends. */
  outbox: JobEncoder;
  /** Stopped for being idle: its exit is not a failure. */
  retired: boolean;
  /** How the worker spent its time (seal-worker.ts), and those totals at the pool's last look. */
  spent: BigInt64Array;
  seen: [number, number, number];
}

/**
 * A pool that may grow looks at its workers this often: when they spent more than ASLEEP of
 * their time on files asleep in the kernel (reads waiting for a cold disk), the rest start.
 * On a warm page cache workers beyond one per core only take CPU from the main thread: a first
 * backup of 400,000 cached files used 15% less CPU with 3 workers than with 6, and took 10%
 * less time; cold, 6 were about a sixth faster than 3.
 */
const LOOK_MS = 250;
const ASLEEP = 0.2;

/** Workers idle this long are stopped (they start again at the next file): an idle daemon holds no threads. */
const IDLE_MS = 30_000;

interface Job {
  slot: Slot;
  size: number;
  handlers: FileHandlers;
  resolve: (end: JobEnd) => void;
  reject: (err: Error) => void;
}

/**
 * Worker threads that read, chunk, hash and seal files (seal-worker.ts), so that every core
 * works on file content while the main thread packs and uploads. Each worker has a byte credit:
 * it waits (Atomics.wait) while the main thread holds more than CREDIT of its sealed blobs, so
 * memory stays bounded whatever the file sizes and however slow the store.
 */
export class SealPool {
  readonly #slots: Slot[] = [];
  readonly #jobs = new Map<number, Job>();
  #next = 0;
  #dead: Error | undefined;
  #closing = false;

  /**
   * `threads` workers start with the first file; up to `maxThreads` while the workers wait for
   * the disk (LOOK_MS).
   */
  constructor(
    readonly keys: Keys,
    readonly threads = Math.max(1, Math.min(4, availableParallelism())),
    readonly maxThreads = threads,
  ) {}

  /** Workers start at the first file, so a backup with nothing to read starts none. */
  #start(): void {
    for (let i = 0; i < this.threads; i++) this.#spawn();
    this.#looked = performance.now();
  }

  #spawn(): void {
    const control = new SharedArrayBuffer(8);
    const ctl = new Int32Array(control);
    ctl[0] = CREDIT;
    ctl[1] = -1;
    // How the worker spends its time: counted only when the pool may grow.
    const waits = this.maxThreads > this.threads ? new SharedArrayBuffer(24) : undefined;
    const master = this.keys.toShared();
    const worker = new Worker(new URL('./seal-worker.js', import.meta.url), { workerData: { master, control, waits } });
    const spent = new BigInt64Array(waits ?? new ArrayBuffer(24));
    const slot: Slot = { worker, ctl, queued: 0, outbox: new JobEncoder(), retired: false, spent, seen: [0, 0, 0] };
    worker.on('message', (m: WorkerMessage) => decodeResults(m, this.#results));
    // A worker that dies (a bug: jobs catch their own errors) fails its jobs and gets no more.
    const died = (err: Error): void => {
      const i = this.#slots.indexOf(slot);
      if (i < 0) return; // 'error' then 'exit'
      this.#slots.splice(i, 1);
      this.#dead ??= err;
      for (const [id, j] of this.#jobs) {
        if (j.slot !== slot) continue;
        this.#jobs.delete(id);
        j.reject(err);
      }
    };
    worker.on('error', (err) => {
      if (!slot.retired) died(err);
    });
    worker.on('exit', (code) => {
      if (!this.#closing && !slot.retired) died(new Error(`a seal worker exited (code ${code})`));
    });
    this.#slots.push(slot);
  }

  /**
   * Backs up the file at `path` on the least busy worker. Resolves when the worker is done with
   * it, after every chunk was handed to `handlers`. `seen`: its size, or its stat as taken just
   * before (the read is checked against it instead of an fstat of its own, when they agree).
   */
  readFile(
    path: Buffer,
    seen: number | SeenStat,
    prev: ReadonlyArray<{ id: string; size?: number }>,
    handlers: FileHandlers,
    how: { fine: boolean; hot: boolean } = { fine: false, hot: false },
  ): Promise<JobEnd> {
    clearTimeout(this.#idle);
    this.#idle = undefined;
    if (this.#slots.length === 0 && this.#dead === undefined) this.#start();
    if (this.#slots.length === 0) return Promise.reject(this.#dead as Error);
    if (this.#slots.length < this.maxThreads && this.#dead === undefined) this.#mayGrow();
    const job = this.#next++;
    const size = typeof seen === 'number' ? seen : seen.size;
    const slot = this.#slots.reduce((a, b) => (b.queued < a.queued ? b : a));
    slot.queued += size;
    return new Promise((resolve, reject) => {
      this.#jobs.set(job, { slot, size, handlers, resolve, reject });
      slot.outbox.add(job, path, prev, how.fine, how.hot, typeof seen === 'number' ? undefined : seen);
      if (!this.#flushing) {
        // After this turn of the event loop: the files started by one batch of results go out
        // together (each postMessage has a fixed cost on the main thread: a few µs for a string
        // to a busy worker, about 26 µs here to one that sleeps and must be woken).
        this.#flushing = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flushing = false;
  #looked = 0;

  /** Workers running now. */
  get workers(): number {
    return this.#slots.length;
  }

  /** Every worker allowed when those there spent much of their time since the last look asleep in the kernel (see LOOK_MS). */
  #mayGrow(): void {
    const now = performance.now();
    if (now - this.#looked < LOOK_MS) return;
    this.#looked = now;
    let working = 0;
    let asleep = 0;
    for (const s of this.#slots) {
      const t: [number, number, number] = [0, 1, 2].map((i) => Number(Atomics.load(s.spent, i)) / 1000) as [number, number, number];
      // The kernel does not say: as many workers as allowed (on a warm cache some are idle).
      if (t[1] < 0) asleep = Infinity;
      working += t[0] - s.seen[0];
      asleep += t[0] - s.seen[0] - (t[1] - s.seen[1]) - (t[2] - s.seen[2]);
      s.seen = t;
    }
    // A cold disk is cold for the whole tree: every worker allowed, at once.
    if (working > 0 && asleep > working * ASLEEP) while (this.#slots.length < this.maxThreads) this.#spawn();
  }

  #flush(): void {
    this.#flushing = false;
    for (const s of this.#slots) {
      if (s.outbox.empty) continue;
      s.worker.postMessage(s.outbox.take());
    }
  }

  readonly #results: ResultHandlers = {
    chunk: (job, id, bytes, sealed) => {
      const j = this.#jobs.get(job);
      if (j === undefined) return;
      const credit = (): void => {
        if (sealed === undefined) return;
        Atomics.add(j.slot.ctl, 0, sealed.length);
        Atomics.notify(j.slot.ctl, 0);
      };
      let wait: Promise<void> | void;
      try {
        wait = j.handlers.chunk({ id, bytes, sealed });
      } catch (err) {
        this.#cancel(job, j);
        credit();
        j.reject(err as Error);
        return;
      }
      if (wait === undefined) credit();
      else
        wait.then(credit, (err: unknown) => {
          // The store failed: stop reading this file (the caller gets the error).
          this.#cancel(job, j);
          credit();
          j.reject(err as Error);
        });
    },
    restart: (job) => this.#jobs.get(job)?.handlers.restart(),
    end: (job, end) => {
      const j = this.#jobs.get(job);
      if (j === undefined) return;
      this.#jobs.delete(job);
      if (this.#jobs.size === 0 && !this.#closing) this.#idle ??= setTimeout(() => this.#retire(), IDLE_MS).unref();
      j.slot.queued -= j.size;
      if (j.slot.ctl[1] === job) Atomics.store(j.slot.ctl, 1, -1);
      j.resolve(end);
    },
  };

  #cancel(job: number, j: Job): void {
    Atomics.store(j.slot.ctl, 1, job);
    Atomics.notify(j.slot.ctl, 0);
  }

  #idle: NodeJS.Timeout | undefined;

  /** Stops the workers while nothing is asked of them. */
  #retire(): void {
    this.#idle = undefined;
    if (this.#jobs.size > 0) return;
    for (const s of this.#slots.splice(0)) {
      s.retired = true;
      void s.worker.terminate();
    }
  }

  async close(): Promise<void> {
    clearTimeout(this.#idle);
    this.#closing = true;
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }
}
