import { type BigIntStats, closeSync, constants, fstatSync, openSync, promises as fs, readSync } from 'node:fs';
import { errnoCode, PhoenixError } from '../errors.js';
import type { Entry } from '../model/entry.js';
import { Filter } from '../model/filter.js';
import { isWithin, parentOf, rawFromUtf8, toFsPath, type RawPath } from '../model/path.js';
import { chunkStream, DEFAULT_CHUNKER, nextCut } from '../repo/chunker.js';
import { sealBlob } from '../repo/pack.js';
import type { ChunkRef, CommitStats, FileRecord, JournalChange } from '../repo/format.js';
import { CHECKPOINT_EVERY, ChunkWriter, mapLimited, type CommitInfo, type Repository } from '../repo/repository.js';
import { scan } from '../scanner/scan.js';
import { SealPool } from './seal-pool.js';
import type { CachedFile, StateDb } from '../state/db.js';

export interface BackupOptions {
  exclude?: string[];
  oneFileSystem?: boolean;
  onProblem?: (path: RawPath, message: string) => void;
  onProgress?: (p: { files: number; bytes: number; total: number }) => void;
}

export interface BackupResult {
  /** Undefined when nothing changed (no commit is written). */
  commit: CommitInfo | undefined;
  stats: CommitStats;
  problems: number;
}

const READ_BLOCK = 4 * 2 ** 20;
const TORN_RETRIES = 3;
/** Below this size a file is read with synchronous calls: one thread-pool round trip per call costs more than the read. */
const SMALL_FILE = 1024 * 1024;

/**
 * One-shot backup of `sourceDir` as `source`: scan, compare with the last commit (through the
 * local cache, rebuilt from the repository when out of sync), read and upload what changed,
 * and write one commit. Nothing changed: nothing is written.
 */
export async function backup(repo: Repository, db: StateDb, sourceDir: string, source: string, opts: BackupOptions = {}): Promise<BackupResult> {
  const lease = await repo.acquireLease(source);
  const renew = setInterval(() => void lease.renew().catch(() => {}), 60_000);
  renew.unref();
  const pool = new SealPool(repo.keys);
  try {
    return await backupLocked(repo, db, sourceDir, source, opts, pool);
  } finally {
    clearInterval(renew);
    await pool.close();
    await lease.release();
  }
}

