import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout } from 'node:timers/promises';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { isNotFound, listAll, type Backend } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import { DEFAULT_CHUNKER, type ChunkerParams } from './chunker.js';
import { corrupt, deriveKey, Keys, newKdf, open, seal, type KdfParams } from './crypto.js';
import {
  applyChange, checkpointKey, commitKey, CONFIG_KEY, decodeCommit, decodeRecord, encodeCommit, encodeRecord, leasePrefix,
  packKey, parseCommitKey, sourceDir, sourceFromDir, type ChunkRef, type Commit, type TreeState,
} from './format.js';
import { PACK_TARGET, PackBuilder, parseHeader, type PackEntry } from './pack.js';

/** The `config` object (JSON, not encrypted: it holds what is needed to open the rest). */
export interface RepoConfig {
  phoenix: 1;
  id: string;
  chunker: ChunkerParams;
  encryption: 'aes-256-gcm' | 'none';
  kdf?: KdfParams;
  /** The 64-byte master key, sealed under the password's key (base64). */
  masterKey?: string;
}

/** A commit as a listing shows it: no need to read the object to know its seq and time. */
export interface CommitInfo {
  key: string;
  seq: number;
  timeMs: number;
}

/** How often a checkpoint (the full state) is written: every this many commits. */
export const CHECKPOINT_EVERY = 16;
export const LEASE_TTL_MS = 5 * 60_000;

export class Repository {
  private constructor(
    readonly backend: Backend,
    readonly config: RepoConfig,
    readonly keys: Keys,
  ) {}

