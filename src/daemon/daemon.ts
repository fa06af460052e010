import { readFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { SealPool } from '../archiver/seal-pool.js';
import { PhoenixError } from '../errors.js';
import { displayPath } from '../model/path.js';
import type { Repository } from '../repo/index.js';
import { StateDb } from '../state/db.js';
import type { WatchConfig } from './config.js';
import { SourceRunner, type SourceEvents } from './source.js';
import type { GuardTrip } from './guard.js';
import { Maintainer } from './maintenance.js';
import { serveStatus, type GuardStatus, type Status } from './status.js';

const MAX_ERRORS = 50;

/** What to do about a file that could not be read, by its errno code (status --json: `hint`). */
const READ_HINTS: Record<string, string> = {
  EACCES:
    'Phoenix may not read it: give its user read access (chmod, setfacl), or run phoenix watch as a user who can; retried at its next change',
  EPERM: 'the system refuses the read (an immutable or protected file?); retried at its next change',
  EIO: 'the disk reported an I/O error reading it: check the disk (dmesg, smartctl); the last version backed up is kept',
  ENXIO: 'a special file that cannot be opened for reading; exclude it',
  EWOULDBLOCK: 'a mandatory lock held by another program; retried at its next change',
};

/**
 * `phoenix watch`: one process, one repository, one or more sources. Wires each source's
 * watcher, durable queue and committer to the repository, and serves the status socket.
 */
export class Daemon {
  readonly #config: WatchConfig;
  readonly #repo: Repository;
  readonly #repoUrl: string;
  readonly #log: Logger;
  readonly #db: StateDb;
  readonly #pool: SealPool;
  readonly #runners: SourceRunner[] = [];
  readonly #errors: Status['errors'] = [];
  readonly #summaries: CommitSummary[] = [];
  readonly uploaded = { bytes: 0, files: 0, commits: 0 };
  bytesRead = 0;
  #server: Server | undefined;
  #maintainer: Maintainer | undefined;
  #stopping = false;
  #failed = 0;
  /** Resolves when every source has failed (the daemon has nothing left to do). */
  readonly allFailed: Promise<void>;
  #resolveAllFailed = (): void => {};

  private constructor(config: WatchConfig, repo: Repository, repoUrl: string, log: Logger) {
    this.#config = config;
    this.#repo = repo;
    this.#repoUrl = repoUrl;
    this.#log = log;
    this.#db = new StateDb(join(config.settings.stateDir, `${repo.config.id}.sqlite`));
    this.#pool = new SealPool(repo.keys);
    this.allFailed = new Promise((r) => (this.#resolveAllFailed = r));
  }

  /** Starts serving status, then each source (lease, reconcile, watch). Throws if any cannot start. */
  static async start(config: WatchConfig, repo: Repository, repoUrl: string, log: Logger): Promise<Daemon> {
    const d = new Daemon(config, repo, repoUrl, log);
    try {
      d.#server = await serveStatus(config.settings.stateDir, () => d.status());
      for (const sc of config.sources) {
        const runner = new SourceRunner(sc, repo, d.#db, d.#pool, d.#eventsFor(sc.name), {
          settle: config.settle,
          reconcileMs: config.reconcileMs,
          leaseRenewMs: config.leaseRenewMs,
          leaseTtlMs: config.leaseTtlMs,
        });
        d.#runners.push(runner);
        log.info({ source: sc.name, path: sc.path }, 'starting');
        await runner.start();
      }
    } catch (err) {
      await d.stop(Date.now()).catch(() => {});
      throw err;
    }
    d.#maintainer = new Maintainer(
      repo,
      config.sources.map((s) => s.name),
      config.maintenance,
      log.child({ maintenance: true }),
    );
    d.#maintainer.start();
    log.info({ sources: config.sources.length, repository: repoUrl }, 'watching');
    return d;
  }

  /**
   * Stops watching, commits what is pending until `deadlineMs`, releases the leases and
   * closes everything. True when nothing was left pending.
   */
  async stop(deadlineMs: number): Promise<boolean> {
    this.#stopping = true;
    // Maintenance stops beside the sources (a prune waiting for their acknowledgements gives up at once).
    const maintenance = this.#maintainer?.stop();
    const results = await Promise.all(this.#runners.map((r) => r.stop(deadlineMs)));
    await maintenance;
    for (const s of this.#summaries) s.flush();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
    await this.#pool.close();
    this.#db.close();
    await this.#repo.backend.close();
    return results.every(Boolean);
  }

  status(): Status {
    const now = Date.now();
    const iso = (c: { seq: number; timeMs: number } | undefined): Status['lastCommit'] =>
      c ? { seq: c.seq, time: new Date(c.timeMs).toISOString() } : null;
    const sources = this.#runners.map((r) => {
      const oldest = r.pending.oldestMs();
      return {
        name: r.config.name,
        path: r.config.path,
        state: r.state,
        pending: r.pending.size,
        oldestPendingMs: oldest === undefined ? 0 : Math.max(0, now - oldest),
        lastCommit: iso(r.lastCommit),
        overflows: r.overflows,
        guards: r.guards.map(guardJson),
        failing: r.failing
          ? {
              since: new Date(r.failing.sinceMs).toISOString(),
              error: r.failing.error,
              retryAt: new Date(r.failing.retryAtMs).toISOString(),
              attempts: r.failing.attempts,
            }
          : null,
      };
    });
    const latest = this.#runners
      .map((r) => r.lastCommit)
      .reduce<{ seq: number; timeMs: number } | undefined>((a, c) => (c && (!a || c.timeMs > a.timeMs) ? c : a), undefined);
    const states = sources.map((s) => s.state);
    const state: Status['state'] = this.#stopping
      ? 'stopping'
      : states.some((s) => s === 'starting' || s === 'scanning')
        ? 'scanning'
        : states.some((s) => s === 'degraded' || s === 'failed')
          ? 'degraded'
          : 'watching';
    return {
      state,
      pid: process.pid,
      repository: this.#repoUrl,
      pending: sources.reduce((n, s) => n + s.pending, 0),
      oldestPendingMs: Math.max(0, ...sources.map((s) => s.oldestPendingMs)),
      lastCommit: iso(latest),
      overflows: sources.reduce((n, s) => n + s.overflows, 0),
      watches: { used: this.#runners.reduce((n, r) => n + r.watches, 0), limit: watchLimit() },
      uploaded: { ...this.uploaded },
      errors: [...this.#errors],
      failing: sources.map((x) => x.failing).reduce<Status['failing']>((a, f) => (f && (!a || f.since < a.since) ? f : a), null),
      guards: this.#runners.flatMap((r) => r.guards.map((g) => ({ source: r.config.name, ...guardJson(g) }))),
      retention: this.#maintainer?.status ?? null,
      sources,
    };
  }

  /** The last MAX_ERRORS problems, for status. */
  #remember(path: string | undefined, message: string, code?: string): void {
    const hint = code === undefined ? undefined : READ_HINTS[code];
    this.#errors.push({
      time: new Date().toISOString(),
      path: path ?? null,
      message,
      ...(code !== undefined ? { code } : {}),
      ...(hint !== undefined ? { hint } : {}),
    });
    if (this.#errors.length > MAX_ERRORS) this.#errors.shift();
  }

  /** What could not be backed up, over every source. */
  skipped(): Array<{ source: string; path: string; message: string }> {
    return this.#runners.flatMap((r) => r.skipped().map((s) => ({ source: r.config.name, path: displayPath(s.path), message: s.message })));
  }

  #eventsFor(source: string): SourceEvents {
    const log = this.#log.child({ source });
    const summary = new CommitSummary((m, fields) => log.info(fields, m));
    this.#summaries.push(summary);
    return {
      info: (msg, fields) => log.info(fields ?? {}, msg),
      warn: (msg, fields) => log.warn(fields ?? {}, msg),
      trace: log.isLevelEnabled('trace') ? (msg, fields) => log.trace(fields, msg) : undefined,
      problem: (path, message, code) => {
        log.warn({ ...(path === undefined ? {} : { path }), ...(code !== undefined ? { code } : {}) }, message);
        this.#remember(path, message, code);
      },
      committed: (c) => {
        this.uploaded.bytes += c.bytes;
        this.uploaded.files += c.files;
        this.uploaded.commits++;
        log.debug({ seq: c.seq, changes: c.changes, files: c.files, bytes: c.bytes, oldestMs: c.oldestMs }, 'committed');
        summary.add(c);
      },
      bytesRead: (n) => (this.bytesRead += n),
      fatal: (err: PhoenixError) => {
        log.error({ code: err.code, hint: err.hint, cause: (err.cause as Error | undefined)?.stack }, err.message);
        this.#remember(undefined, err.message);
        if (++this.#failed === this.#config.sources.length) this.#resolveAllFailed();
      },
    };
  }
}

function guardJson(g: GuardTrip): GuardStatus {
  return {
    time: new Date(g.timeMs).toISOString(),
    removed: g.removed,
    rewritten: g.rewritten,
    pinnedAt: new Date(g.pinnedAtMs).toISOString(),
    seq: g.seq,
  };
}

function watchLimit(): number | null {
  try {
    return Number(readFileSync('/proc/sys/fs/inotify/max_user_watches', 'utf8').trim());
  } catch {
    return null;
  }
}

/**
 * The info line that says backups happen: one per commit, or one per SUMMARY_MS for a stream
 * of commits ("backed up 120 changes, 3.4 MiB in 12 commits, the last 57").
 */
const SUMMARY_MS = 5000;

class CommitSummary {
  #changes = 0;
  #bytes = 0;
  #commits = 0;
  #seq = 0;
  #lastLineMs = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(readonly write: (msg: string, fields: Record<string, unknown>) => void) {}

  add(c: { seq: number; changes: number; bytes: number }): void {
    this.#changes += c.changes;
    this.#bytes += c.bytes;
    this.#commits++;
    this.#seq = c.seq;
    const wait = this.#lastLineMs + SUMMARY_MS - Date.now();
    if (wait <= 0) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), wait).unref();
  }

  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#commits === 0) return;
    const n = this.#commits;
    const mib = (this.#bytes / 2 ** 20).toFixed(1);
    this.write(`backed up ${this.#changes} changes, ${mib} MiB uploaded${n > 1 ? ` in ${n} commits, the last` : ','} commit ${this.#seq}`, {
      commits: n,
      changes: this.#changes,
      bytes: this.#bytes,
      seq: this.#seq,
    });
    this.#changes = this.#bytes = this.#commits = 0;
    this.#lastLineMs = Date.now();
  }
}
