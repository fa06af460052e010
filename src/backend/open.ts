import { resolve } from 'node:path';
import { PhoenixError } from '../errors.js';
import type { Backend } from './backend.js';
import { AzureBackend } from './azure.js';
import { LocalBackend } from './local.js';
import { MemoryBackend } from './memory.js';
import { S3Backend } from './s3.js';
import { SftpBackend } from './sftp.js';
import { WebDavBackend } from './webdav.js';
import { userInfo } from 'node:os';
import {
  LimitBackend,
  ObserveBackend,
  RateLimiter,
  RetryBackend,
  ThrottleBackend,
  type BackendObserver,
  type RetryOptions,
} from './wrappers.js';

export interface OpenOptions {
  retry?: RetryOptions;
  /** Operations in flight at once. */
  connections?: number;
  /** Bytes per second for uploads and downloads, shared by every backend of the process with the same limit. */
  limits?: { upload?: number | undefined; download?: number | undefined };
  /** Told of every request to the store (the daemon's metrics). */
  observe?: BackendObserver;
}

/** One budget per direction and rate for the whole process: every connection shares it. */
const limiters = new Map<string, RateLimiter>();
function limiter(direction: 'upload' | 'download', rate: number | undefined): RateLimiter | undefined {
  if (rate === undefined || rate <= 0) return undefined;
  const key = `${direction} ${rate}`;
  let l = limiters.get(key);
  if (l === undefined) limiters.set(key, (l = new RateLimiter(rate)));
  return l;
}

/**
 * Opens a repository URL:
 *   /path or local:/path                a local directory
 *   s3://bucket[/prefix][?endpoint=URL&region=R&path-style=true|false]
 *   gs://bucket[/prefix]                Google Cloud Storage through its S3-compatible XML API (HMAC keys)
 *   azure://container[/prefix][?endpoint=URL]
 *   memory:                             in memory (tests)
 * wrapped in retry (transient errors) and a concurrency limit.
 */
export function openBackend(url: string, opts: OpenOptions = {}): Backend {
  const parsed = parseUrl(url);
  const raw = opts.observe !== undefined ? new ObserveBackend(parsed, opts.observe) : parsed;
  const remote =
    parsed instanceof S3Backend || parsed instanceof AzureBackend || parsed instanceof SftpBackend || parsed instanceof WebDavBackend;
  const limited: Backend = new LimitBackend(raw, opts.connections ?? (remote ? 8 : 4));
  // Outside the concurrency limit: a transfer waiting for its budget holds no connection, so a small commit never waits for a slot behind it.
  const up = limiter('upload', opts.limits?.upload);
  const down = limiter('download', opts.limits?.download);
  const throttled = up !== undefined || down !== undefined ? new ThrottleBackend(limited, up, down) : limited;
  return new RetryBackend(throttled, opts.retry);
}

/** The URL's bucket (container) and prefix, and its query checked against the options it may have. */
function objectStoreUrl(url: string, form: string, known: string[]): { bucket: string; prefix: string; q: URLSearchParams } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw badUrl(url, `it does not parse as ${form}`);
  }
  if (u.hostname === '') throw badUrl(url, `the ${form.startsWith('azure') ? 'container' : 'bucket'} is missing`);
  const q = u.searchParams;
  for (const k of q.keys()) {
    if (!known.includes(k)) throw badUrl(url, `unknown option ${k} (${known.length > 0 ? `known: ${known.join(', ')}` : 'it takes none'})`);
  }
  return { bucket: u.hostname, prefix: decodeURIComponent(u.pathname.replace(/^\/+|\/+$/g, '')), q };
}

const GCS_ENDPOINT = 'https://storage.googleapis.com';

