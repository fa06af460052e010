import type { Kind } from '../model/entry.js';
import { compareRaw, parentOf, rawFromBuffer, rawToBuffer, type RawPath } from '../model/path.js';

/** Where a chunk lives: its id (hex), its pack (hex id), and the sealed blob's byte range. */
export interface ChunkRef {
  id: string;
  pack: string;
  offset: number;
  length: number;
  /** Plaintext bytes (records written since 2026-12 say it; it lets an append be verified without a read of the repository). */
  size?: number;
}

/** One entry of a source's tree as stored: everything restore needs. */
export interface FileRecord {
  path: RawPath;
  type: Kind;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  size: number;
  target?: RawPath;
  chunks: ChunkRef[];
  /** Cut (from some chunk on) with the fine chunker: a writer's note, for its next version. */
  fine?: boolean;
}

export type JournalChange = ({ op: 'put' } & FileRecord) | { op: 'delete'; path: RawPath } | { op: 'move'; from: RawPath; path: RawPath };

export interface CommitStats {
  files: number;
  dirs: number;
  deleted: number;
  /** Bytes of new sealed blobs uploaded in this commit's packs. */
  bytesUploaded: number;
  /** Bytes of file content the puts describe. */
  bytesTotal: number;
}

export interface Commit {
  source: string;
  seq: number;
  /** Milliseconds since the epoch. */
  timeMs: number;
  packs: string[];
  changes: JournalChange[];
  stats: CommitStats;
  /** The host that wrote it and the directory it backed up (commits of builds before 2026-12 have neither). */
  host?: string;
  root?: string;
}

// ---- keys ----------------------------------------------------------------------------------

export const CONFIG_KEY = 'config';
export const packKey = (id: string): string => `data/${id.slice(0, 2)}/${id}`;
export const sourceDir = (source: string): string => Buffer.from(source, 'utf8').toString('base64url');
export const sourceFromDir = (dir: string): string => Buffer.from(dir, 'base64url').toString('utf8');
const pad = (seq: number): string => String(seq).padStart(12, '0');
/** The commit time is in the key, so a listing tells which commit was current at any instant. */
export const commitKey = (source: string, seq: number, timeMs: number): string => `journal/${sourceDir(source)}/${pad(seq)}-${timeMs}`;
export const checkpointKey = (source: string, seq: number): string => `checkpoint/${sourceDir(source)}/${pad(seq)}`;
/** Where the leases of `source` live: one object per writer that holds or asks for it. */
export const leasePrefix = (source: string): string => `leases/${sourceDir(source)}/`;

/**
 * A segment (format 3) stands for commits `first`…`last` of a source: its key sorts with the
 * commit `last` it ends at, and names the time of that commit, the first seq it covers, and
 * its generation (a segment written again over the same commits has the next one).
 */
export const segmentKey = (source: string, first: number, last: number, timeMs: number, gen: number): string =>
  `journal/${sourceDir(source)}/${pad(last)}-${timeMs}-${pad(first)}-${String(gen).padStart(4, '0')}`;
export const policyKey = (source: string | undefined): string =>
  source === undefined ? 'policy/repository' : `policy/source/${sourceDir(source)}`;
export const pinPrefix = (source: string): string => `pins/${sourceDir(source)}/`;
export const pinKey = (source: string, atMs: number): string => `${pinPrefix(source)}${String(atMs).padStart(13, '0')}`;

/** A journal object's name: a commit (`first` = `seq`, no generation) or a segment. */
export function parseJournalKey(name: string): { first: number; seq: number; timeMs: number; gen: number; segment: boolean } | undefined {
  const m = /^(\d{12})-(\d+)(?:-(\d{12})-(\d{4}))?$/.exec(name);
  if (!m) return undefined;
  const seq = Number(m[1]);
  const segment = m[3] !== undefined;
  const first = segment ? Number(m[3]) : seq;
  return first >= 1 && first <= seq ? { first, seq, timeMs: Number(m[2]), gen: segment ? Number(m[4]) : -1, segment } : undefined;
}

// ---- JSON encoding (paths and link targets as base64 bytes, times as decimal strings) ------

type Json = Record<string, unknown>;

/** An id as Phoenix makes them (chunks, packs, parts): 64 lowercase hex digits. */
export const HEX_ID = /^[0-9a-f]{64}$/;

const KINDS: readonly string[] = ['file', 'dir', 'symlink', 'other'];

