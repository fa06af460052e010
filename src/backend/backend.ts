import { randomBytes } from 'node:crypto';
import { PhoenixError } from '../errors.js';

/**
 * The storage interface every backend implements (memory, local directory, S3, and the
 * wrappers). Keys are '/'-separated strings without a leading '/'; generic code relies on
 * the contract stated on each method, and the conformance suite (test/backend-suite.ts)
 * checks it for every backend.
 */
export interface Backend {
  /** Where the objects live, for messages (`/mnt/backup`, `s3://bucket/prefix`). */
  readonly location: string;
  readonly capabilities: BackendCapabilities;
  /**
   * Stores `data` (one buffer, or parts to be stored back to back) under `key`, atomically: a
   * reader sees the whole object or none. With `createOnly`, fails with `PHX_EXISTS` when the
   * key exists — but only backends whose capabilities say `createOnly` guarantee that.
   */
  put(key: string, data: Body, opts?: { createOnly?: boolean }): Promise<void>;
  /**
   * The whole object, or `length` bytes from `offset`. A missing key fails with
   * `PHX_NOT_FOUND`; a range past the end fails with `PHX_PAST_END`, never a short read.
   */
  get(key: string, range?: ByteRange): Promise<Buffer>;
  /** The object's size; `PHX_NOT_FOUND` when missing. */
  stat(key: string): Promise<ObjectInfo>;
  /** Every object whose key starts with `prefix`, with its size and modification time, paginated underneath, in no set order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Removes `key`; removing a missing key succeeds. */
  delete(key: string): Promise<void>;
  close(): Promise<void>;
}

/** An object's bytes: one buffer, or parts (a pack's blobs need not be copied into one buffer first). */
export type Body = Uint8Array | readonly Uint8Array[];

/** The body as one buffer (a copy only when it is in parts). */
export function bodyBytes(data: Body): Uint8Array {
  return data instanceof Uint8Array ? data : Buffer.concat(data);
}

export interface BackendCapabilities {
  /** `put(…, {createOnly: true})` is enforced atomically by the storage. */
  createOnly: boolean;
}

export interface ByteRange {
  offset: number;
  length: number;
  /**
   * A buffer of at least `length` bytes to read into, where the backend can (the local one
   * does): the result is then a view of its memory, at its start or, for a read that must be
   * aligned, further in (give `into` a few KiB more than `length` to allow that). Others ignore
   * it and return a buffer of their own.
   */
  into?: Uint8Array;
}

export interface ObjectInfo {
  key: string;
  size: number;
  /**
   * When the object was last written, on the store's clock (listings give it; the conformance
   * suite checks it). Retention judges ages by it, so a host with a wrong clock cannot make a
   * young object look old.
   */
  mtimeMs?: number;
}

/** A storage failure. `transient` ones (network, 5xx, throttling) are worth retrying. */
export class BackendError extends PhoenixError {
  readonly transient: boolean;
  readonly key: string | undefined;

  constructor(
    code: 'PHX_NOT_FOUND' | 'PHX_EXISTS' | 'PHX_BACKEND' | 'PHX_PAST_END',
    message: string,
    opts: { transient?: boolean; key?: string; hint?: string; cause?: unknown } = {},
  ) {
    super(code, message, opts);
    this.name = 'BackendError';
    this.transient = opts.transient ?? false;
    this.key = opts.key;
  }
}

export const notFound = (location: string, key: string): BackendError =>
  new BackendError('PHX_NOT_FOUND', `${location}: object ${key} does not exist`, { key });

export const exists = (location: string, key: string): BackendError =>
  new BackendError('PHX_EXISTS', `${location}: object ${key} already exists`, { key });

export const pastEnd = (location: string, key: string, range: ByteRange, size: number): BackendError =>
  new BackendError(
    'PHX_PAST_END',
    `${location}: read of ${range.length} bytes at ${range.offset} is past the end of ${key} (${size} bytes)`,
    { key },
  );

export function isNotFound(err: unknown): boolean {
  return err instanceof PhoenixError && err.code === 'PHX_NOT_FOUND';
}

export function isTransient(err: unknown): boolean {
  return err instanceof BackendError && err.transient;
}

/** Checks a range against an object's size (shared by backends that read whole objects). */
export function checkRange(location: string, key: string, size: number, range: ByteRange | undefined): void {
  if (range === undefined) return;
  if (!Number.isSafeInteger(range.offset) || !Number.isSafeInteger(range.length) || range.offset < 0 || range.length < 0) {
    throw new BackendError('PHX_BACKEND', `${location}: invalid range (offset ${range.offset}, length ${range.length}) for ${key}`, {
      key,
    });
  }
  if (range.offset + range.length > size) throw pastEnd(location, key, range, size);
}

/** Where a put writes before it renames into place (file-system-like stores): never a valid key, and left out of listings. */
export const TMP_PREFIX = '.tmp-';

/** A temporary name for a put into `dir`. */
export function tmpName(dir: string): string {
  return `${dir}/${TMP_PREFIX}${randomBytes(8).toString('hex')}`;
}

/**
 * Checks a key for stores that map keys to paths (a directory, SFTP, WebDAV): no empty,
 * `.` or `..` segment, no leading '/', no temporary name. Keys come from Phoenix itself,
 * but a bad one must never reach outside the repository.
 */
export function checkKey(location: string, key: string): string {
  if (key === '' || key.startsWith('/') || key.split('/').some((s) => s === '' || s === '.' || s === '..' || s.startsWith(TMP_PREFIX))) {
    throw new BackendError('PHX_BACKEND', `${location}: invalid object key ${JSON.stringify(key)}`, { key });
  }
  return key;
}

/** One entry of a directory of a path-like store, for listByDirectory: `info` for a file when the listing gives its size. */
export interface DirEntry {
  name: string;
  dir: boolean;
  info?: { size: number; mtimeMs?: number };
}

/**
 * The listing of `prefix` for stores that keep keys as paths (a directory, SFTP, WebDAV):
 * only the directories the prefix can reach are read, one at a time, and temporary names are
 * left out. `readDir(rel)` lists one directory ('' is the root), undefined when it does not
 * exist; `statFile` gives a file's size where the listing does not (undefined: it is gone).
 */
export async function* listByDirectory(
  prefix: string,
  readDir: (rel: string) => Promise<DirEntry[] | undefined>,
  statFile?: (key: string) => Promise<{ size: number; mtimeMs?: number } | undefined>,
): AsyncIterable<ObjectInfo> {
  const cut = prefix.lastIndexOf('/');
  const pending = [cut < 0 ? '' : prefix.slice(0, cut)];
  while (pending.length > 0) {
    const rel = pending.pop() as string;
    for (const e of (await readDir(rel)) ?? []) {
      if (e.name === '' || e.name === '.' || e.name === '..' || e.name.startsWith(TMP_PREFIX)) continue;
      const key = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.dir) {
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) pending.push(key);
      } else if (key.startsWith(prefix)) {
        const info = e.info ?? (await statFile?.(key));
        if (info !== undefined) yield { key, ...info };
      }
    }
  }
}

/** Collects a listing (for callers that need it whole). */
export async function listAll(b: Backend, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of b.list(prefix)) out.push(o);
  return out;
}
