import { PhoenixError } from '../errors.js';
import { compareRaw, parentOf, type RawPath } from '../model/path.js';
import {
  applyTracked,
  checkpointKey,
  encodeRecord,
  recordsInOrder,
  TreeDigest,
  type CommitInfo,
  type CommitStats,
  type FileRecord,
  type JournalChange,
  type Repository,
  type SegmentStep,
  type TreeState,
} from '../repo/index.js';
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

export async function planForget(repo: Repository, source: string, policy: Policy): Promise<ForgetPlan> {
  const instants = await repo.commitList(source);
  const pins = (await repo.pins(source)).map((p) => p.atMs);
  const kept = keptInstants(instants, policy, pins);
  return { source, instants, kept, dropped: instants.filter((c) => !kept.has(c.seq)) };
}

export interface ForgetResult {
  /** The segment written in place of the range that held dropped instants, if any. */
  segment?: { key: string; first: number; last: number; steps: number; bytes: number };
  /** Journal objects and checkpoints deleted after the segment was verified. */
  deleted: { journal: number; checkpoints: number };
}

/**
 * Applies a plan: the range of the journal from the kept instant before the first dropped one
 * to the kept instant after the last one (widened to cover any segment it overlaps) is written
 * again as one segment holding only the kept instants, each as the net change from the kept
 * one before. The segment is read back and replayed, and each step's tree digest compared with
 * the original's, before any object it supersedes is deleted: a bug here stops the run with
 * the original history intact. Readers prefer the segment as soon as it exists, so the
 * deletions that follow are invisible to them. A run killed at any point leaves a journal
 * that reads the same; the next run finishes the job.
 */
export async function applyForget(repo: Repository, plan: ForgetPlan): Promise<ForgetResult> {
  const { source, instants, kept } = plan;
  const result: ForgetResult = { deleted: { journal: 0, checkpoints: 0 } };
  const firstDrop = instants.findIndex((c) => !kept.has(c.seq));
  if (firstDrop < 0) return { ...result, deleted: await deleteSuperseded(repo, source, kept) };
  let lastDrop = instants.length - 1;
  while (kept.has((instants[lastDrop] as CommitInfo).seq)) lastDrop--;
  let a = firstDrop === 0 ? 0 : (instants[firstDrop - 1] as CommitInfo).seq;
  let b = (instants[lastDrop + 1] as CommitInfo).seq; // the latest instant is always kept
  const chain = await repo.journalObjects(source);
  for (let widened = true; widened;) {
    widened = false;
    for (const o of chain) {
      if (!o.segment || o.seq <= a || o.first - 1 >= b) continue;
      if (o.first - 1 < a) [a, widened] = [o.first - 1, true];
      if (o.seq > b) [b, widened] = [o.seq, true];
    }
    // b must be an instant kept.
    let i = instants.findIndex((c) => c.seq === b);
    while (!kept.has((instants[i] as CommitInfo).seq)) i++;
    if ((instants[i] as CommitInfo).seq !== b) [b, widened] = [(instants[i] as CommitInfo).seq, true];
  }
  const range = instants.filter((c) => c.seq > a && c.seq <= b);
  const expected: Array<{ seq: number; digest: string }> = [];

  // The kept instants of the range, computed from the original journal one commit at a time.
  async function* steps(): AsyncGenerator<SegmentStep & { changes: JournalChange[] }> {
    const state: TreeState = a > 0 ? (await repo.loadState(source, a)).state : new Map();
    const digest = TreeDigest.of(repo.keys, state);
    let before = new Map<RawPath, FileRecord | null>();
    let run: JournalChange[] | undefined = [];
    let uploaded = 0;
    for (const info of range) {
      const c = await repo.readCommit(info);
      for (const ch of c.changes) applyTracked(state, ch, digest, before);
      uploaded += c.stats.bytesUploaded;
      // A kept commit right after a kept one keeps its changes as they are (moves stay moves).
      run = run !== undefined && run.length === 0 ? c.changes : undefined;
      if (!kept.has(c.seq)) continue;
      const changes = run ?? netChanges(before, state);
      const hex = digest.hex();
      const step: SegmentStep & { changes: JournalChange[] } = {
        seq: c.seq,
        timeMs: c.timeMs,
        stats: statsOf(changes, uploaded),
        digest: hex,
        changes,
      };
      if (c.host !== undefined) step.host = c.host;
      if (c.root !== undefined) step.root = c.root;
      expected.push({ seq: c.seq, digest: hex });
      yield step;
      before = new Map();
      run = [];
      uploaded = 0;
    }
  }
  const written = await repo.writeSegment(source, a + 1, b, steps());
  result.segment = { key: written.key, first: a + 1, last: b, steps: expected.length, bytes: written.size };

  // Read it back as any reader would, and prove every kept instant before deleting anything.
  const proven = await verify(repo, source, a, b, written.key, expected);
  if (typeof proven === 'string') {
    await repo.backend.delete(written.key);
    throw new PhoenixError('PHX_INTERNAL', `forget of ${JSON.stringify(source)}: ${proven}; nothing was deleted`, {
      hint: 'the journal is as it was; please report this with phoenix check output',
    });
  }
  // A base checkpoint at the segment's end: the checkpoints it replaced were at instants no
  // longer kept, and the next run (and every reader) starts from here instead of commit 1.
  const commits = await repo.commitList(source);
  if ((await repo.usableCheckpoint(source, commits, b)) < b) await repo.writeCheckpoint(source, b, recordsInOrder(proven));
  const deleted = await deleteSuperseded(repo, source, kept);
  // Older checkpoints go: a reader of an instant before b replays the thinned history from its
  // start (its first step is the whole tree then), so the metadata kept grows with the kept
  // instants, not with one checkpoint a run.
  for (const seq of await repo.checkpointSeqs(source)) {
    if (seq >= b) continue;
    await repo.backend.delete(checkpointKey(source, seq));
    deleted.checkpoints++;
  }
  return { ...result, deleted };
}

