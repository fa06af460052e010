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