/** `t` as an entry type, or an error. */
export function kindOf(t: unknown): Kind {
  if (!KINDS.includes(t as string)) throw new Error(`bad entry type ${String(t)}`);
  return t as Kind;
}

/** Chunk refs as a record stores them: `[id, pack, offset, length]`, and the size when known. */
export function encodeChunkRefs(chunks: readonly ChunkRef[]): unknown[][] {
  return chunks.map((c) => (c.size === undefined ? [c.id, c.pack, c.offset, c.length] : [c.id, c.pack, c.offset, c.length, c.size]));
}

/** `pack`, or the equal string seen before in `packs` (one string per pack among the records decoded with it). */
export function internPack(pack: string, packs: Map<string, string> | undefined): string {
  if (packs === undefined) return pack;
  const seen = packs.get(pack);
  if (seen !== undefined) return seen;
  packs.set(pack, pack);
  return pack;
}

/** The chunk refs of `encodeChunkRefs`. */
export function decodeChunkRefs(refs: unknown[][], packs?: Map<string, string>): ChunkRef[] {
  return refs.map(([id, pack, offset, length, size]) => {
    const ref: ChunkRef = { id: String(id), pack: internPack(String(pack), packs), offset: Number(offset), length: Number(length) };
    if (size !== undefined) ref.size = Number(size);
    return ref;
  });
}

const b64 = (p: RawPath): string => rawToBuffer(p).toString('base64');
const unb64 = (s: unknown): RawPath => rawFromBuffer(Buffer.from(String(s), 'base64'));

/** A number as JSON.stringify writes it (NaN and ±Infinity are null). */
const jsonNumber = (n: number): string => (Number.isFinite(n) ? `${n}` : 'null');

/**
 * `JSON.stringify(encodeRecord(r))`, written straight to the string: a first backup encodes
 * every record once for its commit and once for the checkpoint, and the object in between (and
 * its walk) cost more than the text. The same keys in the same order; base64 and decimal
 * digits need no escaping, every other string goes through JSON.stringify.
 */
export function recordJson(r: FileRecord): string {
  return `{${recordFields(r)}}`;
}

/** `JSON.stringify(encodeChange(c))`, a put written straight to the string (recordJson). */
export function changeJson(c: JournalChange): string {
  return c.op === 'put' ? `{"op":"put",${recordFields(c)}}` : JSON.stringify(encodeChange(c));
}

function recordFields(r: FileRecord): string {
  let s = `"p":"${b64(r.path)}","t":${JSON.stringify(r.type)},"m":${jsonNumber(r.mode)},"u":${jsonNumber(r.uid)},"g":${jsonNumber(r.gid)},"mt":"${r.mtimeNs}","s":${jsonNumber(r.size)}`;
  if (r.target !== undefined) s += `,"l":"${b64(r.target)}"`;
  if (r.fine) s += ',"k":1';
  const n = r.chunks.length;
  if (n === 0) return s;
  s += ',"c":[';
  for (let i = 0; i < n; i++) {
    const c = r.chunks[i] as ChunkRef;
    if (i > 0) s += ',';
    s += `[${JSON.stringify(c.id)},${JSON.stringify(c.pack)},${jsonNumber(c.offset)},${jsonNumber(c.length)}`;
    s += c.size === undefined ? ']' : `,${jsonNumber(c.size)}]`;
  }
  return `${s}]`;
}

export function encodeRecord(r: FileRecord): Json {
  const o: Json = { p: b64(r.path), t: r.type, m: r.mode, u: r.uid, g: r.gid, mt: r.mtimeNs.toString(), s: r.size };
  if (r.target !== undefined) o.l = b64(r.target);
  if (r.fine) o.k = 1;
  if (r.chunks.length > 0) o.c = encodeChunkRefs(r.chunks);
  return o;
}

/**
 * `packs`: pack ids seen so far, to share one string per pack among the records decoded with
 * it (a checkpoint of 2,000,000 files names a few thousand packs: 80 bytes a chunk otherwise).
 */
export function decodeRecord(o: Json, packs?: Map<string, string>): FileRecord {
  const r: FileRecord = {
    path: unb64(o.p),
    type: kindOf(o.t),
    mode: Number(o.m),
    uid: Number(o.u),
    gid: Number(o.g),
    mtimeNs: BigInt(String(o.mt)),
    size: Number(o.s),
    chunks: decodeChunkRefs((o.c as unknown[][] | undefined) ?? [], packs),
  };
  if (o.l !== undefined) r.target = unb64(o.l);
  if (o.k === 1) r.fine = true;
  return r;
}

