import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { PhoenixError, type ErrorCode } from '../errors.js';
import type { Keys } from '../repo/index.js';

/** What finishes a file: its size is checked, then its mode, times and owner are set. */
export interface FileDone {
  size: number;
  mode: number;
  mtimeNs: string;
  uid: number;
  gid: number;
  display: string;
}

/**
 * Main → worker: blobs of one file. The file is created by its first job and finished by the
 * one with `last`. The blobs go at `at` and on; without it, after what the file's jobs wrote
 * so far (its jobs are written in the order they are sent).
 */
export interface WriteJob {
  job: number;
  /** The restore's number for the file (its blobs all go to the same worker). */
  file: number;
  /** The path's bytes as a latin1 string (cloning a small Buffer would copy Node's whole 8 KiB pool). */
  path: string;
  at?: number;
  /** Views of shared memory (no copy), or copies transferred with the message; `size`: the chunk's plain bytes, if known. */
  blobs: Array<{ id: string; sealed: Uint8Array; what: string; size?: number }>;
  last?: FileDone;
}

export type WriteReply =
  | { job: number; bytes: number }
  | { job: number; error: { message: string; code: string | undefined; hint: string | undefined; phoenix: boolean } };

/**
 * Seconds as a number, for utimes (Node takes no ns). A double near 1.8e9 s is off by up to
 * ~0.24 µs, and libuv truncates to ns: half a microsecond more makes the truncation land on
 * the recorded microsecond instead of just below it (which could be the millisecond before).
 */
export function nsToSeconds(ns: bigint): number {
  return Number(ns / 1000n) / 1e6 + 5e-7;
}

/**
 * Worker threads that open, verify and write the chunks of restored files (write-worker.ts).
 * Jobs posted in one turn of the event loop go out as one message per worker.
 */
export class WritePool {
  readonly #workers: Worker[] = [];
  readonly #outbox: WriteJob[][] = [];
  readonly #jobs = new Map<number, { resolve: (bytes: number) => void; reject: (e: Error) => void }>();
  #next = 0;
  #flushing = false;

  /**
   * `createdAs`: the owner a file created by this process gets (where it needs no chown to that
   * owner), if known. `maxOpen`: files each thread keeps open at most.
   */
  constructor(
    keys: Keys,
    createdAs?: { uid: number; gid: number },
    maxOpen = 256,
    threads = Math.max(1, Math.min(4, availableParallelism())),
  ) {
    const master = keys.toShared();
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL('./write-worker.js', import.meta.url), { workerData: { master, createdAs, maxOpen } });
      w.on('message', (replies: WriteReply[]) => {
        for (const r of replies) {
          const j = this.#jobs.get(r.job);
          this.#jobs.delete(r.job);
          if (j === undefined) continue;
          if ('bytes' in r) j.resolve(r.bytes);
          else
            j.reject(
              r.error.phoenix
                ? new PhoenixError(r.error.code as ErrorCode, r.error.message, { hint: r.error.hint })
                : Object.assign(new Error(r.error.message), { code: r.error.code }),
            );
        }
      });
      w.on('error', (err) => {
        for (const j of this.#jobs.values()) j.reject(err);
        this.#jobs.clear();
      });
      this.#workers.push(w);
      this.#outbox.push([]);
    }
  }

  /**
   * Writes the blobs; resolves to the bytes written. Blobs in shared memory go as they are (they
   * must not change until then); others are copied, so the caller's buffers stay its own.
   */
  write(job: Omit<WriteJob, 'job' | 'blobs'>, blobs: WriteJob['blobs']): Promise<number> {
    const id = this.#next++;
    const sent = blobs.map((b) => (b.sealed.buffer instanceof SharedArrayBuffer ? b : { ...b, sealed: new Uint8Array(b.sealed) }));
    return new Promise((resolve, reject) => {
      this.#jobs.set(id, { resolve, reject });
      (this.#outbox[job.file % this.#workers.length] as WriteJob[]).push({ ...job, job: id, blobs: sent });
      if (!this.#flushing) {
        this.#flushing = true;
        queueMicrotask(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#flushing = false;
    this.#workers.forEach((w, i) => {
      const jobs = (this.#outbox[i] as WriteJob[]).splice(0);
      if (jobs.length > 0)
        w.postMessage(
          jobs,
          jobs.flatMap((j) =>
            j.blobs.flatMap((b) => (b.sealed.buffer instanceof SharedArrayBuffer ? [] : [b.sealed.buffer as ArrayBuffer])),
          ),
        );
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}
