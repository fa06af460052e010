import { chmodSync, lchownSync, lstatSync, mkdirSync, promises as fs, utimesSync } from 'node:fs';
import { PhoenixError } from '../errors.js';
import { compareRaw, displayPath, isWithin, rawFromUtf8, rawToBuffer, type RawPath } from '../model/path.js';
import { type FileRecord, mapLimited, type Repository, type TreeState } from '../repo/index.js';
import { writeContent } from './content.js';
import { FETCH_LIMITS, type FetchLimits } from './fetch.js';
import { actionOf as actionOfPlan, planRestore, underAny, type Action, type Overwrite, type RestorePlan } from './plan.js';
import { nsToSeconds, WritePool } from './write-pool.js';

export interface RestoreOptions {
  /** Restore only these paths (and what is below them); everything when empty. */
  paths?: RawPath[];
  onProgress?: (p: { files: number; bytes: number; totalBytes: number }) => void;
  onProblem?: (path: RawPath, message: string) => void;
  /** Which entries to restore, below the paths (--include/--exclude); all when absent. */
  wanted?: (p: RawPath, isDir: boolean) => boolean;
  /** What to do where the target already has something else (default: never replace it). */
  overwrite?: Overwrite;
  /** Remove what the target has below the restored paths and the backup does not. */
  delete?: boolean;
  /** Plan only: nothing is written; the plan says what would be. */
  dryRun?: boolean;
  /** How chunks are read (tests make the windows tiny). */
  fetch?: FetchLimits;
  /** Files each writer thread keeps open at most (tests make it tiny; default 256). */
  openFiles?: number;
}

export interface RestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  skipped: number;
  /** Requests made to the repository for chunks (nearby chunks come in one). */
  reads: number;
  /** Entries the target had already, with the same content (only their metadata was set). */
  unchanged: number;
  /** Entries the target had with other content, replaced (--overwrite). */
  replaced: number;
  /** Entries the target had with other content and still has, kept by the overwrite mode. */
  kept: RawPath[];
  /** Entries removed from the target (--delete). */
  deleted: RawPath[];
  /** What would be (or was) done, per entry. */
  plan: RestorePlan;
}

/**
 * Writes `state` (or the selected paths of it) below `target`: bytes verified chunk by
 * chunk, modes, mtimes, symlinks, empty directories, names that are not UTF-8. Paths from
 * the repository are untrusted: one that would land outside `target` is refused, and no
 * write ever goes through a symlink.
 */
