/**
 * The daemon's side of the dashboard: the live state of each source (exposure, its last hour,
 * the pipeline, health), the feed of what happens, and the counters behind /metrics. The
 * daemon reports to it; it never reaches into the daemon's parts.
 */

import type { Change } from '../model/change.js';
import { jsonPath } from '../cli/output.js';
import type { BackendOp } from '../backend/wrappers.js';
import type { CommitReport } from '../daemon/source.js';
import type { Hub } from './hub.js';
import type { Metrics, SourceGauges } from './metrics.js';

/** What the daemon can say about one source at any moment. */
export interface SourceView {
  name: string;
  path: string;
  state: string;
  pending: number;
  inFlight: number;
  oldestPendingMs: number | undefined;
  lastCommit: { seq: number; timeMs: number } | undefined;
  watches: number;
  unwatched: number;
  failing: { sinceMs: number; error: string; retryAtMs: number; attempts: number } | undefined;
}

const HOUR_SAMPLES = 720; // one every 5 s
/** Pending changes above which the overview shows a backlog with its progress and time left. */
const BACKLOG = 100;
const SAMPLE_MS = 5000;

class SourceLive {
  seen = 0;
  committedChanges = 0;
  commits = 0;
  bytesRead = 0;
  bytesUploaded = 0;
  overflows = 0;
  lastOverflowMs: number | undefined;
  readonly rescans: Record<string, number> = { overflow: 0, unwatched: 0, ignored: 0, periodic: 0 };
  /** The worst exposure of each 5 s of the last hour: [time, ms]. */
  readonly exposure: Array<[number, number]> = [];
  #worst = 0;
  failingSince: number | undefined;
  /** A backlog (more than BACKLOG pending): the most pending since it began. */
  backlogPeak = 0;
  /** Rates, per second, over the last sample. */
  rates = { seen: 0, committed: 0, readBytes: 0, uploadedBytes: 0 };
  #last = { seen: 0, committed: 0, readBytes: 0, uploadedBytes: 0, ms: Date.now() };

  observe(exposedMs: number): void {
    this.#worst = Math.max(this.#worst, exposedMs);
  }

