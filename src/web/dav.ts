/**
 * A read-only WebDAV server (class 1) over the repository: every second of the past as a
 * folder. /SOURCE/latest/, /SOURCE/at/INSTANT/ (any instant: the last commit at or before
 * it), /SOURCE/commits/SEQ/. OPTIONS, PROPFIND (depth 0 and 1), GET and HEAD with a Range;
 * everything else is 405. Names travel as percent-encoded bytes, so a name that is not UTF-8
 * comes back exactly. Basic auth: user `phoenix`, the password is the token in `ui-token`.
 */

import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { PhoenixError } from '../errors.js';
import { joinRaw, rawFromUtf8, rawToBuffer, utf8Of, type RawPath } from '../model/path.js';
import type { FileRecord } from '../repo/index.js';
import { parseTime } from '../util/duration.js';
import type { Auth } from './auth.js';
import type { Catalog, Snapshot } from './catalog.js';
import { allowedHosts, hostReason, HttpError, listenOn, type ListenSpec } from './http.js';
import { encodeSegment, urlSegments } from './paths.js';

const ALLOW = 'OPTIONS, PROPFIND, GET, HEAD';
/** Folders listed under at/ and commits/: the latest commits (any instant works as a name anyway). */
const LISTED_COMMITS = 1000;

interface DavEntry {
  /** The URL path, percent-encoded; collections end in '/'. */
  href: string;
  name: RawPath;
  collection: boolean;
  size: number;
  mtimeMs: number;
  etag: string;
}

export class DavServer {
  readonly server: Server;
  url = '';
  #hosts = new Set<string>();

  constructor(
    readonly catalog: Catalog,
    readonly auth: Auth,
    readonly hosts: readonly string[] = [],
  ) {
    this.server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => fail(res, err));
    });
    this.server.keepAliveTimeout = 5000;
  }

  async listen(spec: ListenSpec): Promise<string> {
    this.url = await listenOn(this.server, spec, 'http');
    this.#hosts = allowedHosts(this.url, this.hosts);
    return this.url;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('DAV', '1');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Content-Security-Policy', "sandbox; default-src 'none'");
    const why = hostReason(req, this.#hosts);
    if (why !== undefined) throw new HttpError(403, 'PHX_FORBIDDEN', why);
    if (!this.auth.allows(req.headers, { basic: true, cookie: false })) {
      req.resume(); // the body of a refused request is dropped
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="phoenix", charset="UTF-8"', 'Content-Type': 'text/plain' });
      res.end('log in as phoenix with the token in ui-token as the password\n');
      return;
    }
    const method = req.method ?? 'GET';
    if (method === 'OPTIONS') {
      res.writeHead(200, { Allow: ALLOW, 'MS-Author-Via': 'DAV', 'Content-Length': 0 });
      res.end();
      return;
    }
    if (method !== 'PROPFIND' && method !== 'GET' && method !== 'HEAD') {
      req.resume();
      res.writeHead(405, { Allow: ALLOW, 'Content-Type': 'text/plain' });
      res.end('this WebDAV server is read-only\n');
      return;
    }
    const rawUrl = (req.url ?? '/').split('?')[0] as string;
    const segs = urlSegments(rawUrl);
    if (method === 'PROPFIND') {
      let n = 0;
      for await (const c of req)
        if ((n += (c as Buffer).length) > 1 << 20) throw new HttpError(413, 'PHX_USAGE', 'the PROPFIND body is too large');
      const depth = (req.headers.depth ?? 'infinity').toString().toLowerCase();
      if (depth !== '0' && depth !== '1') {
        res.writeHead(403, { 'Content-Type': 'application/xml; charset=utf-8' });
        res.end('<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:"><D:propfind-finite-depth/></D:error>\n');
        return;
      }
      const self = await this.#resolve(segs);
      const entries = [self.entry];
      if (depth === '1' && self.entry.collection) entries.push(...(await self.children()));
      const body = multistatus(entries);
      res.writeHead(207, { 'Content-Type': 'application/xml; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const target = await this.#resolve(segs);
    if (target.entry.collection) {
      const names = (await target.children()).map((e) => rawToBuffer(e.name).toString('utf8') + (e.collection ? '/' : ''));
      const body = `${names.join('\n')}\n`;
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }
    await this.#file(req, res, target.record as FileRecord, target.entry);
  }

  async #file(req: IncomingMessage, res: ServerResponse, rec: FileRecord, e: DavEntry): Promise<void> {
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      'Last-Modified': new Date(e.mtimeMs).toUTCString(),
      ETag: e.etag,
    };
    let start = 0;
    let end = rec.size;
    let status = 200;
    const range = req.headers.range;
    if (range !== undefined && (req.headers['if-range'] === undefined || req.headers['if-range'] === e.etag)) {
      const r = parseRange(range, rec.size);
      if (r === 'unsatisfiable') {
        res.writeHead(416, { 'Content-Range': `bytes */${rec.size}` });
        res.end();
        return;
      }
      if (r !== undefined) {
        [start, end] = r;
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end - 1}/${rec.size}`;
      }
    }
    headers['Content-Length'] = end - start;
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || end === start) {
      res.end();
      return;
    }
    for await (const b of this.catalog.content(rec, start, end)) if (!res.write(b)) await once(res, 'drain');
    res.end();
  }

  /** What a URL names: the entry for PROPFIND, its children, and the record for a file. */
  async #resolve(segs: RawPath[]): Promise<{ entry: DavEntry; children: () => Promise<DavEntry[]>; record?: FileRecord }> {
    const href = (parts: RawPath[], collection: boolean): string =>
      `/${parts.map(encodeSegment).join('/')}${collection && parts.length > 0 ? '/' : ''}`;
    const folder = (parts: RawPath[], mtimeMs = 0): DavEntry => ({
      href: href(parts, true),
      name: parts.at(-1) ?? '',
      collection: true,
      size: 0,
      mtimeMs,
      etag: `W/"${createHash('sha256').update(parts.join('/')).digest('hex').slice(0, 16)}"`,
    });
    const sources = await this.catalog.sources();
    if (segs.length === 0) {
      return { entry: folder([]), children: async () => sources.map((s) => folder([rawFromUtf8(s)])) };
    }
    const source = utf8Of(segs[0] as RawPath);
    if (source === undefined || !sources.includes(source)) throw new HttpError(404, 'PHX_NOT_FOUND', 'no such source');
    const root = segs.slice(0, 1);
    if (segs.length === 1) {
      const lastMs = (await this.catalog.commits(source)).at(-1)?.timeMs ?? 0;
      return { entry: folder(root, lastMs), children: async () => ['latest', 'at', 'commits'].map((n) => folder([...root, n], lastMs)) };
    }
    const kind = segs[1];
    let snap: Snapshot;
    let rest: RawPath[];
    if (kind === 'latest') {
      snap = await this.catalog.snapshot(source);
      rest = segs.slice(2);
    } else if (kind === 'at' || kind === 'commits') {
      if (segs.length === 2) {
        const commits = (await this.catalog.commits(source)).slice(-LISTED_COMMITS);
        return {
          entry: folder(segs),
          children: async () =>
            commits.map((c) => folder([...segs, kind === 'at' ? new Date(c.timeMs).toISOString() : String(c.seq)], c.timeMs)),
        };
      }
      const name = segs[2] as RawPath;
      try {
        if (kind === 'commits') {
          if (!/^\d+$/.test(name)) throw new HttpError(404, 'PHX_NOT_FOUND', 'commits/ holds commit numbers');
          snap = await this.catalog.snapshot(source, { seq: Number(name) });
        } else {
          let atMs: number;
          try {
            atMs = parseTime(rawToBuffer(name).toString('utf8'));
          } catch {
            throw new HttpError(404, 'PHX_NOT_FOUND', 'at/ holds instants (ISO 8601)');
          }
          snap = await this.catalog.snapshot(source, { atMs });
        }
      } catch (err) {
        if (err instanceof PhoenixError && err.code === 'PHX_NOT_IN_REPO') throw new HttpError(404, 'PHX_NOT_FOUND', err.message);
        throw err;
      }
      rest = segs.slice(3);
    } else {
      throw new HttpError(404, 'PHX_NOT_FOUND', 'a source holds latest/, at/ and commits/');
    }
    const base = segs.slice(0, segs.length - rest.length);
    const path = rest.reduce((a, b) => joinRaw(a, b), '' as RawPath);
    const entryOf = (r: FileRecord): DavEntry => {
      const parts = [...base, ...r.path.split('/')];
      const mtimeMs = Number(r.mtimeNs / 1_000_000n);
      const dir = r.type === 'dir';
      return {
        href: href(parts, dir),
        name: parts.at(-1) as RawPath,
        collection: dir,
        size: dir ? 0 : r.size,
        mtimeMs,
        etag: dir
          ? `W/"${snap.seq}"`
          : `"${createHash('sha256')
              .update(r.chunks.map((c) => c.id).join(','))
              .digest('hex')
              .slice(0, 24)}"`,
      };
    };
    const shown = (r: FileRecord): boolean => r.type === 'file' || r.type === 'dir';
    if (path === '') return { entry: folder(base, snap.timeMs), children: async () => snap.children('').filter(shown).map(entryOf) };
    const rec = snap.get(path);
    if (rec === undefined || !shown(rec)) throw new HttpError(404, 'PHX_NOT_FOUND', 'not in that commit');
    return {
      entry: entryOf(rec),
      children: async () => snap.children(path).filter(shown).map(entryOf),
      record: rec,
    };
  }
}