export async function restore(repo: Repository, state: TreeState, target: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
  const wanted = opts.paths ?? [];
  const include = opts.wanted ?? ((): boolean => true);
  const selected = [...state.values()].filter(
    (r) => (wanted.length === 0 || wanted.some((w) => isWithin(r.path, w))) && include(r.path, r.type === 'dir'),
  );
  if (wanted.length > 0) {
    for (const w of wanted) {
      if (!selected.some((r) => isWithin(r.path, w))) {
        throw new PhoenixError('PHX_NOT_IN_REPO', `${displayPath(w)} is not in the backup at that time`, {
          hint: 'list what there is with phoenix ls',
        });
      }
    }
  }
  for (const r of selected) checkPath(r.path);
  selected.sort((a, b) => compareRaw(a.path, b.path));
  const st = await fs.stat(target).catch(() => undefined);
  if (st !== undefined && !st.isDirectory()) {
    throw new PhoenixError('PHX_USAGE', `the target ${target} exists and is not a directory`, {
      hint: 'give --target a directory (it is created if missing)',
    });
  }
  if (!opts.dryRun) await fs.mkdir(target, { recursive: true });
  const root = st === undefined && opts.dryRun ? rawFromUtf8(target) : rawFromUtf8(await fs.realpath(target));
  const plan = await planRestore(root, selected, {
    overwrite: opts.overwrite ?? 'never',
    delete: opts.delete ?? false,
    keys: repo.keys,
    scopes: wanted.length > 0 ? wanted : [''],
    wanted: include,
    fresh: st === undefined,
  });
  const actionOf = (p: RawPath): Action => actionOfPlan(plan, p);
  // Kept entries, outermost only (what is below a kept directory is kept with it).
  const keptSet = new Set(selected.filter((r) => actionOf(r.path) === 'keep').map((r) => r.path));
  const kept = [...keptSet].filter((p) => !underAny(keptSet, p));
  const result: RestoreResult = {
    files: 0,
    dirs: 0,
    symlinks: 0,
    bytes: 0,
    skipped: 0,
    reads: 0,
    unchanged: 0,
    replaced: 0,
    kept,
    deleted: plan.deletes,
    plan,
  };
  for (const a of plan.actions.values()) {
    if (a === 'same') result.unchanged++;
    else if (a === 'replace') result.replaced++;
  }
  if (opts.dryRun) return result;
  const abs = (p: RawPath): Buffer => rawToBuffer(`${root}/${p}`);
  const totalBytes = selected.reduce((n, r) => n + (r.type === 'file' && actionOf(r.path) !== 'keep' ? r.size : 0), 0);
  const dirsMade = new Set<RawPath>(['']);
  // What the target has in place of an entry that is replaced goes first (a directory with all below).
  for (const r of selected) if (actionOf(r.path) === 'replace') await fs.rm(abs(r.path), { recursive: true, force: true });

  // Directories are made and finished, and files with the same content given their metadata,
  // with synchronous calls (a promise each cost more than the call), letting the event loop run
  // between batches: a server restores too.
  const pause = breather();

  /** Makes `p` a real directory (never a symlink to one), creating it when missing. */
  const realDir = (p: RawPath, mode?: number): void => {
    if (dirsMade.has(p)) return;
    try {
      mkdirSync(abs(p), { mode });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if (!lstatSync(abs(p)).isDirectory()) {
        throw new PhoenixError(
          'PHX_IO',
          `cannot restore ${displayPath(p)}: something other than a directory is in its place in the target`,
        );
      }
    }
    dirsMade.add(p);
  };

  /** Creates the parents of `p` as real directories. */
  const ensureParents = (p: RawPath): void => {
    if (dirsMade.has(p.slice(0, Math.max(0, p.lastIndexOf('/'))))) return; // and its parents: each is made after its own
    for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) realDir(p.slice(0, i));
  };

  const restoreOther = async (r: FileRecord): Promise<void> => {
    ensureParents(r.path);
    if (r.type === 'symlink') {
      await fs.rm(abs(r.path), { force: true });
      await fs.symlink(rawToBuffer(r.target ?? ''), abs(r.path));
      await fs.lutimes(abs(r.path), nsToSeconds(r.mtimeNs), nsToSeconds(r.mtimeNs)).catch(() => {});
      result.symlinks++;
    } else {
      result.skipped++;
      opts.onProblem?.(r.path, 'special files (fifos, sockets, devices) are recorded but not re-created');
    }
  };

  const todo = selected.filter((r) => actionOf(r.path) !== 'keep');
  // Directories first, in order.
  for (const r of todo) {
    if (r.type !== 'dir') continue;
    ensureParents(r.path);
    realDir(r.path, 0o700); // its own mode is set last, once its contents are written
    result.dirs++;
    await pause();
  }
  await mapLimited(
    todo.filter((r) => r.type !== 'dir' && r.type !== 'file'),
    8,
    restoreOther,
  );

  // A file with the same content gets its metadata only.
  for (const r of todo) {
    if (r.type !== 'file' || actionOf(r.path) !== 'same') continue;
    setMetadata(abs(r.path), r);
    result.files++;
    await pause();
  }
  const files = todo.filter((r) => r.type === 'file' && actionOf(r.path) !== 'same');
  for (const r of files) {
    ensureParents(r.path);
    await pause();
  }
  // Every directory below a target this restore created is its own, made without the setgid bit
  // (unless the target inherited it): a file created there already has the owner and group of
  // this process, and needs no chown to them.
  const created = st === undefined && (Number((await fs.stat(rawToBuffer(root))).mode) & 0o2000) === 0;
  const pool = new WritePool(
    repo.keys,
    created && process.geteuid !== undefined ? { uid: process.geteuid(), gid: process.getegid?.() ?? -1 } : undefined,
    opts.openFiles,
  );
  try {
    result.reads = await writeContent(repo, files, pool, root, opts.fetch ?? FETCH_LIMITS, {
      bytes: (n) => {
        result.bytes += n;
        opts.onProgress?.({ files: result.files, bytes: result.bytes, totalBytes });
      },
      file: () => result.files++,
    });
  } finally {
    await pool.close();
  }
  for (const p of plan.deletes) await fs.rm(abs(p), { recursive: true, force: true });
  // Directory metadata last, deepest first, so writing their contents does not change it.
  for (const r of [...todo].reverse()) {
    if (r.type !== 'dir') continue;
    setMetadata(abs(r.path), r);
    await pause();
  }
  return result;
}

/** Gives `path` the mode and times of `r`, and (as root) its owner. */
function setMetadata(path: Buffer, r: FileRecord): void {
  chmodSync(path, r.mode & 0o7777);
  utimesSync(path, nsToSeconds(r.mtimeNs), nsToSeconds(r.mtimeNs));
  if (process.getuid?.() !== 0) return;
  try {
    lchownSync(path, r.uid, r.gid);
  } catch {
    // an owner the target's file system refuses: the content and mode are what count
  }
}

/** A function to await in a loop of synchronous calls: every 256th call it lets the event loop run. */
function breather(every = 256): () => Promise<void> | undefined {
  let n = 0;
  return () => (++n % every === 0 ? new Promise((resolve) => setImmediate(resolve)) : undefined);
}

/** A path from the repository must stay inside the target. */
function checkPath(p: RawPath): void {
  const parts = p.split('/');
  if (p === '' || parts.some((s) => s === '' || s === '.' || s === '..' || s.includes('\0'))) {
    throw new PhoenixError(
      'PHX_CORRUPT',
      `the repository holds the path ${JSON.stringify(displayPath(p))}, which would land outside the target; refusing to restore`,
      {
        hint: 'the repository was tampered with or damaged: run phoenix check',
      },
    );
  }
}
