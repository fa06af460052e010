import { PhoenixError } from '../errors.js';
import { resolveSettings } from '../config/settings.js';
import type { Repository } from '../repo/index.js';
import { applyForget, effectivePolicy, planForget } from '../retention/forget.js';
import { parsePolicy, parseRetentionDuration, formatPolicy, DEFAULT_MIN_AGE } from '../retention/policy.js';
import { applyPrune, DEFAULT_MIN_PACK_AGE, planPrune, type Census } from '../retention/prune.js';
import { parseTime } from '../util/duration.js';
import { iso, pickSource, print, showTime, withRepo, type RepoFlags } from './common.js';
import { mib } from './format.js';

/** `phoenix policy show`: the policy each source follows, and where it comes from. */
export async function policyShowCommand(flags: RepoFlags): Promise<void> {
  return withRepo(flags, async (repo) => {
    const sources = flags.source !== undefined ? [await pickSource(repo, flags)] : await repo.sources();
    const def = await repo.storedPolicy(undefined);
    if (flags.source === undefined) {
      print(
        flags,
        { source: null, policy: def?.policy ?? null, minAge: def?.minAge ?? null },
        def === undefined
          ? 'repository default: none (everything is kept until a policy is set: phoenix policy set POLICY)'
          : `repository default: ${def.policy} (minimum age ${def.minAge})`,
      );
    }
    for (const source of sources) {
      const p = await effectivePolicy(repo, source);
      print(
        flags,
        { source, policy: p?.text ?? null, minAge: p?.minAge ?? null, from: p?.scope ?? null },
        p === undefined
          ? `${source}: none (everything is kept)`
          : `${source}: ${p.text} (minimum age ${p.minAge}; ${p.scope === 'source' ? 'its own' : 'the repository default'})`,
      );
    }
  });
}

/** `phoenix policy set POLICY`: validated, then stored in the repository for every host to apply. */
export async function policySetCommand(text: string, flags: RepoFlags & { minAge?: string }): Promise<void> {
  const policy = parsePolicy(text, flags.minAge ?? DEFAULT_MIN_AGE); // a usage error before the repository is opened
  return withRepo(flags, async (repo) => {
    const source = flags.source;
    if (source !== undefined) await pickSource(repo, flags);
    const stored = await repo.setPolicy(source, formatPolicy(policy), flags.minAge ?? DEFAULT_MIN_AGE);
    print(
      flags,
      { source: source ?? null, policy: stored.policy, minAge: stored.minAge },
      `${source === undefined ? 'repository default' : source}: ${stored.policy} (minimum age ${stored.minAge}); phoenix forget applies it`,
    );
  });
}

export async function pinCommand(flags: RepoFlags & { at?: string; note?: string }): Promise<void> {
  const at = requiredTime(flags.at, 'pin');
  return withRepo(flags, async (repo) => {
    const source = await pickSource(repo, flags);
    const commits = await repo.commitList(source);
    const current = [...commits].reverse().find((c) => c.timeMs <= at);
    if (current === undefined) {
      throw new PhoenixError('PHX_NOT_IN_REPO', `there is no commit of ${JSON.stringify(source)} at or before ${iso(at)} to pin`, {
        hint: commits.length > 0 ? `the first is from ${iso((commits[0] as { timeMs: number }).timeMs)}` : 'back something up first',
      });
    }
    await repo.pin(source, at, flags.note ?? '');
    print(
      flags,
      { source, pinnedAt: iso(at), seq: current.seq, time: iso(current.timeMs), note: flags.note ?? '' },
      `pinned ${showTime(at)}: the state of commit ${current.seq} (${showTime(current.timeMs)}) is kept until phoenix unpin --at ${iso(at)}`,
    );
  });
}

export async function unpinCommand(flags: RepoFlags & { at?: string }): Promise<number> {
  const at = requiredTime(flags.at, 'unpin');
  return withRepo(flags, async (repo) => {
    const source = await pickSource(repo, flags);
    const pins = await repo.pins(source);
    // The exact instant, or a pin in the same second (a time typed again).
    const match = pins
      .filter((p) => p.atMs === at)
      .concat(pins.filter((p) => p.atMs !== at && Math.floor(p.atMs / 1000) === Math.floor(at / 1000)));
    if (match.length === 0) {
      throw new PhoenixError('PHX_NOT_IN_REPO', `${JSON.stringify(source)} has no pin at ${iso(at)}`, {
        hint: pins.length > 0 ? `its pins: ${pins.map((p) => iso(p.atMs)).join(', ')}` : 'it has no pins',
      });
    }
    for (const p of match) await repo.unpin(source, p.atMs);
    print(flags, { source, unpinned: match.map((p) => iso(p.atMs)) }, `unpinned ${match.map((p) => showTime(p.atMs)).join(', ')}`);
    return 0;
  });
}

