import { constants } from 'node:os';
import { errnoCode } from '../errors.js';
import { kindOfMode, type Entry } from '../model/entry.js';
import { Filter } from '../model/filter.js';
import { joinRaw, rawFromBuffer, toFsPath, type RawPath } from '../model/path.js';
import { Tree, type TreeOptions } from '../model/tree.js';
import { native } from '../native.js';
import { lstatEntry } from './stat.js';

export interface ScanOptions {
  filter?: Filter;
  /** Device of the source root, for `oneFileSystem`; read from the root when absent. */
  rootDev?: number;
  /**
   * Called for each directory just before it is listed (the watcher adds its inotify watch
   * here: watch first, then list, so nothing created in between is missed).
   */
  beforeList?: (rel: RawPath, entry: Entry | undefined) => void;
  /**
   * Called once a directory's listing is in the tree (its children can be read from `tree`),
   * so that a caller can work on them while the rest of the walk goes on. Not called for a
   * directory that could not be listed.
   */
  onListed?: (dir: RawPath, tree: Tree) => void;
  /**
   * Whether the tree keeps the entries that are not directories (default true). Without them
   * it holds directories only, and `onEntries` is where the others are seen.
   */
  keepFiles?: boolean;
  /** Called with each directory's entries (those the filter keeps, directories too) as it is listed. */
  onEntries?: (dir: RawPath, entries: Array<[RawPath, Entry]>) => void;
  /** Asked before each directory is listed: a promise to wait for (the caller has enough in hand), or undefined. */
  throttle?: () => Promise<void> | undefined;
  /** Directories listed at once; each listing runs on a libuv worker thread. */
  concurrency?: number;
  /** For the tree it builds (how much of it stays in memory). */
  tree?: TreeOptions;
}

/** Something the scan could not read; the walk goes on without it. */
export interface ScanProblem {
  path: RawPath;
  code: string;
  message: string;
}

export interface ScanResult {
  tree: Tree;
  problems: ScanProblem[];
  dirs: number;
}

/**
 * Walks `scope` (relative, '' for the whole source) under the absolute raw `root` and returns
 * every entry with its lstat. Never follows symlinks and never opens special files. Entries
 * that vanish during the walk are left out; unreadable directories are kept as entries and
 * reported. When `scope` is not the root, the tree holds the scope's own entry too.
 */
export async function scan(root: RawPath, scope: RawPath = '', opts: ScanOptions = {}): Promise<ScanResult> {
  const filter = opts.filter ?? new Filter();
  const tree = new Tree(opts.tree);
  const problems: ScanProblem[] = [];
  let rootDev = opts.rootDev;
  if (rootDev === undefined && filter.oneFileSystem) rootDev = lstatEntry(toFsPath(root, ''))?.dev;

  const queue: RawPath[] = [];
  if (scope === '') {
    queue.push('');
  } else {
    const top = lstatEntry(toFsPath(root, scope));
    if (top === undefined) return { tree, problems, dirs: 0 };
    tree.set(scope, top);
    if (top.kind === 'dir') queue.push(scope);
  }

  const keepFiles = opts.keepFiles ?? true;
  let dirs = 0;
  const listOne = async (dir: RawPath): Promise<void> => {
    opts.beforeList?.(dir, dir === '' ? undefined : tree.get(dir));
    dirs++;
    let buf: Buffer;
    try {
      buf = await native().scanDir(toFsPath(root, dir));
    } catch (err) {
      const code = errnoName(err);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') {
        problems.push({ path: dir, code, message: `cannot list directory: ${(err as Error).message}` });
      }
      return;
    }
    const entries: Array<[RawPath, Entry]> | undefined = opts.onEntries && [];
    for (const rec of parseScanRecords(buf)) {
      const rel = joinRaw(dir, rec.name);
      if (rec.err !== 0) {
        problems.push({ path: rel, code: errnoNameOf(rec.err), message: `cannot stat: errno ${rec.err}` });
        continue;
      }
      const e = rec.entry;
      if (filter.excludes(rel, e.kind === 'dir')) continue;
      if (keepFiles || e.kind === 'dir') tree.set(rel, e);
      entries?.push([rel, e]);
      if (e.kind === 'dir' && !(filter.oneFileSystem && rootDev !== undefined && e.dev !== rootDev)) queue.push(rel);
    }
    if (entries !== undefined) opts.onEntries?.(dir, entries);
    opts.onListed?.(dir, tree);
  };

  const limit = Math.max(1, opts.concurrency ?? 4);
  const running = new Set<Promise<void>>();
  while (queue.length > 0 || running.size > 0) {
    const wait = queue.length > 0 && running.size < limit ? opts.throttle?.() : undefined;
    if (wait !== undefined) {
      await wait;
      continue;
    }
    while (queue.length > 0 && running.size < limit) {
      const p: Promise<void> = listOne(queue.shift() as RawPath).finally(() => running.delete(p));
      running.add(p);
    }
    if (running.size > 0) await Promise.race(running);
  }
  return { tree, problems, dirs };
}

interface ScanRecord {
  name: RawPath;
  err: number;
  entry: Entry;
}

const HEADER = 72;

/** Parses native scanDir output (layout in native/scandir.cc). */
export function* parseScanRecords(buf: Buffer): Generator<ScanRecord> {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = 0;
  while (off + HEADER <= buf.length) {
    const nameLen = dv.getUint32(off, true);
    const targetLen = dv.getUint32(off + 4, true);
    const mode = dv.getUint32(off + 12, true);
    const kind = kindOfMode(mode);
    const nameStart = off + HEADER;
    const entry: Entry = {
      kind,
      mode,
      uid: dv.getUint32(off + 16, true),
      gid: dv.getUint32(off + 20, true),
      nlink: dv.getUint32(off + 24, true),
      ino: dv.getBigUint64(off + 32, true),
      dev: Number(dv.getBigUint64(off + 40, true)),
      size: Number(dv.getBigUint64(off + 48, true)),
      mtimeNs: dv.getBigInt64(off + 56, true),
      ctimeNs: dv.getBigInt64(off + 64, true),
    };
    if (kind === 'symlink') entry.target = rawFromBuffer(buf.subarray(nameStart + nameLen, nameStart + nameLen + targetLen));
    if (kind === 'dir') entry.size = 0;
    yield { name: rawFromBuffer(buf.subarray(nameStart, nameStart + nameLen)), err: dv.getInt32(off + 8, true), entry };
    off = nameStart + nameLen + targetLen;
  }
}

function errnoName(err: unknown): string {
  const n = (err as { errno?: number }).errno;
  return errnoCode(err) ?? (typeof n === 'number' ? errnoNameOf(-n) : 'EIO');
}

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([k, v]) => [v, k]));

export function errnoNameOf(errno: number): string {
  return errnoNames.get(Math.abs(errno)) ?? `errno ${errno}`;
}