  static async init(backend: Backend, opts: { password?: string; insecureNoEncryption?: boolean; kdfN?: number }): Promise<Repository> {
    const existing = await backend.stat(CONFIG_KEY).catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e)));
    if (existing !== undefined) {
      throw new PhoenixError('PHX_REPO_EXISTS', `${backend.location} already holds a Phoenix repository`, {
        hint: 'use it as it is, or choose another location for a new one',
      });
    }
    const config: RepoConfig = { phoenix: 1, id: randomBytes(16).toString('hex'), chunker: DEFAULT_CHUNKER, encryption: 'none' };
    let keys = Keys.none();
    if (!opts.insecureNoEncryption) {
      if (opts.password === undefined || opts.password === '') throw noPassword();
      const master = randomBytes(64);
      config.encryption = 'aes-256-gcm';
      config.kdf = newKdf(opts.kdfN);
      config.masterKey = seal(await deriveKey(opts.password, config.kdf), master).toString('base64');
      keys = Keys.fromMaster(master);
    }
    await backend.put(CONFIG_KEY, Buffer.from(`${JSON.stringify(config, null, 2)}\n`), { createOnly: true });
    return new Repository(backend, config, keys);
  }

  /** Opens a repository; `password` is asked for only when the repository is encrypted. */
  /**
   * Opens the repository at `backend`. `whileDeriving` runs on this thread while the password's
   * key is derived (about 0.1 s of scrypt on the thread pool): work that needs only the config.
   */
  static async open(backend: Backend, password: () => Promise<string | undefined>, whileDeriving?: (config: RepoConfig) => void): Promise<Repository> {
    let raw: Buffer;
    try {
      raw = await backend.get(CONFIG_KEY);
    } catch (err) {
      if (isNotFound(err)) {
        throw new PhoenixError('PHX_REPO_NOT_INITIALISED', `there is no Phoenix repository at ${backend.location}`, {
          hint: `create one with: phoenix init --repo ${backend.location}`,
        });
      }
      throw err;
    }
    let config: RepoConfig;
    try {
      config = JSON.parse(raw.toString()) as RepoConfig;
    } catch {
      throw corrupt(`${backend.location}/config`, 'it is not JSON');
    }
    if (config.phoenix !== 1) {
      throw new PhoenixError('PHX_CORRUPT', `${backend.location}/config has format version ${String(config.phoenix)}, this Phoenix reads version 1`, {
        hint: 'upgrade Phoenix',
      });
    }
    if (config.encryption === 'none') {
      whileDeriving?.(config);
      return new Repository(backend, config, Keys.none());
    }
    const pw = await password();
    if (pw === undefined || pw === '') throw noPassword();
    const deriving = deriveKey(pw, config.kdf as KdfParams);
    try {
      whileDeriving?.(config);
    } catch (err) {
      deriving.catch(() => {});
      throw err;
    }
    const key = await deriving;
    let master: Buffer;
    try {
      master = open(key, Buffer.from(config.masterKey ?? '', 'base64'), 'config');
    } catch {
      throw new PhoenixError('PHX_WRONG_PASSWORD', `wrong password for the repository at ${backend.location}`, {
        hint: 'check PHOENIX_PASSWORD or the file given with --password-file',
      });
    }
    return new Repository(backend, config, Keys.fromMaster(master));
  }

  /** Closes the backend (its connections). */
  async close(): Promise<void> {
    await this.backend.close();
  }

  // ---- sealed JSON objects ---------------------------------------------------------------

  async #putJson(key: string, value: unknown, createOnly = false): Promise<number> {
    // Level 1: as small as level 6 for these (hex ids and base64 paths), at half the time.
    const body = this.keys.seal(deflateRawSync(Buffer.from(JSON.stringify(value)), { level: 1 }));
    await this.backend.put(key, body, { createOnly });
    return body.length;
  }

  async #getJson(key: string): Promise<Record<string, unknown>> {
    const body = await this.backend.get(key);
    const plain = this.keys.open(body, `object ${key}`);
    try {
      return JSON.parse(inflateRawSync(plain).toString()) as Record<string, unknown>;
    } catch {
      throw corrupt(`object ${key}`, 'it does not decode');
    }
  }

  // ---- sources and commits ------------------------------------------------------------------

  async sources(): Promise<string[]> {
    const names = new Set<string>();
    for await (const o of this.backend.list('journal/')) names.add(sourceFromDir(o.key.split('/')[1] ?? ''));
    return [...names].sort();
  }

  /** The commits of `source`, oldest first, from a listing (the objects are not read). */
  async commitList(source: string): Promise<CommitInfo[]> {
    const prefix = `journal/${sourceDir(source)}/`;
    const out: CommitInfo[] = [];
    for (const o of await listAll(this.backend, prefix)) {
      const parsed = parseCommitKey(o.key.slice(prefix.length));
      if (parsed) out.push({ key: o.key, ...parsed });
    }
    out.sort((a, b) => a.seq - b.seq);
    return out;
  }

  async readCommit(info: CommitInfo): Promise<Commit> {
    const obj = await this.#getJson(info.key);
    try {
      const c = decodeCommit(obj);
      if (c.seq !== info.seq) throw new Error(`seq ${c.seq} in an object named ${info.seq}`);
      return c;
    } catch (err) {
      if (err instanceof PhoenixError) throw err;
      throw corrupt(`commit ${info.key}`, (err as Error).message);
    }
  }

  /**
   * Writes a commit. Call it only once every pack it names is durable: the commit object is
   * the commit point. Create-only, so two writers cannot both take one seq where the store
   * enforces it; the lease keeps them apart everywhere else.
   */
  async writeCommit(c: Commit): Promise<CommitInfo> {
    const key = commitKey(c.source, c.seq, c.timeMs);
    await this.#putJson(key, encodeCommit(c), true);
    return { key, seq: c.seq, timeMs: c.timeMs };
  }

  async writeCheckpoint(source: string, seq: number, state: TreeState): Promise<void> {
    await this.#putJson(checkpointKey(source, seq), { v: 1, source, seq, entries: [...state.values()].map(encodeRecord) });
  }

  /**
   * The tree of `source` after commit `seq` (the latest when absent): the newest checkpoint at
   * or before it, then the commits after that checkpoint. Checks that the journal is contiguous.
   */
  async loadState(source: string, seq?: number): Promise<{ state: TreeState; seq: number; commitsRead: number }> {
    const commits = await this.commitList(source);
    checkContiguous(source, commits);
    const target = seq ?? commits.at(-1)?.seq ?? 0;
    const best = Math.max(0, ...(await this.checkpointSeqs(source)).filter((n) => n <= target));
    const state: TreeState = best > 0 ? await this.readCheckpoint(source, best) : new Map();
    const from = best;
    const tail = commits.filter((c) => c.seq > from && c.seq <= target);
    const read = await mapLimited(tail, 8, (c) => this.readCommit(c));
    for (const c of read) for (const ch of c.changes) applyChange(state, ch);
    return { state, seq: target, commitsRead: read.length };
  }

  /** The seqs of the checkpoints of `source`, from a listing. */
  async checkpointSeqs(source: string): Promise<number[]> {
    const prefix = `checkpoint/${sourceDir(source)}/`;
    return (await listAll(this.backend, prefix)).map((o) => Number(o.key.slice(prefix.length))).filter((n) => n > 0);
  }

  async readCheckpoint(source: string, seq: number): Promise<TreeState> {
    const key = checkpointKey(source, seq);
    const obj = await this.#getJson(key);
    const state: TreeState = new Map();
    try {
      for (const e of obj.entries as Array<Record<string, unknown>>) {
        const r = decodeRecord(e);
        state.set(r.path, r);
      }
    } catch (err) {
      throw corrupt(`checkpoint ${key}`, (err as Error).message);
    }
    return state;
  }

  // ---- chunks and packs -----------------------------------------------------------------

  /**
   * A pack's header: its last 4 bytes give the sealed header's length, which sits right
   * before them. Two ranged reads, never the whole pack.
   */
  async packHeader(pack: string): Promise<PackEntry[]> {
    const key = packKey(pack);
    const { size } = await this.backend.stat(key);
    if (size < 4) throw corrupt(`pack ${key}`, 'it is shorter than its trailer');
    const len = (await this.backend.get(key, { offset: size - 4, length: 4 })).readUInt32LE(0);
    if (len + 4 > size) throw corrupt(`pack ${key}`, 'its header length is past its start');
    return parseHeader(this.keys, await this.backend.get(key, { offset: size - 4 - len, length: len }), `pack ${key}`);
  }

  /**
   * Bytes [offset, offset + length) of a pack, for chunks (`what` names the first in errors): a
   * missing or short pack is a corrupt repository.
   */
  async readPack(pack: string, offset: number, length: number, what: string): Promise<Buffer> {
    try {
      return await this.backend.get(packKey(pack), { offset, length });
    } catch (err) {
      if (isNotFound(err)) throw corrupt(what, 'its pack is missing');
      if (err instanceof PhoenixError && err.code === 'PHX_BACKEND' && /past the end/.test(err.message)) throw corrupt(what, 'its pack is truncated');
      throw err;
    }
  }

  // ---- the writer's lease -----------------------------------------------------------------

  /**
   * Takes the lease of `source` for this process, or fails with PHX_LOCKED naming the holder.
   * Race-free without conditional writes: a writer first writes its own lease object, then
   * lists the others; it holds the lease only if no other live one is there. Of two writers that
   * start together, the one that lists last sees the other's object (both may see each other:
   * then both step back and try again after a random pause).
   */
  async acquireLease(source: string): Promise<Lease> {
    const prefix = leasePrefix(source);
    const me = { host: hostname(), pid: process.pid, token: randomBytes(8).toString('hex'), acquiredMs: Date.now() };
    const key = prefix + me.token;
    let expiresMs = 0;
    const write = (): Promise<void> => {
      const next = Date.now() + LEASE_TTL_MS;
      return this.backend.put(key, Buffer.from(JSON.stringify({ ...me, expiresMs: next }))).then(() => void (expiresMs = next));
    };
    for (let attempt = 1; ; attempt++) {
      await write();
      const { live, dead } = await this.#leases(prefix, me.token);
      if (live.length === 0) {
        for (const k of dead) await this.backend.delete(k).catch(() => {}); // leases of writers that are gone
        break;
      }
      await this.backend.delete(key);
      const holder = live[0] as LeaseRecord;
      // Everyone who asked in the last few seconds may be racing us: step back and ask again.
      if (attempt < 5 && live.every((l) => Date.now() - l.acquiredMs < 10_000)) {
        await setTimeout(50 + Math.random() * 500);
        continue;
      }
      throw new PhoenixError(
        'PHX_LOCKED',
        `source ${JSON.stringify(source)} is being written by process ${holder.pid} on ${holder.host} (lease until ${new Date(holder.expiresMs).toISOString()})`,
        { hint: 'only one writer per source: stop the other one, or wait for its lease to expire if it died' },
      );
    }
    return {
      renew: async () => {
        // Our lease expired while we could not reach the store and another writer took over
        // (it asked after our lease ran out: a writer that asked before saw ours and stepped
        // back), or our object is gone (a writer that took over cleaned it up): stop.
        const { live, mine } = await this.#leases(prefix, me.token);
        if (!mine || live.some((l) => l.acquiredMs >= expiresMs)) {
          throw new PhoenixError('PHX_LOCKED', `the lease of source ${JSON.stringify(source)} was taken over by another writer`, {
            hint: 'only one writer per source: stop the other one',
          });
        }
        await write();
      },
      release: async () => {
        await this.backend.delete(key);
      },
    };
  }

  /** The other writers' leases under `prefix`: live ones, and keys of dead ones (expired, or of a process of this host that is gone). */
  async #leases(prefix: string, token: string): Promise<{ live: LeaseRecord[]; dead: string[]; mine: boolean }> {
    const live: LeaseRecord[] = [];
    const dead: string[] = [];
    let mine = false;
    for (const o of await listAll(this.backend, prefix)) {
      if (o.key === prefix + token) {
        mine = true;
        continue;
      }
      const l = await this.backend.get(o.key).then(
        (b) => JSON.parse(b.toString()) as LeaseRecord,
        () => undefined, // gone meanwhile (released), or not JSON: not a live lease
      );
      const stale = l !== undefined && l.host === hostname() && !processAlive(l.pid);
      if (l === undefined || l.expiresMs <= Date.now() || stale) dead.push(o.key);
      else live.push(l);
    }
    return { live, dead, mine };
  }
}