function requiredTime(at: string | undefined, command: string): number {
  if (at === undefined)
    throw new PhoenixError('PHX_USAGE', `phoenix ${command} needs --at TIME`, { hint: 'for example --at "2026-11-23 10:00"' });
  return parseTime(at);
}

export interface ForgetFlags extends RepoFlags {
  policy?: string;
  minAge?: string;
  dryRun?: boolean;
}

/** `phoenix forget`: applies the policy to the journal of each source (or --source). */
export async function forgetCommand(flags: ForgetFlags): Promise<void> {
  parsePolicy(flags.policy ?? 'all:1h', flags.minAge ?? DEFAULT_MIN_AGE); // usage errors before the repository is opened
  return withRepo(flags, async (repo) => {
    const sources = flags.source !== undefined ? [await pickSource(repo, flags)] : await repo.sources();
    const lease = flags.dryRun ? undefined : await repo.acquireMaintenanceLease();
    try {
      // Forget's working trees go to the state directory (on disk; the temporary one may be memory).
      const { stateDir } = await resolveSettings(flags);
      for (const source of sources) await forgetSource(repo, source, flags, stateDir);
    } finally {
      await lease?.release();
    }
  });
}

async function forgetSource(repo: Repository, source: string, flags: ForgetFlags, scratchDir: string): Promise<void> {
  const given = flags.policy !== undefined || flags.minAge !== undefined ? { policy: flags.policy, minAge: flags.minAge } : undefined;
  const policy = await effectivePolicy(repo, source, given);
  if (policy === undefined) {
    print(flags, { source, policy: null, kept: null }, `${source}: no retention policy: everything is kept (phoenix policy set POLICY)`);
    return;
  }
  const plan = await planForget(repo, source, policy.policy);
  for (const c of plan.instants) {
    const reasons = plan.kept.get(c.seq);
    const why = (reasons ?? []).map((r) => (r.atMs !== undefined ? `${r.by}@${iso(r.atMs)}` : r.by));
    if (flags.json) {
      print(flags, { source, seq: c.seq, time: iso(c.timeMs), keep: reasons !== undefined, keptBy: why }, '');
    } else if (flags.dryRun) {
      process.stdout.write(
        `${reasons !== undefined ? 'keep' : 'drop'}  ${String(c.seq).padStart(6)}  ${showTime(c.timeMs)}  ${why.join(', ')}\n`,
      );
    }
  }
  const summary = `${source}: ${policy.text} (minimum age ${policy.minAge}): keeps ${plan.kept.size} of ${plan.instants.length} instants`;
  if (flags.dryRun) {
    if (!flags.json) process.stdout.write(`${summary}, would drop ${plan.dropped.length} (dry run: nothing was changed)\n`);
    return;
  }
  const r = await applyForget(repo, plan, { scratchDir });
  // `segment`: all that was written, as one range (earlier builds wrote one segment); `segments`: each piece.
  const s = r.segments;
  const total =
    s.length === 0
      ? null
      : {
          key: (s.at(-1) as (typeof s)[number]).key,
          first: Math.min(...s.map((x) => x.first)),
          last: Math.max(...s.map((x) => x.last)),
          steps: s.reduce((n, x) => n + x.steps, 0),
          bytes: s.reduce((n, x) => n + x.bytes, 0),
        };
  const json = {
    source,
    kept: plan.kept.size,
    dropped: plan.dropped.length,
    segment: total,
    segments: s,
    deleted: r.deleted,
    ...(r.pinnedMeanwhile !== undefined ? { pinnedMeanwhile: r.pinnedMeanwhile } : {}),
  };
  if (r.pinnedMeanwhile !== undefined && !flags.json) {
    process.stdout.write(
      `${source}: commit${r.pinnedMeanwhile.length === 1 ? '' : 's'} ${r.pinnedMeanwhile.join(', ')} ${r.pinnedMeanwhile.length === 1 ? 'was' : 'were'} pinned while forget ran: the history around ${r.pinnedMeanwhile.length === 1 ? 'it' : 'them'} was left as it was (the next forget keeps ${r.pinnedMeanwhile.length === 1 ? 'it' : 'them'})\n`,
    );
  }
  print(
    flags,
    { summary: true, ...json },
    `${summary}, dropped ${plan.dropped.length}${total ? ` (${s.length} segment${s.length === 1 ? '' : 's'} of ${total.steps} steps, ${mib(total.bytes)}, replace ${r.deleted.journal} journal objects)` : ''}; phoenix prune deletes the data nothing needs now`,
  );
}

