import { promises as fs } from 'node:fs';
import { PhoenixError } from '../errors.js';
import type { Entry } from '../model/entry.js';
import { Filter } from '../model/filter.js';
import { isWithin, rawFromUtf8, toFsPath, type RawPath } from '../model/path.js';
import type { CommitStats } from '../repo/format.js';
import { CHECKPOINT_EVERY, mapLimited, type CommitInfo, type Repository } from '../repo/repository.js';
import { scan, type ScanResult } from '../scanner/scan.js';
import type { CachedFile, StateDb } from '../state/db.js';
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
  if (done !== undefined && shouldCheckpoint(done.commit.seq)) {
    // The cache now holds exactly the tree after this commit: no need to read the journal back
    // (`phoenix check` compares every checkpoint with the journal).
    builder.applyTo(known);
    await repo.writeCheckpoint(source, done.commit.seq, new Map([...known].map(([p, f]) => [p, f.rec])));
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

/** One-shot backups write a checkpoint every CHECKPOINT_EVERY commits (the first commit is a whole tree already). */
function shouldCheckpoint(seq: number): boolean {
  return seq % CHECKPOINT_EVERY === 0;
}

/** Brings the cache of `source` in line with the repository; returns its latest commit. */
export async function syncCache(repo: Repository, db: StateDb, source: string): Promise<CommitInfo | undefined> {
  const last = (await repo.commitList(source)).at(-1);
  const latest = last?.seq ?? 0;
  if (db.seq(source, repo.config.id) === latest) return last;
  // Rebuild: this source's tree, and the chunks of every source (for deduplication).
  for (const other of await repo.sources()) {
    const { state } = await repo.loadState(other);
    db.addChunks([...state.values()].flatMap((r) => r.chunks));
    if (other === source) db.replaceSource(source, repo.config.id, latest, [...state.values()].map((rec) => ({ rec, ino: '', ctimeNs: '' })));
  }
  if (latest === 0) db.replaceSource(source, repo.config.id, 0, []);
  return last;
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
