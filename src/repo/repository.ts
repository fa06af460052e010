import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout } from 'node:timers/promises';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { isNotFound, listAll, type Backend } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import { DEFAULT_CHUNKER, type ChunkerParams } from './chunker.js';
import { corrupt, deriveKey, Keys, newKdf, seal, type KdfParams } from './crypto.js';
import { addKey, configKeyId, keyCandidates, lastKey, moveConfigKey, removeKey, unlock, type KeyInfo } from './keyring.js';
import {
  applyChange,
  changeJson,
  checkpointKey,
  commitKey,
  CONFIG_KEY,
  decodeChange,
  decodeCommitHead,
  decodeParts,
  decodeRecord,
  encodeChange,
  encodeCommitHead,
  leasePrefix,
  packKey,
  parseJournalKey,
  pinKey,
  pinPrefix,
  policyKey,
  recordJson,
  segmentKey,
  sourceDir,
  sourceFromDir,
  type ChunkRef,
  type Commit,
  type CommitHead,
  type CommitStats,
  type FileRecord,
  type JournalChange,
  type TreeState,
} from './format.js';
import { PartWriter, readParts, readPartValues } from './meta.js';
import { PACK_TARGET, PackBuilder, parseHeader, type PackEntry } from './pack.js';
import { processAlive } from '../util/process.js';

/** The `config` object (JSON, not encrypted: it holds what is needed to open the rest). */
export interface RepoConfig {
  /**
   * 4: the keys are `keys/` objects (the config holds none); 3: may hold segments (thinned or
   * compacted journal); 2: format-2 commits and checkpoints (metadata in parts); 1: builds
   * before 2026-12.
   */
  phoenix: 1 | 2 | 3 | 4;
  id: string;
  chunker: ChunkerParams;
  encryption: 'aes-256-gcm' | 'none';
  kdf?: KdfParams;
  /** The 64-byte master key, sealed under the password's key (base64): the one key of repositories from before `keys/` (format < 4). */
  masterKey?: string;
}

/** A commit as a listing shows it: no need to read the object to know its seq and time. */
export interface CommitInfo {
  key: string;
  seq: number;
  timeMs: number;
  /** The commit object's stored size, from the listing (a large commit's parts come on top). */
  size?: number;
  /** Set when the commit is a step of a segment (`key` is then the segment's): where in it, and how many changes the step holds. */
  segment?: { first: number; last: number; index: number; changes: number };
}

/** An object of the journal as listed: a commit (`first` = `seq`) or a segment of commits `first`…`seq`. */
export interface JournalObject {
  key: string;
  first: number;
  seq: number;
  timeMs: number;
  size: number;
  segment: boolean;
  /** A segment's generation (-1 for a commit): of two over the same commits, readers take the higher. */
  gen: number;
}

/** One step of a segment: a commit kept, its changes from the step before, and the digest of the tree after it. */
export interface SegmentStep {
  seq: number;
  timeMs: number;
  stats: CommitStats;
  /**
   * TreeDigest of the tree after this step (hex). Steps of a thinned range have it; a lossless
   * compaction copies commits as they were (proven equal when it was written) and may not.
   */
  digest?: string;
  host?: string;
  root?: string;
}

/** A segment's object: its steps (where each one's changes are), and where the changes are. */
interface DecodedSegment {
  /** The stored object's size. */
  stored: number;
  source: string;
  steps: Array<SegmentStep & { at: number; n: number }>;
  parts: Array<[string, number]>;
  inline: Array<Record<string, unknown>>;
}

/** A retention policy as stored in the repository (the text; src/retention/policy.ts reads it). */
export interface StoredPolicy {
  policy: string;
  minAge: string;
  setMs: number;
  host: string;
}

export interface Pin {
  atMs: number;
  note: string;
  createdMs: number;
  host: string;
  /** Set by the mass-change guard: what it saw. */
  guard?: Record<string, unknown>;
}

/**
 * A step given to writeSegment: its changes may be a stream, and its `stats` and `digest` are
 * read only once its changes have been (so a stream may set them as it ends).
 */
export type SegmentStepIn = SegmentStep & { changes: Iterable<JournalChange> | AsyncIterable<JournalChange> };

/** Encoded changes up to this many bytes stay in the commit object itself; a larger commit puts them in parts. */
export const INLINE_BYTES = 256 * 1024;

/** A record as the cache stores it: its path, and its JSON (encodeRecord's) as text. */
export interface EncodedRecord {
  path: string;
  json: string;
}
export const LEASE_TTL_MS = 5 * 60_000;
/** Not a source's base64url name (`~` is not in its alphabet). */
const MAINTENANCE_LEASES = 'leases/~maintenance/';
const CLOCK_KEY = 'clock';

export class Repository {
  private constructor(
    readonly backend: Backend,
    readonly config: RepoConfig,
    readonly keys: Keys,
    /** The id of the key (password) the repository was opened with; undefined when it is not encrypted. */
    readonly keyId?: string,
  ) {}

