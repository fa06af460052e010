/**
 * Questions asked of a source's journal over time: the tree at an instant, a path's history
 * across renames, where names matching a pattern existed, and what changed between two
 * instants. Each reads the journal it needs and nothing else.
 */

import { PhoenixError } from '../errors.js';
import { isWithin, type RawPath } from '../model/path.js';
import { applyChange, type Commit, type FileRecord, type JournalChange, type TreeState } from './format.js';
import { mapLimited, type CommitInfo, type Repository } from './repository.js';

/** The seq current at `atMs` (the last commit at or before it), or undefined when there was none yet. */
export function seqAt(commits: readonly CommitInfo[], atMs: number | undefined): number | undefined {
  if (atMs === undefined) return commits.at(-1)?.seq;
  let seq: number | undefined;
  for (const c of commits) if (c.timeMs <= atMs) seq = c.seq;
  return seq;
}

/** The tree of `source` as it was at `atMs` (the latest when undefined). */
export async function stateAt(
  repo: Repository,
  source: string,
  atMs: number | undefined,
): Promise<{ state: TreeState; seq: number; commits: CommitInfo[] }> {
  const commits = await repo.commitList(source);
  const seq = seqAt(commits, atMs);
  if (seq === undefined) {
    throw new PhoenixError(
      'PHX_NOT_IN_REPO',
      `there is no commit of ${JSON.stringify(source)} at or before ${new Date(atMs ?? 0).toISOString()}`,
      {
        hint:
          commits.length > 0 ? `the first is from ${new Date((commits[0] as CommitInfo).timeMs).toISOString()}` : 'back something up first',
      },
    );
  }
  const { state } = await repo.loadState(source, seq);
  return { state, seq, commits };
}

async function readAll(repo: Repository, infos: readonly CommitInfo[]): Promise<Commit[]> {
  return mapLimited([...infos], 8, (c) => repo.readCommit(c));
}

export type HistoryEvent =
  | { seq: number; timeMs: number; event: 'version'; path: RawPath; record: FileRecord }
  | { seq: number; timeMs: number; event: 'deleted'; path: RawPath; beforeMs: number | undefined }
  | { seq: number; timeMs: number; event: 'moved'; path: RawPath; from: RawPath };

/**
 * Every version of `path`, its deletions and its renames, following renames both ways: back
 * to the names it had before (a file inside a folder renamed since), and on to the names it
 * got later (asked for by an old name). `path` of each event is the name it had then.
 */
export async function pathHistory(repo: Repository, source: string, path: RawPath): Promise<HistoryEvent[]> {
  const infos = await repo.commitList(source);
  const commits = await readAll(repo, infos);
  const found = new Map<string, HistoryEvent>();
  const add = (c: Commit, i: number, e: HistoryEvent): void => void found.set(`${c.seq}:${i}`, e);
  const before = (c: Commit): number | undefined => infos[infos.findIndex((x) => x.seq === c.seq) - 1]?.timeMs;
  const visit = (c: Commit, i: number, ch: JournalChange, p: RawPath): RawPath => {
    if (ch.op === 'put' && ch.path === p) add(c, i, { seq: c.seq, timeMs: c.timeMs, event: 'version', path: p, record: ch });
    else if (ch.op === 'delete' && isWithin(p, ch.path))
      add(c, i, { seq: c.seq, timeMs: c.timeMs, event: 'deleted', path: p, beforeMs: before(c) });
    return p;
  };
  // Forwards from the name given: renames take it to its later names.
  let p = path;
  for (const c of commits) {
    c.changes.forEach((ch, i) => {
      p = visit(c, i, ch, p);
      if (ch.op === 'move' && isWithin(p, ch.from)) {
        const to = ch.path + p.slice(ch.from.length);
        add(c, i, { seq: c.seq, timeMs: c.timeMs, event: 'moved', path: to, from: p });
        p = to;
      }
    });
  }
  // Backwards from the name given: renames take it to its earlier names.
  p = path;
  for (const c of [...commits].reverse()) {
    for (let i = c.changes.length - 1; i >= 0; i--) {
      const ch = c.changes[i] as JournalChange;
      if (ch.op === 'move' && isWithin(p, ch.path)) {
        const from = ch.from + p.slice(ch.path.length);
        add(c, i, { seq: c.seq, timeMs: c.timeMs, event: 'moved', path: p, from });
        p = from;
      } else {
        visit(c, i, ch, p);
      }
    }
  }
  return [...found.entries()]
    .sort(([a], [b]) => {
      const [sa, ia] = a.split(':').map(Number) as [number, number];
      const [sb, ib] = b.split(':').map(Number) as [number, number];
      return sa - sb || ia - ib;
    })
    .map(([, e]) => e);
}

export interface NameSpan {
  path: RawPath;
  type: FileRecord['type'];
  size: number;
  /** When it appeared (or the start of the range, if it was there already). */
  fromMs: number;
  /** When it went (removed, moved away or replaced), or undefined when it is still there at the end of the range. */
  toMs: number | undefined;
}

/**
 * Where and when entries whose path `matches` existed between `fromMs` and `toMs`: one span
 * per stretch of time a matching path held an entry.
 */
