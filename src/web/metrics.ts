/**
 * Prometheus metrics of a running daemon (prom-client, its own registry). Counters are fed by
 * the daemon's events; gauges read the daemon's state at each scrape. Labels are bounded:
 * sources (from the configuration), change kinds, rescan reasons, store operations, error codes.
 */

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface SourceGauges {
  name: string;
  state: string;
  pending: number;
  /** Every change seen before this instant is durable. */
  protectedThroughMs: number;
  lastCommitMs: number | undefined;
  watches: number;
  unwatched: number;
}

export interface MetricsView {
  sources(): SourceGauges[];
  watchLimit(): number | null;
  /** The last `phoenix check` from this host, if one is on record. */
  lastCheck(): { timeMs: number; ok: boolean } | undefined;
}

export const SOURCE_STATES = ['starting', 'scanning', 'watching', 'degraded', 'stopping', 'stopped', 'failed'] as const;
export const CHANGE_KINDS = ['put', 'delete', 'move'] as const;
export const RESCAN_REASONS = ['overflow', 'unwatched', 'ignored', 'periodic'] as const;
export const BACKEND_OPS = ['put', 'get', 'stat', 'list', 'delete'] as const;

export class Metrics {
  readonly registry = new Registry();
  readonly commits: Counter<'source'>;
  readonly changes: Counter<'source' | 'kind'>;
  readonly latency: Histogram<'source'>;
  readonly readBytes: Counter<'source'>;
  readonly uploadedBytes: Counter<'source'>;
  readonly overflows: Counter<'source'>;
  readonly rescans: Counter<'source' | 'reason'>;
  readonly backendRequests: Counter<'op' | 'result'>;
  readonly errors: Counter<'code'>;
  #lastBackendSuccessMs = 0;

