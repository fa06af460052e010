import { isNotFound } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import { displayPath } from '../model/path.js';
import { type ChunkRef, chunkWhat, type FileRecord, mapLimited, type Repository } from '../repo/index.js';
import { ChunkFetcher, type FetchLimits, widens } from './fetch.js';
import type { FileDone, WritePool } from './write-pool.js';

/** Windows read and being written at once: reads overlap the writes of the windows before. */
const WINDOWS_AT_ONCE = 4;
/**
 * Chunks of a window sent to the threads at once: a window of tiny files holds hundreds of
 * thousands, and each write in flight holds a job, its path and a promise.
 */
const USES_AT_ONCE = 512;
/** Room past a window's bytes for a backend that reads aligned blocks into it (`ByteRange.into`). */
const SLACK = 16 * 1024;

/** A run of nearby chunks of one pack, read in one request, and where each of them goes. */
interface Window {
  pack: string;
  start: number;
  end: number;
  /** Uses (see `Uses`), by offset. */
  uses: number[];
}

/** Every chunk of every file, numbered: which file, which of its chunks, and where in the file it goes. */
interface Uses {
  file: Uint32Array;
  chunk: Uint32Array;
  at: Float64Array;
}

export interface ContentProgress {
  bytes: (n: number) => void;
  file: () => void;
}

/**
 * Writes the content of `files` below `root` (their directories exist) on the pool's threads,
 * in the order of the repository: pack by pack, every chunk read once (one request per window
 * of nearby chunks) and written to each place that holds it. A file is created when its first
 * chunk arrives, written at its chunks' offsets in the order they come, and finished (size
 * checked, mode and times set) with its last; the windows are shared memory the threads read
 * with no copy. Returns the requests made.
 *
 * A file with more than one chunk and a record that does not give each chunk's size (written
 * before 2026-12) has no known offsets: such files are written one at a time, front to back.
 */
export async function writeContent(
  repo: Repository,
  files: readonly FileRecord[],
  pool: WritePool,
  root: string,
  limits: FetchLimits,
  progress: ContentProgress,
): Promise<number> {
  const placed: number[] = [];
  const inOrder: number[] = [];
  files.forEach((r, f) => (r.chunks.length <= 1 || r.chunks.every((c) => c.size !== undefined) ? placed : inOrder).push(f));
  const remaining = new Uint32Array(files.length);
  const path = (f: number): string => `${root}/${(files[f] as FileRecord).path}`; // raw (latin1) bytes, as the threads take them
  const done = (f: number): FileDone => {
    const r = files[f] as FileRecord;
    return { size: r.size, mode: r.mode, mtimeNs: r.mtimeNs.toString(), uid: r.uid, gid: r.gid, display: displayPath(r.path) };
  };
  const written = (n: number, last: boolean): void => {
    progress.bytes(n);
    if (last) progress.file();
  };

  const uses = useTable(files, placed);
  const windows = planWindows(files, uses, limits);
  for (const f of placed) remaining[f] = (files[f] as FileRecord).chunks.length;
  // Empty files: created and finished at once.
  const empty = placed.filter((f) => remaining[f] === 0);
  await Promise.all(empty.map((f) => pool.write({ file: f, path: path(f), last: done(f) }, []).then((n) => written(n, true))));

  let requests = 0;
  let fetcher: ChunkFetcher | undefined; // for chunks whose pack is gone (moved by a prune meanwhile)
  const free: SharedArrayBuffer[] = [];
  const writeWindow = async (w: Window): Promise<void> => {
    const size = w.end - w.start;
    const pooled = size <= limits.window;
    const slab = Buffer.from(pooled ? (free.pop() ?? new SharedArrayBuffer(limits.window + SLACK)) : new SharedArrayBuffer(size + SLACK));
    const writes: Array<Promise<void>> = [];
    let error: unknown;
    try {
      requests++;
      const what = chunkWhat(refOf(files, uses, w.uses[0] as number));
      const data = await repo.readPack(w.pack, w.start, size, what, slab).catch((err: unknown) => {
        if (err instanceof PhoenixError && isNotFound(err.cause)) return undefined;
        throw err;
      });
      for (const [i, u] of w.uses.entries()) {
        if (i > 0 && i % USES_AT_ONCE === 0) await Promise.allSettled(writes.splice(0)).then(throwFirst);
        const f = uses.file[u] as number;
        const ref = refOf(files, uses, u);
        let sealed: Uint8Array;
        if (data !== undefined) sealed = data.subarray(ref.offset - w.start, ref.offset + ref.length - w.start);
        else sealed = await (fetcher ??= new ChunkFetcher(repo, [], limits)).get(ref);
        // Counted as it is sent (no await between): the file's last job is the last one sent.
        const left = (remaining[f] as number) - 1;
        remaining[f] = left;
        const job = { file: f, path: path(f), at: uses.at[u] as number, ...(left === 0 ? { last: done(f) } : {}) };
        const blob = { id: ref.id, sealed, what: chunkWhat(ref), size: ref.size };
        writes.push(pool.write(job, [blob]).then((n) => written(n, left === 0)));
      }
    } catch (err) {
      error = err;
    }
    // The threads read the slab until their writes are done, failed or not.
    const settled = await Promise.allSettled(writes);
    if (pooled) free.push(slab.buffer as SharedArrayBuffer);
    if (error !== undefined) throw error;
    throwFirst(settled);
  };
  await mapLimited(windows, WINDOWS_AT_ONCE, writeWindow);

  // Files without known offsets: front to back, a few MiB to a message.
  const seq = new ChunkFetcher(
    repo,
    inOrder.flatMap((f) => (files[f] as FileRecord).chunks),
    limits,
  );
  await mapLimited(inOrder, 16, async (f) => {
    let blobs: Array<{ id: string; sealed: Uint8Array; what: string }> = [];
    let pending = 0;
    const send = async (final: boolean): Promise<void> => {
      const n = await pool.write({ file: f, path: path(f), ...(final ? { last: done(f) } : {}) }, blobs);
      blobs = [];
      pending = 0;
      written(n, final);
    };
    for (const ref of (files[f] as FileRecord).chunks) {
      blobs.push({ id: ref.id, sealed: await seq.get(ref), what: chunkWhat(ref) });
      pending += ref.length;
      if (pending >= 4 * 2 ** 20) await send(false);
    }
    await send(true);
  });
  return requests + (fetcher?.requests ?? 0) + seq.requests;
}

