import { type BigIntStats, closeSync, constants, fstatSync, openSync, promises as fs, readSync } from 'node:fs';
import { errnoCode, PhoenixError } from '../errors.js';
import type { Entry } from '../model/entry.js';
import { chunkStream, DEFAULT_CHUNKER, nextCut } from '../repo/chunker.js';
import type { ChunkRef } from '../repo/format.js';
import type { ChunkWriter } from '../repo/repository.js';
import type { SealPool } from './seal-pool.js';

const READ_BLOCK = 4 * 2 ** 20;
export const TORN_RETRIES = 3;
/** Below this size a file is read with synchronous calls: one thread-pool round trip per call costs more than the read. */
const SMALL_FILE = 1024 * 1024;

export interface PendingChunk {
  id: string;
  ref: Promise<ChunkRef>;
}

export type ReadResult =
  | { status: 'ok'; entry: Entry; chunks: PendingChunk[]; torn: boolean }
  | { status: 'vanished' }
  | { status: 'error'; message: string };

/**
 * Reads and chunks one file. The file's size, mtime and ctime are compared before and after
 * the read; a file that changed meanwhile is read again, so no torn content is committed as
 * if it were whole (after a few tries the last read is kept, and reported).
 */
export async function readFile(
  path: Buffer,
  scanned: Entry,
  chunkRef: (data: Buffer) => PendingChunk,
  bigChunkRef: (data: Buffer) => Promise<PendingChunk>,
  pool: SealPool,
  writer: ChunkWriter,
  onBytes: (n: number) => void,
): Promise<ReadResult> {
  if (scanned.size < SMALL_FILE) {
    const small = readSmallFile(path, scanned, chunkRef, onBytes);
    if (small !== undefined) return small; // undefined: it grew; read it the long way
  }
  for (let attempt = 1; ; attempt++) {
    let fh;
    try {
      fh = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      return openFailed(err);
    }
    try {
      const st0 = await fh.stat({ bigint: true });
      const handle = fh;
      // A file smaller than a block gets a buffer of its size (+1 to see the end in one read).
      const blockSize = Math.min(READ_BLOCK, Number(st0.size) + 1);
      let total = 0;
      async function* blocks(): AsyncGenerator<Buffer> {
        for (;;) {
          const buf = Buffer.allocUnsafe(blockSize);
          const { bytesRead } = await handle.read(buf, 0, blockSize, null);
          if (bytesRead === 0) return;
          total += bytesRead;
          onBytes(bytesRead);
          yield buf.subarray(0, bytesRead);
        }
      }
      const pending: Array<Promise<PendingChunk>> = [];
      for await (const chunk of chunkStream(blocks())) {
        await pool.acquire();
        pending.push(bigChunkRef(chunk));
        await writer.backpressure();
      }
      const chunks = await Promise.all(pending);
      const st1 = await fh.stat({ bigint: true });
      const stable = heldStill(st0, st1);
      if (stable || attempt >= TORN_RETRIES) {
        // The size is what was read: a torn read may have stopped short of the file's end.
        return { status: 'ok', entry: entryAfterRead(scanned, st1, total), chunks, torn: !stable };
      }
    } catch (err) {
      if (err instanceof PhoenixError) throw err; // the repository failed: stop the backup
      return { status: 'error', message: `cannot read: ${(err as Error).message}` };
    } finally {
      await fh.close();
    }
  }
}


/** The fast path for small files: open, fstat, read, fstat, close, all synchronous. */
function readSmallFile(path: Buffer, scanned: Entry, chunkRef: (data: Buffer) => PendingChunk, onBytes: (n: number) => void): ReadResult | undefined {
  for (let attempt = 1; attempt <= TORN_RETRIES; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      return openFailed(err);
    }
    try {
      const st0 = fstatSync(fd, { bigint: true });
      if (st0.size >= BigInt(SMALL_FILE)) return undefined;
      const buf = Buffer.allocUnsafe(Number(st0.size) + 1);
      let n = 0;
      for (;;) {
        const r = readSync(fd, buf, n, buf.length - n, null);
        if (r === 0) break;
        n += r;
        if (n === buf.length) return undefined; // grew past what fstat said
      }
      const st1 = fstatSync(fd, { bigint: true });
      const stable = heldStill(st0, st1) && n === Number(st1.size);
      if (!stable && attempt < TORN_RETRIES) continue;
      onBytes(n);
      const data = buf.subarray(0, n);
      const chunks: PendingChunk[] = [];
      for (let pos = 0; pos < n; ) {
        const cut = nextCut(data, pos, n, DEFAULT_CHUNKER, true);
        chunks.push(chunkRef(data.subarray(pos, pos + cut)));
        pos += cut;
      }
      return { status: 'ok', entry: entryAfterRead(scanned, st1, n), chunks, torn: !stable };
    } catch (err) {
      if (err instanceof PhoenixError) throw err;
      return { status: 'error', message: `cannot read: ${(err as Error).message}` };
    } finally {
      closeSync(fd);
    }
  }
  return undefined;
}

/** The entry as it stood when its read ended (what the commit records). */
function entryAfterRead(scanned: Entry, st: BigIntStats, size: number): Entry {
  return { ...scanned, size, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino };
}

/** Size, mtime and ctime the same before and after a read: the content read is whole. */
function heldStill(before: BigIntStats, after: BigIntStats): boolean {
  return before.size === after.size && before.mtimeNs === after.mtimeNs && before.ctimeNs === after.ctimeNs;
}

function openFailed(err: unknown): Extract<ReadResult, { status: 'vanished' | 'error' }> {
  const code = errnoCode(err);
  if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return { status: 'vanished' };
  return { status: 'error', message: `cannot open: ${(err as Error).message}` };
}
