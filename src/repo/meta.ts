import { promisify } from 'node:util';
import { deflateRaw as deflateRawCb, inflateRawSync } from 'node:zlib';
import type { Backend } from '../backend/backend.js';
import { corrupt, type Keys } from './crypto.js';

/**
 * Metadata parts: the records of a checkpoint and the changes of a large commit are stored as
 * a sequence of parts, each a sealed, deflate-raw compressed run of JSON lines of at most
 * PART_MAX_BYTES, so that no object is ever encoded or decoded through one buffer that grows
 * with the tree. A part is named by the id of its plaintext (as chunks are), so a checkpoint
 * whose records did not change in a part's range reuses the part of the last checkpoint.
 */
export const partKey = (id: string): string => `meta/${id.slice(0, 2)}/${id}`;

/** Plaintext bytes of one part at most (a single larger line makes a part of its own). */
export const PART_MAX_BYTES = 4 * 2 ** 20;
/** Lines of a part at least before a content-defined cut, and the mask that cuts about every 4096 lines after it. */
const PART_MIN_LINES = 512;
const CUT_MASK = 0xfff;
const deflateRaw = promisify(deflateRawCb);

/** Parts compressed and uploading at once. */
const PARALLEL = 4;

/** FNV-1a over the key's char codes: a cut that depends on the record only, never on its neighbours' positions. */
function cutHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Writes lines into parts. Lines given a `cutKey` (a record's path) are cut where the key's
 * hash says so, so that the same records in the same order make the same parts from one
 * checkpoint to the next, and an edit changes only the parts around it.
 */
export class PartWriter {
  /** The parts written, in order, with their stored sizes. */
  readonly parts: Array<[id: string, size: number]> = [];
  /** Bytes stored (sealed) for this writer's parts, reused ones included: what a reader fetches. */
  bytes = 0;
  /** Bytes actually uploaded (parts that were not there already). */
  uploaded = 0;
  #lines: string[] = [];
  #size = 0;
  readonly #inflight = new Set<Promise<void>>();
  #error: unknown;

  constructor(
    readonly backend: Backend,
    readonly keys: Keys,
    /** Parts known to exist, with their stored sizes: not uploaded again (this writer adds its own). */
    readonly known: Map<string, number> = new Map(),
    /** Parts a deletion plan named: never written under that name again (prune may be deleting it right now). */
    readonly doomed: (id: string) => boolean = () => false,
  ) {}

  /**
   * Adds one line. A promise only when a part is cut (await it: it waits while too many parts
   * are uploading); nothing for most lines, which then cost no promise at all.
   */
  add(line: string, cutKey?: string): Promise<void> | undefined {
    if (this.#size > 0 && this.#size + line.length + 1 > PART_MAX_BYTES) return this.#cut().then(() => this.#push(line, cutKey));
    return this.#push(line, cutKey);
  }

  #push(line: string, cutKey: string | undefined): Promise<void> | undefined {
    this.#lines.push(line);
    this.#size += line.length + 1;
    if (cutKey !== undefined && this.#lines.length >= PART_MIN_LINES && (cutHash(cutKey) & CUT_MASK) === 0) return this.#cut();
    return undefined;
  }

  /** Stores the last part and waits for every upload. */
  async finish(): Promise<Array<[string, number]>> {
    await this.#cut();
    await Promise.all(this.#inflight);
    if (this.#error !== undefined) throw this.#error;
    return this.parts;
  }

  async #cut(): Promise<void> {
    if (this.#lines.length === 0) return;
    let plain = Buffer.from(`${this.#lines.join('\n')}\n`);
    this.#lines = [];
    this.#size = 0;
    let id = this.keys.id(plain).toString('hex');
    // A part prune has doomed may be deleted at any moment, after prune's last look at what
    // names it: uploading the same content again would put back an object about to go, and
    // whatever names it would then name nothing. The same lines behind a space (JSON
    // whitespace, read the same) are another part with another name.
    while (this.doomed(id)) {
      plain = Buffer.concat([Buffer.from(' '), plain]);
      id = this.keys.id(plain).toString('hex');
    }
    const have = this.known.get(id);
    if (have !== undefined) {
      this.parts.push([id, have]);
      this.bytes += have;
      return;
    }
    const part: [string, number] = [id, 0];
    this.parts.push(part); // its place in order now, its size once it is sealed
    while (this.#inflight.size >= PARALLEL) await Promise.race(this.#inflight);
    if (this.#error !== undefined) throw this.#error;
    // Compressed on a libuv thread, not on the main thread, which meanwhile goes on with the
    // next part or with the files of the next commit (deflate was about 3% of it in a first
    // backup of 2,000,000 files). Level 1: about as small as level 6 for these lines (hex ids
    // and base64 paths), at half the time.
    const up = deflateRaw(plain, { level: 1 })
      .then((z) => {
        const body = this.keys.seal(z);
        part[1] = body.length;
        this.bytes += body.length;
        this.uploaded += body.length;
        return this.backend.put(partKey(id), body).then(() => body.length);
      })
      .then(
        (size) => void this.known.set(id, size), // only once it is durable: a later writer may rely on it
        (err: unknown) => void (this.#error ??= err),
      );
    const tracked = up.finally(() => this.#inflight.delete(tracked));
    this.#inflight.add(tracked);
  }
}

/** The lines of part `id`: fetched, opened, checked against its id, inflated. */
export async function readPart(backend: Backend, keys: Keys, id: string): Promise<string[]> {
  const key = partKey(id);
  const body = await backend.get(key);
  const sealed = keys.open(body, `object ${key}`);
  let plain: Buffer;
  try {
    plain = inflateRawSync(sealed);
  } catch {
    throw corrupt(`object ${key}`, 'it does not decode');
  }
  if (keys.id(plain).toString('hex') !== id) throw corrupt(`object ${key}`, 'its content does not match its name');
  const text = plain.toString();
  if (!text.endsWith('\n')) throw corrupt(`object ${key}`, 'it is cut short');
  return text.slice(0, -1).split('\n');
}

/** The JSON values of the lines of part `id`. */
export async function readPartValues(backend: Backend, keys: Keys, id: string): Promise<Array<Record<string, unknown>>> {
  const lines = await readPart(backend, keys, id);
  const values = new Array<Record<string, unknown>>(lines.length);
  for (let i = 0; i < lines.length; i++) {
    try {
      values[i] = JSON.parse(lines[i] as string) as Record<string, unknown>;
    } catch (err) {
      if (err instanceof SyntaxError) throw corrupt(`object ${partKey(id)}`, 'a line is not JSON');
      throw err;
    }
  }
  return values;
}

/**
 * The JSON values of the lines of `ids`, in order, a part's at a time (the next part is fetched
 * while this one is used; one part in memory at a time). By the part, not by the value: a value
 * at a time through an async generator cost about 1 µs each, as much as decoding it.
 */
export async function* readParts(backend: Backend, keys: Keys, ids: readonly string[]): AsyncGenerator<Array<Record<string, unknown>>> {
  let next = ids.length > 0 ? readPartValues(backend, keys, ids[0] as string) : undefined;
  for (let i = 0; i < ids.length; i++) {
    const values = await (next as Promise<Array<Record<string, unknown>>>);
    next = i + 1 < ids.length ? readPartValues(backend, keys, ids[i + 1] as string) : undefined;
    next?.catch(() => {}); // awaited on the next turn
    yield values;
  }
}
