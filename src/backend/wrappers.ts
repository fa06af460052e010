import { BackendError, isTransient, type Backend, type ByteRange, type ObjectInfo } from './backend.js';

/** Wraps a backend; every method passes through unless overridden. */
abstract class Wrapper implements Backend {
  constructor(protected readonly inner: Backend) {}
  get location(): string {
    return this.inner.location;
  }
  get capabilities() {
    return this.inner.capabilities;
  }
  put(key: string, data: Uint8Array, opts?: { createOnly?: boolean }): Promise<void> {
    return this.inner.put(key, data, opts);
  }
  get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.inner.get(key, range);
  }
  stat(key: string): Promise<ObjectInfo> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
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
    this.#opts = { attempts: opts.attempts ?? 8, baseDelayMs: opts.baseDelayMs ?? 100, maxDelayMs: opts.maxDelayMs ?? 30_000, onRetry: opts.onRetry };
  }

  async #retry<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err) || attempt >= this.#opts.attempts) throw err;
        const cap = Math.min(this.#opts.maxDelayMs, this.#opts.baseDelayMs * 2 ** (attempt - 1));
        const delay = Math.random() * cap;
        this.#opts.onRetry?.(err as BackendError, attempt, delay);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  override put(key: string, data: Uint8Array, opts?: { createOnly?: boolean }): Promise<void> {
    return this.#retry(() => this.inner.put(key, data, opts));
  }
  override get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.#retry(() => this.inner.get(key, range));
  }
  override stat(key: string): Promise<ObjectInfo> {
    return this.#retry(() => this.inner.stat(key));
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
        if (!isTransient(err) || attempt >= this.#opts.attempts) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(this.#opts.maxDelayMs, this.#opts.baseDelayMs * 2 ** attempt)));
      }
    }
  }
  override delete(key: string): Promise<void> {
    return this.#retry(() => this.inner.delete(key));
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

  async #with<T>(fn: () => Promise<T>): Promise<T> {
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

  override put(key: string, data: Uint8Array, opts?: { createOnly?: boolean }): Promise<void> {
    return this.#with(() => this.inner.put(key, data, opts));
  }
  override get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.#with(() => this.inner.get(key, range));
  }
  override stat(key: string): Promise<ObjectInfo> {
    return this.#with(() => this.inner.stat(key));
  }
  override delete(key: string): Promise<void> {
    return this.#with(() => this.inner.delete(key));
  }
}

export type FaultOp = 'put' | 'get' | 'stat' | 'list' | 'delete';

export interface Fault {
  /** Which calls to hit; all when absent. */
  op?: FaultOp;
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

  async #call<T>(op: FaultOp, key: string, fn: () => Promise<T>): Promise<T> {
    this.calls++;
    const f = this.faults.find((x) => (x.op === undefined || x.op === op) && (x.key === undefined || x.key.test(key)) && (x.times === undefined || x.times > 0));
    if (f?.times !== undefined) f.times--;
    const injected = (): BackendError =>
      new BackendError('PHX_BACKEND', `${this.location}: injected fault on ${op} ${key}`, { key, transient: true });
    if (f?.kind === 'delay') await new Promise((r) => setTimeout(r, f.delayMs ?? 100));
    if (f?.kind === 'error-before') throw injected();
    const result = await fn();
    if (f?.kind === 'error-after') throw injected();
    return result;
  }

  override put(key: string, data: Uint8Array, opts?: { createOnly?: boolean }): Promise<void> {
    return this.#call('put', key, () => this.inner.put(key, data, opts));
  }
  override get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.#call('get', key, () => this.inner.get(key, range));
  }
  override stat(key: string): Promise<ObjectInfo> {
    return this.#call('stat', key, () => this.inner.stat(key));
  }
  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* await this.#call('list', prefix, async () => {
      const all: ObjectInfo[] = [];
      for await (const o of this.inner.list(prefix)) all.push(o);
      return all;
    });
  }
  override delete(key: string): Promise<void> {
    return this.#call('delete', key, () => this.inner.delete(key));
  }
}
