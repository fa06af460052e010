import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout } from 'node:timers/promises';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { isNotFound, listAll, type Backend } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import { DEFAULT_CHUNKER, type ChunkerParams } from './chunker.js';
import { corrupt, deriveKey, Keys, newKdf, open, seal, type KdfParams } from './crypto.js';
import {
  applyChange,
  checkpointKey,
  commitKey,
  CONFIG_KEY,
  decodeChange,
  decodeCommitHead,
  decodeParts,
  decodeRecord,
  encodeChange,
  encodeCommitHead,
  encodeRecord,
  leasePrefix,
  packKey,
  parseCommitKey,
  sourceDir,
  sourceFromDir,
  type ChunkRef,
  type Commit,
  type CommitHead,
  type FileRecord,
  type JournalChange,
  type TreeState,
} from './format.js';
import { PartWriter, readParts } from './meta.js';
import { PACK_TARGET, PackBuilder, parseHeader, type PackEntry } from './pack.js';

/** The `config` object (JSON, not encrypted: it holds what is needed to open the rest). */
export interface RepoConfig {
  /** 2: may hold format-2 commits and checkpoints (metadata in parts); 1: written by builds before 2026-12. */
  phoenix: 1 | 2;
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
  /** The commit object's stored size, from the listing (a large commit's parts come on top). */
  size?: number;
}

/** Encoded changes up to this many bytes stay in the commit object itself; a larger commit puts them in parts. */
export const INLINE_BYTES = 256 * 1024;

