import type { Logger } from 'pino';
import { PhoenixError } from '../errors.js';
import type { Repository } from '../repo/index.js';
import { compactJournal } from '../retention/compact.js';
import { applyForget, effectivePolicy, planForget } from '../retention/forget.js';
import { applyPrune, planPrune } from '../retention/prune.js';

type Kind = 'compact' | 'forget' | 'prune';
/** Commits are compacted an hour to a segment (once the hour is over and they are older than compact-after). */
const COMPACT_SPAN_MS = 3_600_000;

/** What `phoenix status --json` says about retention (fields are only ever added). */
export interface RetentionStatus {
  sources: Array<{ name: string; policy: string | null; minAge: string | null; oldestKept: string | null; instants: number }>;
  lastCompact: { time: string; segments: number } | null;
  lastForget: { time: string; dropped: number } | null;
  lastPrune: { time: string; deleted: number; takenBack: number } | null;
  /** Why something is not deleted yet: unused data too young, or a writer that has not acknowledged. */
  waiting: string[];
  /** The host holding the maintenance lease, when it is another one and this daemon's turn was skipped. */
  maintainer: string | null;
}

/**
 * Retention run by the daemon: `forget` of its own sources and `prune` of the repository, each
 * on its own interval, under the maintenance lease (a daemon on another host that holds it
 * does it instead: this one skips its turn). Runs in the background; commits go on meanwhile.
 */
export class Maintainer {
  readonly status: RetentionStatus = { sources: [], lastCompact: null, lastForget: null, lastPrune: null, waiting: [], maintainer: null };
  readonly #timers: NodeJS.Timeout[] = [];
  #running: Promise<void> = Promise.resolve();
  #stopped = false;
  /** Stops a prune waiting for acknowledgements when the daemon stops (its writers stop acknowledging). */
  readonly #abort = new AbortController();

  constructor(
    readonly repo: Repository,
    /** The daemon's sources, each with the instants its mass-change guard may pin (forget keeps them). */
    readonly watched: ReadonlyArray<{ name: string; held: () => number[] }>,
    readonly opts: {
      compactMs: number;
      compactAfterMs: number;
      forgetMs: number;
      pruneMs: number;
      minPackAgeMs: number;
      scratchDir?: string;
    },
    readonly log: Logger,
  ) {}

  start(): void {
    if (this.opts.compactMs > 0) this.#timers.push(setInterval(() => this.#run('compact'), this.opts.compactMs).unref());
    if (this.opts.forgetMs > 0) this.#timers.push(setInterval(() => this.#run('forget'), this.opts.forgetMs).unref());
    if (this.opts.pruneMs > 0) this.#timers.push(setInterval(() => this.#run('prune'), this.opts.pruneMs).unref());
    void this.refresh().catch(() => {});
  }

  /** The per-source part of the status: the policy and the oldest kept instant. */
  async refresh(): Promise<void> {
    const out: RetentionStatus['sources'] = [];
    for (const { name } of this.watched) {
      const p = await effectivePolicy(this.repo, name).catch(() => undefined);
      const commits = await this.repo.commitList(name);
      const first = commits[0];
      out.push({
        name,
        policy: p?.text ?? null,
        minAge: p?.minAge ?? null,
        oldestKept: first === undefined ? null : new Date(first.timeMs).toISOString(),
        instants: commits.length,
      });
    }
    this.status.sources = out;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    for (const t of this.#timers) clearInterval(t);
    await this.#running;
  }

  #run(kind: Kind): void {
    this.#running = this.#running.then(() => (this.#stopped ? undefined : this.#once(kind)));
  }

  async #once(kind: Kind): Promise<void> {
    let lease;
    try {
      lease = await this.repo.acquireMaintenanceLease();
      this.status.maintainer = null;
    } catch (err) {
      if (err instanceof PhoenixError && err.code === 'PHX_LOCKED') {
        this.status.maintainer = err.message;
        this.log.debug({ reason: err.message }, `${kind}: another process maintains the repository; skipped`);
        return;
      }
      this.log.warn({ error: (err as Error).message }, `${kind}: cannot take the maintenance lease`);
      return;
    }
    const renew = setInterval(() => void lease.renew().catch(() => {}), 60_000).unref();
    try {
      if (kind === 'compact') await this.#compact();
      else if (kind === 'forget') await this.#forget();
      else await this.#prune();
    } catch (err) {
      this.log.warn({ error: (err as Error).message }, `${kind} failed; tried again at its next turn`);
    } finally {
      clearInterval(renew);
      await lease.release().catch(() => {});
    }
  }

  async #compact(): Promise<void> {
    let segments = 0;
    for (const { name } of this.watched) {
      const r = await compactJournal(this.repo, name, { olderThanMs: this.opts.compactAfterMs, spanMs: COMPACT_SPAN_MS });
      if (r.segments > 0) this.log.debug({ source: name, ...r }, `compaction: ${r.commits} commits into ${r.segments} segments`);
      segments += r.segments;
    }
    this.status.lastCompact = { time: new Date().toISOString(), segments };
    if (segments > 0) await this.refresh();
  }

  async #forget(): Promise<void> {
    let dropped = 0;
    for (const { name, held } of this.watched) {
      const policy = await effectivePolicy(this.repo, name);
      if (policy === undefined) continue;
      // The instant a mass-change guard would pin if it tripped now (or is pinning): a trip
      // must never name an instant this run thinned away.
      const plan = await planForget(this.repo, name, policy.policy, held());
      if (plan.dropped.length === 0) continue;
      const r = await applyForget(this.repo, plan, { scratchDir: this.opts.scratchDir });
      dropped += plan.dropped.length;
      this.log.info(
        {
          source: name,
          kept: plan.kept.size,
          dropped: plan.dropped.length,
          deleted: r.deleted.journal,
          pinnedMeanwhile: r.pinnedMeanwhile,
        },
        `forget: kept ${plan.kept.size} instants, dropped ${plan.dropped.length}${r.pinnedMeanwhile ? ` (pinned meanwhile, left for the next run: ${r.pinnedMeanwhile.join(', ')})` : ''}`,
      );
    }
    this.status.lastForget = { time: new Date().toISOString(), dropped };
    await this.refresh();
  }

  async #prune(): Promise<void> {
    const plan = await planPrune(this.repo, { minPackAgeMs: this.opts.minPackAgeMs });
    const waiting: string[] = [];
    if (plan.packs.young + plan.parts.young > 0 && plan.eligibleAtMs !== undefined) {
      waiting.push(
        `${plan.packs.young + plan.parts.young} unused objects are younger than the minimum pack age: eligible after ${new Date(plan.eligibleAtMs).toISOString()}`,
      );
    }
    this.status.waiting = waiting;
    const done = await applyPrune(this.repo, plan, {
      signal: this.#abort.signal,
      onWait: (pending) => {
        this.status.waiting = [
          ...waiting,
          ...pending.map((w) => `waiting for the writer of ${JSON.stringify(w.source)} on ${w.host} (process ${w.pid}) to acknowledge`),
        ];
      },
    });
    this.status.waiting = waiting;
    const deleted = plan.doomed.packs.length + plan.doomed.parts.length - (done?.takenBack ?? 0);
    this.status.lastPrune = { time: new Date().toISOString(), deleted: done === undefined ? 0 : deleted, takenBack: done?.takenBack ?? 0 };
    if (done !== undefined) this.log.info({ deleted, takenBack: done.takenBack }, `prune: deleted ${deleted} objects nothing kept needs`);
  }
}