interface LeaseRecord {
  host: string;
  pid: number;
  token: string;
  acquiredMs: number;
  expiresMs: number;
}

export interface Lease {
  renew(): Promise<void>;
  release(): Promise<void>;
}

/**
 * Gathers new chunks into packs and uploads each pack when it reaches the target size.
 * `flush()` uploads the last partial pack and waits for every upload: after it, every ref
 * handed out is durable and a commit may name them.
 */
export class ChunkWriter {
  #pack = new PackBuilder();
  #pending: Array<{ entryIndex: number; resolve: (pack: string) => void }> = [];
  readonly #uploads: Array<Promise<void>> = [];
  readonly packs: string[] = [];
  bytesUploaded = 0;

  constructor(readonly repo: Repository) {}

  /** Adds a blob already sealed (by a worker thread). */
  addSealed(id: string, sealed: Buffer): Promise<ChunkRef> {
    const entry = this.#pack.add(id, sealed);
    const p = new Promise<string>((resolve) => this.#pending.push({ entryIndex: this.#pack.entries.length - 1, resolve }));
    if (this.#pack.size >= PACK_TARGET) this.#cut();
    return p.then((pack) => ({ id, pack, offset: entry.offset, length: entry.length }));
  }

  #cut(): void {
    if (this.#pack.entries.length === 0) return;
    const { id, parts, size } = this.#pack.finish(this.repo.keys);
    for (const p of this.#pending) p.resolve(id);
    this.#pending = [];
    this.#pack = new PackBuilder();
    this.packs.push(id);
    this.bytesUploaded += size;
    // Content-addressed: if the object exists already (a retried put), it is the same bytes.
    this.#active++;
    const up = this.repo.backend.put(packKey(id), parts).then(
      () => undefined,
      (err: unknown) => {
        this.#error ??= err;
      },
    );
    this.#uploads.push(
      up.finally(() => {
        this.#active--;
        for (const w of this.#waiters.splice(0)) w();
      }),
    );
  }

  #active = 0;
  #error: unknown;
  readonly #waiters: Array<() => void> = [];

  /** Waits while more than `max` packs are uploading, so memory stays bounded. */
  async backpressure(max = 3): Promise<void> {
    while (this.#active > max) await new Promise<void>((r) => this.#waiters.push(r));
    if (this.#error !== undefined) throw this.#error;
  }

  /** Uploads the partial pack and waits until every pack is durable. */
  async flush(): Promise<void> {
    this.#cut();
    await Promise.all(this.#uploads);
    if (this.#error !== undefined) throw this.#error;
  }
}

export function checkContiguous(source: string, commits: CommitInfo[]): void {
  commits.forEach((c, i) => {
    if (c.seq !== i + 1) {
      throw corrupt(`the journal of source ${JSON.stringify(source)}`, `commit ${i + 1} is missing (found ${c.seq} in its place)`);
    }
  });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function noPassword(): PhoenixError {
  return new PhoenixError('PHX_NO_PASSWORD', 'the repository is encrypted and no password was given', {
    hint: 'set PHOENIX_PASSWORD, or PHOENIX_PASSWORD_FILE / --password-file, or run on a terminal to be asked',
  });
}

export async function mapLimited<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
