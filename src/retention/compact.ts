import { PhoenixError } from '../errors.js';
import { encodeChange, type Commit, type Repository } from '../repo/index.js';
import { deleteSuperseded } from './forget.js';

export interface CompactOptions {
  /** Only commits at least this much older than the latest one (the daemon is writing the newest). */
  olderThanMs: number;
  /** One segment per span of time (an hour): its commits since the epoch, in spans of this length. */
  spanMs: number;
}

/**
 * Lossless compaction: the journal's commits, one object each, become one segment per span
 * of time holding every one of them as a step, its changes as they were. Readers see the
 * same instants and the same trees; a start-up or a restore lists and reads a few objects
 * instead of thousands. Each segment is read back and compared with its commits, change by
 * change, before they are deleted. Returns the segments written and the commits they hold.
 */
export async function compactJournal(
  repo: Repository,
  source: string,
  opts: CompactOptions,
): Promise<{ segments: number; commits: number }> {
  const chain = await repo.journalObjects(source);
  const latest = chain.at(-1);
  if (latest === undefined) return { segments: 0, commits: 0 };
  const limit = latest.timeMs - opts.olderThanMs;
  // Runs of plain commits in one span, all of that span (it is over: nothing more comes into it).
  const runs: Array<typeof chain> = [];
  for (const o of chain) {
    const span = Math.floor(o.timeMs / opts.spanMs);
    const whole = (span + 1) * opts.spanMs <= limit;
    const run = runs.at(-1);
    const prev = run?.at(-1);
    if (o.segment || !whole) {
      runs.push([]);
      continue;
    }
    if (run !== undefined && prev !== undefined && Math.floor(prev.timeMs / opts.spanMs) === span) run.push(o);
    else runs.push([o]);
  }
  let segments = 0;
  let commits = 0;
  for (const run of runs) {
    if (run.length < 2) continue;
    const infos = (await repo.commitList(source)).filter((c) => c.seq >= (run[0]?.seq ?? 0) && c.seq <= (run.at(-1)?.seq ?? 0));
    const originals: Commit[] = [];
    for (const info of infos) originals.push(await repo.readCommit(info));
    const first = run[0]?.seq as number;
    const last = run.at(-1)?.seq as number;
    const written = await repo.writeSegment(
      source,
      first,
      last,
      originals.map((c) => ({
        seq: c.seq,
        timeMs: c.timeMs,
        stats: c.stats,
        changes: c.changes,
        ...(c.host !== undefined ? { host: c.host } : {}),
        ...(c.root !== undefined ? { root: c.root } : {}),
      })),
    );
    // Proven before anything goes: readers choose the segment, and it gives every commit back as it was.
    const back = (await repo.commitList(source)).filter((c) => c.seq >= first && c.seq <= last);
    const same =
      back.length === originals.length &&
      back.every((c) => c.key === written.key) &&
      (await Promise.all(back.map((c) => repo.readCommit(c)))).every((c, i) => {
        const o = originals[i] as Commit;
        return (
          c.seq === o.seq &&
          c.timeMs === o.timeMs &&
          JSON.stringify(c.changes.map(encodeChange)) === JSON.stringify(o.changes.map(encodeChange))
        );
      });
    if (!same) {
      await repo.backend.delete(written.key);
      throw new PhoenixError(
        'PHX_INTERNAL',
        `compaction of ${JSON.stringify(source)}: the segment of commits ${first}–${last} does not read back as they were; nothing was deleted`,
        {
          hint: 'the journal is as it was; please report this',
        },
      );
    }
    segments++;
    commits += originals.length;
  }
  if (segments > 0) {
    const kept = new Map((await repo.commitList(source)).map((c) => [c.seq, true]));
    await deleteSuperseded(repo, source, kept);
  }
  return { segments, commits };
}
