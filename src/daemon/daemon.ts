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
import type { BackendOp } from '../backend/wrappers.js';
import { Auth, loadToken } from '../web/auth.js';
import { Catalog } from '../web/catalog.js';
import { DavServer } from '../web/dav.js';
import { Hub } from '../web/hub.js';
import { LiveState } from '../web/live.js';
import { Metrics } from '../web/metrics.js';
import { WebServer } from '../web/server.js';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { hostReason, allowedHosts, listenOn, type ListenSpec } from '../web/http.js';
import { hostname } from 'node:os';
import { readLastCheck } from '../state/last-check.js';
import { QuietTrim } from '../util/quiet.js';

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
  readonly #hub = new Hub();
  readonly #metrics: Metrics;
  readonly #live: LiveState;
  /** Gives V8's young generation back once a start-up scan or a burst is over. */
  readonly #quiet = new QuietTrim();
  #web: WebServer | undefined;
  #dav: DavServer | undefined;
  #metricsServer: HttpServer | undefined;
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
    const names = config.sources.map((s) => s.name);
    const lastCheck = (): { timeMs: number; ok: boolean } | undefined => readLastCheck(config.settings.stateDir, repo.config.id);
    this.#metrics = new Metrics({ sources: () => this.#live.gauges(), watchLimit, lastCheck }, packageVersion(), names);
    this.#live = new LiveState(
      () =>
        this.#runners.map((r) => ({
          name: r.config.name,
          path: r.config.path,
          state: r.state,
          pending: r.pending.size,
          inFlight: r.pending.inFlight,
          oldestPendingMs: r.pending.oldestMs(),
          lastCommit: r.lastCommit,
          watches: r.watches,
          unwatched: r.unwatched,
          failing: r.failing,
        })),
      this.#hub,
      this.#metrics,
      () => ({
        watchLimit: watchLimit(),
        errors: [...this.#errors],
        leaseHolder: `${hostname()} pid ${process.pid}`,
        repository: this.#repoUrl,
        rpoTargetMs: this.#config.web.rpoTargetMs,
        lastCheck: lastCheck(),
      }),
    );
  }

  /** Told of every request to the store (the metrics). */
  backendObserver = (op: BackendOp, result: 'ok' | 'not_found' | 'error'): void => this.#live.backend(op, result);

  /** The dashboard, the WebDAV server and the metrics listener, as configured. */
  async #serveWeb(): Promise<void> {
    const web = this.#config.web;
    if (web.ui === undefined && web.webdav === undefined && web.metrics === undefined) return;
    const auth = new Auth(loadToken(this.#config.settings.stateDir));
    const catalog = new Catalog(this.#repo);
    this.#catalog = catalog;
    if (web.ui !== undefined) {
      this.#web = new WebServer({
        catalog,
        repoUrl: this.#repoUrl,
        live: {
          sourcePath: (name) => this.#config.sources.find((s) => s.name === name)?.path,
          overview: () => this.#live.overview(),
        },
        auth,
        hub: this.#hub,
        metrics: this.#metrics,
        hosts: web.hosts,
      });
      const url = await this.#optional('the dashboard', web.ui.fallback, () => (this.#web as WebServer).listen(web.ui as ListenSpec));
      if (url === undefined) this.#web = undefined;
      else this.#log.info({ url }, `dashboard on ${url} (phoenix ui opens it)`);
    }
    if (web.webdav !== undefined) {
      this.#dav = new DavServer(catalog, auth, web.hosts);
      const url = await this.#optional('WebDAV', web.webdav.fallback, () => (this.#dav as DavServer).listen(web.webdav as ListenSpec));
      if (url === undefined) this.#dav = undefined;
      else this.#log.info({ url }, `the past as a WebDAV folder on ${url} (user phoenix, the password is in ui-token)`);
    }
    if (web.metrics !== undefined) {
      // /metrics only, without a token: for a Prometheus on this host.
      let hosts = new Set<string>();
      const server = createHttpServer((req, res) => {
        const why = hostReason(req, hosts);
        if (why !== undefined || (req.url ?? '/').split('?')[0] !== '/metrics') {
          res.writeHead(why !== undefined ? 403 : 404, { 'Content-Type': 'text/plain' }).end(`${why ?? 'only /metrics is here'}\n`);
          return;
        }
        this.#metrics.text().then(
          (t) => res.writeHead(200, { 'Content-Type': this.#metrics.contentType }).end(t),
          (err: Error) => res.writeHead(500).end(err.message),
        );
      });
      this.#metricsServer = server;
      const url = await listenOn(server, web.metrics, 'http');
      hosts = allowedHosts(url, web.hosts);
      this.#metricsUrl = url;
      this.#log.info({ url: `${url}metrics` }, 'metrics without a token');
    }
  }

  #catalog: Catalog | undefined;
  #metricsUrl: string | undefined;

  /**
   * Starts a listener. One the user asked for fails the start (its message says why); one that
   * is on by default only logs a warning: backups never wait for a dashboard.
   */
  async #optional(what: string, byDefault: boolean, listen: () => Promise<string>): Promise<string | undefined> {
    try {
      return await listen();
    } catch (err) {
      if (!byDefault) throw err;
      this.#log.warn({ error: (err as Error).message }, `${what} is not served: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** Starts serving status, then each source (lease, reconcile, watch). Throws if any cannot start. */
  static async start(config: WatchConfig, repo: Repository, repoUrl: string, log: Logger): Promise<Daemon> {
    const d = new Daemon(config, repo, repoUrl, log);
    try {
      d.#server = await serveStatus(config.settings.stateDir, () => d.status(), {
        login: () => {
          if (d.#web === undefined) throw new Error('the dashboard is off (ui.listen / --ui-listen)');
          return { url: d.#web.loginLink() };
        },
      });
      await d.#serveWeb();
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
      d.#runners.map((r) => ({ name: r.config.name, held: () => r.heldInstants() })),
      { ...config.maintenance, scratchDir: config.settings.stateDir },
      log.child({ maintenance: true }),
    );
    d.#maintainer.start();
    log.info({ sources: config.sources.length, repository: repoUrl }, 'watching');
    d.#quiet.touch();
    return d;
  }

  /**
   * Stops watching, commits what is pending until `deadlineMs`, releases the leases and
   * closes everything. True when nothing was left pending.
   */
  async stop(deadlineMs: number): Promise<boolean> {
    this.#stopping = true;
    this.#quiet.stop();
    // Maintenance stops beside the sources (a prune waiting for their acknowledgements gives up at once).
    const maintenance = this.#maintainer?.stop();
    const results = await Promise.all(this.#runners.map((r) => r.stop(deadlineMs)));
    await maintenance;
    for (const s of this.#summaries) s.flush();
    this.#live.close();
    await Promise.all([
      this.#web?.close(),
      this.#dav?.close(),
      new Promise<void>((r) => {
        this.#metricsServer?.closeAllConnections();
        if (this.#metricsServer) this.#metricsServer.close(() => r());
        else r();
      }),
    ]);
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
      ui: this.#web ? { url: this.#web.url } : null,
      webdav: this.#dav ? { url: this.#dav.url } : null,
      ...(this.#metricsUrl !== undefined ? { metrics: { url: `${this.#metricsUrl}metrics` } } : {}),
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
      seen: (c, timeMs) => {
        this.#quiet.touch();
        this.#live.seen(source, c, timeMs);
      },
      problem: (path, message, code) => {
        this.#live.problem(code);
        log.warn({ ...(path === undefined ? {} : { path }), ...(code !== undefined ? { code } : {}) }, message);
        this.#remember(path, message, code);
      },
      committed: (c) => {
        this.uploaded.bytes += c.bytes;
        this.uploaded.files += c.files;
        this.uploaded.commits++;
        log.debug({ seq: c.seq, changes: c.changes, files: c.files, bytes: c.bytes, oldestMs: c.oldestMs }, 'committed');
        summary.add(c);
        this.#quiet.touch();
        this.#catalog?.invalidate(source);
        this.#live.committed(source, c);
      },
      bytesRead: (n) => {
        this.bytesRead += n;
        this.#live.read(source, n);
      },
      fatal: (err: PhoenixError) => {
        log.error({ code: err.code, hint: err.hint, cause: (err.cause as Error | undefined)?.stack }, err.message);
        this.#remember(undefined, err.message);
        this.#live.problem(err.code);
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

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
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
