import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';
import { openBackend } from '../backend/open.js';
import type { BackendObserver } from '../backend/wrappers.js';
import { defaultPasswordFile, resolveSettings, type Settings } from '../config/settings.js';
import { loadWatchConfig, type WatchFlags } from '../daemon/config.js';
import { Daemon } from '../daemon/daemon.js';
import { queryStatus, type Status } from '../daemon/status.js';
import { PhoenixError } from '../errors.js';
import { Repository } from '../repo/index.js';
import { DEFAULT_MIN_AGE, DEFAULT_POLICY } from '../retention/policy.js';
import { newPassword, openRepo } from './common.js';
import { mib } from './format.js';

/** `phoenix watch`: runs until SIGTERM/SIGINT; exit 0 when everything seen was committed. */
export async function watchCommand(source: string | undefined, flags: WatchFlags): Promise<number> {
  const config = await loadWatchConfig(source, flags);
  const log = createLogger(config.settings.logLevel);
  // Requests to the store are counted for /metrics once the daemon is there.
  let observe: Daemon['backendObserver'] | undefined;
  const repo = await openOrCreate(config.settings, log, (op, result) => observe?.(op, result));
  const url = config.settings.repository;
  let daemon: Daemon;
  try {
    daemon = await Daemon.start(config, repo, url, log);
    observe = daemon.backendObserver;
  } catch (err) {
    await repo.backend.close();
    throw err;
  }
  const progress = process.stderr.isTTY ? startProgress(daemon) : undefined;
  const signal = await new Promise<string>((resolve) => {
    const on = (s: string): void => {
      process.removeAllListeners('SIGTERM');
      process.removeAllListeners('SIGINT');
      // A second signal while flushing: leave at once (the queue on disk keeps the rest).
      process.once('SIGTERM', () => process.exit(1));
      process.once('SIGINT', () => process.exit(130));
      resolve(s);
    };
    process.once('SIGTERM', () => on('SIGTERM'));
    process.once('SIGINT', () => on('SIGINT'));
    void daemon.allFailed.then(() => resolve('failure'));
  });
  progress?.stop();
  const before = daemon.status();
  log.info({ signal, pending: before.pending }, 'stopping: committing what is pending');
  const clean = await daemon.stop(Date.now() + config.shutdownTimeoutMs);
  if (signal === 'failure') {
    log.error('every source has failed; exiting');
    return 1;
  }
  if (!clean) {
    log.error(
      { timeoutMs: config.shutdownTimeoutMs },
      'stopped with changes still pending (they stay queued and are committed at the next start)',
    );
    return 1;
  }
  const skipped = daemon.skipped();
  if (skipped.length > 0) {
    log.warn(
      { paths: skipped.slice(0, 20).map((s) => s.path), count: skipped.length },
      `stopped; ${skipped.length} entries could not be backed up (they keep their last backed-up version, if any): ${skipped
        .slice(0, 5)
        .map((s) => `${s.path} (${s.message})`)
        .join(', ')}${skipped.length > 5 ? ', …' : ''}`,
    );
    return 1;
  }
  log.info('stopped; everything seen is in the repository');
  return 0;
}