export interface PruneFlags extends RepoFlags {
  dryRun?: boolean;
  minPackAge?: string;
  maxUnused?: string;
  maxRepackSize?: string;
}

/** A size: a number of bytes, or with K, M, G or T (powers of 1024; `MiB`, `MB` and `m` say the same). */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) return undefined;
  const exp = ' kmgt'.indexOf((m[2] ?? '').toLowerCase() || ' ');
  return Math.round(Number(m[1]) * 1024 ** exp);
}

/** `phoenix prune`: deletes packs and metadata parts nothing kept refers to. */
export async function pruneCommand(flags: PruneFlags): Promise<void> {
  const text = flags.minPackAge ?? DEFAULT_MIN_PACK_AGE;
  const minPackAgeMs = text === '0' ? 0 : parseRetentionDuration(text, false);
  if (minPackAgeMs === undefined) {
    throw new PhoenixError('PHX_USAGE', `--min-pack-age ${JSON.stringify(text)} is not a duration`, {
      hint: 'for example 24h, 30min, or 0',
    });
  }
  const maxUnusedPercent = flags.maxUnused === undefined ? undefined : Number(flags.maxUnused.replace(/%$/, ''));
  if (maxUnusedPercent !== undefined && !(maxUnusedPercent >= 0 && maxUnusedPercent <= 100)) {
    throw new PhoenixError('PHX_USAGE', `--max-unused ${JSON.stringify(flags.maxUnused)} is not a percentage`, {
      hint: 'for example 5 or 5% (0 to 100)',
    });
  }
  const maxRepackBytes = flags.maxRepackSize === undefined ? undefined : parseSize(flags.maxRepackSize);
  if (flags.maxRepackSize !== undefined && maxRepackBytes === undefined) {
    throw new PhoenixError('PHX_USAGE', `--max-repack-size ${JSON.stringify(flags.maxRepackSize)} is not a size`, {
      hint: 'for example 500M, 2G or 1048576',
    });
  }
  return withRepo(flags, async (repo) => {
    const lease = await repo.acquireMaintenanceLease();
    try {
      const plan = await planPrune(repo, {
        minPackAgeMs,
        ...(maxUnusedPercent !== undefined ? { maxUnusedPercent } : {}),
        ...(maxRepackBytes !== undefined ? { maxRepackBytes } : {}),
      });
      const line = (what: string, c: Census): string =>
        `${what}: ${c.total} (${mib(c.bytes)}); in use ${c.used} (${mib(c.usedBytes)}); to delete ${c.unused} (${mib(c.unusedBytes)}); unused but younger than ${text}: ${c.young} (${mib(c.youngBytes)}, kept)`;
      const done = flags.dryRun
        ? undefined
        : await applyPrune(repo, plan, {
            onWait: (pending) => {
              if (!flags.json)
                process.stderr.write(
                  `waiting for ${pending.map((w) => `the writer of ${JSON.stringify(w.source)} on ${w.host} (process ${w.pid})`).join(', ')} to acknowledge the deletion plan\n`,
                );
            },
          });
      const taken = done?.takenBack ?? 0;
      print(
        flags,
        {
          packs: plan.packs,
          parts: plan.parts,
          repack: { packs: plan.repack.length, bytes: plan.repackBytes },
          unusedAfter: plan.unusedAfter,
          dryRun: flags.dryRun ?? false,
          plan: done?.key ?? null,
          takenBack: taken,
        },
        `${line('packs', plan.packs)}\n${line('metadata parts', plan.parts)}\nto repack: ${plan.repack.length} packs mostly unused (${mib(plan.repackBytes)} still in use, copied); unused in packs kept after: ${mib(plan.unusedAfter)}\n${flags.dryRun ? 'dry run: nothing was deleted' : `deleted ${plan.doomed.packs.length + plan.doomed.parts.length - taken} objects${taken > 0 ? ` (${taken} taken back: committed again meanwhile)` : ''}`}`,
      );
    } finally {
      await lease.release();
    }
  });
}
