import { isNotFound } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import { compareRaw, parentOf, type RawPath } from '../model/path.js';
import {
  applyTracked,
  checkpointKey,
  mapLimited,
  recordJson,
  seqAt,
  type CommitInfo,
  type CommitStats,
  type FileRecord,
  type JournalChange,
  type Repository,
  type SegmentStepIn,
  type TreeDigest,
} from '../repo/index.js';
import { ScratchTree } from '../state/scratch-tree.js';
import { keptInstants, parsePolicy, type KeepReason, type Policy } from './policy.js';

/** The policy that applies to `source`: given, its own, or the repository's default (undefined: none, keep everything). */
export async function effectivePolicy(
  repo: Repository,
  source: string,
  given?: { policy?: string | undefined; minAge?: string | undefined },
): Promise<{ policy: Policy; text: string; minAge: string; scope: 'given' | 'source' | 'repository' } | undefined> {
  const own = await repo.storedPolicy(source);
  const stored = own ?? (await repo.storedPolicy(undefined));
  const scope = given?.policy !== undefined ? 'given' : own !== undefined ? 'source' : 'repository';
  const text = given?.policy ?? stored?.policy;
  if (text === undefined) return undefined;
  const minAge = given?.minAge ?? stored?.minAge ?? '1h';
  return { policy: parsePolicy(text, minAge), text, minAge, scope };
}

export interface ForgetPlan {
  source: string;
  /** Every instant the journal holds now, oldest first. */
  instants: CommitInfo[];
  /** The instants kept, with why. */
  kept: Map<number, KeepReason[]>;
  dropped: CommitInfo[];
}

/** `held`: instants kept as if pinned (a live daemon's guard may pin them). */
export async function planForget(repo: Repository, source: string, policy: Policy, held: readonly number[] = []): Promise<ForgetPlan> {
  const instants = await repo.commitList(source);
  const pins = [...(await repo.pins(source)).map((p) => p.atMs), ...held];
  const kept = keptInstants(instants, policy, pins);
  return { source, instants, kept, dropped: instants.filter((c) => !kept.has(c.seq)) };
}

export interface ForgetResult {
  /** The segments written in place of the ranges that held dropped instants (none when nothing was dropped). */
  segments: Array<{ key: string; first: number; last: number; steps: number; bytes: number }>;
  /** Journal objects and checkpoints deleted after the segments were verified. */
  deleted: { journal: number; checkpoints: number };
  /** Instants pinned while this ran that it had planned to drop: the ranges holding them were left as they were. */
  pinnedMeanwhile?: number[];
}

const DAY = 86_400_000;

/**
 * How much history one segment written by forget holds: a day for the last week (where the
 * tiers drop most), a week up to 100 days, four weeks beyond. A later run rewrites only the
 * pieces that hold an instant it drops, so its cost follows what it drops, not what is kept.
 */
function pieceOf(timeMs: number, latestMs: number): string {
  const age = latestMs - timeMs;
  const span = age < 8 * DAY ? DAY : age < 100 * DAY ? 7 * DAY : 28 * DAY;
  return `${span}:${Math.floor(timeMs / span)}`;
}

/**
 * The ranges (a, b] of the journal to write again: around each dropped instant, from the
 * kept instant before it to the kept one after it, widened to whole pieces of time (so that
 * the journal stays a few objects per piece, not one per range) and to cover any segment
 * they overlap (a segment is replaced whole or not at all), and merged where they overlap.
 */