  /** Segments whose parts store at most this many bytes are read whole and kept while their steps are read; larger ones part by part (tests lower it). */
  static segmentCacheBytes = 256 * 1024;

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
    return new Repository(backend, config, keys, config.masterKey !== undefined ? configKeyId(config.masterKey) : undefined);
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
    if (config.phoenix !== 1 && config.phoenix !== 2 && config.phoenix !== 3 && config.phoenix !== 4) {
      throw new PhoenixError(
        'PHX_CORRUPT',
        `${backend.location}/config has format version ${String(config.phoenix)}, this Phoenix reads versions 1 to 4`,
        {
          hint: 'upgrade Phoenix',
        },
      );
    }
    if (config.encryption === 'none') {
      whileDeriving?.(config);
      return new Repository(backend, config, Keys.none());
    }
    const [pw, { candidates, damaged }] = await Promise.all([password(), keyCandidates(backend, config)]);
    if (pw === undefined || pw === '') throw noPassword();
    if (candidates.length === 0) {
      throw (
        damaged[0] ?? corrupt(`${backend.location}/config`, 'the repository is encrypted but has no key (no keys/ object, none in config)')
      );
    }
    const unlocking = unlock(candidates, pw, config.id, backend.location);
    try {
      whileDeriving?.(config);
    } catch (err) {
      unlocking.catch(() => {});
      throw err;
    }
    const found = await unlocking;
    if (found === undefined) {
      const tried = candidates.length === 1 ? '' : ` (it opens none of the ${candidates.length} keys)`;
      const bad = damaged.length === 0 ? '' : `; ${damaged.length} damaged key object(s) could not be tried: ${damaged[0]?.message}`;
      throw new PhoenixError('PHX_WRONG_PASSWORD', `wrong password for the repository at ${backend.location}${tried}${bad}`, {
        hint: 'check PHOENIX_PASSWORD or the file given with --password-file',
      });
    }
    return new Repository(backend, config, Keys.fromMaster(found.master), found.id);
  }

  // ---- keys (passwords) ------------------------------------------------------------------

  /** Every key of the repository; `current` marks the one this process opened it with. */
  async keyList(): Promise<KeyInfo[]> {
    this.#needKeys();
    const { candidates } = await keyCandidates(this.backend, await this.#storedConfig());
    return candidates.map((c) => ({
      id: c.id,
      createdMs: c.object?.createdMs ?? null,
      host: c.object?.host ?? '',
      user: c.object?.user ?? '',
      current: c.id === this.keyId,
    }));
  }

  /** Adds a key for `password` (a copy of the master key sealed under it); returns its id. */
  async addKey(password: string, opts: { kdfN?: number } = {}): Promise<string> {
    const master = this.#needKeys();
    if (password === '') throw noPassword();
    await moveConfigKey(this.backend, master);
    this.config.phoenix = 4;
    delete this.config.masterKey;
    delete this.config.kdf;
    return addKey(this.backend, this.config.id, master, password, opts);
  }

  /**
   * Removes key `id` (a unique prefix will do). Refuses the last key, and the key in use
   * unless `evenCurrent` (key passwd, which has just added its replacement).
   */
  async removeKey(id: string, opts: { evenCurrent?: boolean } = {}): Promise<string> {
    const master = this.#needKeys();
    const keys = await this.keyList();
    const matches = keys.filter((k) => k.id.startsWith(id.toLowerCase()));
    if (id === '' || matches.length !== 1) {
      throw new PhoenixError(
        'PHX_USAGE',
        matches.length === 0 ? `the repository has no key ${JSON.stringify(id)}` : `${JSON.stringify(id)} names ${matches.length} keys`,
        { hint: `its keys: ${keys.map((k) => k.id).join(', ')} (phoenix key list)` },
      );
    }
    const target = matches[0] as KeyInfo;
    if (target.current && opts.evenCurrent !== true) {
      throw new PhoenixError('PHX_USAGE', `key ${target.id} is the one this command opened the repository with`, {
        hint: 'open it with another password to remove this key, or change this password with phoenix key passwd',
      });
    }
    if (keys.length === 1) throw lastKey();
    await moveConfigKey(this.backend, master);
    await removeKey(this.backend, target.id);
    return target.id;
  }

  #needKeys(): Buffer {
    const master = this.keys.toShared();
    if (master === null) {
      throw new PhoenixError('PHX_USAGE', `the repository at ${this.backend.location} is not encrypted: it has no keys`, {
        hint: 'keys (passwords) exist only for encrypted repositories',
      });
    }
    return Buffer.from(master);
  }

  async #storedConfig(): Promise<RepoConfig> {
    try {
      return JSON.parse((await this.backend.get(CONFIG_KEY)).toString()) as RepoConfig;
    } catch (err) {
      if (err instanceof SyntaxError) throw corrupt(`${this.backend.location}/config`, 'it is not JSON');
      throw err;
    }
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
    return this.#decodeJson(key, await this.backend.get(key));
  }

  #decodeJson(key: string, body: Buffer): Record<string, unknown> {
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

  /**
   * The journal of `source` as listed: the chain of objects from commit 1 to the latest, taking
   * at each point the widest object that starts there (a segment over the commits it stands
   * for), so objects that a segment superseded are invisible to readers even before they are
   * deleted. A commit missing from the chain is corruption.
   */
  async journalObjects(source: string, listing?: readonly JournalObject[]): Promise<JournalObject[]> {
    // At each position the object of the highest generation, then the widest, of those from
    // which the chain can still reach the end: a forget that wrote only some of its pieces
    // (killed between them) leaves the older, wider segment in charge.
    const byStart = new Map<number, JournalObject[]>();
    let end = 0;
    for (const parsed of listing ?? (await this.journalListing(source))) {
      const at = byStart.get(parsed.first);
      if (at === undefined) byStart.set(parsed.first, [parsed]);
      else at.push(parsed);
      end = Math.max(end, parsed.seq);
    }
    const best = new Map<number, JournalObject>();
    for (const start of [...byStart.keys()].sort((x, y) => y - x)) {
      for (const o of byStart.get(start) as JournalObject[]) {
        if (o.seq !== end && !best.has(o.seq + 1)) continue;
        const cur = best.get(start);
        if (cur === undefined || o.gen > cur.gen || (o.gen === cur.gen && o.seq > cur.seq)) best.set(start, o);
      }
    }
    const chain: JournalObject[] = [];
    for (let pos = 0; pos < end;) {
      const o = best.get(pos + 1);
      if (o === undefined) {
        const next = Math.min(...[...byStart.keys()].filter((k) => k > pos));
        throw corrupt(`the journal of source ${JSON.stringify(source)}`, `commit ${pos + 1} is missing (the journal goes on at ${next})`);
      }
      chain.push(o);
      pos = o.seq;
    }
    return chain;
  }

  /** Every object of the journal of `source` as listed, those the chain leaves out (superseded) included. */
  async journalListing(source: string): Promise<JournalObject[]> {
    const prefix = `journal/${sourceDir(source)}/`;
    const out: JournalObject[] = [];
    for (const o of await listAll(this.backend, prefix)) {
      const parsed = parseJournalKey(o.key.slice(prefix.length));
      // Never skipped: a journal object not understood could hold history, and prune would
      // take what it names for garbage.
      if (parsed === undefined) {
        throw new PhoenixError(
          'PHX_CORRUPT',
          `the journal of source ${JSON.stringify(source)} holds ${o.key}, which this Phoenix cannot read`,
          {
            hint: "it may be from a newer Phoenix: upgrade; if it is not Phoenix's, move it out of the repository",
          },
        );
      }
      out.push({ key: o.key, ...parsed, size: o.size });
    }
    return out;
  }

  /**
   * The commits of `source` that the journal keeps, oldest first: every commit, or where the
   * history was thinned, the steps of its segments. Seqs grow but need not be contiguous.
   * Commits come from the listing alone; a segment's steps from its object (small: they are
   * read once and kept).
   */
  async commitList(source: string): Promise<CommitInfo[]> {
    const out: CommitInfo[] = [];
    const chain = await this.journalObjects(source);
    // The segments' heads, eight at a time: a journal thinned over years is a few hundred of them.
    const heads = new Map<string, DecodedSegment>();
    await mapLimited(
      chain.filter((o) => o.segment),
      8,
      async (o) => heads.set(o.key, await this.#segment(o.key, o.size)),
    );
    for (const o of chain) {
      if (!o.segment) {
        out.push({ key: o.key, seq: o.seq, timeMs: o.timeMs, size: o.size });
        continue;
      }
      const seg = heads.get(o.key) as DecodedSegment;
      seg.steps.forEach((st, index) =>
        out.push({
          key: o.key,
          seq: st.seq,
          timeMs: st.timeMs,
          ...(index === seg.steps.length - 1 ? { size: o.size } : {}),
          segment: { first: o.first, last: o.seq, index, changes: st.n },
        }),
      );
    }
    return out;
  }

  /** A commit object with its changes. */
  async readCommit(info: CommitInfo): Promise<Commit> {
    const head = await this.readCommitHead(info);
    const changes: JournalChange[] = [];
    for await (const batch of this.commitChangeBatches(head)) for (const ch of batch) changes.push(ch);
    const { parts: _parts, inline: _inline, ...rest } = head;
    return { ...rest, changes };
  }

  /** A commit object without decoding its changes (they may be in parts): small whatever the commit's size. */
  async readCommitHead(info: CommitInfo): Promise<CommitHead> {
    if (info.segment !== undefined) {
      const seg = await this.#segment(info.key);
      const st = seg.steps[info.segment.index];
      if (st === undefined || st.seq !== info.seq) throw corrupt(`segment ${info.key}`, `it has no step ${info.seq}`);
      const { digest: _digest, at, n, ...rest } = st;
      // A small segment is read whole once and kept (its steps are read one after another); a
      // large one (a step of a whole tree) is read part by part as its steps are.
      if (seg.parts.reduce((k, [, b]) => k + b, 0) <= Repository.segmentCacheBytes) {
        const changes = (await this.#segmentChanges(info.key, seg)).slice(at, at + n);
        return { source: seg.source, ...rest, packs: [], parts: [], inline: changes };
      }
      return { source: seg.source, ...rest, packs: [], parts: [], inline: [], stream: () => this.#stepLines(info.key, seg, at, n) };
    }
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

  /** The digest a segment's step says its tree has (hex). */
  async stepDigest(info: CommitInfo): Promise<string | undefined> {
    if (info.segment === undefined) return undefined;
    return (await this.#segment(info.key)).steps[info.segment.index]?.digest;
  }

  /** Segment objects read (they are immutable, and small: their changes are apart); several readers share one read. */
  readonly #segments = new Map<string, Promise<DecodedSegment>>();
  /** The changes of the small segments read last. */
  readonly #segmentLines = new Map<string, Promise<Array<Record<string, unknown>>>>();

  #segmentChanges(key: string, seg: DecodedSegment): Promise<Array<Record<string, unknown>>> {
    return cached(this.#segmentLines, key, 2, async () => {
      const all: Array<Record<string, unknown>> = [];
      for await (const values of readParts(
        this.backend,
        this.keys,
        seg.parts.map(([id]) => id),
      ))
        for (const o of values) all.push(o);
      for (const o of seg.inline) all.push(o);
      const n = seg.steps.reduce((k, st) => k + st.n, 0);
      if (all.length !== n) throw corrupt(`segment ${key}`, `its steps account for ${n} changes, it holds ${all.length}`);
      return all;
    });
  }

  /**
   * The segment `key`, read once. With `size` (as listed): read again when the one read had
   * another size. A name can come back with other content: a forget that rolls a range back
   * deletes its new segments, and a later run (perhaps in another process) writes that range
   * again under the same name.
   */
  async #segment(key: string, size?: number): Promise<DecodedSegment> {
    const seg = await cached(this.#segments, key, 1024, () => this.#readSegment(key));
    if (size === undefined || seg.stored === size) return seg;
    this.#forgetSegment(key);
    return cached(this.#segments, key, 1024, () => this.#readSegment(key));
  }

  #forgetSegment(key: string): void {
    this.#segments.delete(key);
    this.#segmentLines.delete(key);
  }

  /** Decoded parts of the large segments read lately: readers of one segment's steps, in order or at once, share them. */
  readonly #partValues = new Map<string, Promise<Array<Record<string, unknown>>>>();
  /** Of the large segments read lately, how many changes each part holds (as far as read): a step's reader starts at its part. */
  readonly #partCounts = new Map<string, number[]>();

  /**
   * Changes `at`…`at + n - 1` of segment `key` (its parts' lines, then its inline ones), in runs,
   * one part in memory at a time: a step of any size is read in bounded memory.
   */
  async *#stepLines(key: string, seg: DecodedSegment, at: number, n: number): AsyncGenerator<Array<Record<string, unknown>>> {
    let counts = this.#partCounts.get(key);
    if (counts === undefined) {
      this.#partCounts.set(key, (counts = []));
      while (this.#partCounts.size > 16) this.#partCounts.delete(this.#partCounts.keys().next().value as string);
    }
    const values = (part: number): Promise<Array<Record<string, unknown>>> => {
      if (part === seg.parts.length) return Promise.resolve(seg.inline);
      const id = (seg.parts[part] as [string, number])[0];
      return cached(this.#partValues, id, 2, () => readPartValues(this.backend, this.keys, id));
    };
    let part = 0;
    let base = 0;
    for (; part < counts.length && base + (counts[part] as number) <= at; part++) base += counts[part] as number;
    for (let i = at; i < at + n;) {
      if (part > seg.parts.length) throw corrupt(`segment ${key}`, `its step at change ${at} needs ${n} changes, it holds ${base}`);
      const lines = await values(part);
      counts[part] = lines.length;
      if (i < base + lines.length) {
        const end = Math.min(base + lines.length, at + n);
        yield lines.slice(i - base, end - base);
        i = end;
        continue;
      }
      base += lines.length;
      part++;
    }
  }

  async #readSegment(key: string): Promise<DecodedSegment> {
    const body = await this.backend.get(key);
    const obj = this.#decodeJson(key, body);
    try {
      if (obj.v !== 3 || obj.kind !== 'segment')
        throw new Error(`unsupported segment version ${String(obj.v)} (this Phoenix reads 3: upgrade it)`);
      if (!Array.isArray(obj.steps) || !Array.isArray(obj.changes)) throw new Error('its steps or changes are not lists');
      const parts = decodeParts(obj.parts);
      this.#learnParts(parts); // a segment written again reuses what did not change
      let at = 0;
      let prev = Number(obj.first) - 1;
      const steps = (obj.steps as Array<Record<string, unknown>>).map((st) => {
        const n = Number(st.n);
        const seq = Number(st.seq);
        if (!(seq > prev) || !(n >= 0)) throw new Error(`step ${String(st.seq)} is malformed`);
        prev = seq;
        const step: SegmentStep & { at: number; n: number } = { seq, timeMs: Number(st.time), stats: st.stats as CommitStats, at, n };
        if (typeof st.digest === 'string') step.digest = st.digest;
        if (typeof st.host === 'string') step.host = st.host;
        if (typeof st.root === 'string') step.root = st.root;
        at += n;
        return step;
      });
      if (steps.at(-1)?.seq !== Number(obj.last)) throw new Error('its last step is not its last commit');
      return { stored: body.length, source: String(obj.source), steps, parts, inline: obj.changes as Array<Record<string, unknown>> };
    } catch (err) {
      throw corrupt(`segment ${key}`, (err as Error).message);
    }
  }

  /**
   * Writes a segment standing for commits `first`…`last` of `source`: `steps` in order, the last
   * one `last`, each with its changes from the step before (from the tree after `first - 1` for
   * the first). Changes beyond INLINE_BYTES go to parts first. Readers prefer it to the objects
   * it covers at once; those can then be deleted.
   */
  async writeSegment(
    source: string,
    first: number,
    last: number,
    steps: Iterable<SegmentStepIn> | AsyncIterable<SegmentStepIn>,
    opts: { gen?: number } = {},
  ): Promise<{ key: string; size: number }> {
    await this.#upgradeConfig(3);
    const heads: Array<Record<string, unknown>> = [];
    let lastTime = 0;
    // Parts cut by content (each change's path) and named by it: a segment written again over
    // the same history stores again only the parts around what changed.
    const lines = this.#lineWriter(this.#parts);
    for await (const st of steps) {
      let n = 0;
      for await (const ch of st.changes) {
        const o = encodeChange(ch);
        const wait = lines.add(JSON.stringify(o), String(o.p), o);
        if (wait !== undefined) await wait;
        n++;
      }
      const h: Record<string, unknown> = { seq: st.seq, time: st.timeMs, n, stats: st.stats };
      if (st.digest !== undefined) h.digest = st.digest;
      if (st.host !== undefined) h.host = st.host;
      if (st.root !== undefined) h.root = st.root;
      heads.push(h);
      lastTime = st.timeMs;
      if (st.seq > last) throw new PhoenixError('PHX_INTERNAL', `internal: segment step ${st.seq} after its end ${last}`);
    }
    if (heads.at(-1)?.seq !== last) throw new PhoenixError('PHX_INTERNAL', `internal: a segment must end with its last step ${last}`);
    const { parts, inline, bytes } = await lines.finish();
    // The next generation over these commits: readers take it over any written before.
    const prefix = `journal/${sourceDir(source)}/`;
    let gen = opts.gen ?? 0;
    for (const o of await listAll(this.backend, `${prefix}${String(last).padStart(12, '0')}-`)) {
      const p = parseJournalKey(o.key.slice(prefix.length));
      if (p?.segment && p.first === first) gen = Math.max(gen, p.gen + 1);
    }
    const key = segmentKey(source, first, last, lastTime, gen);
    const size = await this.#putJson(key, { v: 3, kind: 'segment', source, first, last, steps: heads, parts, changes: inline }, true);
    this.#forgetSegment(key); // a range rolled back and written again has the name it had
    return { key, size: size + bytes };
  }

  /** Lines kept inline up to INLINE_BYTES, then all of them in parts (written as they fill). */
  #lineWriter(known?: Map<string, number>): {
    /** A promise only when the caller must wait (a part was cut): most lines cost none. */
    add(line: string, cutKey?: string, o?: Record<string, unknown>): Promise<void> | undefined;
    finish(): Promise<{ parts: Array<[string, number]>; inline: Array<Record<string, unknown>>; bytes: number }>;
  } {
    let inline: Array<{ o: Record<string, unknown> | undefined; line: string; cutKey: string | undefined }> = [];
    let inlineBytes = 0;
    let parts: PartWriter | undefined;
    return {
      add: (line, cutKey, o) => {
        if (parts !== undefined) return parts.add(line, cutKey);
        inline.push({ o, line, cutKey });
        inlineBytes += line.length;
        if (inlineBytes <= INLINE_BYTES) return undefined;
        const into = (parts = new PartWriter(this.backend, this.keys, known, this.#doomed));
        const held = inline;
        inline = [];
        return (async () => {
          for (const x of held) await into.add(x.line, x.cutKey);
        })();
      },
      finish: async () => ({
        parts: parts === undefined ? [] : await parts.finish(),
        inline: inline.map((x) => x.o ?? (JSON.parse(x.line) as Record<string, unknown>)),
        bytes: parts?.bytes ?? 0,
      }),
    };
  }

  /** The changes of a commit, in order, one part in memory at a time. */
  async *commitChanges(head: CommitHead): AsyncGenerator<JournalChange> {
    for await (const batch of this.commitChangeBatches(head)) yield* batch;
  }

  /** The changes of a commit, in order, in runs (a part's at a time): for readers of many. */
  async *commitChangeBatches(head: CommitHead): AsyncGenerator<JournalChange[]> {
    const what = `commit ${commitKey(head.source, head.seq, head.timeMs)}`;
    const moved = await this.#moved();
    const decode = (values: ReadonlyArray<Record<string, unknown>>): JournalChange[] =>
      values.map((o) => {
        try {
          const c = decodeChange(o);
          if (c.op === 'put' && moved.size > 0) relocate(c, moved);
          return c;
        } catch (err) {
          throw corrupt(what, (err as Error).message);
        }
      });
    if (head.stream !== undefined) {
      for await (const values of head.stream()) yield decode(values);
      return;
    }
    for await (const values of readParts(
      this.backend,
      this.keys,
      head.parts.map(([id]) => id),
    ))
      yield decode(values);
    if (head.inline.length > 0) yield decode(head.inline);
  }

  /**
   * Writes a commit. Call it only once every pack it names is durable: the commit object is
   * the commit point. Create-only, so two writers cannot both take one seq where the store
   * enforces it; the lease keeps them apart everywhere else. Changes beyond INLINE_BYTES go to
   * parts first (written before the commit object), so a commit of any size is written in
   * bounded memory; `changes` may be a generator. `size`: the bytes stored, parts included.
   */
  async writeCommit(c: Omit<Commit, 'changes'> & { changes: Iterable<JournalChange> }): Promise<CommitInfo & { size: number }> {
    await this.#upgradeConfig(2);
    const key = commitKey(c.source, c.seq, c.timeMs);
    const lines = this.#lineWriter();
    for (const ch of c.changes) {
      const wait = lines.add(changeJson(ch));
      if (wait !== undefined) await wait;
    }
    const { parts, inline, bytes } = await lines.finish();
    const { changes: _changes, ...rest } = c;
    const head: CommitHead = { ...rest, parts, inline };
    const size = await this.#putJson(key, encodeCommitHead(head), true);
    return { key, seq: c.seq, timeMs: c.timeMs, size: size + bytes };
  }

  /** The config says format `version` before the first object of that format is written, so that older builds refuse it clearly. */
  async #upgradeConfig(version: 2 | 3): Promise<void> {
    if (this.config.phoenix >= version) return;
    // As stored, not as this process read it at open: another process may have moved the key
    // out of it since (key add), and writing the old one back would bring a removed key back.
    const stored = await this.#storedConfig();
    if (stored.phoenix < version) {
      await this.backend.put(CONFIG_KEY, Buffer.from(`${JSON.stringify({ ...stored, phoenix: version }, null, 2)}\n`));
    }
    this.config.phoenix = Math.max(version, stored.phoenix) as RepoConfig['phoenix'];
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
    await this.#upgradeConfig(2);
    await this.#seedParts(source, seq);
    const parts = new PartWriter(this.backend, this.keys, this.#parts, this.#doomed);
    let entries = 0;
    let last: string | undefined;
    for await (const r of records) {
      const path = r.path;
      if (last !== undefined && !(last < path))
        throw new PhoenixError('PHX_INTERNAL', `internal: checkpoint records out of order at entry ${entries}`);
      last = path;
      const wait = parts.add('json' in r ? r.json : recordJson(r), path);
      if (wait !== undefined) await wait;
      entries++;
    }
    const list = await parts.finish();
    const bytes = await this.#putJson(checkpointKey(source, seq), { v: 2, source, seq, entries, parts: list });
    return { bytes: bytes + parts.bytes, uploaded: bytes + parts.uploaded, entries };
  }

  /** Parts known to exist, with their sizes: those this process wrote or saw in a checkpoint. */
  readonly #parts = new Map<string, number>();
  readonly #seeded = new Set<string>();

  /** Forgets parts prune deletes: a checkpoint written later must upload them again, not name them. */
  forgetParts(ids: Iterable<string>): void {
    for (const id of ids) {
      this.#parts.delete(id);
      this.#forgotten.add(id);
    }
  }

  /** Parts a deletion plan named: an object read later that names them (a superseded one) does not teach them again; uploading one does. */
  readonly #forgotten = new Set<string>();
  #doomedBefore: ((id: string) => boolean) | undefined;

  /**
   * Also refuses to write the parts `doomed` says a deletion plan named (a writer's state
   * remembers the plans it applied before a restart, which this process has not read).
   */
  refuseParts(doomed: (id: string) => boolean): void {
    this.#doomedBefore = doomed;
  }

  /** A part this process must not write under its own name: see PartWriter. */
  readonly #doomed = (id: string): boolean => this.#forgotten.has(id) || this.#doomedBefore?.(id) === true;

  #learnParts(parts: ReadonlyArray<[string, number]>): void {
    for (const [id, size] of parts) if (!this.#doomed(id)) this.#parts.set(id, size);
  }

  /** Learns the parts of the newest checkpoint of `source` before `seq` (once): a new checkpoint reuses what did not change. */
  async #seedParts(source: string, seq: number): Promise<void> {
    if (this.#seeded.has(source)) return;
    this.#seeded.add(source);
    const before = (await this.checkpointSeqs(source)).filter((n) => n < seq);
    if (before.length === 0) return;
    const head = await this.#checkpointHead(source, Math.max(...before)).catch(() => undefined);
    this.#learnParts(head?.parts ?? []);
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

  /**
   * The records of a checkpoint, in order, one part in memory at a time. With `skipParts`: the
   * records of the parts not in it, which are then added to it (a part's id names its content,
   * so a reader that only collects what records refer to reads a part shared by several
   * checkpoints once).
   */
  async *checkpointRecords(source: string, seq: number, opts: { skipParts?: Set<string> } = {}): AsyncGenerator<FileRecord> {
    for await (const batch of this.checkpointRecordBatches(source, seq, opts)) yield* batch;
  }

  /** `checkpointRecords` in runs (a part's at a time): for readers of many. */
  async *checkpointRecordBatches(source: string, seq: number, opts: { skipParts?: Set<string> } = {}): AsyncGenerator<FileRecord[]> {
    const head = await this.#checkpointHead(source, seq);
    this.#learnParts(head.parts);
    const moved = await this.#moved();
    const packs = new Map<string, string>();
    const decode = (values: ReadonlyArray<Record<string, unknown>>): FileRecord[] =>
      values.map((o) => {
        try {
          const r = decodeRecord(o, packs);
          if (moved.size > 0) relocate(r, moved);
          return r;
        } catch (err) {
          throw corrupt(`checkpoint ${head.key}`, (err as Error).message);
        }
      });
    if (head.inline.length > 0) yield decode(head.inline as Array<Record<string, unknown>>);
    const skip = opts.skipParts;
    const ids = head.parts.map(([id]) => id).filter((id) => skip === undefined || !skip.has(id));
    for (const id of ids) skip?.add(id);
    for await (const values of readParts(this.backend, this.keys, ids)) yield decode(values);
  }

  /**
   * The tree of `source` after commit `seq` (the latest when absent): the newest checkpoint at
   * or before it, then the commits after that checkpoint. Checks that the journal is contiguous.
   */
  async loadState(source: string, seq?: number): Promise<{ state: TreeState; seq: number; commitsRead: number }> {
    try {
      return await this.#loadState(source, seq);
    } catch (err) {
      // Retention deleted an object after we listed (it had written what supersedes it first): list again, once.
      if (!isNotFound(err)) throw err;
      return this.#loadState(source, seq);
    }
  }

  async #loadState(source: string, seq?: number): Promise<{ state: TreeState; seq: number; commitsRead: number }> {
    const commits = await this.commitList(source);
    const target = seq ?? commits.at(-1)?.seq ?? 0;
    const best = await this.usableCheckpoint(source, commits, target);
    const state: TreeState = best > 0 ? await this.readCheckpoint(source, best) : new Map();
    const tail = commits.filter((c) => c.seq > best && c.seq <= target);
    const read = await mapLimited(tail, 8, (c) => this.readCommit(c));
    for (const c of read) for (const ch of c.changes) applyChange(state, ch);
    return { state, seq: target, commitsRead: read.length };
  }

  /**
   * The newest checkpoint of `source` at or before `target` that a reader may start from: one
   * at a commit the journal keeps (a checkpoint at a commit that thinning dropped is not one:
   * the next step's changes are from an earlier commit). 0 when there is none.
   */
  async usableCheckpoint(source: string, commits: readonly CommitInfo[], target: number): Promise<number> {
    const kept = new Set(commits.map((c) => c.seq));
    return Math.max(0, ...(await this.checkpointSeqs(source)).filter((n) => n <= target && kept.has(n)));
  }

  /** The seqs of the checkpoints of `source`, from a listing. */
  async checkpointSeqs(source: string): Promise<number[]> {
    const prefix = `checkpoint/${sourceDir(source)}/`;
    return (await listAll(this.backend, prefix)).map((o) => Number(o.key.slice(prefix.length))).filter((n) => n > 0);
  }

  /** A checkpoint as a map (its whole tree in memory: for browsing and restore). */
  async readCheckpoint(source: string, seq: number): Promise<TreeState> {
    const state: TreeState = new Map();
    for await (const batch of this.checkpointRecordBatches(source, seq)) for (const r of batch) state.set(r.path, r);
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
   * missing or short pack is a corrupt repository. With `into`, they are in its memory: read
   * there directly where the backend can, at its start or, for an aligned read, further in.
   */
  async readPack(pack: string, offset: number, length: number, what: string, into?: Uint8Array): Promise<Buffer> {
    try {
      const got = await this.backend.get(packKey(pack), { offset, length, into });
      if (into === undefined || got.buffer === into.buffer) return got; // read in place (at its start, or further in)
      into.set(got);
      return Buffer.from(into.buffer, into.byteOffset, got.length);
    } catch (err) {
      if (isNotFound(err)) throw corrupt(what, 'its pack is missing', err); // the cause says so to callers (ChunkFetcher)
      if (err instanceof PhoenixError && err.code === 'PHX_PAST_END') throw corrupt(what, 'its pack is truncated');
      throw err;
    }
  }

  // ---- retention: policies and pins ----------------------------------------------------------

  /** The policy stored for `source` (undefined: the repository's default), or undefined when none is. */
  async storedPolicy(source: string | undefined): Promise<StoredPolicy | undefined> {
    const key = policyKey(source);
    const obj = await this.#getJson(key).catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e)));
    if (obj === undefined) return undefined;
    if (typeof obj.policy !== 'string' || typeof obj.minAge !== 'string') throw corrupt(`policy ${key}`, 'it has no policy text');
    return { policy: obj.policy, minAge: obj.minAge, setMs: Number(obj.setMs), host: String(obj.host) };
  }

  async setPolicy(source: string | undefined, policy: string, minAge: string): Promise<StoredPolicy> {
    const p: StoredPolicy = { policy, minAge, setMs: Date.now(), host: hostname() };
    await this.#putJson(policyKey(source), { v: 1, ...p });
    return p;
  }

  /** The pins of `source`, oldest first. */
  async pins(source: string): Promise<Pin[]> {
    const out: Pin[] = [];
    for (const o of await listAll(this.backend, pinPrefix(source))) {
      const obj = await this.#getJson(o.key).catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e)));
      if (obj === undefined) continue; // unpinned meanwhile
      const pin: Pin = { atMs: Number(obj.atMs), note: String(obj.note ?? ''), createdMs: Number(obj.createdMs), host: String(obj.host) };
      if (obj.guard !== undefined) pin.guard = obj.guard as Record<string, unknown>;
      if (!Number.isFinite(pin.atMs)) throw corrupt(`pin ${o.key}`, 'it has no time');
      out.push(pin);
    }
    return out.sort((a, b) => a.atMs - b.atMs);
  }

  async pin(source: string, atMs: number, note: string, guard?: Record<string, unknown>): Promise<Pin> {
    const pin: Pin = { atMs, note, createdMs: Date.now(), host: hostname(), ...(guard !== undefined ? { guard } : {}) };
    await this.#putJson(pinKey(source, atMs), { v: 1, ...pin });
    return pin;
  }

  /** Removes the pin at `atMs`; false when there was none. */
  async unpin(source: string, atMs: number): Promise<boolean> {
    const key = pinKey(source, atMs);
    const there = await this.backend.stat(key).then(
      () => true,
      (e: unknown) => (isNotFound(e) ? false : Promise.reject(e)),
    );
    if (there) await this.backend.delete(key);
    return there;
  }

  // ---- the writer's lease -----------------------------------------------------------------

  /**
   * Takes the lease of `source` for this process, or fails with PHX_LOCKED naming the holder.
   * Race-free without conditional writes: a writer first writes its own lease object, then
   * lists the others; it holds the lease only if no other live one is there. Of two writers that
   * start together, the one that lists last sees the other's object (both may see each other:
   * then both step back and try again after a random pause).
   */
  async acquireLease(source: string, ttlMs = LEASE_TTL_MS): Promise<Lease> {
    return this.#acquire(leasePrefix(source), `source ${JSON.stringify(source)} is being written`, 'only one writer per source', ttlMs);
  }

  /** The maintenance lease (forget, prune): one host at a time maintains the repository. */
  async acquireMaintenanceLease(): Promise<Lease> {
    return this.#acquire(MAINTENANCE_LEASES, 'the repository is being maintained (forget or prune)', 'one maintainer at a time');
  }

  /** The writers' leases that are live now, every source's. */
  async liveWriters(): Promise<LiveWriter[]> {
    const out: LiveWriter[] = [];
    const dirs = new Set<string>();
    for (const o of await listAll(this.backend, 'leases/')) {
      const dir = o.key.split('/')[1] ?? '';
      if (dir !== '' && !dir.startsWith('~')) dirs.add(dir);
    }
    for (const dir of dirs) {
      for (const l of (await this.#leases(`leases/${dir}/`, '')).live) {
        out.push({ source: sourceFromDir(dir), host: l.host, pid: l.pid, token: l.token, expiresMs: l.expiresMs, acked: l.acked });
      }
    }
    return out;
  }

  /** The time on the store's clock: the modification time of an object written now. */
  async storeNow(): Promise<number> {
    await this.backend.put(CLOCK_KEY, Buffer.from(`${hostname()}\n`));
    return (await this.backend.stat(CLOCK_KEY)).mtimeMs ?? Date.now();
  }

  // ---- relocations (repacking) ----------------------------------------------------------------

  #relocations: Promise<Map<string, Map<string, ChunkRef>>> | undefined;
  /** The relocation objects read into #relocations. */
  readonly #relocationKeys = new Set<string>();

  /**
   * Where repacked chunks went: old pack → chunk id → where it is now. Read once per process,
   * and again by refreshRelocations (a long-lived process whose records name packs that another
   * process repacked since).
   */
  #moved(): Promise<Map<string, Map<string, ChunkRef>>> {
    this.#relocations ??= this.#readRelocations(new Map());
    this.#relocations.catch(() => (this.#relocations = undefined));
    return this.#relocations;
  }

  async #readRelocations(map: Map<string, Map<string, ChunkRef>>): Promise<Map<string, Map<string, ChunkRef>>> {
    for (const key of (await listAll(this.backend, 'relocations/')).map((o) => o.key).sort()) {
      if (this.#relocationKeys.has(key)) continue;
      const obj = await this.#getJson(key);
      if (!Array.isArray(obj.moves)) throw corrupt(`relocation ${key}`, 'it has no moves');
      for (const m of decodeMoves(obj.moves)) addMove(map, m.from, m.to);
      this.#relocationKeys.add(key);
    }
    return map;
  }

  /**
   * Where the chunk `ref` names is now, by the relocations this process has read (after
   * refreshRelocations: also those written since it read the record that named `ref`);
   * undefined when none moves it.
   */
  async relocated(ref: ChunkRef): Promise<ChunkRef | undefined> {
    const now = movedRef(ref, await this.#moved());
    return now === ref ? undefined : now;
  }

  /** How many relocation objects this process has read: a cache of records decoded before it grew names old packs. */
  get relocationsRead(): number {
    return this.#relocationKeys.size;
  }

  /**
   * Reads the relocations written since this process last looked. Prune must: what it keeps is
   * what records name once relocated, and a record naming a pack another prune repacked names,
   * through the new relocation only, the pack that holds its chunks now.
   */
  async refreshRelocations(): Promise<void> {
    await this.#readRelocations(await this.#moved());
  }

  /**
   * Records that the chunks of old packs now live elsewhere (prune repacked them), before the
   * old packs are doomed: every reader from then on finds them there, whatever record names them.
   */
  async writeRelocations(moves: ReadonlyArray<{ from: string; to: ChunkRef }>): Promise<string> {
    const key = timedKey('relocations/');
    await this.#putJson(key, { v: 1, moves: encodeMoves(moves) });
    const map = await this.#moved();
    for (const m of moves) addMove(map, m.from, m.to);
    this.#relocationKeys.add(key);
    return key;
  }

  // ---- deletion plans ------------------------------------------------------------------------

  /**
   * Publishes what prune is about to delete, before it deletes it: a writer that starts later
   * (or wakes with its lease run out) purges these packs from its deduplication index first,
   * so it never names a chunk in a pack that is gone.
   */
  async writeDeletionPlan(
    packs: readonly string[],
    parts: readonly string[],
    moved: ReadonlyArray<{ from: string; to: ChunkRef }> = [],
  ): Promise<string> {
    // Writers acknowledge the newest plan they applied, so a new plan must sort after every one
    // before it whatever the hosts' clocks: its time is the store's, and later than the last plan's.
    const last = (await this.deletionPlans()).at(-1);
    const lastMs = last === undefined ? 0 : Number(/^deletions\/(\d{13})-/.exec(last)?.[1] ?? 0);
    const key = timedKey('deletions/', Math.max(await this.storeNow(), lastMs + 1));
    await this.#putJson(key, { v: 1, createdMs: Date.now(), host: hostname(), packs, parts, moves: encodeMoves(moved) });
    return key;
  }

  /** The keys of the deletion plans, oldest first. */
  async deletionPlans(): Promise<string[]> {
    return (await listAll(this.backend, 'deletions/')).map((o) => o.key).sort();
  }

  async readDeletionPlan(
    key: string,
  ): Promise<{ packs: string[]; parts: string[]; createdMs: number; moved: Array<{ from: string; to: ChunkRef }> }> {
    const obj = await this.#getJson(key);
    if (!Array.isArray(obj.packs)) throw corrupt(`deletion plan ${key}`, 'it has no pack list');
    const moved = decodeMoves(obj.moves ?? []);
    return {
      packs: obj.packs.map(String),
      parts: ((obj.parts as unknown[] | undefined) ?? []).map(String),
      createdMs: Number(obj.createdMs),
      moved,
    };
  }

  /** The metadata parts an object of the journal or a checkpoint names (to tell prune what is still used). */
  async partsOf(key: string): Promise<string[]> {
    const name = key.split('/').pop() ?? '';
    if (key.startsWith('journal/') && parseJournalKey(name)?.segment) return (await this.#segment(key)).parts.map(([id]) => id);
    const obj = await this.#getJson(key);
    try {
      return decodeParts(obj.parts).map(([id]) => id);
    } catch (err) {
      throw corrupt(`object ${key}`, (err as Error).message);
    }
  }

  async #acquire(prefix: string, busy: string, rule: string, ttlMs = LEASE_TTL_MS): Promise<Lease> {
    const me = { host: hostname(), pid: process.pid, token: randomBytes(8).toString('hex'), acquiredMs: Date.now() };
    const key = prefix + me.token;
    let expiresMs = 0;
    // The lease ran out before a write took it again (a process stopped, a laptop asleep):
    // kept until fresh() reports it, whether renew() or fresh() took it again.
    let lapsed = false;
    let notes: Record<string, unknown> = {};
    const write = (): Promise<void> => {
      if (expiresMs > 0 && Date.now() >= expiresMs) lapsed = true;
      const next = Date.now() + ttlMs;
      return this.backend.put(key, Buffer.from(JSON.stringify({ ...notes, ...me, expiresMs: next }))).then(() => void (expiresMs = next));
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
        `${busy} by process ${holder.pid} on ${holder.host} (lease until ${new Date(holder.expiresMs).toISOString()})`,
        { hint: `${rule}: stop the other one, or wait for its lease to expire if it died` },
      );
    }
    return {
      renew: async () => {
        // Our lease expired while we could not reach the store and another writer took over
        // (it asked after our lease ran out: a writer that asked before saw ours and stepped
        // back), or our object is gone (a writer that took over cleaned it up): stop.
        const { live, mine } = await this.#leases(prefix, me.token);
        if (!mine || live.some((l) => l.acquiredMs >= expiresMs)) {
          throw new PhoenixError('PHX_LOCKED', `the lease ${prefix} was taken over by another process`, {
            hint: `${rule}: stop the other one`,
          });
        }
        await write();
      },
      note: (fields) => {
        notes = { ...notes, ...fields };
      },
      fresh: async () => {
        if (!lapsed && Date.now() < expiresMs - Math.min(30_000, ttlMs / 4)) return false;
        // Our lease ran out (a laptop that slept, a store we could not reach): before we
        // commit, make sure nobody took over and take it again; the caller then looks for
        // deletion plans (prune did not wait for us: it saw no live lease).
        const { live, mine } = await this.#leases(prefix, me.token);
        if (!mine || live.some((l) => l.acquiredMs >= expiresMs)) {
          throw new PhoenixError('PHX_LOCKED', `the lease ${prefix} was taken over by another process while it had run out`, {
            hint: `${rule}: stop the other one`,
          });
        }
        await write();
        lapsed = false;
        return true;
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
  /** The newest deletion plan this writer has purged from its cache, with nothing in flight from before. */
  acked?: string;
}

export interface LiveWriter {
  source: string;
  host: string;
  pid: number;
  token: string;
  expiresMs: number;
  acked: string | undefined;
}

export interface Lease {
  renew(): Promise<void>;
  /** Fields the lease object carries from its next write on (a writer's `acked` deletion plan). */
  note(fields: Record<string, unknown>): void;
  /**
   * Call before each commit. When the lease ran out since the last call (even if a renewal
   * took it again since) or is about to, takes it again (PHX_LOCKED if another process took
   * over) and returns true: the caller must then look for deletion plans it has not applied,
   * and for any applied since its commit began, before it commits.
   */
  fresh(): Promise<boolean>;
  release(): Promise<void>;
}

/**
 * Gathers new chunks into packs and uploads each pack when it reaches the target size.
 * `flush()` uploads the last partial pack and waits for every upload: after it, every ref
 * handed out is durable and a commit may name them.
 */
export class ChunkWriter {
  #pack = new PackBuilder();
  /** The refs of the blobs in the pack being filled: their pack is named when it is cut. */
  #refs: ChunkRef[] = [];
  readonly #uploads: Array<Promise<void>> = [];
  readonly packs: string[] = [];
  bytesUploaded = 0;

  constructor(readonly repo: Repository) {}

  /**
   * Adds a blob already sealed (by a worker thread). Its ref names its pack once the pack is
   * cut (at the latest by `flush()`): until then `pack` is ''. `size`: its plaintext bytes, for
   * the ref to carry.
   */
  add(id: string, sealed: Buffer, size?: number): ChunkRef {
    const entry = this.#pack.add(id, sealed);
    const ref: ChunkRef = { id, pack: '', offset: entry.offset, length: entry.length };
    if (size !== undefined) ref.size = size;
    this.#refs.push(ref);
    if (this.#pack.size >= PACK_TARGET) this.#cut();
    return ref;
  }

  /** `add`, resolved once its pack is cut. */
  async addSealed(id: string, sealed: Buffer): Promise<ChunkRef> {
    const ref = this.add(id, sealed);
    if (ref.pack === '') await new Promise<void>((resolve) => this.#cutWaiters.push(resolve));
    return ref;
  }

  readonly #cutWaiters: Array<() => void> = [];

  #cut(): void {
    if (this.#pack.entries.length === 0) return;
    const { id, parts, size } = this.#pack.finish(this.repo.keys);
    for (const r of this.#refs) r.pack = id;
    this.#refs = [];
    for (const w of this.#cutWaiters.splice(0)) w();
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

  /**
   * Waits while more than `max` packs are uploading, so memory stays bounded; undefined (no
   * promise made) when there is room and no upload failed.
   */
  backpressure(max = 3): Promise<void> | undefined {
    if (this.#active <= max && this.#error === undefined) return undefined;
    return (async () => {
      while (this.#active > max) await new Promise<void>((r) => this.#waiters.push(r));
      if (this.#error !== undefined) throw this.#error;
    })();
  }

  /** Uploads the partial pack and waits until every pack is durable. */
  async flush(): Promise<void> {
    this.#cut();
    await Promise.all(this.#uploads);
    if (this.#error !== undefined) throw this.#error;
  }
}

/** An object's key under `prefix` that sorts by the time it was written (and is unique). */
function timedKey(prefix: string, timeMs = Date.now()): string {
  return `${prefix}${String(timeMs).padStart(13, '0')}-${randomBytes(4).toString('hex')}`;
}

type Move = { from: string; to: ChunkRef };

/** Moves as relocation objects and deletion plans store them: `[oldPack, chunkId, newPack, offset, length]`. */
function encodeMoves(moves: readonly Move[]): unknown[][] {
  return moves.map((m) => [m.from, m.to.id, m.to.pack, m.to.offset, m.to.length]);
}

function decodeMoves(v: unknown): Move[] {
  if (!Array.isArray(v)) throw new PhoenixError('PHX_CORRUPT', 'a list of moves is not a list');
  return (v as unknown[][]).map((m) => ({
    from: String(m[0]),
    to: { id: String(m[1]), pack: String(m[2]), offset: Number(m[3]), length: Number(m[4]) },
  }));
}

function addMove(map: Map<string, Map<string, ChunkRef>>, from: string, to: ChunkRef): void {
  let m = map.get(from);
  if (m === undefined) map.set(from, (m = new Map()));
  m.set(to.id, to);
}

/** Points the chunk refs of `r` at where repacking moved them. */
function relocate(r: FileRecord, moved: ReadonlyMap<string, ReadonlyMap<string, ChunkRef>>): void {
  r.chunks = r.chunks.map((c) => movedRef(c, moved));
}

/** Where repacking moved chunk `c` (following moves of moves); `c` itself when it did not. */
function movedRef(c: ChunkRef, moved: ReadonlyMap<string, ReadonlyMap<string, ChunkRef>>): ChunkRef {
  let ref = c;
  for (let hops = 0; hops < 64; hops++) {
    const to = moved.get(ref.pack)?.get(ref.id);
    if (to === undefined) break;
    ref = { ...to, ...(c.size !== undefined ? { size: c.size } : {}) };
  }
  return ref;
}

/** A bounded cache of promises (the oldest goes first); a rejected one is not kept. */
function cached<T>(map: Map<string, Promise<T>>, key: string, max: number, make: () => Promise<T>): Promise<T> {
  let p = map.get(key);
  if (p === undefined) {
    p = make();
    map.set(key, p);
    p.catch(() => map.delete(key));
    while (map.size > max) map.delete(map.keys().next().value as string);
  }
  return p;
}

function noPassword(): PhoenixError {
  return new PhoenixError('PHX_NO_PASSWORD', 'the repository is encrypted and no password was given', {
    hint: 'set PHOENIX_PASSWORD, or PHOENIX_PASSWORD_FILE / --password-file, or run on a terminal to be asked',
  });
}

export async function mapLimited<T, R>(items: T[], limit: number, fn: (t: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
