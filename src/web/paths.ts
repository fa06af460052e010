/** Paths from requests are untrusted: checked here, and turned into exact raw bytes. */

import { rawFromBuffer, rawFromUtf8, type RawPath } from '../model/path.js';
import { HttpError } from './http.js';

/**
 * A path inside a source from `path` (UTF-8) or `pathBase64` (exact bytes, for names that
 * are not UTF-8): relative, '/'-separated, no empty, `.` or `..` segment, no NUL. `''` or
 * `.` or `/` is the source's root.
 */
export function requestPath(q: URLSearchParams, key = 'path'): RawPath {
  return pathFrom(q.get(key) ?? '', q.get(`${key}Base64`) ?? undefined, key);
}

/** The same from a request body's `{path}` or `{pathBase64}`. */
export function pathFrom(utf8: string, base64: string | undefined, key = 'path'): RawPath {
  if (base64 !== undefined) {
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(base64)) throw new HttpError(400, 'PHX_USAGE', `${key}Base64 is not base64`);
    return checkedPath(rawFromBuffer(Buffer.from(base64, 'base64')));
  }
  return checkedPath(rawFromUtf8(utf8));
}

export function checkedPath(raw: RawPath): RawPath {
  let p = raw.replace(/^\/+/, '').replace(/\/+$/, '');
  if (p === '.') p = '';
  if (p === '') return '';
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.' || seg === '..' || seg.includes('\0')) {
      throw new HttpError(
        400,
        'PHX_USAGE',
        `the path ${JSON.stringify(Buffer.from(raw, 'latin1').toString('utf8'))} is not a plain path inside the source`,
        'give it relative to the source, without . or .. or empty parts',
      );
    }
  }
  return p;
}

/** The raw bytes of a URL path's segments (percent-decoded as bytes, never as UTF-8). */
export function urlSegments(pathname: string): RawPath[] {
  const out: RawPath[] = [];
  for (const seg of pathname.split('/')) {
    if (seg === '') continue;
    let bytes: Buffer;
    try {
      bytes = percentBytes(seg);
    } catch {
      throw new HttpError(400, 'PHX_USAGE', `malformed percent-encoding in ${JSON.stringify(seg)}`);
    }
    const raw = rawFromBuffer(bytes);
    if (raw === '.' || raw === '..' || raw.includes('\0') || raw.includes('/'))
      throw new HttpError(400, 'PHX_USAGE', 'the URL has a . or .. or a bad segment');
    out.push(raw);
  }
  return out;
}

function percentBytes(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 37) {
      const h = s.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(h)) throw new Error('bad escape');
      out.push(parseInt(h, 16));
      i += 2;
    } else if (c < 256) {
      out.push(c); // Node reads the request line as latin1: one char per byte
    } else {
      for (const b of Buffer.from(s[i] as string, 'utf8')) out.push(b);
    }
  }
  return Buffer.from(out);
}

/** A raw name as one percent-encoded URL segment: every byte outside the unreserved set escaped. */
export function encodeSegment(raw: RawPath): string {
  let s = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    const ch = raw[i] as string;
    s += /[A-Za-z0-9\-._~]/.test(ch) && c < 128 ? ch : `%${c.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return s;
}