async function backupLocked(
  repo: Repository,
  db: StateDb,
  sourceDir: string,
  source: string,
  opts: BackupOptions,
  pool: SealPool,
): Promise<BackupResult> {
  const seq = await syncCache(repo, db, source);
  const root = rawFromUtf8(sourceDir);
  const top = await fs.lstat(sourceDir).catch(() => undefined);
  if (!top?.isDirectory()) {
    throw new PhoenixError('PHX_SOURCE_INVALID', `source ${sourceDir} is not a directory`, { hint: 'give the directory to back up' });
  }
  let problems = 0;
  const problem = (path: RawPath, message: string): void => {
    problems++;
    opts.onProblem?.(path, message);
  };
  const scanned = await scan(root, '', { filter: new Filter(opts) });
  for (const p of scanned.problems) problem(p.path, `${p.code}: ${p.message}`);
  const prev = db.files(source);

  const writer = new ChunkWriter(repo);
  const newChunks = new Map<string, Promise<ChunkRef>>();
  const stats: CommitStats = { files: 0, dirs: 0, deleted: 0, bytesUploaded: 0, bytesTotal: 0 };
  const puts = new Map<RawPath, FileRecord>();
  const cache: CachedFile[] = [];
  const seen = new Set<RawPath>();
  let progressBytes = 0;
  let progressFiles = 0;

  /** A chunk by id: known (its ref at once), or new (its ref once its pack is cut), uploaded once. */
  const refFor = (id: string, seal: () => Buffer): PendingChunk => {
    const known = db.chunk(id);
    if (known) return { id, ref: Promise.resolve(known) };
    let p = newChunks.get(id);
    if (p === undefined) {
      p = writer.addSealed(id, seal());
      newChunks.set(id, p);
    }
    return { id, ref: p };
  };
  /** Small chunks are hashed and sealed here; a round trip to a worker would cost more. */
  const chunkRef = (data: Buffer): PendingChunk => refFor(repo.keys.id(data).toString('hex'), () => sealBlob(repo.keys, data));
  /** Large chunks are hashed and sealed on worker threads (sealed even when known: the id comes with it). */
  const bigChunkRef = async (data: Buffer): Promise<PendingChunk> => {
    const { id, sealed } = await pool.submit(data);
    return refFor(id, () => sealed);
  };
  const unresolved: Array<{ rec: FileRecord; refs: Array<Promise<ChunkRef>> }> = [];

  const visit = async (path: RawPath, e: Entry): Promise<void> => {
    const before = prev.get(path);
    if (before !== undefined && unchanged(before, e)) {
      seen.add(path);
      return;
    }
    let rec: FileRecord | undefined;
    let entry = e;
    if (e.kind === 'file') {
      const read = await readFile(toFsPath(root, path), e, chunkRef, bigChunkRef, pool, writer, (n) => {
        progressBytes += n;
        opts.onProgress?.({ files: progressFiles, bytes: progressBytes, total: 0 });
      });
      if (read.status === 'vanished') return; // gone: a deletion below if it was known
      if (read.status === 'error') {
        problem(path, read.message);
        if (before !== undefined) seen.add(path); // keep the last good version
        return;
      }
      if (read.torn) problem(path, `kept changing while read ${TORN_RETRIES} times; backed up as last read`);
      entry = read.entry;
      // Ids now (to compare with the last version); packs and offsets after the flush.
      rec = record(path, entry, read.chunks.map((c) => ({ id: c.id, pack: '', offset: 0, length: 0 })));
      unresolved.push({ rec, refs: read.chunks.map((c) => c.ref) });
    } else {
      rec = record(path, e, []);
    }
    seen.add(path);
    progressFiles++;
    cache.push({ rec, ino: entry.ino.toString(), ctimeNs: entry.ctimeNs.toString() });
    if (before !== undefined && sameRecord(before.rec, rec)) return; // only inode or ctime moved
    puts.set(path, rec);
    if (rec.type === 'dir') stats.dirs++;
    else stats.files++;
    stats.bytesTotal += rec.size;
  };

  // Files are read a few at a time so that disk and network overlap.
  const entries = [...scanned.tree.subtree('')].map((p) => [p, scanned.tree.get(p) as Entry] as const);
  await mapLimited(entries, 4, ([p, e]) => visit(p, e));

  // Below a directory that could not be listed nothing is known: keep what the last commit had.
  const unlisted = scanned.problems.map((p) => p.path).filter((p) => scanned.tree.get(p)?.kind === 'dir' || p === '');
  const deletedAll = [...prev.keys()].filter((p) => !seen.has(p) && !unlisted.some((u) => p !== u && isWithin(p, u)));
  const deletedSet = new Set(deletedAll);
  const deletes: JournalChange[] = deletedAll
    .filter((p) => !deletedSet.has(parentOf(p)))
    .map((path) => ({ op: 'delete', path }));
  stats.deleted = deletes.length;
  if (deletes.length === 0 && puts.size === 0) {
    await writer.flush(); // nothing new was added, but keep every path the same
    for (const u of unresolved) u.rec.chunks = await Promise.all(u.refs);
    db.applyCommit(source, repo.config.id, seq, cache, [], []);
    return { commit: undefined, stats, problems };
  }
  await writer.flush();
  for (const u of unresolved) u.rec.chunks = await Promise.all(u.refs);
  stats.bytesUploaded = writer.bytesUploaded;
  // Puts in scan order (parents first), after the deletions.
  const order = new Map(entries.map(([p], i) => [p, i]));
  const putList = [...puts.values()].sort((a, b) => (order.get(a.path) ?? 0) - (order.get(b.path) ?? 0));
  const changes: JournalChange[] = [...deletes, ...putList.map((r): JournalChange => ({ op: 'put', ...r }))];
  const refs = await Promise.all(newChunks.values());
  const commit = { source, seq: seq + 1, timeMs: Date.now(), packs: writer.packs, changes, stats };
  const info = await repo.writeCommit(commit);
  db.applyCommit(source, repo.config.id, commit.seq, cache, deletedAll, refs);
  if (commit.seq === 1 || commit.seq % CHECKPOINT_EVERY === 0) {
    // The cache now holds exactly the tree after this commit: no need to read the journal back
    // (`phoenix check` compares every checkpoint with the journal).
    const state = new Map([...db.files(source)].map(([p, f]) => [p, f.rec]));
    await repo.writeCheckpoint(source, commit.seq, state);
  }
  return { commit: info, stats, problems };
}