function regions(
  instants: readonly CommitInfo[],
  kept: ReadonlyMap<number, unknown>,
  chain: ReadonlyArray<{ first: number; seq: number; segment: boolean }>,
): Array<[number, number]> {
  const latestMs = (instants.at(-1) as CommitInfo).timeMs;
  const keptList = instants.filter((c) => kept.has(c.seq));
  const pieceAt = new Map(keptList.map((c) => [c.seq, pieceOf(c.timeMs, latestMs)]));
  const young = (seq: number): boolean =>
    ((kept.get(seq) as KeepReason[] | undefined) ?? []).some((r) => r.by === 'min-age' || r.by === 'latest');
  /** [a, b] widened so that the kept instants in (a, b] are whole pieces. */
  const wholePieces = (r: [number, number]): boolean => {
    let i = keptList.findIndex((c) => c.seq > r[0]);
    let j = keptList.findIndex((c) => c.seq >= r[1]);
    const first = pieceAt.get((keptList[i] as CommitInfo).seq);
    const last = pieceAt.get((keptList[j] as CommitInfo).seq);
    while (i > 0 && pieceAt.get((keptList[i - 1] as CommitInfo).seq) === first) i--;
    // Never into the minimum-age window (where a daemon is writing) for the sake of a piece.
    while (
      j < keptList.length - 1 &&
      pieceAt.get((keptList[j + 1] as CommitInfo).seq) === last &&
      !young((keptList[j + 1] as CommitInfo).seq)
    )
      j++;
    const a = i === 0 ? Math.min(r[0], 0) : Math.min(r[0], (keptList[i - 1] as CommitInfo).seq);
    const b = Math.max(r[1], (keptList[j] as CommitInfo).seq);
    const changed = a !== r[0] || b !== r[1];
    [r[0], r[1]] = [a, b];
    return changed;
  };
  const keptAfter = (seq: number): number => {
    const i = instants.findIndex((c) => c.seq >= seq && kept.has(c.seq));
    return (instants[i] as CommitInfo).seq; // the latest instant is always kept
  };
  const out: Array<[number, number]> = [];
  let prevKept = 0;
  for (const c of instants) {
    if (kept.has(c.seq)) {
      prevKept = c.seq;
      continue;
    }
    const last = out.at(-1);
    if (last !== undefined && last[1] > prevKept) continue; // inside the range already
    out.push([prevKept, keptAfter(c.seq)]);
  }
  // Widen over segments, merging ranges that come to overlap, until nothing changes.
  for (let changed = true; changed;) {
    changed = false;
    for (const r of out) {
      if (wholePieces(r)) changed = true;
      for (const o of chain) {
        if (!o.segment || o.seq <= r[0] || o.first - 1 >= r[1]) continue;
        if (o.first - 1 < r[0]) [r[0], changed] = [o.first - 1, true];
        if (o.seq > r[1]) [r[1], changed] = [keptAfter(o.seq), true];
      }
    }
    out.sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < out.length; i++) {
      const [p, q] = [out[i - 1] as [number, number], out[i] as [number, number]];
      if (q[0] < p[1]) {
        p[1] = Math.max(p[1], q[1]);
        out.splice(i--, 1);
        changed = true;
      }
    }
  }
  return out;
}

/**
 * Applies a plan. Each range of the journal that holds dropped instants (from the kept
 * instant before to the kept one after, widened to whole segments) is written again as
 * segments holding only the kept instants, each as the net change from the kept one before,
 * cut into pieces by age (pieceOf) and of a generation above every segment they replace.
 * Ranges without a dropped instant are left as they are. The pieces of a range are read back
 * and replayed, and each step's tree digest compared with the original's, before any object
 * they supersede is deleted: a bug here stops the run with the original history intact.
 * Readers prefer the pieces as soon as all of a range's exist, so the deletions that follow
 * are invisible to them. A run killed at any point leaves a journal that reads the same;
 * the next run finishes the job.
 */
export async function applyForget(repo: Repository, plan: ForgetPlan, opts: { scratchDir?: string } = {}): Promise<ForgetResult> {
  if (plan.dropped.length === 0) {
    return { segments: [], deleted: await deleteSuperseded(repo, plan.source, plan.kept) };
  }
  // The trees it works on are on disk: memory holds what a range changed, not the tree.
  const tree = new ScratchTree(opts.scratchDir);
  try {
    return await rewrite(repo, plan, tree);
  } finally {
    tree.close();
  }
}

