import type { RetentionStatus } from './maintenance.js';
import { chmodSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { errnoCode, PhoenixError } from '../errors.js';

/** What `phoenix status --json` prints (a contract: fields are only ever added). */
export interface Status {
  state: 'scanning' | 'watching' | 'degraded' | 'stopping';
  pid: number;
  repository: string;
  /** Changes seen but not yet durable in the repository. */
  pending: number;
  /** Age of the oldest such change (the current exposure), 0 when none. */
  oldestPendingMs: number;
  lastCommit: { seq: number; time: string } | null;
  overflows: number;
  watches: { used: number; limit: number | null };
  uploaded: { bytes: number; files: number; commits: number };
  /** Recent problems, newest last. */
  errors: Array<{ time: string; path: string | null; message: string; code?: string; hint?: string }>;
  /** Commits are failing (of any source): since when, why, and the next try; null when they succeed. */
  failing: Failing | null;
  /** The mass-change guard's trips (every source): each pinned the state before it, until a person unpins it. */
  guards: Array<GuardStatus & { source: string }>;
  /** Retention: each source's policy and oldest kept instant, the daemon's last forget and prune, what waits. */
  retention: RetentionStatus | null;
  /** The dashboard (and /metrics), where it was bound; null when it is off. */
  ui: { url: string } | null;
  /** The read-only WebDAV server of the past; null when it is off. */
  webdav: { url: string } | null;
  /** /metrics without a token, when metrics.listen / --metrics-listen is set. */
  metrics?: { url: string };
  sources: Array<{
    name: string;
    path: string;
    state: string;
    pending: number;
    oldestPendingMs: number;
    lastCommit: { seq: number; time: string } | null;
    overflows: number;
    guards: GuardStatus[];
    failing: Failing | null;
  }>;
}

export interface GuardStatus {
  time: string;
  removed: number;
  rewritten: number;
  /** The instant pinned (just before the spike): phoenix restore --at it gives the state before. */
  pinnedAt: string;
  seq: number;
}

export interface Failing {
  since: string;
  error: string;
  retryAt: string;
  attempts: number;
}

export const socketPath = (stateDir: string): string => join(stateDir, 'phoenix.sock');

/** Requests other than the status, by name (`login`: a one-time link to the dashboard). */
export type Requests = Record<string, () => unknown>;

/** A client that sends nothing gets the status after this long (clients of earlier builds send nothing). */
const REQUEST_WAIT_MS = 100;

/**
 * Serves the status on a Unix socket in the state directory (mode 0600): a client sends one
 * line naming what it wants (`status`, or a name of `requests`), gets one JSON document, and
 * the connection is closed. Refuses to start when another daemon answers there.
 */
export async function serveStatus(stateDir: string, status: () => Status, requests: Requests = {}): Promise<Server> {
  const path = socketPath(stateDir);
  const other = await queryStatus(stateDir).catch(() => undefined);
  if (other !== undefined) {
    throw new PhoenixError('PHX_LOCKED', `another phoenix watch (pid ${other.pid}) is running with the state directory ${stateDir}`, {
      hint: 'stop it first, or give this one its own --state DIR',
    });
  }
  return serveRequests(path, (name) => {
    const fn = requests[name];
    return name === 'status' || name === '' ? status() : fn !== undefined ? fn() : { error: `unknown request ${JSON.stringify(name)}` };
  });
}

/**
 * Answers one-line requests on the Unix socket `path` (mode 0600; one left by a process that
 * was killed is replaced): `answer(name)` as one JSON line, then the connection is closed. A
 * client that sends nothing is answered as for `''` after a moment.
 */
export async function serveRequests(path: string, answerOf: (name: string) => unknown): Promise<Server> {
  try {
    unlinkSync(path); // a socket left by a daemon that was killed
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  const server = createServer((conn) => {
    conn.on('error', () => {});
    let line = '';
    let answered = false;
    const answer = (name: string): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      let body: unknown;
      try {
        body = answerOf(name);
      } catch (err) {
        body = { error: (err as Error).message };
      }
      conn.end(`${JSON.stringify(body)}\n`);
    };
    const timer = setTimeout(() => answer(''), REQUEST_WAIT_MS);
    conn.setEncoding('utf8');
    conn.on('data', (d: string) => {
      line += d;
      const nl = line.indexOf('\n');
      if (nl >= 0) answer(line.slice(0, nl).trim());
      else if (line.length > 256) answer('');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

/** Asks the daemon of `stateDir` for its status; PHX_NOT_RUNNING when none answers. */
export function queryStatus(stateDir: string): Promise<Status> {
  return askDaemon<Status>(stateDir, 'status');
}

/** Sends one request to the daemon of `stateDir` (on its socket, or on `socket` there) and reads its answer. */
export function askDaemon<T>(stateDir: string, request: string, socket?: string): Promise<T> {
  const path = socket === undefined ? socketPath(stateDir) : join(stateDir, socket);
  return new Promise((resolve, reject) => {
    const conn = createConnection(path);
    conn.on('connect', () => conn.write(`${request}\n`));
    let data = '';
    conn.setEncoding('utf8');
    conn.on('data', (d: string) => (data += d));
    conn.on('end', () => {
      try {
        resolve(JSON.parse(data) as T);
      } catch (err) {
        reject(new PhoenixError('PHX_IO', `the daemon at ${path} sent an unreadable status: ${(err as Error).message}`));
      }
    });
    conn.on('error', (err) => {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ECONNREFUSED') {
        reject(
          new PhoenixError('PHX_NOT_RUNNING', `no phoenix watch is running with the state directory ${stateDir}`, {
            hint: 'start one with phoenix watch, or pass the --state DIR it uses',
          }),
        );
      } else {
        reject(new PhoenixError('PHX_IO', `cannot reach the daemon at ${path}: ${err.message}`, { cause: err }));
      }
    });
  });
}
