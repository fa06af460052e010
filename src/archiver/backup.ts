import { promises as fs } from 'node:fs';
import { PhoenixError } from '../errors.js';
import type { Entry } from '../model/entry.js';
import { Filter } from '../model/filter.js';
import { isWithin, rawFromUtf8, toFsPath, type RawPath } from '../model/path.js';
import type { CommitHead, CommitStats, FileRecord, JournalChange } from '../repo/format.js';
import { checkContiguous, mapLimited, type CommitInfo, type Repository } from '../repo/repository.js';
import { scan, type ScanResult } from '../scanner/scan.js';
import type { CachedFile, StateDb } from '../state/db.js';
import { CheckpointPolicy } from './checkpoints.js';
import { CommitBuilder, unchanged } from './commit.js';
import { SealPool } from './seal-pool.js';

export interface BackupOptions {
  exclude?: string[];
  oneFileSystem?: boolean;
  /** A scan started earlier with `startScan` (it can run while the repository key is derived). */
  scan?: Promise<ScanResult>;
  /** The cache of the source, read earlier (at `seq`); used when the cache is still at that seq. */
  cache?: { seq: number | undefined; files: Map<RawPath, CachedFile> };
  onProblem?: (path: RawPath, message: string) => void;
  onProgress?: (p: { files: number; bytes: number; total: number }) => void;
}

export interface BackupResult {
  /** Undefined when nothing changed (no commit is written). */
  commit: CommitInfo | undefined;
  stats: CommitStats;
  problems: number;
}

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
  const scanning = opts.scan ?? startScan(sourceDir, opts);
  scanning.catch(() => {}); // awaited below, after the cache is synced: not an unhandled rejection meanwhile
  const seq = (await syncCache(repo, db, source))?.seq ?? 0;
  const root = rawFromUtf8(sourceDir);
  let problems = 0;
  const problem = (path: RawPath, message: string): void => {
    problems++;
    opts.onProblem?.(path, message);
  };
  const scanned = await scanning;
  for (const p of scanned.problems) problem(p.path, `${p.code}: ${p.message}`);
  const known = opts.cache !== undefined && opts.cache.seq === db.seq(source, repo.config.id) ? opts.cache.files : db.files(source);
  let progressBytes = 0;
  let progressFiles = 0;
  const builder = new CommitBuilder(repo, db, pool, source, known, {
    root: sourceDir,
    onProblem: problem,
    onBytes: (n) => {
      progressBytes += n;
      opts.onProgress?.({ files: progressFiles, bytes: progressBytes, total: 0 });
    },
  });
  const seen = new Set<RawPath>();
  const entries = [...scanned.tree.subtree('')].map((p) => [p, scanned.tree.get(p) as Entry] as const);
  // What the cache vouches for is settled here, without a promise per entry.
  const changed = entries.filter(([path, e]) => {
    const c = known.get(path);
    if (c === undefined || !unchanged(c, e)) return true;
    seen.add(path);
    return false;
  });
  // Files are read many at a time (on the seal workers) so that disk, CPU and network overlap.
  await mapLimited(changed, 32, async ([path, e]) => {
    // Gone: a deletion below if it was known. Unreadable: it keeps its last version.
    if ((await builder.add(path, toFsPath(root, path), e)) !== 'vanished') seen.add(path);
    progressFiles++;
  });
  // Below a directory that could not be listed nothing is known: keep what the last commit had.
  const unlisted = scanned.problems.map((p) => p.path).filter((p) => scanned.tree.get(p)?.kind === 'dir' || p === '');
  builder.removeMany([...known.keys()].filter((p) => !seen.has(p) && !unlisted.some((u) => p !== u && isWithin(p, u))));
  // Puts in scan order (parents first).
  const order = new Map(entries.map(([p], i) => [p, i]));
  builder.sortPuts((a, b) => (order.get(a) ?? 0) - (order.get(b) ?? 0));
  const done = await builder.commit(seq + 1);
  if (done !== undefined && (await CheckpointPolicy.load(repo, source, await repo.commitList(source))).due()) {
    // The cache now holds exactly the tree after this commit: no need to read the journal back
    // (`phoenix check` compares every checkpoint with the journal).
    const records = db.snapshot(source);
    await repo.writeCheckpoint(source, done.commit.seq, records).finally(() => records.close());
  }
  return { commit: done?.info, stats: builder.stats, problems };
}

