import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Keys } from '../repo/crypto.js';

/**
 * Worker threads that turn chunks into (id, sealed blob) pairs. At most `inFlight` chunks
 * are queued at once, so memory stays bounded whatever the file sizes.
 */
export class SealPool {
  readonly #workers: Worker[] = [];
  readonly #jobs = new Map<number, { resolve: (r: { id: string; sealed: Buffer }) => void; reject: (e: Error) => void }>();
  readonly #waiting: Array<() => void> = [];
  readonly #inFlight: number;
  #next = 0;
  #active = 0;

  constructor(keys: Keys, threads = Math.max(1, Math.min(4, availableParallelism()))) {
    const master = keys.encKey && keys.macKey ? Buffer.concat([keys.encKey, keys.macKey]) : null;
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL('./seal-worker.js', import.meta.url), { workerData: { master } });
      w.on('message', (m: { job: number; id: string; sealed: ArrayBuffer }) => {
        const j = this.#jobs.get(m.job);
        this.#jobs.delete(m.job);
        this.#release();
        j?.resolve({ id: m.id, sealed: Buffer.from(m.sealed) });
      });
      w.on('error', (err) => {
        for (const j of this.#jobs.values()) j.reject(err);
        this.#jobs.clear();
      });
      this.#workers.push(w);
    }
    this.#inFlight = threads * 3;
  }

  /** Waits for room in the queue; call once before each `submit`. */
  async acquire(): Promise<void> {
    if (this.#active >= this.#inFlight) await new Promise<void>((r) => this.#waiting.push(r));
    else this.#active++;
  }

  /** The id and sealed blob of `data` (copied; the caller may reuse its buffer). */
  submit(data: Uint8Array): Promise<{ id: string; sealed: Buffer }> {
    const job = this.#next++;
    const copy = new Uint8Array(data); // a buffer of its own, transferred to the worker
    return new Promise((resolve, reject) => {
      this.#jobs.set(job, { resolve, reject });
      (this.#workers[job % this.#workers.length] as Worker).postMessage({ job, data: copy.buffer }, [copy.buffer]);
    });
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#active--;
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}
