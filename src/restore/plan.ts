import { promises as fs, type BigIntStats } from 'node:fs';
import type { Kind } from '../model/entry.js';
import { kindOfMode } from '../model/entry.js';
import { joinRaw, parentOf, rawFromBuffer, rawToBuffer, type RawPath } from '../model/path.js';
import { DEFAULT_CHUNKER, type FileRecord, type Keys, nextCut } from '../repo/index.js';

/** What restore does with an entry that already exists in the target (restic's --overwrite). */
export type Overwrite = 'always' | 'if-changed' | 'if-newer' | 'never';
export const OVERWRITE_MODES: readonly Overwrite[] = ['always', 'if-changed', 'if-newer', 'never'];

/**
 * Per entry: `new` (nothing there), `same` (the same content: only metadata is set),
 * `replace` (something else is there and is replaced), `keep` (something else is there and
 * stays: the overwrite mode says so).
 */
export type Action = 'new' | 'same' | 'replace' | 'keep';

export interface RestorePlan {
  /** The entries restored, in path order. */
  paths: readonly RawPath[];
  /** The action of every entry that is not `new` (most of a restore into an empty target: no row each). */
  actions: Map<RawPath, Action>;
  /** What the target has and the backup does not (with --delete), outermost only. */
  deletes: RawPath[];
}

/**
 * Compares the target with the entries to restore (parents before children). Files of the
 * same size are read and cut into chunks to compare their ids with the backup's: equal
 * sizes and times say nothing about content. An entry below one that is kept is kept too.
 */
export async function planRestore(
  root: RawPath,
  selected: readonly FileRecord[],
  opts: {
    overwrite: Overwrite;
    delete: boolean;
    keys: Keys;
    scopes: readonly RawPath[];
    wanted: (p: RawPath, isDir: boolean) => boolean;
    /** The target did not exist before this restore: everything is new, nothing is looked at. */
    fresh?: boolean;
  },
): Promise<RestorePlan> {
  const actions = new Map<RawPath, Action>();
  const abs = (p: RawPath): Buffer => rawToBuffer(`${root}/${p}`);
  const blocked = new Set<RawPath>();
  /** Directories the target does not have: nothing below them needs a look. */
  const absent = new Set<RawPath>();
  for (const r of selected) {
    if (opts.fresh) continue;
    if (absent.has(parentOf(r.path))) {
      if (r.type === 'dir') absent.add(r.path);
      continue;
    }
    if (underAny(blocked, r.path)) {
      actions.set(r.path, 'keep');
      continue;
    }
    const st = await fs.lstat(abs(r.path), { bigint: true }).catch(() => undefined);
    if (st === undefined && r.type === 'dir') absent.add(r.path);
    let action: Action;
    if (st === undefined) action = 'new';
    else if (await same(abs(r.path), st, r, opts.keys)) action = 'same';
    else if (opts.overwrite === 'always' || opts.overwrite === 'if-changed') action = 'replace';
    else if (opts.overwrite === 'if-newer') action = r.mtimeNs > st.mtimeNs ? 'replace' : 'keep';
    else action = 'keep';
    // A directory's own metadata is not content: an existing directory is merged into.
    if (action === 'keep' || (action === 'replace' && kindOf(st) === 'dir')) blocked.add(r.path);
    if (action !== 'new') actions.set(r.path, action);
  }
  const deletes: RawPath[] = [];
  if (opts.delete) {
    const chosen = new Set(selected.map((r) => r.path));
    const walk = async (dir: RawPath): Promise<void> => {
      const names = await fs.readdir(dir === '' ? rawToBuffer(root) : abs(dir), { encoding: 'buffer' }).catch(() => [] as Buffer[]);
      for (const n of names) {
        const p = joinRaw(dir, rawFromBuffer(n));
        const st = await fs.lstat(abs(p)).catch(() => undefined);
        if (st === undefined) continue;
        const isDir = st.isDirectory();
        if (!opts.wanted(p, isDir)) continue; // not part of what is restored (--include/--exclude): left alone
        const a = actions.get(p) ?? 'new';
        if (!chosen.has(p)) deletes.push(p);
        else if (isDir && (a === 'same' || a === 'new')) await walk(p);
      }
    };
    for (const s of opts.scopes) {
      const a = s === '' ? 'same' : actions.get(s);
      if (a === 'same') await walk(s);
    }
  }
  return { paths: selected.map((r) => r.path), actions, deletes };
}

export function actionOf(plan: RestorePlan, p: RawPath): Action {
  return plan.actions.get(p) ?? 'new';
}

/** True when a proper ancestor of `p` is in `dirs` (a walk up its parents, not a scan of the set). */
export function underAny(dirs: ReadonlySet<RawPath>, p: RawPath): boolean {
  if (dirs.size === 0) return false;
  for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (dirs.has(p.slice(0, i))) return true;
  return false;
}

function kindOf(st: BigIntStats | undefined): Kind | undefined {
  return st === undefined ? undefined : kindOfMode(Number(st.mode));
}

/** True when the entry at `path` already holds what `r` describes (content and type; metadata is set anyway). */
async function same(path: Buffer, st: BigIntStats, r: FileRecord, keys: Keys): Promise<boolean> {
  const kind = kindOf(st);
  if (kind !== r.type) return false;
  if (kind === 'dir') return true;
  if (kind === 'symlink') return rawFromBuffer(await fs.readlink(path, { encoding: 'buffer' })) === (r.target ?? '');
  if (kind === 'file') return Number(st.size) === r.size && (await sameChunks(path, r, keys));
  return false;
}

/** Cuts the file like a backup does and compares each chunk's id with the record's. */
async function sameChunks(path: Buffer, r: FileRecord, keys: Keys): Promise<boolean> {
  const fh = await fs.open(path, 'r').catch(() => undefined);
  if (fh === undefined) return false;
  try {
    const p = DEFAULT_CHUNKER;
    const buf = Buffer.allocUnsafe(2 * p.max);
    let filled = 0;
    let eof = false;
    let i = 0;
    for (;;) {
      if (!eof && filled < buf.length) {
        const { bytesRead } = await fh.read(buf, filled, buf.length - filled, null);
        filled += bytesRead;
        if (bytesRead === 0) eof = true;
        continue;
      }
      if (filled === 0) return i === r.chunks.length;
      const cut = nextCut(buf, 0, filled, p, eof);
      const len = cut < 0 ? filled : cut;
      const ref = r.chunks[i++];
      if (ref === undefined || keys.id(buf.subarray(0, len)).toString('hex') !== ref.id) return false;
      buf.copyWithin(0, len, filled);
      filled -= len;
    }
  } finally {
    await fh.close();
  }
}