function throwFirst(settled: ReadonlyArray<PromiseSettledResult<unknown>>): void {
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}

function refOf(files: readonly FileRecord[], uses: Uses, u: number): ChunkRef {
  return (files[uses.file[u] as number] as FileRecord).chunks[uses.chunk[u] as number] as ChunkRef;
}

/** The chunks of `placed` files, numbered, with the offset each goes to in its file. */
function useTable(files: readonly FileRecord[], placed: readonly number[]): Uses {
  let n = 0;
  for (const f of placed) n += (files[f] as FileRecord).chunks.length;
  const uses: Uses = { file: new Uint32Array(n), chunk: new Uint32Array(n), at: new Float64Array(n) };
  let u = 0;
  for (const f of placed) {
    const r = files[f] as FileRecord;
    let at = 0;
    r.chunks.forEach((c, i) => {
      uses.file[u] = f;
      uses.chunk[u] = i;
      uses.at[u++] = at;
      at += c.size ?? 0;
    });
    if (r.chunks.length > 1 && at !== r.size) {
      throw new PhoenixError('PHX_CORRUPT', `${displayPath(r.path)}: its chunks hold ${at} bytes, the record says ${r.size}`, {
        hint: 'run phoenix check --read-data',
      });
    }
  }
  return uses;
}

/**
 * The windows to read, pack by pack (packs in the order the files first use them, so a file's
 * chunks tend to come close together), each a run of chunks no further apart than `gap` and
 * spanning at most `window` bytes (or one chunk, if larger).
 */
function planWindows(files: readonly FileRecord[], uses: Uses, limits: FetchLimits): Window[] {
  const byPack = new Map<string, number[]>();
  for (let u = 0; u < uses.file.length; u++) {
    const pack = refOf(files, uses, u).pack;
    let list = byPack.get(pack);
    if (list === undefined) byPack.set(pack, (list = []));
    list.push(u);
  }
  const windows: Window[] = [];
  for (const [pack, list] of byPack) {
    const offset = list.map((u) => refOf(files, uses, u).offset);
    const order = list.map((_, i) => i).sort((a, b) => (offset[a] as number) - (offset[b] as number));
    let w: Window | undefined;
    for (const i of order) {
      const ref = refOf(files, uses, list[i] as number);
      const end = ref.offset + ref.length;
      if (w === undefined || !widens(limits, w.start, w.end, ref)) {
        w = { pack, start: ref.offset, end, uses: [] };
        windows.push(w);
      }
      w.end = Math.max(w.end, end);
      w.uses.push(list[i] as number);
    }
  }
  return windows;
}