export function encodeChange(c: JournalChange): Json {
  if (c.op === 'put') return { op: 'put', ...encodeRecord(c) };
  if (c.op === 'delete') return { op: 'delete', p: b64(c.path) };
  return { op: 'move', f: b64(c.from), p: b64(c.path) };
}

export function decodeChange(o: Json): JournalChange {
  if (o.op === 'put') {
    // The record itself, marked (a spread into a new object cost as much as decoding it).
    const c = decodeRecord(o) as FileRecord & { op: 'put' };
    c.op = 'put';
    return c;
  }
  if (o.op === 'delete') return { op: 'delete', path: unb64(o.p) };
  if (o.op === 'move') return { op: 'move', from: unb64(o.f), path: unb64(o.p) };
  throw new Error(`unknown journal op ${String(o.op)}`);
}

/** A commit object without its changes: they are inline (small commits) or in parts (large ones). */
export type CommitHead = Omit<Commit, 'changes'> & {
  /** Parts holding the first changes, in order, with their stored sizes (format 2). */
  parts: Array<[string, number]>;
  /** Changes stored in the object itself, after those of the parts. */
  inline: Json[];
  /** A segment's step: its changes in runs, read from the segment's parts as they are needed (then `parts` and `inline` are empty). */
  stream?: () => AsyncIterable<Json[]>;
};

export function encodeCommitHead(c: CommitHead): Json {
  const o: Json = { v: 2, source: c.source, seq: c.seq, time: c.timeMs, packs: c.packs, stats: c.stats };
  if (c.parts.length > 0) o.parts = c.parts;
  o.changes = c.inline;
  if (c.host !== undefined) o.host = c.host;
  if (c.root !== undefined) o.root = c.root;
  return o;
}

/** A commit object of format 1 (changes inline) or 2 (changes inline and in parts). */
export function decodeCommitHead(o: Json): CommitHead {
  if (o.v !== 1 && o.v !== 2) throw new Error(`unsupported commit version ${String(o.v)} (this Phoenix reads 1 and 2: upgrade it)`);
  const c: CommitHead = {
    source: String(o.source),
    seq: Number(o.seq),
    timeMs: Number(o.time),
    packs: (o.packs as string[]).map(String),
    stats: o.stats as CommitStats,
    parts: decodeParts(o.parts),
    inline: o.changes as Json[],
  };
  if (!Array.isArray(c.inline)) throw new Error('its changes are not a list');
  if (typeof o.host === 'string') c.host = o.host;
  if (typeof o.root === 'string') c.root = o.root;
  return c;
}

/** A parts list `[[id, size], …]`. */
export function decodeParts(v: unknown): Array<[string, number]> {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new Error('its parts are not a list');
  return v.map((p: unknown) => {
    if (!Array.isArray(p) || typeof p[0] !== 'string' || !HEX_ID.test(p[0])) throw new Error('a part id is malformed');
    return [p[0], Number(p[1])];
  });
}

// ---- applying changes to a tree state --------------------------------------------------------

/**
 * A tree as of one commit, by path. Once changes are applied to it (applyChange), change it
 * only through applyChange: that keeps the index of a large tree's directories in step.
 */
export type TreeState = Map<RawPath, FileRecord>;

/**
 * Subtree changes (a directory deleted, moved, or replaced by a file) on a tree state: the first
 * `afterScans` look at every path; past them, on a tree of at least `minEntries`, an index of
 * each directory's children is built once and kept by applyChange, so each costs its subtree,
 * not the tree (a journal tail with a thousand directory moves on a tree of two million entries
 * was two billion comparisons). Tests lower the thresholds.
 */
export const subtreeIndexing = { minEntries: 65_536, afterScans: 8 };

interface SubtreeIndex {
  scans: number;
  /** Children (full paths) by directory, once built. */
  kids: Map<RawPath, Set<RawPath>> | undefined;
  /** The tree's size when the index was last in step with it. */
  size: number;
}

const subtreeIndexes = new WeakMap<TreeState, SubtreeIndex>();

/** The index of `state` if it has one in step with it (one changed behind applyChange's back is dropped). */
function liveIndex(state: TreeState): Map<RawPath, Set<RawPath>> | undefined {
  const idx = subtreeIndexes.get(state);
  if (idx?.kids !== undefined && idx.size !== state.size) idx.kids = undefined;
  return idx?.kids;
}

