import { applyDeletionPlans, leaseStillGood } from '../archiver/backup.js';
import { PhoenixError } from '../errors.js';
import type { Lease, Repository } from '../repo/index.js';
import type { StateDb } from '../state/db.js';

export interface LeaseHooks {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string): void;
  /** Another writer took the source: this one must stop. */
  lost(err: PhoenixError): void;
  /** Resolves once the commit and the checkpoint in flight (started before a plan was applied) are durable. */
  inFlight(): Promise<void>;
}

/**
 * A source's writer lease, renewed every `renewMs`, and the writer's part in prune: at each
 * renewal a deletion plan not seen yet is purged from the chunk index (and its parts are never
 * written again under their names) at once, so commits started from then on cannot name what
 * it deletes; once the commit and the checkpoint in flight (started before, perhaps
 * deduplicated against it) are durable, the lease says so (`acked`), and prune, which waits for
 * that, reads the journal again before it deletes.
 */
export class LeaseKeeper {
  #lease: Lease | undefined;
  #timer: NodeJS.Timeout | undefined;
  #renewing = false;

  constructor(
    readonly repo: Repository,
    readonly db: StateDb,
    readonly source: string,
    readonly opts: { renewMs: number; ttlMs: number },
    readonly hooks: LeaseHooks,
  ) {}

  /** Takes the lease (PHX_LOCKED when another live writer holds it) and starts renewing it. */
  async acquire(): Promise<void> {
    this.#lease = await this.repo.acquireLease(this.source, this.opts.ttlMs);
    this.#timer = setInterval(() => {
      if (this.#renewing) return;
      this.#renewing = true;
      this.#renew()
        .catch((err: unknown) => {
          if (err instanceof PhoenixError && err.code === 'PHX_LOCKED') this.hooks.lost(err);
          else this.hooks.warn(`cannot renew the lease: ${(err as Error).message}`);
        })
        .finally(() => (this.#renewing = false));
    }, this.opts.renewMs).unref();
  }

  /**
   * Acknowledges, before anything is in flight, every plan the cache has applied (plans sort in
   * the order they were written, so the newest covers every one before it).
   */
  async acknowledgeApplied(): Promise<void> {
    const latest = [...this.db.plansApplied()].sort().at(-1);
    if (latest === undefined || this.#lease === undefined) return;
    this.#lease.note({ acked: latest });
    await this.#lease.renew();
  }

  /** For CommitBuilder.commit: checked just before a commit is written (a lease that lapsed meanwhile may have missed a plan). */
  check(purgesAtStart: number): (() => Promise<void>) | undefined {
    const lease = this.#lease;
    return lease && (() => leaseStillGood(lease, this.repo, this.db, purgesAtStart));
  }

  async #renew(): Promise<void> {
    const lease = this.#lease;
    if (lease === undefined) return;
    const { applied, latest } = await applyDeletionPlans(this.repo, this.db);
    if (applied > 0) {
      this.hooks.info('prune is deleting data: purged its packs from the cache', { plans: applied });
      await this.hooks.inFlight();
    }
    if (latest !== undefined) lease.note({ acked: latest });
    await lease.renew();
  }

  /** Stops renewing (the lease then runs out by itself unless released). */
  stop(): void {
    clearInterval(this.#timer);
  }

  async release(): Promise<void> {
    this.stop();
    await this.#lease?.release().catch((err: unknown) => this.hooks.warn(`cannot release the lease: ${(err as Error).message}`));
  }
}