  constructor(view: MetricsView, version: string, sources: readonly string[]) {
    const registers = [this.registry];
    new Gauge({
      name: 'phoenix_build_info',
      help: 'Always 1; the version of phoenix and of Node.js as labels.',
      labelNames: ['version', 'nodejs'],
      registers,
    }).set({ version, nodejs: process.version }, 1);
    const perSource = (name: string, help: string, value: (s: SourceGauges) => number | undefined): void => {
      new Gauge({
        name,
        help,
        labelNames: ['source'],
        registers,
        collect() {
          for (const s of view.sources()) {
            const v = value(s);
            if (v !== undefined) this.set({ source: s.name }, v);
          }
        },
      });
    };
    perSource(
      'phoenix_protected_through_timestamp_seconds',
      'Every change seen before this instant is durable in the repository (alert on time() minus it).',
      (s) => s.protectedThroughMs / 1000,
    );
    perSource('phoenix_pending_changes', 'Changes seen and not yet durable.', (s) => s.pending);
    perSource('phoenix_last_commit_timestamp_seconds', 'When the last commit of the source was made.', (s) =>
      s.lastCommitMs === undefined ? undefined : s.lastCommitMs / 1000,
    );
    perSource('phoenix_inotify_watches', 'inotify watches this source uses.', (s) => s.watches);
    perSource(
      'phoenix_unwatched_directories',
      'Directories that could not be watched (the watch limit): rescanned periodically instead.',
      (s) => s.unwatched,
    );
    new Gauge({
      name: 'phoenix_inotify_watches_limit',
      help: 'fs.inotify.max_user_watches: the most watches a user may have.',
      registers,
      collect() {
        const l = view.watchLimit();
        if (l !== null) this.set(l);
      },
    });
    new Gauge({
      name: 'phoenix_source_state',
      help: "1 for the source's current state, 0 for the others.",
      labelNames: ['source', 'state'],
      registers,
      collect() {
        for (const s of view.sources()) for (const st of SOURCE_STATES) this.set({ source: s.name, state: st }, s.state === st ? 1 : 0);
      },
    });
    const lastSuccess = (): number => this.#lastBackendSuccessMs / 1000;
    new Gauge({
      name: 'phoenix_backend_last_success_timestamp_seconds',
      help: 'When a request to the store last succeeded (0: not yet).',
      registers,
      collect() {
        this.set(lastSuccess());
      },
    });
    new Gauge({
      name: 'phoenix_last_check_timestamp_seconds',
      help: 'When phoenix check last ran on this host against the repository (0: never).',
      registers,
      collect() {
        this.set((view.lastCheck()?.timeMs ?? 0) / 1000);
      },
    });
    new Gauge({
      name: 'phoenix_last_check_success',
      help: '1 when the last phoenix check found no errors, 0 when it found some or none is on record.',
      registers,
      collect() {
        this.set(view.lastCheck()?.ok === true ? 1 : 0);
      },
    });
    this.commits = new Counter({ name: 'phoenix_commits_total', help: 'Commits made.', labelNames: ['source'], registers });
    this.changes = new Counter({
      name: 'phoenix_changes_committed_total',
      help: 'Journal entries committed, by kind (put: a new version or entry; delete; move).',
      labelNames: ['source', 'kind'],
      registers,
    });
    this.latency = new Histogram({
      name: 'phoenix_commit_latency_seconds',
      help: 'Per commit: how long its oldest change waited from being seen (a write closed) to being durable.',
      labelNames: ['source'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    });
    this.readBytes = new Counter({ name: 'phoenix_read_bytes_total', help: 'File content read.', labelNames: ['source'], registers });
    this.uploadedBytes = new Counter({
      name: 'phoenix_uploaded_bytes_total',
      help: 'New sealed data uploaded in packs.',
      labelNames: ['source'],
      registers,
    });
    this.overflows = new Counter({
      name: 'phoenix_inotify_overflows_total',
      help: "Times the kernel's inotify queue overflowed (each one is followed by a rescan).",
      labelNames: ['source'],
      registers,
    });
    this.rescans = new Counter({ name: 'phoenix_rescans_total', help: 'Rescans, by reason.', labelNames: ['source', 'reason'], registers });
    this.backendRequests = new Counter({
      name: 'phoenix_backend_requests_total',
      help: 'Requests to the store (every attempt), by operation and result.',
      labelNames: ['op', 'result'],
      registers,
    });
    this.errors = new Counter({ name: 'phoenix_errors_total', help: 'Problems reported, by code.', labelNames: ['code'], registers });
    // Every series at zero from the start, so rate() and absent() behave from the first scrape.
    for (const source of sources) {
      this.commits.inc({ source }, 0);
      this.readBytes.inc({ source }, 0);
      this.uploadedBytes.inc({ source }, 0);
      this.overflows.inc({ source }, 0);
      this.latency.zero({ source });
      for (const kind of CHANGE_KINDS) this.changes.inc({ source, kind }, 0);
      for (const reason of RESCAN_REASONS) this.rescans.inc({ source, reason }, 0);
    }
    for (const op of BACKEND_OPS) for (const result of ['ok', 'not_found', 'error']) this.backendRequests.inc({ op, result }, 0);
  }

  /** One request to the store finished. */
  backend(op: string, result: 'ok' | 'not_found' | 'error'): void {
    this.backendRequests.inc({ op, result });
    if (result !== 'error') this.#lastBackendSuccessMs = Date.now();
  }

  /**
   * The metrics as text. Node's default metrics are registered at the first scrape: their
   * event-loop-lag histogram keeps a timer running (here once a second, not prom-client's 10 ms),
   * and a daemon nobody scrapes should not wake at all.
   */
  text(): Promise<string> {
    if (!this.#defaults) {
      this.#defaults = true;
      collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 1000 });
      // Gauges that prom-client names *_total: promtool rightly objects; the per-type gauges stay.
      for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
        this.registry.removeSingleMetric(n);
    }
    return this.registry.metrics();
  }

  #defaults = false;

  get contentType(): string {
    return this.registry.contentType;
  }
}
