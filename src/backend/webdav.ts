import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { FileStat, ResponseDataDetailed, WebDAVClient } from 'webdav';
import {
  BackendError,
  bodyBytes,
  checkRange,
  exists,
  notFound,
  pastEnd,
  type Backend,
  type Body,
  type ByteRange,
  type ObjectInfo,
  checkKey,
  listByDirectory,
  tmpName,
} from './backend.js';

export interface WebDavOptions {
  /** The collection the repository lives in: `http(s)://HOST[:PORT]/PATH`, without credentials. */
  url: string;
  username?: string;
  password?: string;
}

/**
 * A collection on a WebDAV server (Nextcloud/ownCloud, a NAS, a Hetzner Storage Box,
 * `rclone serve webdav` in front of anything rclone reaches), through the `webdav` client. A
 * put uploads to `.tmp-RAND` beside the object and MOVEs it into place (Overwrite: T), so a
 * reader sees the old object or the new one, never half of one. WebDAV servers check
 * `Overwrite: F` and then rename, not atomically: create-only is not claimed.
 */
export class WebDavBackend implements Backend {
  readonly location: string;
  readonly capabilities = { createOnly: false };
  readonly #opts: WebDavOptions;
  /** Collections made (or being made) by this process: concurrent puts into one new collection MKCOL it once (rclone answers a second MKCOL under way with 423). */
  readonly #dirs = new Map<string, Promise<void>>();
  #client: Promise<WebDAVClient> | undefined;
  readonly #agent: HttpAgent | HttpsAgent;
  /** For a request sent again after a kept-alive connection was reset: a connection of its own. */
  readonly #fresh: HttpAgent | HttpsAgent;
  /** The repository's collection, as a path from the server's root (the client is rooted there, so that it can create it). */
  readonly #base: string;

  constructor(opts: WebDavOptions) {
    const u = new URL(opts.url);
    this.#opts = { ...opts, url: u.origin };
    this.#base = decodeURIComponent(u.pathname).replace(/\/+$/, '');
    this.location = `${u.protocol === 'https:' ? 'webdavs' : 'webdav'}://${u.host}${u.pathname}`.replace(/\/$/, '');
    this.#agent = u.protocol === 'https:' ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
    this.#fresh = u.protocol === 'https:' ? new HttpsAgent({ keepAlive: false }) : new HttpAgent({ keepAlive: false });
  }

