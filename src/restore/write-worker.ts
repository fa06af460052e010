// A worker thread that restores file content: it opens each chunk's blob (decrypt, inflate),
// checks it against its id and writes it, so that restore uses every core. Protocol: write-pool.ts.
import { closeSync, constants, fchmodSync, futimesSync, lchownSync, openSync, rmSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { PhoenixError } from '../errors.js';
import { Keys } from '../repo/crypto.js';
import { openChunk } from '../repo/pack.js';
import { nsToSeconds, type WriteJob, type WriteReply } from './write-pool.js';

const { master, createdAs, maxOpen } = workerData as {
  master: Uint8Array | null;
  createdAs: { uid: number; gid: number } | undefined;
  /** Descriptors kept open at most; past it the least recently written file is closed (and reopened when more comes). */
  maxOpen: number;
};
const keys = Keys.fromShared(master);
const asRoot = process.getuid?.() === 0;

/** Files being written: their descriptor (-1 while closed for room) and the bytes written so far. */
const files = new Map<number, { fd: number; written: number }>();
/** The open ones, least recently written first. */
const lru = new Map<number, { fd: number; written: number }>();
/** Where blobs are opened, grown to the largest: fresh memory for each would cost a page fault every 4 KiB. */
let scratch = Buffer.alloc(0);
/** Files whose write failed: what else comes for them is refused. */
const failed = new Set<number>();

function fileOf(m: WriteJob, path: Buffer): { fd: number; written: number } {
  let f = files.get(m.file);
  if (f === undefined) {
    // Created, never opened as it is: a symlink or a hard link in the target is replaced (unlinked
    // first), never written through.
    const create = (): number => openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    let fd: number;
    try {
      fd = create();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      rmSync(path, { force: true });
      fd = create();
    }
    f = { fd, written: 0 };
    files.set(m.file, f);
  } else if (f.fd < 0) {
    f.fd = openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW); // this restore created it
  }
  lru.delete(m.file);
  lru.set(m.file, f);
  for (const [n, g] of lru) {
    if (lru.size <= maxOpen) break;
    lru.delete(n);
    closeSync(g.fd);
    g.fd = -1;
  }
  return f;
}

function forget(file: number): void {
  const f = files.get(file);
  files.delete(file);
  lru.delete(file);
  if (f !== undefined && f.fd >= 0) closeSync(f.fd);
}

function run(m: WriteJob): number {
  if (failed.has(m.file)) throw new Error(`an earlier write of ${m.last?.display ?? 'this file'} failed`);
  const path = Buffer.from(m.path, 'latin1');
  const f = fileOf(m, path);
  let bytes = 0;
  let at = m.at ?? f.written;
  for (const b of m.blobs) {
    if (scratch.length < b.sealed.length) scratch = Buffer.allocUnsafe(b.sealed.length);
    const data = openChunk(keys, b.id, b.sealed, b.what, scratch); // written before the next blob uses the scratch
    if (b.size !== undefined && data.length !== b.size) {
      throw new PhoenixError('PHX_CORRUPT', `${b.what} holds ${data.length} bytes, the file's record says ${b.size}`, {
        hint: 'run phoenix check --read-data',
      });
    }
    for (let done = 0; done < data.length;) done += writeSync(f.fd, data, done, data.length - done, at + done);
    at += data.length;
    f.written += data.length;
    bytes += data.length;
  }
  if (m.last !== undefined) {
    try {
      if (f.written !== m.last.size) {
        throw new PhoenixError('PHX_CORRUPT', `${m.last.display}: its chunks hold ${f.written} bytes, the record says ${m.last.size}`);
      }
      fchmodSync(f.fd, m.last.mode & 0o7777);
      const t = nsToSeconds(BigInt(m.last.mtimeNs));
      futimesSync(f.fd, t, t);
    } finally {
      forget(m.file);
    }
    if (asRoot && (m.last.uid !== createdAs?.uid || m.last.gid !== createdAs.gid)) {
      try {
        lchownSync(path, m.last.uid, m.last.gid);
      } catch {
        // an owner the target's file system refuses: the content and mode are what count
      }
    }
  }
  return bytes;
}

parentPort?.on('message', (jobs: WriteJob[]) => {
  const replies: WriteReply[] = jobs.map((m) => {
    try {
      return { job: m.job, bytes: run(m) };
    } catch (err) {
      forget(m.file);
      failed.add(m.file);
      const e = err as Error & { code?: string; hint?: string };
      return { job: m.job, error: { message: e.message, code: e.code, hint: e.hint, phoenix: err instanceof PhoenixError } };
    }
  });
  parentPort?.postMessage(replies);
});