async function rewrite(repo: Repository, plan: ForgetPlan, tree: ScratchTree): Promise<ForgetResult> {
  const { source, instants, kept } = plan;
  const result: ForgetResult = { segments: [], deleted: { journal: 0, checkpoints: 0 } };
  const chain = await repo.journalObjects(source);
  const latestMs = (instants.at(-1) as CommitInfo).timeMs;
  let proven = false;
  let lastB = 0;
  // The tree (on disk) and its digest at the start of the next range, carried from the end of the
  // one before: each range starts from there, not from a checkpoint and a replay of all before it.
  let base: { seq: number; digest: TreeDigest } | undefined;
  const checkpoints = new CheckpointSizes(repo, source);
  /** The new segments of each range rewritten. */
  const written: Array<{ a: number; b: number; keys: string[] }> = [];
  /** The tree at `a`, and its digest; without `own`, a copy of the digest and the tree marked (rewound for the range's proof). */
  const baseAt = async (a: number, own = false): Promise<TreeDigest> => {
    const from = base?.seq ?? 0;
    // Only a gap to carry the tree over needs the journal and the checkpoints listed again.
    const commits = base !== undefined && base.seq < a ? await repo.commitList(source) : [];
    const nearest = commits.length > 0 ? await repo.usableCheckpoint(source, commits, a) : 0;
    // Carried forward from the range before, or loaded afresh from the checkpoint nearest `a`
    // when replaying the commits between would cost more than reading that checkpoint.
    const fresh =
      base === undefined ||
      base.seq > a ||
      (nearest > from && changesBetween(commits, from, nearest) > (await checkpoints.entries(nearest)));
    if (fresh) {
      await loadTree(repo, source, a, tree);
      base = { seq: a, digest: tree.digest(repo.keys) };
    } else if (base !== undefined && base.seq < a) {
      // The commits between are outside every range: as they are on the chain now. The digest
      // follows once per path they touch (or is taken afresh when they touched most of the tree),
      // not once per change: a gap of months touches the same paths again and again.
      const before = new Map<RawPath, FileRecord | null>();
      for (const info of commits.filter((c) => c.seq > from && c.seq <= a)) {
        for await (const ch of repo.commitChanges(await repo.readCommitHead(info))) applyTracked(tree, ch, undefined, before);
      }
      if (before.size > tree.size() / 2) base.digest = tree.digest(repo.keys);
      else {
        for (const [p, was] of before) {
          if (was !== null) base.digest.remove(was);
          const now = tree.get(p);
          if (now !== undefined) base.digest.add(now);
        }
      }
      base.seq = a;
    }
    const digest = (base as { digest: TreeDigest }).digest;
    if (own) {
      base = undefined; // the next range starts from what this one proves
      return digest;
    }
    tree.fork();
    return digest.clone();
  };
  for (const [a, b] of regions(instants, kept, chain)) {
    const gen = 1 + Math.max(-1, ...chain.filter((o) => o.segment && o.seq > a && o.first - 1 < b).map((o) => o.gen));
    const range = instants.filter((c) => c.seq > a && c.seq <= b);
    // The pieces: consecutive kept instants of one piece of time; the commits dropped before a
    // kept instant go with it.
    const pieces: Array<{ first: number; last: number }> = [];
    let from = a + 1;
    let current: string | undefined;
    for (const c of range) {
      if (!kept.has(c.seq)) continue;
      const piece = pieceOf(c.timeMs, latestMs);
      const open = pieces.at(-1);
      if (open !== undefined && piece === current) open.last = c.seq;
      else pieces.push({ first: from, last: c.seq });
      current = piece;
      from = c.seq + 1;
    }
    const expected: Array<{ seq: number; digest: string }> = [];
    const steps = keptSteps(repo, tree, await baseAt(a), range, kept, expected)[Symbol.asyncIterator]();
    const keys: string[] = [];
    written.push({ a, b, keys });
    for (const piece of pieces) {
      async function* upTo(): AsyncGenerator<SegmentStepIn> {
        for (;;) {
          const n = await steps.next();
          if (n.done === true) return;
          yield n.value;
          if (n.value.seq === piece.last) return;
        }
      }
      const written = await repo.writeSegment(source, piece.first, piece.last, upTo(), { gen });
      keys.push(written.key);
      const n = expected.filter((e) => e.seq >= piece.first && e.seq <= piece.last).length;
      result.segments.push({ key: written.key, first: piece.first, last: piece.last, steps: n, bytes: written.size });
    }
    // Read them back as any reader would, and prove every kept instant before deleting anything.
    tree.rewind(); // the tree back at `a`
    const verified = await verify(repo, source, a, b, tree, await baseAt(a, true), new Set(keys), expected);
    if (typeof verified === 'string') {
      for (const key of keys) await repo.backend.delete(key);
      throw new PhoenixError('PHX_INTERNAL', `forget of ${JSON.stringify(source)}: ${verified}; nothing was deleted`, {
        hint: 'the journal is as it was; please report this with phoenix check output',
      });
    }
    proven = true;
    base = { seq: b, digest: verified };
    lastB = b;
  }
  // A pin set while this ran (`phoenix pin` from another process) may name an instant it
  // drops. The ranges that hold one go back to the journal as it was: their new segments are
  // deleted, and the objects they were to supersede, still there, are the chain again. The
  // next run keeps the instant.
  const pinned = (await repo.pins(source)).map((p) => seqAt(instants, p.atMs));
  const late = [...new Set(pinned)].filter((seq): seq is number => seq !== undefined && !kept.has(seq));
  for (const w of written.filter((r) => late.some((seq) => seq > r.a && seq <= r.b))) {
    for (const key of w.keys) await repo.backend.delete(key);
    result.segments = result.segments.filter((s) => !w.keys.includes(s.key));
  }
  if (late.length > 0) result.pinnedMeanwhile = late;
  // A base checkpoint at the last range's end: the checkpoints it replaced were at instants no
  // longer kept, and the next run (and every reader) starts from here instead of commit 1.
  const commits = await repo.commitList(source);
  if (proven && (await repo.usableCheckpoint(source, commits, lastB)) < lastB) {
    await repo.writeCheckpoint(source, lastB, tree.records());
  }
  const deleted = await deleteSuperseded(repo, source, kept);
  // Older checkpoints stay only where they save more than they cost: spaced through the
  // thinned history so that a reader of any instant (and the next forget, which starts each
  // range from the checkpoint nearest it) replays at most about READ_LIMIT checkpoints' worth
  // of changes. The metadata kept grows with the kept history, not with one checkpoint a run.
  const after = await repo.commitList(source);
  const older = (await repo.checkpointSeqs(source)).filter((seq) => seq < lastB).sort((x, y) => x - y);
  const entries = await checkpoints.entries(lastB).catch(() => undefined);
  const spaced = entries === undefined ? new Set<number>() : spacedCheckpoints(after, older, lastB, entries);
  for (const seq of older) {
    if (spaced.has(seq)) continue;
    await repo.backend.delete(checkpointKey(source, seq));
    deleted.checkpoints++;
  }
  return { ...result, deleted };
}

