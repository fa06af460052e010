// A worker thread that restores file content: it opens each chunk's blob (decrypt, inflate),
// checks it against its id and writes it, so that restore uses every core. Protocol: write-pool.ts.
import { closeSync, constants, fchmodSync, futimesSync, lchownSync, openSync, rmSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { PhoenixError } from '../errors.js';
import { Keys } from '../repo/crypto.js';
import { openChunk } from '../repo/pack.js';
import { nsToSeconds, type WriteJob, type WriteReply } from './write-pool.js';

const { master, createdAs } = workerData as { master: Uint8Array | null; createdAs: { uid: number; gid: number } | undefined };
const keys = Keys.fromShared(master);
const asRoot = process.getuid?.() === 0;

/** Files being written: their descriptor and the bytes written so far. */
const open = new Map<number, { fd: number; written: number }>();

function run(m: WriteJob): number {
  const path = Buffer.from(m.path, 'latin1');
  let f = open.get(m.file);
  if (m.first) {
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
    open.set(m.file, f);
  }
  if (f === undefined) throw new Error(`internal: file ${m.file} written before it was opened`);
  let bytes = 0;
  for (const b of m.blobs) {
    const data = openChunk(keys, b.id, new Uint8Array(b.sealed), b.what);
    for (let done = 0; done < data.length;) done += writeSync(f.fd, data, done, data.length - done, f.written + done);
    f.written += data.length;
    bytes += data.length;
  }
  if (m.last !== undefined) {
    open.delete(m.file);
    try {
      if (f.written !== m.last.size) {
        throw new PhoenixError('PHX_CORRUPT', `${m.last.display}: its chunks hold ${f.written} bytes, the record says ${m.last.size}`);
      }
      fchmodSync(f.fd, m.last.mode & 0o7777);
      const t = nsToSeconds(BigInt(m.last.mtimeNs));
      futimesSync(f.fd, t, t);
    } finally {
      closeSync(f.fd);
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
      const f = open.get(m.file);
      if (f !== undefined) {
        open.delete(m.file);
        closeSync(f.fd);
      }
      const e = err as Error & { code?: string; hint?: string };
      return { job: m.job, error: { message: e.message, code: e.code, hint: e.hint, phoenix: err instanceof PhoenixError } };
    }
  });
  parentPort?.postMessage(replies);
});
