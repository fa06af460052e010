import { BackendError, isTransient, listAll, type Backend, type Body, type ByteRange, type ObjectInfo } from './backend.js';

export type BackendOp = 'put' | 'get' | 'stat' | 'list' | 'delete';

/**
 * Wraps a backend. Every single-object call goes through `around`, which a wrapper
 * overrides to add its one behaviour (retry, a limit, faults); `list` streams and is
 * overridden on its own where needed.
 */
abstract class Wrapper implements Backend {
  constructor(protected readonly inner: Backend) {}
  get location(): string {
    return this.inner.location;
  }
  get capabilities() {
    return this.inner.capabilities;
  }
  protected around<T>(_op: BackendOp, _key: string, fn: () => Promise<T>): Promise<T> {
    return fn();
  }
  put(key: string, data: Body, opts?: { createOnly?: boolean }): Promise<void> {
    return this.around('put', key, () => this.inner.put(key, data, opts));
  }
  get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.around('get', key, () => this.inner.get(key, range));
  }
  stat(key: string): Promise<ObjectInfo> {
    return this.around('stat', key, () => this.inner.stat(key));
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.around('delete', key, () => this.inner.delete(key));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface RetryOptions {
  /** Attempts in all, the first included. */
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Called before each retry (for logs and status). */
  onRetry?: (err: BackendError, attempt: number, delayMs: number) => void;
}

/**
 * Retries transient errors with exponential backoff and full jitter. A create-only put
 * that failed transiently may have landed: a retry that then finds the object reports
 * PHX_EXISTS, which callers writing content-addressed objects treat as success.
 */
export class RetryBackend extends Wrapper {
  readonly #opts: Required<Omit<RetryOptions, 'onRetry'>> & Pick<RetryOptions, 'onRetry'>;

  constructor(inner: Backend, opts: RetryOptions = {}) {
    super(inner);
    this.#opts = {
      attempts: opts.attempts ?? 8,
      baseDelayMs: opts.baseDelayMs ?? 100,
      maxDelayMs: opts.maxDelayMs ?? 30_000,
      onRetry: opts.onRetry,
    };
  }

  protected override async around<T>(_op: BackendOp, _key: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        await this.#backoff(err, attempt);
      }
    }
  }

  /** Rethrows what is not worth retrying; otherwise waits before attempt `attempt + 1`. */
  async #backoff(err: unknown, attempt: number): Promise<void> {
    if (!isTransient(err) || attempt >= this.#opts.attempts) throw err;
    const delay = Math.random() * Math.min(this.#opts.maxDelayMs, this.#opts.baseDelayMs * 2 ** (attempt - 1));
    this.#opts.onRetry?.(err as BackendError, attempt, delay);
    await new Promise((r) => setTimeout(r, delay));
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // A listing that fails midway starts over; duplicates are dropped by key.
    const seen = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const o of this.inner.list(prefix)) {
          if (seen.has(o.key)) continue;
          seen.add(o.key);
          yield o;
        }
        return;
      } catch (err) {
        await this.#backoff(err, attempt);
      }
    }
  }
}

/** At most `limit` operations in flight (S3 connections, disk queue depth). */
export class LimitBackend extends Wrapper {
  #active = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(
    inner: Backend,
    readonly limit: number,
  ) {
    super(inner);
  }

  protected override async around<T>(_op: BackendOp, _key: string, fn: () => Promise<T>): Promise<T> {
    // A released slot passes straight to the next waiter, so no newcomer can slip in between.
    if (this.#active >= this.limit) await new Promise<void>((r) => this.#waiting.push(r));
    else this.#active++;
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#active--;
    }
  }
}

/** What a request to the store came to: for metrics. */
export type BackendObserver = (op: BackendOp, result: 'ok' | 'not_found' | 'error') => void;

/** Reports every request (each attempt, below the retries) to an observer. */
export class ObserveBackend extends Wrapper {
  constructor(
    inner: Backend,
    readonly observe: BackendObserver,
  ) {
    super(inner);
  }

  protected override async around<T>(op: BackendOp, _key: string, fn: () => Promise<T>): Promise<T> {
    try {
      const v = await fn();
      this.observe(op, 'ok');
      return v;
    } catch (err) {
      this.observe(op, err instanceof BackendError && err.code === 'PHX_NOT_FOUND' ? 'not_found' : 'error');
      throw err;
    }
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    try {
      yield* this.inner.list(prefix);
      this.observe('list', 'ok');
    } catch (err) {
      this.observe('list', 'error');
      throw err;
    }
  }
}

export interface Fault {
  /** Which calls to hit; all when absent. */
  op?: BackendOp;
  key?: RegExp;
  /** How many matching calls to hit; unlimited when absent. */
  times?: number;
  /** What happens: a transient error before the call, after it (the effect happened, the answer was lost), or a delay. */
  kind: 'error-before' | 'error-after' | 'delay';
  delayMs?: number;
}

/** Injects faults for tests: errors, lost answers (torn connections), and delays. */
export class FaultyBackend extends Wrapper {
  readonly faults: Fault[] = [];
  calls = 0;

  add(f: Fault): this {
    this.faults.push(f);
    return this;
  }