/** `phoenix status`: asks the running daemon. */
export async function statusCommand(flags: { state?: string; json?: boolean; config?: string }): Promise<number> {
  const { stateDir } = await resolveSettings(flags);
  let s: Status;
  try {
    s = await queryStatus(stateDir);
  } catch (err) {
    if (err instanceof PhoenixError && err.code === 'PHX_NOT_RUNNING' && flags.json) {
      process.stdout.write(`${JSON.stringify({ state: 'stopped' })}\n`);
    }
    throw err;
  }
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(s)}\n`);
    return 0;
  }
  const last = s.lastCommit ? `commit ${s.lastCommit.seq} at ${s.lastCommit.time}` : 'no commit yet';
  const lines = [
    `phoenix watch (pid ${s.pid}): ${s.state}; repository ${s.repository}`,
    `pending: ${s.pending} change(s)${s.pending > 0 ? `, oldest ${(s.oldestPendingMs / 1000).toFixed(1)} s` : ''}; last: ${last}`,
    `uploaded: ${s.uploaded.files} file(s), ${mib(s.uploaded.bytes)} in ${s.uploaded.commits} commit(s); watches ${s.watches.used} of ${s.watches.limit ?? '?'}; overflows ${s.overflows}`,
    ...(s.failing
      ? [`COMMITS FAILING since ${s.failing.since} (${s.failing.attempts} attempts): ${s.failing.error}; next try ${s.failing.retryAt}`]
      : []),
    ...s.sources.map(
      (src) => `  ${src.name}: ${src.state}, ${src.pending} pending${src.lastCommit ? `, commit ${src.lastCommit.seq}` : ''}`,
    ),
    ...(s.guards ?? []).map(
      (g) =>
        `  GUARD ${g.source}: ${g.removed} removed, ${g.rewritten} rewritten at ${g.time}; the state before is pinned (restore --at ${g.pinnedAt}; phoenix unpin --at ${g.pinnedAt} releases it)`,
    ),
    ...(s.retention?.sources ?? []).map(
      (r) =>
        `  retention ${r.name}: ${r.policy ?? 'none (everything kept)'}; ${r.instants} instants kept, the oldest ${r.oldestKept ?? '-'}`,
    ),
    ...(s.retention?.waiting ?? []).map((w) => `  retention: ${w}`),
    ...(s.ui ? [`dashboard: ${s.ui.url} (phoenix ui logs you in)`] : []),
    ...(s.webdav ? [`WebDAV: ${s.webdav.url} (user phoenix, the password is the token in ui-token)`] : []),
    ...s.errors.slice(-5).map((e) => `  error ${e.time}: ${e.path !== null ? `${e.path}: ` : ''}${e.message}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

/**
 * The repository to write to. With none configured, a new user gets one in
 * $XDG_DATA_HOME/phoenix/repository, created on the first run; its password comes from the
 * usual places, is chosen on a terminal, or, failing those, is generated into
 * $XDG_CONFIG_HOME/phoenix/password.
 */
async function openOrCreate(settings: Settings, log: Logger, observe: BackendObserver): Promise<Repository> {
  let pw: string | undefined;
  if (settings.repositoryIsDefault && !existsSync(join(settings.repository, 'config'))) {
    pw = await newPassword(settings);
    if (pw === undefined) {
      const generated = defaultPasswordFile();
      pw = randomBytes(24).toString('base64url');
      mkdirSync(dirname(generated), { recursive: true, mode: 0o700 });
      writeFileSync(generated, `${pw}\n`, { mode: 0o600, flag: 'wx' });
      settings.passwordFile = generated;
      log.warn(
        { passwordFile: generated },
        'generated a password for the new repository: keep a copy of this file somewhere else, without it the backup cannot be read',
      );
    }
    const created = await Repository.init(openBackend(settings.repository, { observe }), { password: pw });
    await created.setPolicy(undefined, DEFAULT_POLICY, DEFAULT_MIN_AGE);
    await created.close();
    log.info(
      { repository: settings.repository, retention: DEFAULT_POLICY, minAge: DEFAULT_MIN_AGE },
      'created a repository (no --repo given): every phoenix command finds it there; phoenix policy set changes its retention',
    );
  }
  return openRepo(settings, {
    backend: { retry: { attempts: 4, maxDelayMs: 5000 }, observe },
    ...(pw !== undefined ? { password: pw } : {}),
  });
}

/** JSON lines on stderr; readable lines when stderr is a terminal. */
function createLogger(level: string): Logger {
  if (process.stderr.isTTY)
    return pino(
      { level },
      pretty({ destination: 2, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true }),
    );
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
}

/** A one-line progress display on the terminal while the start-up backlog is uploaded. */
function startProgress(daemon: Daemon): { stop(): void } {
  const t0 = Date.now();
  let total = 0;
  let shown = false;
  const timer = setInterval(() => {
    const s = daemon.status();
    total = Math.max(total, s.pending);
    if (s.pending === 0 && s.state !== 'scanning') {
      if (shown) process.stderr.write('\r\x1b[K');
      clearInterval(timer);
      return;
    }
    const secs = (Date.now() - t0) / 1000;
    const done = total - s.pending;
    const rate = daemon.bytesRead / secs;
    const eta = done > 0 ? (secs / done) * s.pending : undefined;
    process.stderr.write(
      `\r\x1b[K${s.state}: ${done} of ${total} changes, ${mib(daemon.bytesRead)} read, ${mib(rate)}/s${eta !== undefined ? `, about ${Math.ceil(eta)} s left` : ''}`,
    );
    shown = true;
  }, 500);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