function xml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function multistatus(entries: DavEntry[]): string {
  const out = ['<?xml version="1.0" encoding="utf-8"?>', '<D:multistatus xmlns:D="DAV:">'];
  for (const e of entries) {
    const name = utf8Of(e.name);
    out.push(
      `<D:response><D:href>${xml(e.href)}</D:href><D:propstat><D:prop>`,
      e.collection ? '<D:resourcetype><D:collection/></D:resourcetype>' : '<D:resourcetype/>',
      ...(name !== undefined && name !== '' ? [`<D:displayname>${xml(name)}</D:displayname>`] : []),
      ...(e.collection
        ? []
        : [`<D:getcontentlength>${e.size}</D:getcontentlength>`, '<D:getcontenttype>application/octet-stream</D:getcontenttype>']),
      `<D:getlastmodified>${new Date(e.mtimeMs).toUTCString()}</D:getlastmodified>`,
      `<D:getetag>${xml(e.etag)}</D:getetag>`,
      '</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>',
    );
  }
  out.push('</D:multistatus>', '');
  return out.join('\n');
}

/** One byte range of `bytes=…` as [start, end), undefined to send it all (several ranges), or unsatisfiable. */
export function parseRange(h: string, size: number): [number, number] | undefined | 'unsatisfiable' {
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (m === null) return undefined;
  const [, a, b] = m as unknown as [string, string, string];
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const n = Math.min(Number(b), size);
    if (n === 0) return 'unsatisfiable';
    return [size - n, size];
  }
  const start = Number(a);
  if (start >= size) return 'unsatisfiable';
  const end = b === '' ? size : Math.min(Number(b) + 1, size);
  if (end <= start) return 'unsatisfiable';
  return [start, end];
}

function fail(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const status = err instanceof HttpError ? err.status : 500;
  const message = err instanceof Error ? err.message : String(err);
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(`${message}\n`);
}