export function parseUrl(url: string): Backend {
  if (url === '') throw badUrl(url, 'it is empty');
  if (url.startsWith('/') || url.startsWith('./') || url.startsWith('../') || url.startsWith('~')) {
    return new LocalBackend(resolve(url.replace(/^~(?=\/|$)/, process.env.HOME ?? '~')));
  }
  if (url.startsWith('local:')) return new LocalBackend(resolve(url.slice('local:'.length)));
  if (url === 'memory:') return new MemoryBackend();
  if (url.startsWith('s3://')) {
    const { bucket, prefix, q } = objectStoreUrl(url, 's3://bucket/prefix', ['endpoint', 'region', 'path-style']);
    const pathStyle = q.get('path-style');
    if (pathStyle !== null && pathStyle !== 'true' && pathStyle !== 'false') throw badUrl(url, 'path-style must be true or false');
    return new S3Backend({
      bucket,
      prefix,
      ...(q.get('endpoint') !== null ? { endpoint: q.get('endpoint') as string } : {}),
      ...(q.get('region') !== null ? { region: q.get('region') as string } : {}),
      ...(pathStyle !== null ? { pathStyle: pathStyle === 'true' } : {}),
    });
  }
  if (url.startsWith('gs://')) {
    // GCS's XML API speaks S3 with HMAC keys: GS_ACCESS_KEY_ID / GS_SECRET_ACCESS_KEY (boto's
    // names), else the AWS_* pair. `endpoint` is for a private or test endpoint.
    const { bucket, prefix, q } = objectStoreUrl(url, 'gs://bucket/prefix', ['endpoint']);
    const id = process.env.GS_ACCESS_KEY_ID;
    const secret = process.env.GS_SECRET_ACCESS_KEY;
    return new S3Backend({
      bucket,
      prefix,
      scheme: 'gs',
      endpoint: q.get('endpoint') ?? GCS_ENDPOINT,
      region: 'auto',
      ...(id && secret ? { credentials: { accessKeyId: id, secretAccessKey: secret } } : {}),
    });
  }
  if (url.startsWith('azure://')) {
    const { bucket, prefix, q } = objectStoreUrl(url, 'azure://container/prefix', ['endpoint']);
    if (!/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/.test(bucket)) {
      throw badUrl(url, `${JSON.stringify(bucket)} is not a valid container name (3 to 63 lowercase letters, digits and single hyphens)`);
    }
    const endpoint = q.get('endpoint') ?? process.env.AZURE_STORAGE_ENDPOINT;
    return new AzureBackend({ container: bucket, prefix, ...(endpoint ? { endpoint } : {}) });
  }
  if (url.startsWith('sftp://')) return sftpBackend(url);
  if (url.startsWith('webdav://') || url.startsWith('webdavs://')) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw badUrl(url, 'it does not parse as webdav://HOST/PATH');
    }
    if (u.hostname === '') throw badUrl(url, 'the host is missing');
    if ([...u.searchParams.keys()].length > 0) throw badUrl(url, 'a webdav:// URL takes no options');
    const env = process.env;
    const username = u.username !== '' ? decodeURIComponent(u.username) : env.PHOENIX_WEBDAV_USER || undefined;
    const password = u.password !== '' ? decodeURIComponent(u.password) : env.PHOENIX_WEBDAV_PASSWORD;
    return new WebDavBackend({
      url: `${u.protocol === 'webdavs:' ? 'https' : 'http'}://${u.host}${u.pathname}`,
      ...(username !== undefined ? { username, password: password ?? '' } : {}),
    });
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  if (scheme !== undefined) {
    throw badUrl(
      url,
      `the scheme ${scheme}: is not supported (supported: a local path, local:PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, azure://CONTAINER/PREFIX, sftp://USER@HOST/PATH, webdav://HOST/PATH, webdavs://HOST/PATH)`,
    );
  }
  return new LocalBackend(resolve(url));
}

/**
 * `sftp://[USER@]HOST[:PORT]/PATH[?key=FILE&known-hosts=FILE&host-key=SHA256:…]`. PATH is
 * absolute (`//PATH`, restic's spelling, too); `/~/PATH` is relative to the login directory.
 */
function sftpBackend(url: string): SftpBackend {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw badUrl(url, 'it does not parse as sftp://USER@HOST:PORT/PATH');
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (host === '') throw badUrl(url, 'the host is missing');
  const known = ['key', 'known-hosts', 'host-key'];
  for (const k of u.searchParams.keys()) if (!known.includes(k)) throw badUrl(url, `unknown option ${k} (known: ${known.join(', ')})`);
  if (u.password !== '') throw badUrl(url, 'it holds a password: Phoenix logs in with SSH keys (the agent, ~/.ssh, or ?key=FILE)');
  let path = decodeURIComponent(u.pathname);
  if (path === '/~' || path.startsWith('/~/')) path = path.slice(3) || '.';
  else path = `/${path.replace(/^\/+/, '')}`;
  if (path === '/') throw badUrl(url, 'the path is missing (sftp://HOST/srv/backup, or /~/backup below the login directory)');
  // A fingerprint's '+' reads as a space in a query: base64 has no spaces, so turn them back.
  const hostKey = u.searchParams.get('host-key')?.replace(/ /g, '+') ?? null;
  if (hostKey !== null && !/^SHA256:[A-Za-z0-9+/]{43}$/.test(hostKey)) {
    throw badUrl(url, 'host-key must be a SHA-256 fingerprint as ssh-keygen -lf prints it (SHA256: and 43 characters)');
  }
  const keyFile = u.searchParams.get('key') ?? (process.env.PHOENIX_SFTP_KEY || undefined);
  const knownHosts = u.searchParams.get('known-hosts');
  return new SftpBackend({
    host,
    port: u.port === '' ? 22 : Number(u.port),
    user: decodeURIComponent(u.username) || process.env.USER || userInfo().username,
    path,
    ...(keyFile !== undefined ? { keyFile: keyFile.replace(/^~(?=\/|$)/, process.env.HOME ?? '~') } : {}),
    ...(knownHosts !== null ? { knownHosts: [knownHosts] } : {}),
    ...(hostKey !== null ? { hostKey } : {}),
  });
}

function badUrl(url: string, why: string): PhoenixError {
  return new PhoenixError('PHX_BAD_URL', `repository URL ${JSON.stringify(url)} cannot be used: ${why}`, {
    hint: 'examples: /mnt/backup/phoenix, s3://my-bucket/phoenix?endpoint=https://s3.example.com',
  });
}

/**
 * A URL that is valid but probably not what was meant: `s3//bucket` (a missing colon) is the
 * local directory ./s3/bucket. The warning to print, or undefined.
 */
export function urlWarning(url: string): string | undefined {
  const m = /^([a-z][a-z0-9+.-]*)\/\/(.*)$/i.exec(url);
  if (m === null) return undefined;
  return `repository ${JSON.stringify(url)} is read as the local directory ${resolve(url)}; did you mean ${m[1]}://${m[2]}?`;
}