  protected override async around<T>(op: BackendOp, key: string, fn: () => Promise<T>): Promise<T> {
    this.calls++;
    const f = this.faults.find(
      (x) => (x.op === undefined || x.op === op) && (x.key === undefined || x.key.test(key)) && (x.times === undefined || x.times > 0),
    );
    if (f?.times !== undefined) f.times--;
    const injected = (): BackendError =>
      new BackendError('PHX_BACKEND', `${this.location}: injected fault on ${op} ${key}`, { key, transient: true });
    if (f?.kind === 'delay') await new Promise((r) => setTimeout(r, f.delayMs ?? 100));
    if (f?.kind === 'error-before') throw injected();
    const result = await fn();
    if (f?.kind === 'error-after') throw injected();
    return result;
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* await this.around('list', prefix, () => listAll(this.inner, prefix));
  }
}

/** Objects up to this size (commits, leases, a small change's pack) go in the small lane. */
export const SMALL_TRANSFER = 64 * 1024;

/**
 * A byte budget per second shared by every connection of the process that uses it: a token
 * bucket that bulk transfers may overdraw (a pack is charged whole when it starts, and later
 * transfers wait until the debt is paid), so the average is the limit. Small transfers have
 * a lane of their own (a tenth of the rate, at least 64 KiB/s, bursts of 256 KiB): they are
 * charged to the budget too, so bulk slows down for them, but they never wait behind bulk
 * debt. A lone change of the daemon goes out at once.
 */
export class RateLimiter {
  #level: number;
  #small: number;
  #last: number;
  #queue: Promise<void> = Promise.resolve();
  readonly #burst: number;
  readonly #smallRate: number;
  readonly #smallBurst = 256 * 1024;

  /** `clock`: the time and the wait (a test's virtual clock; real time by default). */
  constructor(
    readonly bytesPerSec: number,
    readonly clock: { now(): number; sleep(ms: number, signal?: AbortSignal): Promise<void> } = { now: () => performance.now(), sleep },
  ) {
    this.#last = clock.now();
    this.#burst = Math.max(SMALL_TRANSFER, bytesPerSec / 10);
    this.#level = this.#burst;
    this.#smallRate = Math.max(64 * 1024, bytesPerSec / 10);
    this.#small = this.#smallBurst;
  }

  #refill(): void {
    const now = this.clock.now();
    const dt = (now - this.#last) / 1000;
    this.#last = now;
    this.#level = Math.min(this.#burst, this.#level + dt * this.bytesPerSec);
    this.#small = Math.min(this.#smallBurst, this.#small + dt * this.#smallRate);
  }

  /**
   * Waits until `bytes` may be transferred; `bulk` (default: above SMALL_TRANSFER) waits
   * behind the debt of earlier bulk transfers. Returns when, on the clock, this transfer's
   * own debt is paid: `until` waits for it, so that a transfer does not count as done
   * before the budget has covered it (the last pack of a backup included).
   */
  async take(bytes: number, bulk = bytes > SMALL_TRANSFER, signal?: AbortSignal): Promise<number> {
    if (!bulk) {
      for (;;) {
        this.#refill();
        if (this.#small >= bytes) {
          this.#small -= bytes;
          this.#level -= bytes;
          return this.clock.now();
        }
        await this.clock.sleep(((bytes - this.#small) / this.#smallRate) * 1000, signal);
      }
    }
    // Bulk transfers in the order they came: each waits for the debt before it.
    const turn = this.#queue.then(async () => {
      for (;;) {
        this.#refill();
        if (this.#level >= 0) {
          this.#level -= bytes;
          return this.#paidAt();
        }
        await this.clock.sleep((-this.#level / this.bytesPerSec) * 1000, signal);
      }
    });
    this.#queue = turn.then(
      () => {},
      () => {},
    );
    return turn;
  }

  /** Charges bytes already transferred (a download whose size was not known before); returns when they are paid for. */
  charge(bytes: number): number {
    this.#refill();
    this.#level -= bytes;
    return this.#paidAt();
  }

  /** Waits until `at` on the clock (take's and charge's answer). */
  async until(at: number, signal?: AbortSignal): Promise<void> {
    const wait = at - this.clock.now();
    if (wait > 0) await this.clock.sleep(wait, signal);
  }

  #paidAt(): number {
    return this.clock.now() + (Math.max(0, -this.#level) / this.bytesPerSec) * 1000;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, Math.max(1, Math.ceil(ms)));
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** Upload and download budgets (RateLimiter) applied to a backend's puts and gets. */
export class ThrottleBackend extends Wrapper {
  constructor(
    inner: Backend,
    readonly upload: RateLimiter | undefined,
    readonly download: RateLimiter | undefined,
  ) {
    super(inner);
  }

  override async put(key: string, data: Body, opts?: { createOnly?: boolean }): Promise<void> {
    if (this.upload === undefined) return this.inner.put(key, data, opts);
    const size = data instanceof Uint8Array ? data.length : data.reduce((n, p) => n + p.length, 0);
    const paid = await this.upload.take(size);
    await this.inner.put(key, data, opts);
    await this.upload.until(paid);
  }

  override async get(key: string, range?: ByteRange): Promise<Buffer> {
    if (this.download === undefined) return this.inner.get(key, range);
    if (range !== undefined) {
      const paid = await this.download.take(range.length);
      const part = await this.inner.get(key, range);
      await this.download.until(paid);
      return part;
    }
    // The size is known only afterwards: wait for the debt as bulk does, then charge what came.
    await this.download.take(0, true);
    const data = await this.inner.get(key);
    if (data.length > SMALL_TRANSFER) await this.download.until(this.download.charge(data.length));
    else this.download.charge(data.length);
    return data;
  }
}