/** Scans `sourceDir` for a backup; rejects when it is not a directory. */
export async function startScan(sourceDir: string, opts: Pick<BackupOptions, 'exclude' | 'oneFileSystem'> = {}): Promise<ScanResult> {
  const top = await fs.lstat(sourceDir).catch(() => undefined);
  if (!top?.isDirectory()) {
    throw new PhoenixError('PHX_SOURCE_INVALID', `source ${sourceDir} is not a directory`, { hint: 'give the directory to back up' });
  }
  return scan(rawFromUtf8(sourceDir), '', { filter: new Filter(opts) });
}

/** Brings the cache of `source` in line with the repository; returns its latest commit. */
export async function syncCache(repo: Repository, db: StateDb, source: string): Promise<CommitInfo | undefined> {
  const commits = await repo.commitList(source);
  checkContiguous(source, commits);
  const last = commits.at(-1);
  const latest = last?.seq ?? 0;
  if (db.seq(source, repo.config.id) === latest) return last;
  // Rebuild, streaming (bounded memory for a tree of any size): this source's tree, and the
  // chunks of every source (for deduplication).
  db.clearSource(source);
  for (const other of await repo.sources()) {
    if (other === source) await loadInto(repo, db, source, commits, source);
    else await loadInto(repo, db, other, await repo.commitList(other), '');
  }
  db.setSeq(source, repo.config.id, latest);
  return last;
}

/**
 * Streams the tree of `source` (its newest checkpoint, then the commits after it) into the
 * cache as rows of `into`, or only its chunks into the chunk index when `into` is ''.
 */
async function loadInto(repo: Repository, db: StateDb, source: string, commits: CommitInfo[], into: string): Promise<void> {
  const BATCH = 4096;
  const best = Math.max(0, ...(await repo.checkpointSeqs(source)).filter((n) => n <= (commits.at(-1)?.seq ?? 0)));
  let records: FileRecord[] = [];
  const put = (): void => {
    if (into !== '') db.putRecords(into, records);
    else db.addChunks(records.flatMap((r) => r.chunks));
    records = [];
  };
  if (best > 0) {
    for await (const r of repo.checkpointRecords(source, best)) if (records.push(r) >= BATCH) put();
  }
  put();
  let changes: JournalChange[] = [];
  const apply = (): void => {
    if (into !== '') db.applyChanges(into, changes);
    else db.addChunks(changes.flatMap((c) => (c.op === 'put' ? c.chunks : [])));
    changes = [];
  };
  // Commit objects are fetched a few ahead; their changes are applied in order, a batch at a time.
  const tail = commits.filter((c) => c.seq > best);
  const fetch = (c: CommitInfo): Promise<CommitHead> => {
    const p = repo.readCommitHead(c);
    p.catch(() => {}); // awaited in its turn below
    return p;
  };
  const heads = tail.slice(0, 8).map(fetch);
  for (let i = 0; i < tail.length; i++) {
    const head = await (heads[i] as Promise<CommitHead>);
    const ahead = tail[i + 8];
    if (ahead !== undefined) heads.push(fetch(ahead));
    for await (const ch of repo.commitChanges(head)) if (changes.push(ch) >= BATCH) apply();
  }
  apply();
}

export interface PlannedChange {
  path: RawPath;
  change: 'new' | 'changed' | 'removed';
  kind: Entry['kind'];
  /** Bytes that would be read (files). */
  size: number;
}

/**
 * `backup --dry-run`: what a backup would commit, from the scan and the cache (brought in line
 * with the repository), without reading a file or writing to the repository.
 */
export async function planBackup(repo: Repository, db: StateDb, sourceDir: string, source: string, opts: BackupOptions = {}): Promise<{ changes: PlannedChange[]; problems: number }> {
  const scanning = opts.scan ?? startScan(sourceDir, opts);
  scanning.catch(() => {}); // awaited below
  await syncCache(repo, db, source);
  const scanned = await scanning;
  for (const p of scanned.problems) opts.onProblem?.(p.path, `${p.code}: ${p.message}`);
  const known = db.files(source);
  const changes: PlannedChange[] = [];
  for (const p of scanned.tree.subtree('')) {
    const e = scanned.tree.get(p) as Entry;
    const c = known.get(p);
    if (c !== undefined && unchanged(c, e)) continue;
    changes.push({ path: p, change: c === undefined ? 'new' : 'changed', kind: e.kind, size: e.kind === 'file' ? e.size : 0 });
  }
  const unlisted = scanned.problems.map((p) => p.path).filter((p) => scanned.tree.get(p)?.kind === 'dir' || p === '');
  for (const [p, c] of known) {
    if (scanned.tree.get(p) !== undefined || unlisted.some((u) => p !== u && isWithin(p, u))) continue;
    changes.push({ path: p, change: 'removed', kind: c.rec.type, size: 0 });
  }
  return { changes, problems: scanned.problems.length };
}
