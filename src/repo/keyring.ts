import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import { isNotFound, type Backend } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import { deriveKey, newKdf, open, seal, type KdfParams } from './crypto.js';
import { CONFIG_KEY } from './format.js';

/**
 * Several passwords for one repository (restic's `key` commands). Each key is an object
 * `keys/ID` holding the master key sealed under one password's scrypt key, so adding or
 * removing a password never rewrites data, and two processes adding keys at once each write
 * their own object. Repositories made before keys existed hold one key in `config` itself;
 * the first `key add` copies it to `keys/ID` (ID derived from it, so two racing copies agree)
 * and then rewrites `config` without it (format 4). Once any `keys/` object exists, the keys
 * there are the only ones a reader tries.
 */

export const KEYS_PREFIX = 'keys/';

export interface KeyObject {
  v: 1;
  id: string;
  /** When the key was added (store-independent: the adding host's clock); null for the key of `init`, copied from the config. */
  createdMs: number | null;
  host: string;
  user: string;
  kdf: KdfParams;
  /** The 64-byte master key sealed under this password's key (base64). */
  masterKey: string;
  /** HMAC-SHA-256 under the MAC key of "phoenix key REPOID ID": proves whoever wrote it held the master key. */
  mac: string;
}

export interface KeyInfo {
  id: string;
  createdMs: number | null;
  host: string;
  user: string;
  /** The key this process opened the repository with. */
  current: boolean;
}

/** What a reader finds: the key objects, or none and the config's own key. */
export interface KeyCandidate {
  id: string;
  kdf: KdfParams;
  masterKey: string;
  /** The parsed object; undefined for the config's key. */
  object?: KeyObject;
}

/** The id of the key `init` put into the config: the same on every host. */
export function configKeyId(masterKey: string): string {
  return createHash('sha256').update(`phoenix config key ${masterKey}`).digest('hex').slice(0, 16);
}

function keyMac(master: Buffer, repoId: string, id: string): string {
  return createHmac('sha256', master.subarray(32, 64)).update(`phoenix key ${repoId} ${id}`).digest('hex');
}

function keyError(location: string, key: string, why: string): PhoenixError {
  return new PhoenixError('PHX_CORRUPT', `${location}/${key} is not a valid key: ${why}`, {
    hint: 'it was damaged or not written by Phoenix; with another password, phoenix key list shows the keys and phoenix key remove ID removes it',
  });
}

function parseKeyObject(location: string, key: string, raw: Buffer): KeyObject {
  let o: Partial<KeyObject>;
  try {
    o = JSON.parse(raw.toString()) as Partial<KeyObject>;
  } catch {
    throw keyError(location, key, 'it is not JSON');
  }
  const id = key.slice(KEYS_PREFIX.length);
  if (o.v !== 1) throw keyError(location, key, `its version is ${String(o.v)}, this Phoenix reads version 1`);
  if (o.id !== id) throw keyError(location, key, `it names itself ${JSON.stringify(o.id)}`);
  if (typeof o.masterKey !== 'string' || typeof o.mac !== 'string' || o.kdf?.alg !== 'scrypt') {
    throw keyError(location, key, 'a field is missing');
  }
  return o as KeyObject;
}

/** The keys a reader tries: every `keys/` object that parses, or the config's key when there are none. */
export async function keyCandidates(
  backend: Backend,
  config: { kdf?: KdfParams; masterKey?: string },
): Promise<{ candidates: KeyCandidate[]; damaged: PhoenixError[] }> {
  const candidates: KeyCandidate[] = [];
  const damaged: PhoenixError[] = [];
  const listed: string[] = [];
  for await (const o of backend.list(KEYS_PREFIX)) listed.push(o.key);
  listed.sort();
  await Promise.all(
    listed.map(async (key) => {
      try {
        const object = parseKeyObject(backend.location, key, await backend.get(key));
        candidates.push({ id: object.id, kdf: object.kdf, masterKey: object.masterKey, object });
      } catch (err) {
        if (isNotFound(err)) return; // removed since the listing
        if (err instanceof PhoenixError && err.code === 'PHX_CORRUPT') damaged.push(err);
        else throw err;
      }
    }),
  );
  if (listed.length === 0 && config.masterKey !== undefined && config.kdf !== undefined) {
    candidates.push({ id: configKeyId(config.masterKey), kdf: config.kdf, masterKey: config.masterKey });
  }
  candidates.sort((a, b) => (a.id < b.id ? -1 : 1));
  return { candidates, damaged };
}