/** A record as the cache stores it: its path, and its JSON (encodeRecord's) as text. */
export interface EncodedRecord {
  path: string;
  json: string;
}
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
    const config: RepoConfig = { phoenix: 2, id: randomBytes(16).toString('hex'), chunker: DEFAULT_CHUNKER, encryption: 'none' };
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
  static async open(
    backend: Backend,
    password: () => Promise<string | undefined>,
    whileDeriving?: (config: RepoConfig) => void,
  ): Promise<Repository> {
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
    if (config.phoenix !== 1 && config.phoenix !== 2) {
      throw new PhoenixError(
        'PHX_CORRUPT',
        `${backend.location}/config has format version ${String(config.phoenix)}, this Phoenix reads versions 1 and 2`,
        {
          hint: 'upgrade Phoenix',
        },
      );
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
      if (parsed) out.push({ key: o.key, ...parsed, size: o.size });
    }
    out.sort((a, b) => a.seq - b.seq);
    return out;
  }

  /** A commit object with its changes. */
  async readCommit(info: CommitInfo): Promise<Commit> {
    const head = await this.readCommitHead(info);
    const changes: JournalChange[] = [];
    for await (const ch of this.commitChanges(head)) changes.push(ch);
    const { parts: _parts, inline: _inline, ...rest } = head;
    return { ...rest, changes };
  }

  /** A commit object without decoding its changes (they may be in parts): small whatever the commit's size. */
  async readCommitHead(info: CommitInfo): Promise<CommitHead> {
    const obj = await this.#getJson(info.key);
    try {
      const c = decodeCommitHead(obj);
      if (c.seq !== info.seq) throw new Error(`seq ${c.seq} in an object named ${info.seq}`);
      return c;
    } catch (err) {
      if (err instanceof PhoenixError) throw err;
      throw corrupt(`commit ${info.key}`, (err as Error).message);
    }
  }

  /** The changes of a commit, in order, one part in memory at a time. */
  async *commitChanges(head: CommitHead): AsyncGenerator<JournalChange> {
    const what = `commit ${commitKey(head.source, head.seq, head.timeMs)}`;
    const decode = (o: Record<string, unknown>): JournalChange => {
      try {
        return decodeChange(o);
      } catch (err) {
        throw corrupt(what, (err as Error).message);
      }
    };
    for await (const o of readParts(
      this.backend,
      this.keys,
      head.parts.map(([id]) => id),
    ))
      yield decode(o);
    for (const o of head.inline) yield decode(o);
  }

  /**
   * Writes a commit. Call it only once every pack it names is durable: the commit object is
   * the commit point. Create-only, so two writers cannot both take one seq where the store
   * enforces it; the lease keeps them apart everywhere else. Changes beyond INLINE_BYTES go to
   * parts first (written before the commit object), so a commit of any size is written in
   * bounded memory; `changes` may be a generator. `size`: the bytes stored, parts included.
   */
  async writeCommit(c: Omit<Commit, 'changes'> & { changes: Iterable<JournalChange> }): Promise<CommitInfo & { size: number }> {
    await this.#upgradeConfig();
    const key = commitKey(c.source, c.seq, c.timeMs);
    let inline: Array<{ o: Record<string, unknown>; line: string }> = [];
    let inlineBytes = 0;
    let parts: PartWriter | undefined;
    for (const ch of c.changes) {
      const o = encodeChange(ch);
      const line = JSON.stringify(o);
      if (parts !== undefined) {
        await parts.add(line);
        continue;
      }
      inline.push({ o, line });
      inlineBytes += line.length;
      if (inlineBytes > INLINE_BYTES) {
        parts = new PartWriter(this.backend, this.keys);
        for (const x of inline) await parts.add(x.line);
        inline = [];
      }
    }
    const { changes: _changes, ...rest } = c;
    const head: CommitHead = { ...rest, parts: parts === undefined ? [] : await parts.finish(), inline: inline.map((x) => x.o) };
    const bytes = await this.#putJson(key, encodeCommitHead(head), true);
    return { key, seq: c.seq, timeMs: c.timeMs, size: bytes + (parts?.bytes ?? 0) };
  }

  /** A repository of format 1 gets format 2 before its first format-2 object, so that older builds refuse it clearly. */
  async #upgradeConfig(): Promise<void> {
    if (this.config.phoenix === 2) return;
    await this.backend.put(CONFIG_KEY, Buffer.from(`${JSON.stringify({ ...this.config, phoenix: 2 }, null, 2)}\n`));
    this.config.phoenix = 2;
  }

  /**
   * Writes the checkpoint of `source` after commit `seq`: every record of the tree, in byte
   * order of path, into parts (those equal to a part of an earlier checkpoint are not uploaded
   * again), then the checkpoint object naming them. `records` may be a stream: memory stays
   * bounded whatever the tree's size. Records may come encoded already (the cache stores them so).
   */
  async writeCheckpoint(
    source: string,
    seq: number,
    records: Iterable<FileRecord | EncodedRecord> | AsyncIterable<FileRecord | EncodedRecord>,
  ): Promise<{ bytes: number; uploaded: number; entries: number }> {
    await this.#upgradeConfig();
    await this.#seedParts(source, seq);
    const parts = new PartWriter(this.backend, this.keys, this.#parts);
    let entries = 0;
    let last: string | undefined;
    for await (const r of records) {
      const path = r.path;
      if (last !== undefined && !(last < path))
        throw new PhoenixError('PHX_INTERNAL', `internal: checkpoint records out of order at entry ${entries}`);
      last = path;
      await parts.add('json' in r ? r.json : JSON.stringify(encodeRecord(r)), path);
      entries++;
    }
    const list = await parts.finish();
    const bytes = await this.#putJson(checkpointKey(source, seq), { v: 2, source, seq, entries, parts: list });
    return { bytes: bytes + parts.bytes, uploaded: bytes + parts.uploaded, entries };
  }

  /** Parts known to exist, with their sizes: those this process wrote or saw in a checkpoint. */
  readonly #parts = new Map<string, number>();
  readonly #seeded = new Set<string>();

  /** Learns the parts of the newest checkpoint of `source` before `seq` (once): a new checkpoint reuses what did not change. */
  async #seedParts(source: string, seq: number): Promise<void> {
    if (this.#seeded.has(source)) return;
    this.#seeded.add(source);
    const before = (await this.checkpointSeqs(source)).filter((n) => n < seq);
    if (before.length === 0) return;
    const head = await this.#checkpointHead(source, Math.max(...before)).catch(() => undefined);
    for (const [id, size] of head?.parts ?? []) this.#parts.set(id, size);
  }

  /** The checkpoint of `source` at `seq`: its records, and the bytes a reader fetches for it (its object and its parts). */
  async checkpointInfo(source: string, seq: number): Promise<{ entries: number; bytes: number }> {
    const head = await this.#checkpointHead(source, seq);
    const { size } = await this.backend.stat(checkpointKey(source, seq));
    return { entries: head.entries, bytes: size + head.parts.reduce((n, [, b]) => n + b, 0) };
  }

  async #checkpointHead(
    source: string,
    seq: number,
  ): Promise<{ key: string; parts: Array<[string, number]>; inline: unknown[]; entries: number }> {
    const key = checkpointKey(source, seq);
    const obj = await this.#getJson(key);
    try {
      if (obj.seq !== seq) throw new Error(`seq ${String(obj.seq)} in an object named ${seq}`);
      if (obj.v === 1) {
        if (!Array.isArray(obj.entries)) throw new Error('its entries are not a list');
        return { key, parts: [], inline: obj.entries, entries: obj.entries.length };
      }
      if (obj.v !== 2) throw new Error(`unsupported checkpoint version ${String(obj.v)} (this Phoenix reads 1 and 2: upgrade it)`);
      return { key, parts: decodeParts(obj.parts), inline: [], entries: Number(obj.entries) };
    } catch (err) {
      throw corrupt(`checkpoint ${key}`, (err as Error).message);
    }
  }

  /** The records of a checkpoint, in order, one part in memory at a time. */
  async *checkpointRecords(source: string, seq: number): AsyncGenerator<FileRecord> {
    const head = await this.#checkpointHead(source, seq);
    for (const [id, size] of head.parts) this.#parts.set(id, size);
    const decode = (o: Record<string, unknown>): FileRecord => {
      try {
        return decodeRecord(o);
      } catch (err) {
        throw corrupt(`checkpoint ${head.key}`, (err as Error).message);
      }
    };
    for (const o of head.inline) yield decode(o as Record<string, unknown>);
    for await (const o of readParts(
      this.backend,
      this.keys,
      head.parts.map(([id]) => id),
    ))
      yield decode(o);
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

  /** A checkpoint as a map (its whole tree in memory: for browsing and restore). */
  async readCheckpoint(source: string, seq: number): Promise<TreeState> {
    const state: TreeState = new Map();
    for await (const r of this.checkpointRecords(source, seq)) state.set(r.path, r);
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
      if (err instanceof PhoenixError && err.code === 'PHX_PAST_END') throw corrupt(what, 'its pack is truncated');
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