  sample(now: number): void {
    this.exposure.push([now, this.#worst]);
    if (this.exposure.length > HOUR_SAMPLES) this.exposure.shift();
    this.#worst = 0;
    const dt = Math.max(1, now - this.#last.ms) / 1000;
    this.rates = {
      seen: (this.seen - this.#last.seen) / dt,
      committed: (this.committedChanges - this.#last.committed) / dt,
      readBytes: (this.bytesRead - this.#last.readBytes) / dt,
      uploadedBytes: (this.bytesUploaded - this.#last.uploadedBytes) / dt,
    };
    this.#last = {
      seen: this.seen,
      committed: this.committedChanges,
      readBytes: this.bytesRead,
      uploadedBytes: this.bytesUploaded,
      ms: now,
    };
  }
}

export class LiveState {
  readonly #sources = new Map<string, SourceLive>();
  /** The once-a-second look, running only while there is something to see (idle costs nothing). */
  #timer: NodeJS.Timeout | undefined;
  #ticks = 0;
  #expectedMs = 0;
  /** How late the last seconds' ticks fired: the event loop's lag, while it is looked at. */
  #loopLagMs = 0;
  #worstLagMs = 0;
  backendLastSuccessMs: number | undefined;
  backendLastFailure: { timeMs: number; op: string } | undefined;

  constructor(
    readonly views: () => SourceView[],
    readonly hub: Hub,
    readonly metrics: Metrics,
    readonly extra: () => {
      watchLimit: number | null;
      errors: unknown[];
      leaseHolder: string;
      repository: string;
      rpoTargetMs: number;
      lastCheck: { timeMs: number; ok: boolean } | undefined;
    },
  ) {
    for (const v of views()) this.#sources.set(v.name, new SourceLive());
  }

  /**
   * Starts the once-a-second look (exposure, its worst per 5 s, outages as timeline markers, the
   * event loop's lag) on a change, a commit or a dashboard asking; it stops itself once nothing
   * is pending, nothing fails and no event stream is connected.
   */
  wake(): void {
    if (this.#timer !== undefined) return;
    this.#expectedMs = Date.now() + 1000;
    this.#timer = setInterval(() => this.#tick(), 1000);
    this.#timer.unref();
  }

  #of(source: string): SourceLive {
    let s = this.#sources.get(source);
    if (s === undefined) this.#sources.set(source, (s = new SourceLive()));
    return s;
  }

  #tick(): void {
    const now = Date.now();
    this.#worstLagMs = Math.max(this.#worstLagMs, now - this.#expectedMs);
    this.#expectedMs = now + 1000;
    let busy = this.hub.clients > 0;
    const sample = ++this.#ticks % (SAMPLE_MS / 1000) === 0;
    if (sample) {
      this.#loopLagMs = this.#worstLagMs;
      this.#worstLagMs = 0;
    }
    for (const v of this.views()) {
      busy ||= v.pending > 0 || v.failing !== undefined;
      const s = this.#of(v.name);
      s.observe(v.oldestPendingMs === undefined ? 0 : now - v.oldestPendingMs);
      s.backlogPeak = v.pending > BACKLOG ? Math.max(s.backlogPeak, v.pending) : 0;
      if (v.failing !== undefined && s.failingSince === undefined) {
        s.failingSince = v.failing.sinceMs;
        this.hub.publish({ type: 'outage', timeMs: v.failing.sinceMs, source: v.name, error: v.failing.error });
      } else if (v.failing === undefined && s.failingSince !== undefined) {
        this.hub.publish({ type: 'recovered', timeMs: now, source: v.name, downMs: now - s.failingSince });
        s.failingSince = undefined;
      }
      if (sample) s.sample(now);
    }
    if (!busy) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#loopLagMs = 0;
      for (const s of this.#sources.values()) s.sample(now); // a last point: the rates fall to zero
    }
  }

  seen(source: string, c: Change, timeMs: number): void {
    this.wake();
    const s = this.#of(source);
    if (c.type === 'rescan') {
      s.rescans[c.reason] = (s.rescans[c.reason] ?? 0) + 1;
      this.metrics.rescans.inc({ source, reason: c.reason });
      if (c.reason === 'overflow') {
        s.overflows++;
        s.lastOverflowMs = timeMs;
        this.metrics.overflows.inc({ source });
      }
      this.hub.publish({ type: 'rescan', timeMs, source, reason: c.reason, ...jsonPath(c.path) });
      return;
    }
    s.seen++;
    this.hub.publish({
      type: 'change',
      timeMs,
      source,
      change: c.type,
      kind: c.kind,
      ...jsonPath(c.path),
      ...(c.type === 'moved' ? jsonPath(c.from, 'from') : {}),
    });
  }

  committed(source: string, c: CommitReport): void {
    this.wake();
    const s = this.#of(source);
    s.commits++;
    s.committedChanges += c.changes;
    s.bytesUploaded += c.bytes;
    this.metrics.commits.inc({ source });
    this.metrics.uploadedBytes.inc({ source }, c.bytes);
    for (const k of ['put', 'delete', 'move'] as const) if (c.kinds[k] > 0) this.metrics.changes.inc({ source, kind: k }, c.kinds[k]);
    if (c.oldestMs !== undefined) this.metrics.latency.observe({ source }, Math.max(0, c.oldestMs) / 1000);
    this.hub.publish({ type: 'commit', timeMs: c.timeMs, source, seq: c.seq, changes: c.changes, files: c.files, bytes: c.bytes });
  }

  read(source: string, n: number): void {
    this.#of(source).bytesRead += n;
    this.metrics.readBytes.inc({ source }, n);
  }

  problem(code: string | undefined): void {
    this.metrics.errors.inc({ code: code ?? 'other' });
  }

  backend(op: BackendOp, result: 'ok' | 'not_found' | 'error'): void {
    this.metrics.backend(op, result);
    if (result === 'error') this.backendLastFailure = { timeMs: Date.now(), op };
    else this.backendLastSuccessMs = Date.now();
  }

  /** For the metrics' gauges. */
  gauges(): SourceGauges[] {
    const now = Date.now();
    return this.views().map((v) => ({
      name: v.name,
      state: v.state,
      pending: v.pending,
      protectedThroughMs: v.oldestPendingMs === undefined ? now : v.oldestPendingMs - 1,
      lastCommitMs: v.lastCommit?.timeMs,
      watches: v.watches,
      unwatched: v.unwatched,
    }));
  }

  /** The dashboard's overview: per source, exposure and why, the pipeline, health. */
  overview(): unknown {
    this.wake();
    const now = Date.now();
    const x = this.extra();
    const views = this.views();
    const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());
    return {
      time: iso(now),
      repository: x.repository,
      rpoTargetMs: x.rpoTargetMs,
      leaseHolder: x.leaseHolder,
      lastCheck: x.lastCheck ? { time: iso(x.lastCheck.timeMs), ok: x.lastCheck.ok } : null,
      eventLoopLagMs: Math.round(this.#loopLagMs),
      store: {
        lastSuccess: iso(this.backendLastSuccessMs),
        lastFailure: this.backendLastFailure ? { time: iso(this.backendLastFailure.timeMs), op: this.backendLastFailure.op } : null,
      },
      watches: { used: views.reduce((n, v) => n + v.watches, 0), limit: x.watchLimit },
      errors: x.errors,
      sources: views.map((v) => {
        const s = this.#of(v.name);
        const exposedMs = v.oldestPendingMs === undefined ? 0 : Math.max(0, now - v.oldestPendingMs);
        const why: string[] = [];
        if (v.failing !== undefined)
          why.push(
            `store unreachable since ${iso(v.failing.sinceMs)}: ${v.failing.error}; next retry in ${Math.max(0, Math.round((v.failing.retryAtMs - now) / 1000))} s`,
          );
        if (v.unwatched > 0) why.push(`degraded: ${v.unwatched} directories unwatched (the watch limit); they are rescanned instead`);
        if (this.#loopLagMs > 1000) why.push(`the event loop lagged ${Math.round(this.#loopLagMs)} ms`);
        if (v.state === 'scanning' || v.state === 'starting') why.push('scanning: the start-up backlog is being committed');
        return {
          name: v.name,
          path: v.path,
          state: v.state,
          protectedThrough: iso(v.oldestPendingMs === undefined ? now : v.oldestPendingMs - 1),
          exposedMs,
          why,
          exposure: s.exposure.map(([t, ms]) => [t, ms]),
          lastCommit: v.lastCommit ? { seq: v.lastCommit.seq, time: iso(v.lastCommit.timeMs) } : null,
          // The start-up backlog (or a burst): how far along, and the time left at the last 5 s's rate.
          backlog:
            s.backlogPeak > 0
              ? {
                  total: s.backlogPeak,
                  done: s.backlogPeak - v.pending,
                  secondsLeft: s.rates.committed > 0 ? Math.round(v.pending / s.rates.committed) : null,
                }
              : null,
          pipeline: {
            seen: s.seen,
            pending: Math.max(0, v.pending - v.inFlight),
            committing: v.inFlight,
            durable: s.committedChanges,
            commits: s.commits,
            rates: s.rates,
            bytesRead: s.bytesRead,
            bytesUploaded: s.bytesUploaded,
          },
          health: {
            watches: v.watches,
            unwatched: v.unwatched,
            overflows: s.overflows,
            lastOverflow: iso(s.lastOverflowMs),
            rescans: s.rescans,
            failing: v.failing
              ? { since: iso(v.failing.sinceMs), error: v.failing.error, retryAt: iso(v.failing.retryAtMs), attempts: v.failing.attempts }
              : null,
          },
        };
      }),
    };
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