async function verify(
  repo: Repository,
  source: string,
  a: number,
  b: number,
  key: string,
  expected: ReadonlyArray<{ seq: number; digest: string }>,
): Promise<string | TreeState> {
  const now = (await repo.commitList(source)).filter((c) => c.seq > a && c.seq <= b);
  if (now.some((c) => c.key !== key)) return 'the segment written is not the one readers choose';
  if (now.map((c) => c.seq).join() !== expected.map((e) => e.seq).join()) return 'the segment does not hold the instants kept';
  const state: TreeState = a > 0 ? (await repo.loadState(source, a)).state : new Map();
  const digest = TreeDigest.of(repo.keys, state);
  for (const [i, info] of now.entries()) {
    for (const ch of (await repo.readCommit(info)).changes) applyTracked(state, ch, digest);
    const want = expected[i] as { seq: number; digest: string };
    if (digest.hex() !== want.digest) return `the tree at commit ${info.seq} read back from the segment differs from the original`;
    if ((await repo.stepDigest(info)) !== want.digest) return `the digest stored for commit ${info.seq} is not the original's`;
  }
  return state;
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

/** The changes that take the tree from what `before` recorded to `state`, for the paths it recorded. */
export function netChanges(before: ReadonlyMap<RawPath, FileRecord | null>, state: TreeState): JournalChange[] {
  const gone: RawPath[] = [];
  const puts: FileRecord[] = [];
  const json = (r: FileRecord): string => JSON.stringify(encodeRecord(r));
  for (const [p, was] of before) {
    const now = state.get(p);
    if (now === undefined) {
      if (was !== null) gone.push(p);
    } else if (was === null || json(was) !== json(now)) puts.push(now);
  }
  gone.sort(compareRaw);
  const deleted = new Set<RawPath>();
  const changes: JournalChange[] = [];
  for (const p of gone) {
    let q = p;
    let inside = false;
    while (q.includes('/') && !inside) inside = deleted.has((q = parentOf(q)));
    if (inside) continue; // its directory's delete takes it
    deleted.add(p);
    changes.push({ op: 'delete', path: p });
  }
  puts.sort((x, y) => compareRaw(x.path, y.path));
  for (const r of puts) changes.push({ op: 'put', ...r });
  return changes;
}

function statsOf(changes: readonly JournalChange[], bytesUploaded: number): CommitStats {
  const s: CommitStats = { files: 0, dirs: 0, deleted: 0, bytesUploaded, bytesTotal: 0 };
  for (const c of changes) {
    if (c.op === 'delete') s.deleted++;
    else if (c.op === 'put' && c.type === 'dir') s.dirs++;
    else if (c.op === 'put') {
      s.files++;
      s.bytesTotal += c.size;
    }
  }
  return s;
}