/**
 * The master key the password opens, and which key opened it. Keys with the same KDF
 * parameters share one derivation (every key has its own salt, so that is rare); the others
 * are derived two at a time on the thread pool. Undefined when the password opens none.
 */
export async function unlock(
  candidates: KeyCandidate[],
  password: string,
  repoId: string,
  location: string,
): Promise<{ master: Buffer; id: string } | undefined> {
  let found: { master: Buffer; id: string } | undefined;
  const queue = [...candidates];
  const worker = async (): Promise<void> => {
    for (let c = queue.shift(); c !== undefined && found === undefined; c = queue.shift()) {
      const derived = await deriveKey(password, c.kdf);
      let master: Buffer;
      try {
        master = open(derived, Buffer.from(c.masterKey, 'base64'), `key ${c.id}`);
      } catch {
        continue; // another password's key
      }
      if (master.length !== 64) throw keyError(location, `${KEYS_PREFIX}${c.id}`, 'its master key has the wrong length');
      if (c.object !== undefined) {
        const want = Buffer.from(keyMac(master, repoId, c.id), 'hex');
        const got = Buffer.from(c.object.mac, 'hex');
        if (got.length !== want.length || !timingSafeEqual(got, want)) {
          throw keyError(location, `${KEYS_PREFIX}${c.id}`, 'the password opens it, but it does not belong to this repository');
        }
      }
      found ??= { master, id: c.id };
    }
  };
  await Promise.all([worker(), worker()]);
  return found;
}

/** Writes a new key object for `password`; returns its id. */
export async function addKey(
  backend: Backend,
  repoId: string,
  master: Buffer,
  password: string,
  opts: { kdfN?: number } = {},
): Promise<string> {
  const id = randomBytes(8).toString('hex');
  const kdf = newKdf(opts.kdfN);
  const sealed = seal(await deriveKey(password, kdf), master).toString('base64');
  const object: KeyObject = {
    v: 1,
    id,
    createdMs: Date.now(),
    host: hostname(),
    user: currentUser(),
    kdf,
    masterKey: sealed,
    mac: keyMac(master, repoId, id),
  };
  await backend.put(`${KEYS_PREFIX}${id}`, Buffer.from(`${JSON.stringify(object, null, 2)}\n`), { createOnly: true });
  return id;
}

/**
 * Moves the config's own key to `keys/ID` and rewrites the config without it (format 4):
 * from then on every key is an object that can be removed. Safe to run twice at once (both
 * write the same object and the same config).
 */
export async function moveConfigKey(backend: Backend, master: Buffer): Promise<void> {
  const config = JSON.parse((await backend.get(CONFIG_KEY)).toString()) as Record<string, unknown> & {
    id: string;
    phoenix: number;
    kdf?: KdfParams;
    masterKey?: string;
  };
  if (config.masterKey === undefined || config.kdf === undefined) return;
  const id = configKeyId(config.masterKey);
  const object: KeyObject = {
    v: 1,
    id,
    createdMs: null,
    host: '',
    user: '',
    kdf: config.kdf,
    masterKey: config.masterKey,
    mac: keyMac(master, config.id, id),
  };
  await backend.put(`${KEYS_PREFIX}${id}`, Buffer.from(`${JSON.stringify(object, null, 2)}\n`));
  const { masterKey: _m, kdf: _k, ...rest } = config;
  await backend.put(CONFIG_KEY, Buffer.from(`${JSON.stringify({ ...rest, phoenix: Math.max(4, config.phoenix) }, null, 2)}\n`));
}

/**
 * Removes key `id`. Refuses the last key. If another process removed the others meanwhile
 * (so that none is left), the key is written back and the removal fails.
 */
export async function removeKey(backend: Backend, id: string): Promise<void> {
  const key = `${KEYS_PREFIX}${id}`;
  const body = await backend.get(key);
  let left = 0;
  for await (const o of backend.list(KEYS_PREFIX)) if (o.key !== key) left++;
  if (left === 0) throw lastKey();
  await backend.delete(key);
  let after = 0;
  for await (const o of backend.list(KEYS_PREFIX)) if (o.key !== key) after++;
  if (after === 0) {
    await backend.put(key, body);
    throw lastKey();
  }
}

export function lastKey(): PhoenixError {
  return new PhoenixError('PHX_USAGE', "that is the repository's last key: without it nobody could open the repository", {
    hint: 'add another first (phoenix key add), or change its password with phoenix key passwd',
  });
}

function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? '';
  }
}
