/**
 * The dashboard's HTTP server: static pages (the Preact app, compiled by tsc, served as ES
 * modules), the login exchange, the JSON API, the live event stream and /metrics. Every
 * request passes the Host allow-list; everything but the login page needs the bearer token
 * or a session cookie; state-changing requests must come from our own pages.
 */

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { API, type ApiContext } from './api.js';
import type { Auth } from './auth.js';
import type { Hub } from './hub.js';
import {
  allowedHosts,
  crossSiteReason,
  hostReason,
  HttpError,
  listenOn,
  readJson,
  securityHeaders,
  sendError,
  sendJson,
  type ListenSpec,
} from './http.js';
import type { Metrics } from './metrics.js';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The compiled front end (dist/ui: its .js), its source folder (ui: the style sheet), and the vendored modules it imports. */
const UI_DIR = join(HERE, '..', '..', 'ui');
const UI_SOURCE = join(HERE, '..', '..', '..', 'ui');
const NODE_MODULES = join(HERE, '..', '..', '..', 'node_modules');

const VENDOR: Record<string, string> = {
  'preact.mjs': 'preact/dist/preact.mjs',
  'hooks.mjs': 'preact/hooks/dist/hooks.mjs',
  'jsx-runtime.mjs': 'preact/jsx-runtime/dist/jsxRuntime.mjs',
};

const IMPORT_MAP = JSON.stringify({
  imports: { preact: '/vendor/preact.mjs', 'preact/hooks': '/vendor/hooks.mjs', 'preact/jsx-runtime': '/vendor/jsx-runtime.mjs' },
});

const CONTENT_TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
};

function page(title: string, script: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title><link rel="stylesheet" href="/app/style.css">
<script type="importmap">${IMPORT_MAP}</script>
<script type="module" src="${script}"></script></head>
<body><div id="app"><noscript>The Phoenix dashboard needs JavaScript.</noscript></div></body></html>`;
}

const IMPORT_MAP_HASH = createHash('sha256').update(IMPORT_MAP).digest('base64');
export const CSP = [
  "default-src 'none'",
  `script-src 'self' 'sha256-${IMPORT_MAP_HASH}'`,
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

export interface WebOptions extends ApiContext {
  auth: Auth;
  hub: Hub | undefined;
  metrics: Metrics | undefined;
  /** More Host names to answer to (ui.hosts), besides the bound address and loopback names. */
  hosts?: readonly string[];
}

export class WebServer {
  readonly server: Server;
  url = '';
  #hosts = new Set<string>();
  readonly #static = new Map<string, Buffer>();

  constructor(readonly opts: WebOptions) {
    this.server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => sendError(res, err));
    });
    this.server.keepAliveTimeout = 5000;
  }

  async listen(spec: ListenSpec): Promise<string> {
    this.url = await listenOn(this.server, spec, 'http');
    this.#hosts = allowedHosts(this.url, this.opts.hosts);
    return this.url;
  }

  /** The one-time login link (for `phoenix ui`). */
  loginLink(): string {
    return `${this.url}login#code=${this.opts.auth.loginCode()}`;
  }

  async close(): Promise<void> {
    this.opts.hub?.close();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    securityHeaders(res, CSP);
    const hostProblem = hostReason(req, this.#hosts);
    if (hostProblem !== undefined)
      throw new HttpError(403, 'PHX_FORBIDDEN', hostProblem, 'open the dashboard by the address phoenix ui prints');
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const safe = method === 'GET' || method === 'HEAD';
    if (!safe) {
      const why = crossSiteReason(req, this.#hosts);
      if (why !== undefined) throw new HttpError(403, 'PHX_FORBIDDEN', `refused a cross-site request: ${why}`);
    }
    // Public: the login page, the app's code and style (they hold no data).
    if (path === '/login' && safe) return this.#html(res, page('Phoenix: log in', '/app/login.js'));
    if (path === '/api/login' && method === 'POST') return this.#login(req, res);
    if ((path.startsWith('/app/') || path.startsWith('/vendor/')) && safe) return this.#asset(path, res);
    if (path === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    const authed = this.opts.auth.allows(req.headers);
    if (!authed) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="phoenix"');
      if (path === '/' || path.startsWith('/ui')) {
        res.writeHead(401, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end('<!doctype html><title>Phoenix</title><p>Not logged in. Run <code>phoenix ui</code> for a login link.</p>');
        return;
      }
      throw new HttpError(
        401,
        'PHX_UNAUTHORIZED',
        'not logged in',
        'run phoenix ui for a login link, or send Authorization: Bearer $(cat ~/.local/state/phoenix/ui-token)',
      );
    }
    if (path === '/' && safe) return this.#html(res, page('Phoenix', '/app/main.js'));
    if (path === '/metrics' && safe) {
      if (this.opts.metrics === undefined) throw new HttpError(404, 'PHX_NOT_FOUND', 'metrics come from a running phoenix watch');
      const text = await this.opts.metrics.text();
      res.writeHead(200, { 'Content-Type': this.opts.metrics.contentType });
      res.end(text);
      return;
    }
    if (path === '/api/events' && safe) {
      if (this.opts.hub === undefined) throw new HttpError(404, 'PHX_NOT_FOUND', 'the live feed comes from a running phoenix watch');
      const last = req.headers['last-event-id'] ?? url.searchParams.get('lastEventId') ?? undefined;
      this.opts.hub.attach(res, typeof last === 'string' ? last : undefined, () => this.opts.live?.overview() ?? null);
      return;
    }
    const route = API[path];
    if (route === undefined) throw new HttpError(404, 'PHX_NOT_FOUND', `no such page: ${path}`);
    if (route.method === 'GET' ? !safe : method !== route.method) {
      res.setHeader('Allow', route.method);
      throw new HttpError(405, 'PHX_USAGE', `${path} takes ${route.method}`);
    }
    await route.handler(this.opts, url.searchParams, req, res);
  }

  async #login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req);
    const value = typeof body.code === 'string' ? this.opts.auth.redeem(body.code) : undefined;
    if (value === undefined)
      throw new HttpError(
        401,
        'PHX_UNAUTHORIZED',
        'this login link was used already or is too old (links last two minutes)',
        'run phoenix ui again',
      );
    res.setHeader('Set-Cookie', this.opts.auth.sessionCookie(value, false));
    sendJson(res, 200, { ok: true });
  }

  #html(res: ServerResponse, html: string): void {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  }

  #asset(path: string, res: ServerResponse): void {
    let data = this.#static.get(path);
    if (data === undefined) {
      let file: string | undefined;
      if (path.startsWith('/vendor/')) {
        const v = VENDOR[path.slice('/vendor/'.length)];
        if (v !== undefined) file = join(NODE_MODULES, v);
      } else {
        const rel = normalize(path.slice('/app/'.length));
        if (!rel.startsWith('..') && /^[\w./-]+$/.test(rel)) file = join(rel.endsWith('.js') ? UI_DIR : UI_SOURCE, rel);
      }
      if (file === undefined) throw new HttpError(404, 'PHX_NOT_FOUND', `no such file: ${path}`);
      try {
        data = readFileSync(file);
      } catch {
        throw new HttpError(404, 'PHX_NOT_FOUND', `no such file: ${path}`);
      }
      this.#static.set(path, data);
    }
    const ext = path.slice(path.lastIndexOf('.'));
    res.setHeader('Cache-Control', 'no-cache');
    res.writeHead(200, { 'Content-Type': CONTENT_TYPES[ext] ?? 'application/octet-stream', 'Content-Length': data.length });
    res.end(data);
  }
}
