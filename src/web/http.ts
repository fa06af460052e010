/**
 * The HTTP plumbing the dashboard and the WebDAV server share: listen addresses, the Host
 * allow-list, the checks on state-changing requests, security headers and small replies.
 */

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { PhoenixError } from '../errors.js';

export interface ListenSpec {
  host: string;
  port: number;
  /** The documented default: when its port is taken, a free one is used instead (and said). */
  fallback: boolean;
}

const LOOPBACK = /^(127(\.\d{1,3}){3}|::1|localhost)$/i;

/**
 * `HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` (loopback), or `off`. A host that is not
 * loopback needs `allowRemote` (what `--ui-public` says): the dashboard serves every backed-up file.
 */
export function parseListen(value: string, what: string, allowRemote: boolean): ListenSpec | undefined {
  const v = value.trim();
  if (v === 'off' || v === 'false' || v === '') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*))?:?(\d{1,5})$/.exec(v.includes(':') || /^\d+$/.test(v) ? v : `${v}:`);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new PhoenixError('PHX_USAGE', `${what} ${JSON.stringify(value)} is not an address to listen on`, {
      hint: `give HOST:PORT, for example 127.0.0.1:${what.includes('webdav') ? '8468' : '8467'} (127.0.0.1:0 picks a free port), or off`,
    });
  }
  const host = m[1] ?? (m[2] === undefined || m[2] === '' ? '127.0.0.1' : m[2]);
  if (!LOOPBACK.test(host) && !allowRemote) {
    throw new PhoenixError('PHX_USAGE', `${what} ${value}: ${host} is not a loopback address`, {
      hint: 'anyone who can reach it and has the token can read every backed-up file: add --ui-public (ui.public: true) to listen there, ideally behind TLS',
    });
  }
  return { host, port, fallback: false };
}

/** Listens; a taken default port falls back to a free one. Resolves with the URL actually bound. */
export async function listenOn(server: Server, spec: ListenSpec, scheme: 'http'): Promise<string> {
  const tryListen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(port, spec.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
  try {
    await tryListen(spec.port);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' && spec.fallback) await tryListen(0);
    else
      throw new PhoenixError('PHX_LISTEN', `cannot listen on ${spec.host}:${spec.port}: ${(err as Error).message}`, {
        hint:
          code === 'EADDRINUSE' ? 'another program has that port: choose another one (127.0.0.1:0 picks a free one)' : 'check the address',
        cause: err,
      });
  }
  const a = server.address();
  const port = typeof a === 'object' && a !== null ? a.port : spec.port;
  return `${scheme}://${hostForUrl(spec.host)}:${port}/`;
}

export function hostForUrl(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

/** The Host values a request may carry: the bound address, loopback names, and those configured. */
export function allowedHosts(url: string, extra: readonly string[] = []): Set<string> {
  const u = new URL(url);
  const port = u.port;
  const names = new Set([u.host.toLowerCase()]);
  if (LOOPBACK.test(u.hostname.replace(/^\[|\]$/g, ''))) for (const h of ['127.0.0.1', 'localhost', '[::1]']) names.add(`${h}:${port}`);
  for (const h of extra) names.add((h.includes(':') && !h.startsWith('[') ? h : `${h}:${port}`).toLowerCase());
  return names;
}

/** Headers every reply carries. */
export function securityHeaders(res: ServerResponse, csp: string): void {
  res.setHeader('Content-Security-Policy', csp);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
  res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
  res.setHeader('Cache-Control', 'no-store');
}

/** For a backed-up file's bytes: never a page of this origin, whatever its name or content. */
export function hostileContent(res: ServerResponse, name: string, inline = false): void {
  res.setHeader('Content-Security-Policy', "sandbox; default-src 'none'");
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('Content-Disposition', `${inline ? 'inline' : 'attachment'}; filename*=UTF-8''${encodeRfc5987(name)}`);
}

function encodeRfc5987(s: string): string {
  return encodeURIComponent(s).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

export const CSRF_HEADER = 'x-phoenix-request';

/**
 * A state-changing request must come from the dashboard's own pages: the custom header (which
 * a cross-site form cannot send, and a cross-site fetch cannot without a preflight we never
 * grant), an Origin that is ours when there is one, and no cross-site Sec-Fetch-Site.
 */
export function crossSiteReason(req: IncomingMessage, hosts: ReadonlySet<string>): string | undefined {
  if (req.headers[CSRF_HEADER] !== '1') return `the ${CSRF_HEADER}: 1 header is missing`;
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return `Sec-Fetch-Site is ${String(site)}`;
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let host: string;
    try {
      host = new URL(origin).host.toLowerCase();
    } catch {
      return `the Origin ${origin} is not a URL`;
    }
    if (!hosts.has(host)) return `the Origin ${origin} is not this server`;
  }
  return undefined;
}

export function hostReason(req: IncomingMessage, hosts: ReadonlySet<string>): string | undefined {
  const host = (req.headers.host ?? '').toLowerCase();
  return hosts.has(host) ? undefined : `the Host ${JSON.stringify(req.headers.host ?? '')} is not one this server answers to`;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': data.length });
  res.end(data);
}

export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (err instanceof HttpError) {
    sendJson(res, err.status, { error: { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) } });
    return;
  }
  if (err instanceof PhoenixError) {
    const status = err.code === 'PHX_NOT_IN_REPO' || err.code === 'PHX_NOT_FOUND' ? 404 : err.code === 'PHX_USAGE' ? 400 : 500;
    sendJson(res, status, { error: { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) } });
    return;
  }
  sendJson(res, 500, { error: { code: 'PHX_INTERNAL', message: (err as Error).message } });
}

/** The request body as JSON (at most 1 MiB). */
export async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > 1 << 20) throw new HttpError(413, 'PHX_USAGE', 'the request body is larger than 1 MiB');
    parts.push(c as Buffer);
  }
  try {
    const v: unknown = JSON.parse(Buffer.concat(parts).toString('utf8') || '{}');
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new HttpError(400, 'PHX_USAGE', `the request body is not a JSON object: ${(err as Error).message}`);
  }
}