/** How many checkpoints' worth of changes a reader replays at most where forget thins the checkpoints (as the writers do: CheckpointPolicy). */
const READ_LIMIT = 2;
/** A journal change stored in a commit object, on average (commits that are not segment steps: their count is not listed). */
const BYTES_PER_CHANGE = 100;

/** The changes the journal replays after commit `from` up to commit `to` (for segment steps, counted; for commits, estimated from their size). */
function changesBetween(commits: readonly CommitInfo[], from: number, to: number): number {
  let n = 0;
  for (const c of commits) {
    if (c.seq <= from || c.seq > to) continue;
    n += c.segment?.changes ?? Math.max(1, Math.round((c.size ?? 0) / BYTES_PER_CHANGE));
  }
  return n;
}

/**
 * Of the checkpoints `older` (ascending, all before the one at `newest`), those worth keeping:
 * each one without which a reader starting from the kept one before (or from the journal's
 * start) would replay more than READ_LIMIT × `entries` changes to reach the next one. A
 * checkpoint at an instant the journal no longer keeps is never one (no reader can start there).
 */
export function spacedCheckpoints(commits: readonly CommitInfo[], older: readonly number[], newest: number, entries: number): Set<number> {
  const steps = new Set(commits.map((c) => c.seq));
  const usable = older.filter((seq) => steps.has(seq));
  const keep = new Set<number>();
  let last = 0;
  for (const [i, seq] of usable.entries()) {
    const next = usable[i + 1] ?? newest;
    if (changesBetween(commits, last, next) <= READ_LIMIT * entries) continue;
    keep.add(seq);
    last = seq;
  }
  return keep;
}