/** Brings the cache of `source` in line with the repository; returns the latest seq. */
export async function syncCache(repo: Repository, db: StateDb, source: string): Promise<number> {
  const commits = await repo.commitList(source);
  const latest = commits.at(-1)?.seq ?? 0;
  if (db.seq(source, repo.config.id) === latest) return latest;
  // Rebuild: this source's tree, and the chunks of every source (for deduplication).
  for (const other of await repo.sources()) {
    const { state } = await repo.loadState(other);
    db.addChunks([...state.values()].flatMap((r) => r.chunks));
    if (other === source) db.replaceSource(source, repo.config.id, latest, [...state.values()].map((rec) => ({ rec, ino: '', ctimeNs: '' })));
  }
  if (latest === 0) db.replaceSource(source, repo.config.id, 0, []);
  return latest;
}

function unchanged(c: CachedFile, e: Entry): boolean {
  const r = c.rec;
  return (
    r.type === e.kind && c.ino === e.ino.toString() && c.ctimeNs === e.ctimeNs.toString() && r.mtimeNs === e.mtimeNs &&
    (e.kind === 'dir' || r.size === e.size) && r.mode === e.mode && r.uid === e.uid && r.gid === e.gid && r.target === e.target
  );
}

function record(path: RawPath, e: Entry, chunks: ChunkRef[]): FileRecord {
  const r: FileRecord = { path, type: e.kind, mode: e.mode, uid: e.uid, gid: e.gid, mtimeNs: e.mtimeNs, size: e.kind === 'file' ? e.size : 0, chunks };
  if (e.target !== undefined) r.target = e.target;
  return r;
}

function sameRecord(a: FileRecord, b: FileRecord): boolean {
  return (
    a.type === b.type && a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.mtimeNs === b.mtimeNs && a.size === b.size &&
    a.target === b.target && a.chunks.length === b.chunks.length && a.chunks.every((c, i) => c.id === b.chunks[i]?.id)
  );
}

interface PendingChunk {
  id: string;
  ref: Promise<ChunkRef>;
}

type ReadResult =
  | { status: 'ok'; entry: Entry; chunks: PendingChunk[]; torn: boolean }
  | { status: 'vanished' }
  | { status: 'error'; message: string };

/**
 * Reads and chunks one file. The file's size, mtime and ctime are compared before and after
 * the read; a file that changed meanwhile is read again, so no torn content is committed as
 * if it were whole (after a few tries the last read is kept, and reported).
 */
async function readFile(
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
      async function* blocks(): AsyncGenerator<Buffer> {
        for (;;) {
          const buf = Buffer.allocUnsafe(blockSize);
          const { bytesRead } = await handle.read(buf, 0, blockSize, null);
          if (bytesRead === 0) return;
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
        return { status: 'ok', entry: entryAfterRead(scanned, st1, Number(st1.size)), chunks, torn: !stable };
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
