/**
 * Who may use the dashboard, the metrics and the WebDAV server: the holder of the bearer token
 * in `ui-token` (state directory, mode 0600), or a browser holding a session cookie it got by
 * trading a one-time login link (`phoenix ui`). Sessions are signed with the token, so they
 * outlive a restart of the daemon and all end when the token file is replaced.
 */

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, PhoenixError } from '../errors.js';

export const TOKEN_FILE = 'ui-token';
const SESSION_MS = 30 * 86_400_000;
const LOGIN_CODE_MS = 120_000;

/** The token in `stateDir/ui-token`, created (0600) at the first start. */
export function loadToken(stateDir: string): string {
  const path = join(stateDir, TOKEN_FILE);
  try {
    const t = readFileSync(path, 'utf8').trim();
    if (t.length < 16) {
      throw new PhoenixError('PHX_CONFIG', `${path} holds no usable token (${t.length} characters)`, {
        hint: `remove it: a new one is made at the next start`,
      });
    }
    return t;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const t = randomBytes(32).toString('base64url');
  try {
    writeFileSync(path, `${t}\n`, { mode: 0o600, flag: 'wx' });
    return t;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return loadToken(stateDir); // made by another process just now
    throw err;
  }
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class Auth {
  readonly #token: string;
  /** One-time login codes and when they expire. */
  readonly #codes = new Map<string, number>();
  /** Names the session cookie: several daemons on one host (different ports) share cookies by host. */
  readonly instance: string;

  constructor(token: string) {
    this.#token = token;
    this.instance = createHash('sha256').update(`phoenix instance ${token}`).digest('hex').slice(0, 12);
  }

  get cookieName(): string {
    return `phoenix_session_${this.instance}`;
  }

  /** A code for one login within two minutes. */
  loginCode(): string {
    const now = Date.now();
    for (const [c, exp] of this.#codes) if (exp < now) this.#codes.delete(c);
    const code = randomBytes(24).toString('base64url');
    this.#codes.set(code, now + LOGIN_CODE_MS);
    return code;
  }

  /** Trades a login code (used once) for a session cookie's value; undefined when it is unknown or old. */
  redeem(code: string): string | undefined {
    const exp = this.#codes.get(code);
    this.#codes.delete(code);
    if (exp === undefined || exp < Date.now()) return undefined;
    const body = `${randomBytes(12).toString('base64url')}.${Date.now() + SESSION_MS}`;
    return `${body}.${this.#mac(body)}`;
  }

  sessionCookie(value: string, secure: boolean): string {
    return `${this.cookieName}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_MS / 1000}${secure ? '; Secure' : ''}`;
  }

  #mac(body: string): string {
    return createHmac('sha256', this.#token).update(`phoenix session ${body}`).digest('base64url');
  }

  /** True for `Authorization: Bearer TOKEN`, Basic `phoenix:TOKEN` (when `basic`), or a valid session cookie. */
  allows(
    headers: { authorization?: string | undefined; cookie?: string | undefined },
    opts: { basic?: boolean; cookie?: boolean } = {},
  ): boolean {
    const auth = headers.authorization;
    if (auth !== undefined) {
      const [scheme, value = ''] = auth.split(/\s+/, 2);
      if (scheme?.toLowerCase() === 'bearer') return same(value, this.#token);
      if (opts.basic && scheme?.toLowerCase() === 'basic') {
        const decoded = Buffer.from(value, 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        return i >= 0 && decoded.slice(0, i) === 'phoenix' && same(decoded.slice(i + 1), this.#token);
      }
      return false;
    }
    if (opts.cookie === false) return false;
    const v = cookieValue(headers.cookie, this.cookieName);
    if (v === undefined) return false;
    const parts = v.split('.');
    if (parts.length !== 3) return false;
    const body = `${parts[0]}.${parts[1]}`;
    return same(parts[2] as string, this.#mac(body)) && Number(parts[1]) > Date.now();
  }
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}