/** The entries of a source's checkpoints, read once each (a checkpoint's head). */
class CheckpointSizes {
  readonly #known = new Map<number, number>();
  constructor(
    readonly repo: Repository,
    readonly source: string,
  ) {}

  async entries(seq: number): Promise<number> {
    let n = this.#known.get(seq);
    if (n === undefined) this.#known.set(seq, (n = (await this.repo.checkpointInfo(this.source, seq)).entries));
    return n;
  }
}

/** The kept instants of `range` (after commit `a`, on the tree), computed from the original journal one commit at a time; `expected` gets each one's digest. */
async function* keptSteps(
  repo: Repository,
  tree: ScratchTree,
  digest: TreeDigest,
  range: readonly CommitInfo[],
  kept: ReadonlyMap<number, unknown>,
  expected: Array<{ seq: number; digest: string }>,
): AsyncGenerator<SegmentStepIn> {
  let before = new Map<RawPath, FileRecord | null>();
  let applied = 0; // changes applied since the last kept step
  let uploaded = 0;
  for (const info of range) {
    const head = await repo.readCommitHead(info);
    uploaded += head.stats.bytesUploaded;
    const step: SegmentStepIn = { seq: head.seq, timeMs: head.timeMs, stats: statsOf([], 0), changes: [] };
    if (head.host !== undefined) step.host = head.host;
    if (head.root !== undefined) step.root = head.root;
    if (applied === 0 && kept.has(info.seq)) {
      // A kept commit right after a kept one keeps its changes as they are (moves stay moves):
      // they pass through to the segment as they are applied, one part of them in memory.
      let done = false;
      const bytes = uploaded;
      step.changes = (async function* () {
        const stats = statsOf([], bytes);
        for await (const ch of repo.commitChanges(head)) {
          applyTracked(tree, ch, digest);
          count(stats, ch);
          yield ch;
        }
        step.stats = stats;
        step.digest = digest.hex();
        expected.push({ seq: step.seq, digest: step.digest });
        done = true;
      })();
      yield step;
      if (!done) throw new PhoenixError('PHX_INTERNAL', `internal: the changes of step ${step.seq} were not all written`);
    } else {
      for await (const ch of repo.commitChanges(head)) {
        applyTracked(tree, ch, digest, before);
        applied++;
      }
      if (!kept.has(info.seq)) continue;
      step.digest = digest.hex();
      expected.push({ seq: step.seq, digest: step.digest });
      const stats = statsOf([], uploaded);
      step.changes = (function* () {
        for (const ch of netChanges(before, tree)) {
          count(stats, ch);
          yield ch;
        }
        step.stats = stats;
      })();
      yield step;
    }
    before = new Map();
    applied = 0;
    uploaded = 0;
  }
}

/** Replays the segments written over the tree at `a` (which ends at `b`): its digest there, or what is wrong. */
async function verify(
  repo: Repository,
  source: string,
  a: number,
  b: number,
  tree: ScratchTree,
  digest: TreeDigest,
  keys: ReadonlySet<string>,
  expected: ReadonlyArray<{ seq: number; digest: string }>,
): Promise<string | TreeDigest> {
  const now = (await repo.commitList(source)).filter((c) => c.seq > a && c.seq <= b);
  if (now.some((c) => !keys.has(c.key))) return 'the segments written are not the ones readers choose';
  if (now.map((c) => c.seq).join() !== expected.map((e) => e.seq).join()) return 'the segment does not hold the instants kept';
  for (const [i, info] of now.entries()) {
    for await (const ch of repo.commitChanges(await repo.readCommitHead(info))) applyTracked(tree, ch, digest);
    const want = expected[i] as { seq: number; digest: string };
    if (digest.hex() !== want.digest) return `the tree at commit ${info.seq} read back from the segment differs from the original`;
    if ((await repo.stepDigest(info)) !== want.digest) return `the digest stored for commit ${info.seq} is not the original's`;
  }
  return digest;
}

/**
 * Deletes what the journal no longer reads: objects a wider one covers, and checkpoints at
 * instants that are not kept (a reader cannot start from those).
 */
