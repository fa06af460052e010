// A worker thread that backs up file content: it reads a file, cuts it into chunks (FastCDC),
// computes each chunk's id and seals it (compress, encrypt), so that all per-byte work runs on
// every core and the main thread only packs and uploads. The protocol is in seal-pool.ts.
import { type BigIntStats, closeSync, constants, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { DEFAULT_CHUNKER, FINE_CHUNKER, nextCut, type ChunkerParams } from '../repo/chunker.js';
import { chunksToKeep } from './append.js';
import { Keys } from '../repo/crypto.js';
import { sealBlob } from '../repo/pack.js';
import { TORN_RETRIES } from './seal-pool.js';
import { decodeJobs, ResultEncoder, type FileJob } from './seal-wire.js';

const { master, control, waits } = workerData as {
  master: Uint8Array | null;
  control: SharedArrayBuffer;
  /** Undefined when the pool will not grow: then nothing is counted. */
  waits: SharedArrayBuffer | undefined;
};
const keys = Keys.fromShared(master);

/** How much nicer than the main thread a worker runs. */
const WORKER_NICE = 5;

// The main thread packs, indexes and uploads what every worker seals: when it waits for a core,
// all of them wait. On Linux a thread's nice value is its own, so the workers step back a little
// and the main thread runs as soon as it can (with idle cores nothing changes).
try {
  setPriority(Math.min(19, getPriority() + WORKER_NICE));
} catch {
  // not allowed here: it only costs speed
}
/** [0]: bytes this worker may still send before the main thread has taken them; [1]: a job to cancel. */
const ctl = new Int32Array(control);

/** Reads fill this much at most; two maximal chunks fit, so no byte is scanned for a cut twice. */
const BUFFER = 2 * DEFAULT_CHUNKER.max;

// Results go to the main thread in batches (seal-wire.ts): one message per batch of files, or
// per few MiB of sealed blobs.
const out = new ResultEncoder();
const FLUSH_BYTES = 4 * 2 ** 20;

function flush(): void {
  if (out.empty) return;
  const { message, transfer } = out.take();
  parentPort?.postMessage(message, transfer);
}

class Cancelled extends Error {}

/** ms spent waiting for credit, in all. */
let creditWait = 0;

/** Waits until the main thread has room for `n` more bytes; throws when the job was cancelled. */
function takeCredit(job: number, n: number): void {
  for (;;) {
    if (Atomics.load(ctl, 1) === job) throw new Cancelled();
    const have = Atomics.load(ctl, 0);
    // Always let one chunk through (a chunk larger than the whole credit must not wait forever).
    if (have > 0) break;
    flush(); // the main thread gives credit back only for blobs it has
    const t = performance.now();
    Atomics.wait(ctl, 0, have, 100); // wakes at least every 100 ms, so terminate() is heard
    creditWait += performance.now() - t;
  }
  Atomics.sub(ctl, 0, n);
}

function emit(job: number, chunk: Buffer, known: ReadonlySet<string>): void {
  const id = keys.id(chunk);
  if (known.size > 0 && known.has(id.toString('hex'))) {
    out.known(job, id, chunk.length);
    return;
  }
  const sealed = sealBlob(keys, chunk);
  takeCredit(job, sealed.byteLength);
  out.chunk(job, id, chunk.length, sealed);
  if (out.sealedBytes >= FLUSH_BYTES) flush();
}

/** The read buffer, reused for every file (chunks are sealed, that is copied, before the next read). */
const buf = Buffer.allocUnsafe(BUFFER);

/** Reads up to `n` bytes at `pos` into the front of `buf`; fewer only at the end of the file. */
function readAt(fd: number, n: number, pos: number): number {
  let got = 0;
  while (got < n) {
    const r = readSync(fd, buf, got, n - got, pos + got);
    if (r === 0) break;
    got += r;
  }
  return got;
}

/**
 * Reads, chunks and seals the file once; the stat before and after, and the bytes read. The
 * first chunks of the last version that `chunksToKeep` names are kept if their bytes still have
 * their ids (each is read and hashed: an append is verified, never assumed); the rest is cut
 * with FastCDC from the end of the last one kept.
 */
function readOnce(
  job: number,
  fd: number,
  m: FileJob,
  known: ReadonlySet<string>,
  seen: Held | undefined,
): { st0: Held; st1: BigIntStats; total: number; fine: boolean; inPlace: boolean } {
  const st0: Held = seen ?? fstatSync(fd, { bigint: true });
  const size0 = Number(st0.size);
  const prev = m.prev;
  let params: ChunkerParams = m.fine ? FINE_CHUNKER : DEFAULT_CHUNKER;
  const keep = chunksToKeep(
    prev.map(([, n]) => (n > 0 ? n : undefined)),
    size0,
    params,
  );
  let pos = 0;
  let inPlace = false;
  for (let i = 0; i < keep; i++) {
    const [id, n] = prev[i] as [string, number];
    if (readAt(fd, n, pos) < n) break;
    const got = keys.id(buf.subarray(0, n));
    if (got.toString('hex') !== id) {
      inPlace = i < prev.length - 1; // old bytes before the last chunk were rewritten
      break;
    }
    out.known(job, got, n);
    pos += n;
  }
  // A large file rewritten in place again: cut finely from here on, so that its next small
  // writes cost a fine chunk each (what was kept stays as it is).
  let fine = m.fine;
  if (inPlace && m.hot && !fine && size0 >= HOT_MIN_BYTES) {
    fine = true;
    params = FINE_CHUNKER;
  }
  let start = 0;
  let end = 0;
  let total = pos;
  for (let eof = false; !eof;) {
    if (end === buf.length) {
      // Full: keep the undecided tail (less than one maximal chunk) at the front.
      buf.copy(buf, 0, start, end);
      end -= start;
      start = 0;
    }
    const want = buf.length - end;
    const n = readSync(fd, buf, end, want, total);
    end += n;
    total += n;
    // A short read that ends where the file did end is its end (no read of nothing to learn
    // it): had the file grown meanwhile, the stat after the read says so.
    eof = n === 0 || (n < want && total === size0);
    // Cut only with a maximal chunk in view (or at the end): a cut is never looked for twice.
    while (end - start >= params.max || (eof && start < end)) {
      const cut = nextCut(buf, start, end, params, eof);
      emit(job, buf.subarray(start, start + cut), known);
      start += cut;
    }
  }
  return { st0, st1: fstatSync(fd, { bigint: true }), total, fine, inPlace };
}

/** Files smaller than this are never cut finely: their chunks are few anyway. */
const HOT_MIN_BYTES = 8 * 2 ** 20;

/** What must not change while a file is read for the read to be whole. */
interface Held {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

function heldStill(a: Held, b: Held): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino;
}

/** A read that failed, with its errno code (EACCES, EIO …) kept for the status and the hint. */
function failed(what: string, err: unknown): { status: 'error'; message: string; code?: string } {
  const code = (err as NodeJS.ErrnoException).code;
  return { status: 'error', message: `${what}: ${(err as Error).message}`, ...(typeof code === 'string' ? { code } : {}) };
}

function readFileJob(m: FileJob): void {
  const known = new Set(m.prev.map(([id]) => id));
  // The first read is checked against the stat the caller took before it sent the job (one
  // fstat less per file); if they differ, the file is read again as if that read had not been.
  let seen: Held | undefined = m.seen && { ...m.seen, size: BigInt(m.seen.size) };
  for (let attempt = 1; ;) {
    let fd: number;
    try {
      fd = openSync(m.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') out.end(m.job, { status: 'vanished' });
      else out.end(m.job, failed('cannot open', err));
      return;
    }
    try {
      const { st0, st1, total, fine, inPlace } = readOnce(m.job, fd, m, known, seen);
      const stable = heldStill(st0, st1) && total === Number(st1.size);
      if (stable || (seen === undefined && attempt >= TORN_RETRIES)) {
        const st = {
          mode: Number(st1.mode),
          uid: Number(st1.uid),
          gid: Number(st1.gid),
          mtimeNs: st1.mtimeNs,
          ctimeNs: st1.ctimeNs,
          ino: st1.ino,
        };
        out.end(m.job, { status: 'ok', size: total, st, torn: !stable, fine, inPlace });
        return;
      }
      if (seen === undefined) attempt++;
      seen = undefined;
      out.restart(m.job);
    } catch (err) {
      if (err instanceof Cancelled) out.end(m.job, { status: 'cancelled' });
      else out.end(m.job, failed('cannot read', err));
      return;
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * How this worker spends its time, for the pool to tell whether another worker would help
 * (seal-pool.ts, LOOK_MS), as totals in µs since it started: [0] working on batches of jobs,
 * [1] on a CPU or waiting for one, as the kernel counts it at the end of the last batch
 * (-1: the kernel does not say), [2] waiting for credit. A batch's time that is none of these
 * is spent asleep in the kernel: reads waiting for the disk.
 */
const spent = waits === undefined ? undefined : new BigInt64Array(waits);
let batches = 0;

/**
 * µs this thread has run on a CPU and waited for one (the kernel's count may lag by a tick
 * while it runs), or -1 when the kernel does not say. Read whole each time: a descriptor kept
 * open would outlive the thread (descriptors belong to the process).
 */
function schedUs(): bigint {
  try {
    const [run, wait] = readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ');
    const us = Math.round((Number(run) + Number(wait)) / 1000);
    return Number.isFinite(us) ? BigInt(us) : -1n;
  } catch {
    return -1n;
  }
}

parentPort?.on('message', (jobs: string) => {
  const t0 = performance.now();
  for (const m of decodeJobs(jobs)) readFileJob(m);
  // Counted before the results go: a pool that has a batch's results sees the batch counted.
  if (spent !== undefined) {
    batches += performance.now() - t0;
    Atomics.store(spent, 0, BigInt(Math.round(batches * 1000)));
    Atomics.store(spent, 1, schedUs());
    Atomics.store(spent, 2, BigInt(Math.round(creditWait * 1000)));
  }
  flush();
});
