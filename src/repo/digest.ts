import type { RawPath } from '../model/path.js';
import type { Keys } from './crypto.js';
import { applyChange, encodeRecord, recordOf, type FileRecord, type JournalChange, type TreeState } from './format.js';

/**
 * The digest of a tree: the lane-wise sum (eight 32-bit lanes, modulo 2^32) of the chunk id
 * (HMAC-SHA-256 under the MAC key) of each record's JSON, its chunk refs reduced to `[id, size]`
 * (where a chunk is stored is not content: repacking moves it). A sum, so that it follows a tree
 * through its changes at the cost of the changes: remove the records a change replaces, add
 * the ones it makes. Segments store it after each step; compaction compares it before it
 * deletes anything, and `check` proves every kept instant with it.
 */
export class TreeDigest {
  readonly #lanes = new Uint32Array(8);

  constructor(readonly keys: Keys) {}

  static of(keys: Keys, state: TreeState): TreeDigest {
    const d = new TreeDigest(keys);
    for (const r of state.values()) d.add(r);
    return d;
  }

  #mix(r: FileRecord, sign: 1 | -1): void {
    // The record's content: its chunks by id and size, not where they are stored (repacking moves them).
    const o = encodeRecord(r);
    if (o.c !== undefined) o.c = (o.c as unknown[][]).map((c) => [c[0], c[4] ?? null]);
    const h = this.keys.id(Buffer.from(JSON.stringify(o)));
    for (let i = 0; i < 8; i++) this.#lanes[i] = ((this.#lanes[i] as number) + sign * h.readUInt32LE(i * 4)) >>> 0;
  }

  add(r: FileRecord): void {
    this.#mix(r, 1);
  }

  remove(r: FileRecord): void {
    this.#mix(r, -1);
  }

  /** An independent copy (the same sum), to follow two copies of a tree. */
  clone(): TreeDigest {
    const d = new TreeDigest(this.keys);
    d.#lanes.set(this.#lanes);
    return d;
  }

  hex(): string {
    return Buffer.from(this.#lanes.buffer.slice(0)).toString('hex');
  }
}

/** A tree that changes can be tracked on: in memory (a TreeState) or on disk (ScratchTree). */
export interface TrackedTree {
  get(p: RawPath): FileRecord | undefined;
  /** Every path strictly below `dir`. */
  below(dir: RawPath): RawPath[];
  /** Applies `ch` as docs/FORMAT.md defines it. */
  apply(ch: JournalChange): void;
}

/** A TreeState as a TrackedTree. */
function inMemory(state: TreeState): TrackedTree {
  return {
    get: (p) => state.get(p),
    below: (dir) => {
      const prefix = `${dir}/`;
      const out: RawPath[] = [];
      for (const k of state.keys()) if (k.startsWith(prefix)) out.push(k);
      return out;
    },
    apply: (ch) => applyChange(state, ch),
  };
}

/**
 * The paths whose entries `ch` may change in `tree`: the path it names and, for a directory
 * deleted, moved, or replaced by a non-directory, everything below it (and where a move puts it).
 */
export function affectedPaths(tree: TreeState | TrackedTree, ch: JournalChange): RawPath[] {
  const t = tree instanceof Map ? inMemory(tree) : tree;
  if (ch.op === 'put') {
    const old = t.get(ch.path);
    return old?.type === 'dir' && ch.type !== 'dir' ? [ch.path, ...t.below(ch.path)] : [ch.path];
  }
  if (ch.op === 'delete') return [ch.path, ...t.below(ch.path)];
  const moving = [ch.from, ...t.below(ch.from)];
  return [...moving, ch.path, ...t.below(ch.path), ...moving.map((k) => ch.path + k.slice(ch.from.length))];
}

/**
 * Applies `ch` to `tree` (applyChange), keeping `digest` in step with it, and noting in
 * `before` what each affected path held before its first change (null: nothing).
 */
export function applyTracked(
  tree: TreeState | TrackedTree,
  ch: JournalChange,
  digest?: TreeDigest,
  before?: Map<RawPath, FileRecord | null>,
): void {
  const t = tree instanceof Map ? inMemory(tree) : tree;
  const paths = new Set(affectedPaths(t, ch));
  for (const p of paths) {
    const r = t.get(p);
    if (before !== undefined && !before.has(p)) before.set(p, r ?? null);
    if (r !== undefined) digest?.remove(r);
  }
  t.apply(ch);
  if (digest === undefined) return;
  // A put of one path stores the record it carries: no need to look it up again.
  if (ch.op === 'put' && paths.size === 1) return digest.add(recordOf(ch));
  for (const p of paths) {
    const r = t.get(p);
    if (r !== undefined) digest.add(r);
  }
}