export async function deleteSuperseded(
  repo: Repository,
  source: string,
  kept: ReadonlyMap<number, unknown>,
): Promise<{ journal: number; checkpoints: number }> {
  const listing = await repo.journalListing(source);
  const chain = await repo.journalObjects(source, listing);
  const used = new Set(chain.map((o) => o.key));
  const covered = (key: string, first: number, seq: number): boolean =>
    chain.some((o) => o.segment && o.key !== key && o.first <= first && seq <= o.seq);
  let journal = 0;
  for (const o of listing) {
    if (used.has(o.key) || !covered(o.key, o.first, o.seq)) continue;
    await repo.backend.delete(o.key);
    journal++;
  }
  const steps = new Set((await repo.commitList(source)).map((c) => c.seq));
  const latest = chain.at(-1)?.seq ?? 0;
  let checkpoints = 0;
  for (const seq of await repo.checkpointSeqs(source)) {
    // A checkpoint past the latest commit belongs to a writer's commit not listed yet: leave it.
    if (steps.has(seq) || seq > latest || kept.has(seq)) continue;
    await repo.backend.delete(checkpointKey(source, seq));
    checkpoints++;
  }
  return { journal, checkpoints };
}

/**
 * The changes that take the tree from what `before` recorded to `state`, for the paths it
 * recorded: removals (not those inside a removed directory), then puts, each in byte order of
 * path, made as they are read (the tree stays where it is).
 */
export function* netChanges(
  before: ReadonlyMap<RawPath, FileRecord | null>,
  state: { get(p: RawPath): FileRecord | undefined },
): Generator<JournalChange> {
  const paths = [...before.keys()].sort(compareRaw);
  const deleted = new Set<RawPath>();
  for (const p of paths) {
    if (before.get(p) === null || state.get(p) !== undefined) continue;
    let q = p;
    let inside = false;
    while (q.includes('/') && !inside) inside = deleted.has((q = parentOf(q)));
    if (inside) continue; // its directory's delete takes it
    deleted.add(p);
    yield { op: 'delete', path: p };
  }
  for (const p of paths) {
    const now = state.get(p);
    if (now === undefined) continue;
    const was = before.get(p) as FileRecord | null;
    if (was === null || recordJson(was) !== recordJson(now)) yield { op: 'put', ...now };
  }
}

/** Counts `ch` into `s`. */
function count(s: CommitStats, ch: JournalChange): void {
  if (ch.op === 'delete') s.deleted++;
  else if (ch.op === 'put' && ch.type === 'dir') s.dirs++;
  else if (ch.op === 'put') {
    s.files++;
    s.bytesTotal += ch.size;
  }
}

function statsOf(changes: readonly JournalChange[], bytesUploaded: number): CommitStats {
  const s: CommitStats = { files: 0, dirs: 0, deleted: 0, bytesUploaded, bytesTotal: 0 };
  for (const c of changes) count(s, c);
  return s;
}

/** Fills `tree` with the tree of `source` after commit `seq`: its nearest checkpoint, then the commits after it. */
async function loadTree(repo: Repository, source: string, seq: number, tree: ScratchTree): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      const commits = await repo.commitList(source);
      const best = seq > 0 ? await repo.usableCheckpoint(source, commits, seq) : 0;
      await tree.load(best > 0 ? repo.checkpointRecords(source, best) : []);
      const tail = commits.filter((c) => c.seq > best && c.seq <= seq);
      // Heads fetched a window ahead; the changes of each (a step may be a whole tree) as a stream.
      for (let i = 0; i < tail.length; i += 64) {
        for (const head of await mapLimited(tail.slice(i, i + 64), 8, (info) => repo.readCommitHead(info))) {
          let batch: JournalChange[] = [];
          for await (const ch of repo.commitChanges(head)) {
            if (batch.push(ch) < 4096) continue;
            tree.applyAll(batch);
            batch = [];
          }
          tree.applyAll(batch);
        }
      }
      return;
    } catch (err) {
      // Compaction deleted an object after we listed (it wrote what supersedes it first): list again, once.
      if (attempt > 0 || !isNotFound(err)) throw err;
    }
  }
}
