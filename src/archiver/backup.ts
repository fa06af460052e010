import { availableParallelism } from 'node:os';
import { promises as fs } from 'node:fs';
import { PhoenixError } from '../errors.js';
import type { Entry } from '../model/entry.js';
import { Filter } from '../model/filter.js';
import { baseName, compareRaw, joinRaw, rawFromUtf8, toFsPath, type RawPath } from '../model/path.js';
import {
  type CommitHead,
  type CommitInfo,
  type Lease,
  type CommitStats,
  type FileRecord,
  type JournalChange,
  type Repository,
} from '../repo/index.js';
import { scan, type ScanResult } from '../scanner/scan.js';
import { cachedAsDir, entryStamp, type KnownFiles, type StateDb } from '../state/db.js';
import { CheckpointPolicy } from './checkpoints.js';
import { CommitBuilder } from './commit.js';
import { SealPool } from './seal-pool.js';

export interface BackupOptions {
  exclude?: string[];
  oneFileSystem?: boolean;
  /** A scan started earlier with `startScan` (it can run while the repository key is derived). */
  scan?: StartedScan;
  onProblem?: (path: RawPath, message: string) => void;
  onProgress?: (p: { files: number; bytes: number; total: number }) => void;
  /** Entries per commit at most (default COMMIT_ENTRIES; tests make it small to cross many commits). */
  commitEntries?: number;
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
export async function backup(
  repo: Repository,
  db: StateDb,
  sourceDir: string,
  source: string,
  opts: BackupOptions = {},
): Promise<BackupResult> {
  const lease = await repo.acquireLease(source);
  const renew = setInterval(() => void lease.renew().catch(() => {}), 60_000);
  renew.unref();
  const pool = new SealPool(repo.keys, BACKUP_THREADS, BACKUP_THREADS_MAX);
  try {
    return await backupLocked(repo, db, sourceDir, source, opts, pool, lease);
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
  lease: Lease,
): Promise<BackupResult> {
  const scanning = opts.scan ?? startScan(sourceDir, opts);
  const synced = (await syncCache(repo, db, source)).at(-1)?.seq ?? 0;
  const root = rawFromUtf8(sourceDir);
  let problems = 0;
  const problem = (path: RawPath, message: string): void => {
    problems++;
    opts.onProblem?.(path, message);
  };
  // A first backup (nothing cached) need not ask the cache about the paths it walks: each is
  // walked once, so none was committed before it, not even by an earlier commit of this run.
  const cached = db.known(source);
  const known: KnownFiles = db.holdsAny(source)
    ? cached
    : { ...cached, get: () => undefined, stamp: () => undefined, childStamps: () => new Map() };
  const stats: CommitStats = { files: 0, dirs: 0, deleted: 0, bytesUploaded: 0, bytesTotal: 0 };
  let progressBytes = 0;
  let progressFiles = 0;
  // The builder whose commit is being written while the next one already reads: a chunk it
  // stores is not in the cache yet, and the next builder finds it there instead of storing it
  // twice (a chunk both read at the same moment may still be stored by each).
  let sealing: CommitBuilder | undefined;
  const newBuilder = (): CommitBuilder =>
    new CommitBuilder(repo, db, pool, source, known, {
      root: sourceDir,
      onProblem: problem,
      onBytes: (n) => {
        progressBytes += n;
        opts.onProgress?.({ files: progressFiles, bytes: progressBytes, total: 0 });
      },
      pendingChunk: (id) => sealing?.newChunk(id),
    });
  let builder = newBuilder();
  let seq = synced;
  let last: CommitInfo | undefined;
  // A large backup is made of several commits of at most COMMIT_ENTRIES entries each, so that
  // memory stays bounded; they are cut in scan order (parents first), so every commit's entries
  // have their directories committed by it or before it. Puts within a commit in byte order.
  const commit = async (b: CommitBuilder): Promise<void> => {
    b.sortPuts(compareRaw);
    const done = await b.commit(seq + 1, undefined, () => leaseStillGood(lease, repo, db, b.purgesAtStart));
    for (const k of Object.keys(stats) as Array<keyof CommitStats>) stats[k] += b.stats[k];
    if (done !== undefined) {
      seq = done.commit.seq;
      last = done.info;
    }
  };
  const vanished: RawPath[] = [];
  // A first backup knew nothing: nothing can be missing.
  const missing = known === cached ? new Missing(known) : undefined;
  // Files are read many at a time (on the seal workers) so that disk, CPU and network overlap,
  // and go on being read while the commit before is written (one commit in flight at most).
  let reading = 0;
  let room: (() => void) | undefined;
  let failure: { err: unknown } | undefined;
  // The files of the builder being filled that are still being read (a count, not a promise
  // per file held until its commit: at 20,000 files a commit, that was most of what the
  // garbage collector copied).
  let reads = new Reads();
  let committing: Promise<void> = Promise.resolve();
  const rotate = async (): Promise<void> => {
    await committing;
    const b = builder;
    const filled = reads;
    builder = newBuilder();
    reads = new Reads();
    // From now on the next builder finds this one's new chunks (the other way round it must
    // not: this commit cannot wait for the next one's packs).
    sealing = b;
    committing = (async () => {
      await filled.done();
      if (filled.failed !== undefined) throw filled.failed.err;
      try {
        await commit(b);
      } finally {
        if (sealing === b) sealing = undefined;
      }
    })();
    committing.catch(() => {}); // awaited by the next rotate, or below
  };
  try {
    // Each directory's entries as soon as its listing is in (parents before children), while
    // the scan goes on: reading does not wait for the whole tree to be walked (6 s at 2,000,000
    // files, when the workers had nothing to do).
    for await (const [dir, listing] of scanning.listings()) {
      // What the cache has of this directory, in one range read (a lookup per file cost 8–14 µs
      // at 200,000 files, most of a no-change backup).
      const kids = known.childStamps(dir);
      missing?.listed(dir, listing, kids);
      for (const [path, e] of listing) {
        // What the cache vouches for is settled here, without a read and without a promise.
        const stamp = kids.get(baseName(path));
        if (stamp !== undefined && stamp === entryStamp(e)) continue;
        while (reading >= IN_FLIGHT) await new Promise<void>((r) => (room = r));
        if (failure !== undefined) throw failure.err; // the store failed: read no more
        reading++;
        const r = reads;
        r.started++;
        const settled = (): void => {
          r.end();
          reading--;
          const wake = room;
          room = undefined;
          wake?.();
        };
        builder.add(path, toFsPath(root, path), e).then(
          (how) => {
            // Gone: a deletion below if it was known. Unreadable: it keeps its last version.
            if (how === 'vanished') vanished.push(path);
            progressFiles++;
            settled();
          },
          (err: unknown) => {
            failure ??= { err };
            r.failed ??= { err };
            settled();
          },
        );
        // Files read again that did not change count too (a cache rebuilt from the repository
        // vouches for nothing): their rows are written by the same commit call, without a commit object.
        if (r.started >= (opts.commitEntries ?? COMMIT_ENTRIES)) await rotate();
      }
    }
    await reads.done();
    if (reads.failed !== undefined) throw reads.failed.err;
  } catch (err) {
    // Never return while a commit is still being written (the lease goes, the workers stop),
    // nor while the scan still runs.
    await committing.catch(() => {});
    await scanning.done.catch(() => {});
    throw err;
  }
  await committing;
  const scanned = await scanning.done;
  for (const p of scanned.problems) problem(p.path, `${p.code}: ${p.message}`);
  const gone = missing?.finish(scanned) ?? new Set<RawPath>();
  for (const p of vanished) gone.add(p);
  builder.removeMany([...gone].filter((p) => known.get(p) !== undefined || builder.get(p) !== undefined));
  await commit(builder);
  if (last !== undefined && (await CheckpointPolicy.load(repo, source, await repo.commitList(source), db.count(source))).due()) {
    // The cache now holds exactly the tree after this commit: no need to read the journal back
    // (`phoenix check` compares every checkpoint with the journal).
    const records = db.snapshot(source);
    await repo.writeCheckpoint(source, seq, records).finally(() => records.close());
  }
  return { commit: last, stats, problems };
}

/** Files started for one builder, and a wait for the last of them to settle. */
class Reads {
  started = 0;
  /** The first of them that failed. */
  failed: { err: unknown } | undefined;
  #settled = 0;
  #wake: (() => void) | undefined;

  end(): void {
    if (++this.#settled === this.started) this.#wake?.();
  }

  /** Settles once every file started so far has (none is started after this is asked). */
  done(): Promise<void> {
    if (this.#settled === this.started) return Promise.resolve();
    return new Promise((resolve) => (this.#wake = resolve));
  }
}

/**
 * Seal workers of a one-shot backup: one per core (at least 2), and up to three per core (at
 * most 8) while they wait for the disk (SealPool). They read with blocking calls, one file at
 * a time, so on a cold cache two of them leave the disk idle between small files; six kept
 * reads in flight and made a cold first backup of 200,000 small files about a fifth faster on
 * 2 cores (37.4 → 29.3 s, for about 50 MiB more). On a warm cache the extra workers only took
 * CPU from the main thread.
 */
const BACKUP_THREADS = Math.max(2, availableParallelism());
const BACKUP_THREADS_MAX = Math.max(BACKUP_THREADS, Math.min(8, 3 * availableParallelism()));

/** Entries a one-shot backup puts in one commit at most, and files it reads at a time. */
const COMMIT_ENTRIES = 20_000;
const IN_FLIGHT = 128;

/**
 * What the cache knew and a walk did not find, directory by directory as the listings come
 * (no tree of every file is kept): a child a listing lacks, with its subtree, and what was
 * below a directory that is something else now; at the end, what was below a directory walked
 * but not listed.
 */
class Missing {
  readonly #gone = new Set<RawPath>();
  readonly #listed = new Set<RawPath>();

  constructor(readonly known: KnownFiles) {}

  /** `dir` was listed: `listing`, against what the cache has of it (`kids`: stamps by name). */
  listed(dir: RawPath, listing: ReadonlyArray<[RawPath, Entry]>, kids: Map<RawPath, string | undefined>): void {
    this.#listed.add(dir);
    if (kids.size === 0) return;
    const here = new Map(listing.map(([p, e]) => [baseName(p), e.kind]));
    for (const [name, stamp] of kids) {
      const p = joinRaw(dir, name);
      const kind = here.get(name);
      if (kind === undefined) this.#gone.add(p);
      if (kind !== 'dir' && cachedAsDir(this.known, p, stamp)) for (const q of this.known.below(p)) this.#gone.add(q);
    }
  }

  /**
   * Every path missing, once the walk is over. A directory walked but not listed is gone
   * meanwhile, on another file system (nothing is below it now), or could not be listed:
   * below that one nothing is known, and what the last commit had stays.
   */
  finish(scanned: ScanResult): Set<RawPath> {
    const unlisted = new Set(scanned.problems.map((p) => p.path).filter((p) => scanned.tree.get(p)?.kind === 'dir' || p === ''));
    if (!unlisted.has(''))
      for (const d of scanned.tree.walk(''))
        if (!this.#listed.has(d) && !unlisted.has(d)) for (const p of this.known.below(d)) this.#gone.add(p);
    return this.#gone;
  }
}

/** A scan under way: its entries as directories are listed, and its result at the end. */
export interface StartedScan {
  /** The whole scan; rejects when the source is not a directory. */
  done: Promise<ScanResult>;
  /**
   * Every entry of the tree once: each listed directory with its children, as soon as its
   * listing is in (so parents before children), while the rest of the walk goes on. Read it
   * once. The scan's tree (in `done`) holds the directories only.
   */
  listings(): AsyncGenerator<[RawPath, Array<[RawPath, Entry]>]>;
}

/**
 * Entries listed and not yet taken by the backup, past which the scan waits: it walks far
 * faster than files are read, and they are objects (about 300 bytes each).
 */
const LISTED_AHEAD = 65_536;

/** Starts scanning `sourceDir` for a backup; `done` rejects when it is not a directory. */
export function startScan(sourceDir: string, opts: Pick<BackupOptions, 'exclude' | 'oneFileSystem'> = {}): StartedScan {
  // The scan's tree keeps directories only: each listing comes here once, is handed to the
  // backup, and is dropped (a tree of every file was most of a first backup's garbage, and
  // past 131,072 files it spilled them to disk).
  const listed: Array<[RawPath, Array<[RawPath, Entry]>] | undefined> = [];
  let head = 0;
  let ahead = 0;
  let ended = false;
  let stopped = false;
  let wake: (() => void) | undefined;
  let room: { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } | undefined;
  const poke = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const done = (async () => {
    const top = await fs.lstat(sourceDir).catch(() => undefined);
    if (!top?.isDirectory()) {
      throw new PhoenixError('PHX_SOURCE_INVALID', `source ${sourceDir} is not a directory`, { hint: 'give the directory to back up' });
    }
    return scan(rawFromUtf8(sourceDir), '', {
      filter: new Filter(opts),
      keepFiles: false,
      onEntries: (dir, entries) => {
        listed.push([dir, entries]);
        ahead += entries.length;
        poke();
      },
      throttle: () => {
        if (stopped) throw new Error('the backup stopped reading the scan');
        if (ahead < LISTED_AHEAD) return undefined;
        if (room === undefined) {
          let resolve = (): void => {};
          let reject = (_: Error): void => {};
          const promise = new Promise<void>((res, rej) => {
            resolve = res;
            reject = rej;
          });
          room = { promise, resolve, reject };
        }
        return room.promise;
      },
    });
  })();
  // Settled either way: the reader is woken to finish (listings() rethrows the scan's error).
  done
    .catch(() => {})
    .finally(() => {
      ended = true;
      poke();
    });
  return {
    done,
    async *listings() {
      try {
        for (;;) {
          const next = listed[head];
          if (next !== undefined) {
            listed[head++] = undefined;
            if (head >= 1024 && head * 2 >= listed.length) head = listed.splice(0, head).length - head;
            ahead -= next[1].length;
            if (ahead < LISTED_AHEAD / 2 && room !== undefined) {
              room.resolve();
              room = undefined;
            }
            yield next;
            continue;
          }
          if (ended) {
            await done; // throws the scan's error
            return;
          }
          await new Promise<void>((r) => (wake = r));
        }
      } finally {
        // The backup stopped early (an error): the scan must not wait for it forever.
        stopped = true;
        room?.reject(new Error('the backup stopped reading the scan'));
        room = undefined;
      }
    },
  };
}

/** Brings the cache of `source` in line with the repository; returns its journal (the listing, oldest first). */
export async function syncCache(repo: Repository, db: StateDb, source: string): Promise<CommitInfo[]> {
  await applyDeletionPlans(repo, db);
  const commits = await repo.commitList(source);
  const latest = commits.at(-1)?.seq ?? 0;
  if (db.seq(source, repo.config.id) === latest) return commits;
  // Rebuild, streaming (bounded memory for a tree of any size): this source's tree, and the
  // chunks of every source (for deduplication).
  db.clearSource(source);
  for (const other of await repo.sources()) {
    if (other === source) await loadInto(repo, db, source, commits, source);
    else await loadInto(repo, db, other, await repo.commitList(other), '');
  }
  db.setSeq(source, repo.config.id, latest);
  return commits;
}

/**
 * Before a commit: when the writer's lease ran out meanwhile (and it took it again), a prune
 * may have run. If it deleted anything this writer's cache still knew, the commit is refused:
 * its files may have been deduplicated against a pack that is gone (the caller starts again,
 * its cache purged).
 */
export async function leaseStillGood(lease: Lease, repo: Repository, db: StateDb, purgesAtStart: number): Promise<void> {
  if (!(await lease.fresh())) return;
  // A plan purged since this commit began, by this call or by the lease's renewal meanwhile,
  // may have been deleted already (prune did not wait for a writer whose lease had run out),
  // and the commit deduplicated against the cache from before the purge.
  if ((await applyDeletionPlans(repo, db)).applied === 0 && db.purges === purgesAtStart) return;
  throw new PhoenixError('PHX_PRUNED', 'prune ran while this writer could not renew its lease: this commit is made again', {
    hint: 'nothing is lost: the files are read again, against a cache that no longer names what prune deleted',
  });
}

/**
 * Purges from the chunk index the packs of every deletion plan (prune's) not applied yet, so
 * deduplication never names a chunk whose pack is gone. The number of plans applied.
 */
export async function applyDeletionPlans(repo: Repository, db: StateDb): Promise<{ applied: number; latest: string | undefined }> {
  // Parts of plans applied by an earlier run of this writer are refused too, not only this run's.
  repo.refuseParts((id) => db.partDoomed(id));
  const done = db.plansApplied();
  let applied = 0;
  let moved = false;
  const plans = await repo.deletionPlans();
  for (const key of plans) {
    if (done.has(key)) continue;
    const plan = await repo.readDeletionPlan(key);
    db.purgePacks(key, plan.packs, plan.parts);
    if (plan.moved.length > 0) db.relocate(plan.moved);
    moved ||= plan.moved.length > 0;
    repo.forgetParts(plan.parts);
    applied++;
  }
  // This process's readers (the dashboard, its own maintenance) find repacked chunks too.
  if (moved) await repo.refreshRelocations();
  return { applied, latest: plans.at(-1) };
}

/**
 * Streams the tree of `source` (its newest checkpoint, then the commits after it) into the
 * cache as rows of `into`, or only its chunks into the chunk index when `into` is ''.
 */
async function loadInto(repo: Repository, db: StateDb, source: string, commits: CommitInfo[], into: string): Promise<void> {
  const BATCH = 4096;
  const best = await repo.usableCheckpoint(source, commits, commits.at(-1)?.seq ?? 0);
  let records: FileRecord[] = [];
  const put = (): void => {
    if (into !== '') db.putRecords(into, records);
    else db.addChunks(records.flatMap((r) => r.chunks));
    records = [];
  };
  if (best > 0) {
    for await (const batch of repo.checkpointRecordBatches(source, best)) for (const r of batch) if (records.push(r) >= BATCH) put();
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
    for await (const batch of repo.commitChangeBatches(head)) for (const ch of batch) if (changes.push(ch) >= BATCH) apply();
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
export async function planBackup(
  repo: Repository,
  db: StateDb,
  sourceDir: string,
  source: string,
  opts: BackupOptions = {},
): Promise<{ changes: PlannedChange[]; problems: number }> {
  const scanning = opts.scan ?? startScan(sourceDir, opts);
  await syncCache(repo, db, source);
  const known = db.known(source);
  const missing = new Missing(known);
  const changes: PlannedChange[] = [];
  for await (const [dir, listing] of scanning.listings()) {
    const kids = known.childStamps(dir);
    missing.listed(dir, listing, kids);
    for (const [p, e] of listing) {
      const stamp = kids.get(baseName(p));
      if (stamp !== undefined && stamp === entryStamp(e)) continue;
      changes.push({ path: p, change: kids.has(baseName(p)) ? 'changed' : 'new', kind: e.kind, size: e.kind === 'file' ? e.size : 0 });
    }
  }
  const scanned = await scanning.done;
  for (const p of scanned.problems) opts.onProblem?.(p.path, `${p.code}: ${p.message}`);
  for (const p of [...missing.finish(scanned)].sort(compareRaw))
    changes.push({ path: p, change: 'removed', kind: known.get(p)?.rec.type ?? 'file', size: 0 });
  return { changes, problems: scanned.problems.length };
}