/** The index of `state` for a subtree change, built now if it is time; undefined: scan. */
function subtreeIndex(state: TreeState): Map<RawPath, Set<RawPath>> | undefined {
  const live = liveIndex(state);
  if (live !== undefined) return live;
  let idx = subtreeIndexes.get(state);
  if (idx === undefined) subtreeIndexes.set(state, (idx = { scans: 0, kids: undefined, size: 0 }));
  if (++idx.scans <= subtreeIndexing.afterScans || state.size < subtreeIndexing.minEntries) return undefined;
  const kids = new Map<RawPath, Set<RawPath>>();
  for (const p of state.keys()) indexAdd(kids, p);
  idx.kids = kids;
  idx.size = state.size;
  return kids;
}

/** Adds `p` under its directory, and that directory under its own when it is new to the index (a tree from a repository may lack it). */
function indexAdd(kids: Map<RawPath, Set<RawPath>>, p: RawPath): void {
  for (let q = p; q !== '';) {
    const dir = parentOf(q);
    const set = kids.get(dir);
    if (set !== undefined) {
      set.add(q);
      return;
    }
    kids.set(dir, new Set([q]));
    q = dir;
  }
}

/** `path` (if present) and every path below it. */
function subtreeOf(state: TreeState, path: RawPath, kids: Map<RawPath, Set<RawPath>> | undefined): RawPath[] {
  if (kids === undefined) {
    const prefix = `${path}/`;
    return [...state.keys()].filter((k) => k === path || k.startsWith(prefix));
  }
  const out: RawPath[] = [];
  const stack = [path];
  while (stack.length > 0) {
    const p = stack.pop() as RawPath;
    if (state.has(p)) out.push(p);
    for (const c of kids.get(p) ?? []) stack.push(c);
  }
  return out;
}

function dropSubtree(state: TreeState, path: RawPath, kids: Map<RawPath, Set<RawPath>> | undefined): void {
  const old = state.get(path);
  const whole = old === undefined || old.type === 'dir';
  const gone = whole ? subtreeOf(state, path, kids) : [path];
  for (const p of gone) {
    state.delete(p);
    // A file goes alone, and paths a tree from a repository may hold below it stay: so does
    // the way to them in the index (subtreeOf(its directory) must still find them).
    if (kids === undefined || (!whole && (kids.get(p)?.size ?? 0) > 0)) continue;
    kids.get(parentOf(p))?.delete(p);
    kids.delete(p);
  }
}

/** The record a put stores. */
export function recordOf(c: Extract<JournalChange, { op: 'put' }>): FileRecord {
  const rec: FileRecord = {
    path: c.path,
    type: c.type,
    mode: c.mode,
    uid: c.uid,
    gid: c.gid,
    mtimeNs: c.mtimeNs,
    size: c.size,
    chunks: c.chunks,
  };
  if (c.target !== undefined) rec.target = c.target;
  if (c.fine) rec.fine = true;
  return rec;
}

/** Applies one journal change (README and docs/FORMAT.md give the semantics). */
export function applyChange(state: TreeState, c: JournalChange): void {
  if (c.op === 'put') {
    const old = state.get(c.path);
    const replacesDir = old?.type === 'dir' && c.type !== 'dir';
    const kids = replacesDir ? subtreeIndex(state) : liveIndex(state);
    if (replacesDir) dropSubtree(state, c.path, kids);
    if (kids !== undefined && !state.has(c.path)) indexAdd(kids, c.path);
    state.set(c.path, recordOf(c));
  } else if (c.op === 'delete') {
    dropSubtree(state, c.path, subtreeIndex(state));
  } else {
    if (c.from === c.path) return;
    const kids = subtreeIndex(state);
    const moving = subtreeOf(state, c.from, kids).map((k) => [k, state.get(k) as FileRecord] as const);
    dropSubtree(state, c.from, kids);
    dropSubtree(state, c.path, kids);
    for (const [k, r] of moving) {
      const np = c.path + k.slice(c.from.length);
      if (kids !== undefined) indexAdd(kids, np);
      state.set(np, { ...r, path: np });
    }
  }
  const idx = subtreeIndexes.get(state);
  if (idx?.kids !== undefined) idx.size = state.size;
}

/** The records of a tree in byte order of path (the order checkpoints store them in). */
export function recordsInOrder(state: TreeState): FileRecord[] {
  return [...state.values()].sort((a, b) => compareRaw(a.path, b.path));
}
