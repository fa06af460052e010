import { resolve } from 'node:path';
import { PhoenixError } from '../errors.js';
import type { Backend } from './backend.js';
import { LocalBackend } from './local.js';
import { MemoryBackend } from './memory.js';
import { S3Backend } from './s3.js';
import { LimitBackend, RetryBackend, type RetryOptions } from './wrappers.js';

export interface OpenOptions {
  retry?: RetryOptions;
  /** Operations in flight at once. */
  connections?: number;
}

/**
 * Opens a repository URL:
 *   /path or local:/path                a local directory
 *   s3://bucket[/prefix][?endpoint=URL&region=R&path-style=true|false]
 *   memory:                             in memory (tests)
 * wrapped in retry (transient errors) and a concurrency limit.
 */
export function openBackend(url: string, opts: OpenOptions = {}): Backend {
  const raw = parseUrl(url);
  return new RetryBackend(new LimitBackend(raw, opts.connections ?? (raw instanceof S3Backend ? 8 : 4)), opts.retry);
}

export function parseUrl(url: string): Backend {
  if (url === '') throw badUrl(url, 'it is empty');
  if (url.startsWith('/') || url.startsWith('./') || url.startsWith('../') || url.startsWith('~')) {
    return new LocalBackend(resolve(url.replace(/^~(?=\/|$)/, process.env.HOME ?? '~')));
  }
  if (url.startsWith('local:')) return new LocalBackend(resolve(url.slice('local:'.length)));
  if (url === 'memory:') return new MemoryBackend();
  if (url.startsWith('s3://')) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw badUrl(url, 'it does not parse as s3://bucket/prefix');
    }
    if (u.hostname === '') throw badUrl(url, 'the bucket is missing');
    const q = u.searchParams;
    const known = new Set(['endpoint', 'region', 'path-style']);
    for (const k of q.keys()) if (!known.has(k)) throw badUrl(url, `unknown option ${k} (known: ${[...known].join(', ')})`);
    const pathStyle = q.get('path-style');
    if (pathStyle !== null && pathStyle !== 'true' && pathStyle !== 'false') throw badUrl(url, 'path-style must be true or false');
    return new S3Backend({
      bucket: u.hostname,
      prefix: decodeURIComponent(u.pathname.replace(/^\/+|\/+$/g, '')),
      ...(q.get('endpoint') !== null ? { endpoint: q.get('endpoint') as string } : {}),
      ...(q.get('region') !== null ? { region: q.get('region') as string } : {}),
      ...(pathStyle !== null ? { pathStyle: pathStyle === 'true' } : {}),
    });
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  if (scheme !== undefined) {
    throw badUrl(url, `the scheme ${scheme}: is not supported (supported: a local path, local:PATH, s3://BUCKET/PREFIX)`);
  }
  return new LocalBackend(resolve(url));
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