  #dav(): Promise<WebDAVClient> {
    this.#client ??= import('webdav').then(({ createClient }) => {
      const make = (agent: HttpAgent | HttpsAgent): WebDAVClient =>
        createClient(this.#opts.url, {
          ...(this.#opts.username !== undefined ? { username: this.#opts.username, password: this.#opts.password ?? '' } : {}),
          httpAgent: agent,
          httpsAgent: agent,
          maxBodyLength: Infinity,
          maxContentLength: Infinity,
        });
      return staleRetrying(make(this.#agent), make(this.#fresh));
    });
    return this.#client;
  }

  #path(key: string): string {
    checkKey(this.location, key);
    return `${this.#base}/${key}`;
  }

  async put(key: string, body: Body, opts: { createOnly?: boolean } = {}): Promise<void> {
    const path = this.#path(key);
    const dir = path.slice(0, path.lastIndexOf('/'));
    const tmp = tmpName(dir);
    const data = bodyBytes(body);
    const dav = await this.#dav();
    try {
      await this.#mkdirs(dav, dir);
      await dav.putFileContents(tmp, Buffer.from(data.buffer, data.byteOffset, data.byteLength), {
        overwrite: true,
        contentLength: data.length,
      });
      try {
        await dav.moveFile(tmp, path, { overwrite: opts.createOnly !== true });
      } catch (err) {
        if (opts.createOnly === true && status(err) === 412) throw exists(this.location, key);
        throw err;
      }
    } catch (err) {
      await dav.deleteFile(tmp).catch(() => {});
      throw this.#error(err, key, 'put');
    }
  }

  /** MKCOL `dir`, and its parents where the server says they are missing (409, RFC 4918 9.3.1). */
  #mkdirs(dav: WebDAVClient, dir: string): Promise<void> {
    if (dir === '') return Promise.resolve();
    let made = this.#dirs.get(dir);
    if (made === undefined) {
      made = this.#mkcol(dav, dir);
      made.catch(() => this.#dirs.delete(dir));
      this.#dirs.set(dir, made);
    }
    return made;
  }

  async #mkcol(dav: WebDAVClient, dir: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await dav.createDirectory(dir);
      } catch (err) {
        const s = status(err);
        if (s === 409 && attempt === 0 && dir.lastIndexOf('/') > 0) {
          await this.#mkdirs(dav, dir.slice(0, dir.lastIndexOf('/')));
          continue;
        }
        // 405: it exists already; anything else shows at the upload.
        if (s !== 405 && s !== 301) throw err;
      }
      return;
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    if (range !== undefined && range.length === 0) {
      const { size } = await this.stat(key);
      checkRange(this.location, key, size, range);
      return Buffer.alloc(0);
    }
    if (range !== undefined) checkRange(this.location, key, Number.MAX_SAFE_INTEGER, range);
    const dav = await this.#dav();
    try {
      const r = (await dav.getFileContents(this.#path(key), {
        format: 'binary',
        details: true,
        ...(range !== undefined ? { headers: { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } } : {}),
      })) as ResponseDataDetailed<ArrayBuffer | Buffer>;
      let data = Buffer.isBuffer(r.data) ? r.data : Buffer.from(r.data);
      if (range !== undefined) {
        // 200: the server sent the whole object (Range ignored); 206: the part asked for, or a shorter tail.
        const cr = r.headers['content-range'];
        const start = r.status === 206 && cr !== undefined ? Number(/^bytes (\d+)-/.exec(cr)?.[1] ?? NaN) : 0;
        const from = range.offset - start;
        if (!(from >= 0) || from + range.length > data.length) throw pastEnd(this.location, key, range, start + data.length);
        data = data.subarray(from, from + range.length);
      }
      return data;
    } catch (err) {
      if (err instanceof BackendError) throw err;
      if (status(err) === 416 && range !== undefined) throw pastEnd(this.location, key, range, (await this.stat(key)).size);
      throw this.#error(err, key, 'get');
    }
  }

  async stat(key: string): Promise<ObjectInfo> {
    const dav = await this.#dav();
    try {
      const st = (await dav.stat(this.#path(key))) as FileStat;
      if (st.type === 'directory') throw notFound(this.location, key);
      return info(key, st);
    } catch (err) {
      throw this.#error(err, key, 'stat');
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const dav = await this.#dav();
    yield* listByDirectory(prefix, async (rel) => {
      let entries: FileStat[];
      try {
        // Depth 1, one collection at a time: many servers refuse Depth: infinity.
        entries = (await dav.getDirectoryContents(rel === '' ? this.#base || '/' : `${this.#base}/${rel}`)) as FileStat[];
      } catch (err) {
        if (status(err) === 404) return undefined;
        throw this.#error(err, prefix, 'list');
      }
      return entries.map((e) => {
        const { key: _key, ...sized } = info(e.basename, e);
        return { name: e.basename, dir: e.type === 'directory', info: sized };
      });
    });
  }

  async delete(key: string): Promise<void> {
    const dav = await this.#dav();
    try {
      await dav.deleteFile(this.#path(key));
    } catch (err) {
      if (status(err) !== 404) throw this.#error(err, key, 'delete');
    }
  }

  async close(): Promise<void> {
    this.#agent.destroy();
    this.#fresh.destroy();
  }

  #error(err: unknown, key: string, op: string): BackendError {
    if (err instanceof BackendError) return err;
    const code = status(err);
    const e = err as Error & { code?: string; cause?: { code?: string } };
    const sys = e.code ?? e.cause?.code;
    if (code === 404) return notFound(this.location, key);
    if (code === 401) {
      return new BackendError('PHX_BACKEND', `${this.location}: the server refused the login (${op} ${key}: HTTP 401)`, {
        key,
        hint: 'check the user and password (in the URL, or PHOENIX_WEBDAV_USER and PHOENIX_WEBDAV_PASSWORD); Nextcloud wants an app password',
        cause: err,
      });
    }
    if (code === 403) {
      return new BackendError('PHX_BACKEND', `${this.location}: permission denied (${op} ${key}: HTTP 403)`, {
        key,
        hint: 'the user needs to be allowed to write below the URL: check the share and its permissions',
        cause: err,
      });
    }
    if (code === 507) {
      return new BackendError('PHX_BACKEND', `${this.location}: the server is out of space (${op} ${key}: HTTP 507 Insufficient Storage)`, {
        key,
        hint: 'free space or raise the quota on the server (phoenix forget and prune remove what the policy does not keep)',
        cause: err,
      });
    }
    if (sys === 'ECONNREFUSED') {
      return new BackendError('PHX_BACKEND', `${this.location}: the server refused the connection (${op} ${key})`, {
        key,
        transient: true,
        hint: 'is the WebDAV server running, and are the host and port right?',
        cause: err,
      });
    }
    if (sys === 'ENOTFOUND') {
      return new BackendError('PHX_BACKEND', `${this.location}: cannot resolve the host name (${op} ${key})`, {
        key,
        hint: 'check the host name in the URL and the network',
        cause: err,
      });
    }
    const transient = code === undefined || code >= 500 || code === 429 || code === 408 || code === 423;
    const what = code === undefined ? `${e.message}${sys !== undefined ? ` (${sys})` : ''}` : `HTTP ${code}`;
    return new BackendError('PHX_BACKEND', `${this.location}: ${op} ${key} failed: ${what}`, { key, transient, cause: err });
  }
}

/**
 * The client, with each request sent once more, on a new connection, when it failed with a
 * reset before any answer: a kept-alive connection the server had closed (Apache's event MPM
 * closes idle ones under load), as browsers and Go's client retry. Every request Phoenix
 * sends may be repeated (PUT and MOVE of the same bytes, GET, PROPFIND, DELETE).
 */
function staleRetrying(client: WebDAVClient, fresh: WebDAVClient): WebDAVClient {
  const stale = (err: unknown): boolean => {
    const e = err as { code?: string; cause?: { code?: string }; status?: number };
    return e.status === undefined && /ECONNRESET|EPIPE/.test(`${e.code ?? ''} ${e.cause?.code ?? ''} ${String(err)}`);
  };
  return new Proxy(client, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return async (...args: unknown[]) => {
        try {
          return await (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } catch (err) {
          if (!stale(err)) throw err;
          return (Reflect.get(fresh, prop) as (...a: unknown[]) => Promise<unknown>).apply(fresh, args);
        }
      };
    },
  });
}

function info(key: string, st: FileStat): ObjectInfo {
  const out: ObjectInfo = { key, size: st.size };
  const t = Date.parse(st.lastmod);
  if (Number.isFinite(t)) out.mtimeMs = t;
  return out;
}

function status(err: unknown): number | undefined {
  const s =
    (err as { status?: unknown; response?: { status?: unknown } }).status ?? (err as { response?: { status?: unknown } }).response?.status;
  return typeof s === 'number' ? s : undefined;
}
