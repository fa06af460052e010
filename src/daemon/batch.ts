import type { CommitBuilder } from '../archiver/commit.js';
import type { Entry } from '../model/entry.js';
import type { Filter } from '../model/filter.js';
import { compareRaw, toFsPath, type RawPath } from '../model/path.js';
import type { Tree } from '../model/tree.js';
import { mapLimited } from '../repo/index.js';
import type { Batch } from './pending.js';

/** What turning a batch into a commit looks at. */
export interface BatchContext {
  /** What exists now, as the change source knows it (undefined before it started: nothing does). */
  tree: Pick<Tree, 'has' | 'subtree'> | undefined;
  /** The source's directory. */
  root: RawPath;
  filter: Filter;
  /** What `p` is now; 'error' when it could not be looked at (reported already). */
  lstat(p: RawPath): Entry | undefined | 'error';
  trace?: ((msg: string, fields: Record<string, unknown>) => void) | undefined;
}

/**
 * Puts a batch of settled changes into `builder`: its moves, its removals, every path it names
 * read as it is now, and the directories of what it adds. The change source's tree is the
 * authority on what exists (lstat gives what it is now): a path it does not know is not added,
 * and only a removal it reported removes — a path missing without one was moved or removed
 * after this batch was taken, and its own event follows.
 */
export async function fillCommit(builder: CommitBuilder, batch: Batch, ctx: BatchContext): Promise<void> {
  const { tree, root, filter } = ctx;
  ctx.trace?.('take', { moves: batch.moves, paths: batch.paths });
  const paths = new Set(batch.paths);
  const current = (dir: RawPath): RawPath[] => tree?.subtree(dir) ?? [];
  // Moves first. What stands at the target now, as the tree knows it, is looked at too: the
  // commit that read it at its old place may have raced the move.
  for (const m of batch.moves) {
    builder.move(m.from, m.to);
    for (const p of current(m.to)) paths.add(p);
  }
  // Removed since the last commit (and maybe back): what was below it is gone, and what is
  // there now is added.
  const removed = new Set(batch.replaced);
  for (const r of batch.replaced) {
    builder.remove(r);
    for (const p of current(r)) paths.add(p);
  }
  const visit = async (p: RawPath): Promise<void> => {
    const known = p === '' || tree?.has(p) === true;
    const e = known && (p === '' || !filter.excludes(p, false)) ? ctx.lstat(p) : undefined;
    if (e === 'error') return;
    if (e === undefined || (e.kind === 'dir' && filter.excludes(p, true))) {
      if (removed.has(p) || e !== undefined) builder.remove(p);
      ctx.trace?.('gone', { path: p, removed: removed.has(p) });
      return;
    }
    const r = await builder.add(p, toFsPath(root, p), e);
    if (r === 'vanished' && removed.has(p)) builder.remove(p);
    ctx.trace?.('add', { path: p, result: r, size: e.size, mtimeNs: String(e.mtimeNs) });
  };
  // Many at a time: files are read on the seal workers, a round trip each.
  await mapLimited([...paths].sort(compareRaw), 32, visit);
  // Every committed entry's directory is committed too (moves and removals rely on it): a
  // directory still settling behind its children comes along now; one that is gone takes the
  // entries moved into it along.
  const tried = new Set<RawPath>();
  for (let dirs = builder.missingParents(); dirs.some((d) => !tried.has(d)); dirs = builder.missingParents()) {
    for (const d of dirs.sort(compareRaw)) {
      if (tried.has(d)) continue;
      tried.add(d);
      await visit(d);
      if (builder.get(d)?.rec.type !== 'dir') builder.removeBelow(d);
    }
  }
  builder.sortPuts(compareRaw);
}