export async function findNames(
  repo: Repository,
  source: string,
  matches: (p: RawPath) => boolean,
  range: { fromMs?: number | undefined; toMs?: number | undefined },
): Promise<NameSpan[]> {
  const infos = await repo.commitList(source);
  const startSeq = range.fromMs === undefined ? 0 : (seqAt(infos, range.fromMs) ?? 0);
  const state: TreeState = startSeq > 0 ? (await repo.loadState(source, startSeq)).state : new Map();
  const out: NameSpan[] = [];
  const open = new Map<RawPath, NameSpan>();
  const startMs = range.fromMs ?? 0;
  const begin = (r: FileRecord, at: number): void => {
    if (open.has(r.path) || !matches(r.path)) return;
    const span: NameSpan = { path: r.path, type: r.type, size: r.size, fromMs: at, toMs: undefined };
    open.set(r.path, span);
    out.push(span);
  };
  const end = (under: RawPath, at: number): void => {
    for (const [p, span] of open) {
      if (!isWithin(p, under)) continue;
      span.toMs = at;
      open.delete(p);
    }
  };
  for (const r of state.values()) begin(r, startMs);
  const tail = infos.filter((c) => c.seq > startSeq && (range.toMs === undefined || c.timeMs <= range.toMs));
  for (const c of await readAll(repo, tail)) {
    for (const ch of c.changes) {
      if (ch.op === 'put') {
        const old = state.get(ch.path);
        if (old !== undefined && old.type !== ch.type) end(ch.path, c.timeMs);
        applyChange(state, ch);
        const span = open.get(ch.path);
        if (span !== undefined) span.size = ch.size;
        else begin(state.get(ch.path) as FileRecord, c.timeMs);
      } else if (ch.op === 'delete') {
        end(ch.path, c.timeMs);
        applyChange(state, ch);
      } else {
        end(ch.from, c.timeMs);
        end(ch.path, c.timeMs);
        applyChange(state, ch);
        for (const [p, r] of state) if (isWithin(p, ch.path)) begin(r, c.timeMs);
      }
    }
  }
  return out;
}

export type DiffEntry =
  | { change: 'added' | 'removed' | 'modified'; path: RawPath; type: FileRecord['type'] }
  | { change: 'moved'; path: RawPath; from: RawPath; type: FileRecord['type']; modified: boolean };

/**
 * What differs between the tree after commit `seq1` and after `seq2` (seq1 < seq2), below
 * `under`: added, removed, modified, and moved (followed through the journal's move entries,
 * so a renamed file is one move, not a removal and an addition). A directory moved with its
 * contents is one entry.
 */
export async function treeDiff(repo: Repository, source: string, seq1: number, seq2: number, under: RawPath): Promise<DiffEntry[]> {
  const a: TreeState = seq1 > 0 ? (await repo.loadState(source, seq1)).state : new Map();
  const b = new Map(a);
  // Where each entry of the first tree is now: its name, followed through moves.
  const origin = new Map<RawPath, RawPath>([...a.keys()].map((p) => [p, p]));
  const infos = (await repo.commitList(source)).filter((c) => c.seq > seq1 && c.seq <= seq2);
  for (const c of await readAll(repo, infos)) {
    for (const ch of c.changes) {
      if (ch.op === 'put') {
        const old = b.get(ch.path);
        if (old !== undefined && old.type !== ch.type) dropBelow(origin, ch.path);
      } else if (ch.op === 'delete') {
        dropBelow(origin, ch.path);
      } else if (ch.from !== ch.path) {
        const moving = [...origin].filter(([p]) => isWithin(p, ch.from));
        dropBelow(origin, ch.from);
        dropBelow(origin, ch.path);
        for (const [p, o] of moving) origin.set(ch.path + p.slice(ch.from.length), o);
      }
      applyChange(b, ch);
    }
  }
  const out: DiffEntry[] = [];
  const survived = new Set<RawPath>();
  for (const [p, r] of b) {
    const o = origin.get(p);
    if (o !== undefined) survived.add(o);
    const old = o === undefined ? undefined : a.get(o);
    if (!isWithin(p, under) && (o === undefined || !isWithin(o, under))) continue;
    if (old === undefined) {
      out.push({ change: 'added', path: p, type: r.type });
      continue;
    }
    const modified = differs(old, r);
    if (o !== p) {
      // Implied by its directory's move.
      const parent = p.slice(0, Math.max(0, p.lastIndexOf('/')));
      const parentOrigin = origin.get(parent);
      if (
        parent !== '' &&
        parentOrigin !== undefined &&
        parentOrigin !== parent &&
        o === `${parentOrigin}${p.slice(parent.length)}` &&
        !modified
      )
        continue;
      out.push({ change: 'moved', path: p, from: o as RawPath, type: r.type, modified });
    } else if (modified) {
      out.push({ change: 'modified', path: p, type: r.type });
    }
  }
  for (const [p, r] of a) if (!survived.has(p) && isWithin(p, under)) out.push({ change: 'removed', path: p, type: r.type });
  return out.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

function dropBelow(origin: Map<RawPath, RawPath>, path: RawPath): void {
  for (const p of origin.keys()) if (isWithin(p, path)) origin.delete(p);
}

/** Content or metadata changed (a directory's mtime alone is not a change worth listing). */
function differs(x: FileRecord, y: FileRecord): boolean {
  if (x.type !== y.type || x.mode !== y.mode || x.uid !== y.uid || x.gid !== y.gid || x.target !== y.target) return true;
  if (x.type === 'dir') return false;
  return (
    x.size !== y.size || x.mtimeNs !== y.mtimeNs || x.chunks.length !== y.chunks.length || x.chunks.some((c, i) => c.id !== y.chunks[i]?.id)
  );
}
