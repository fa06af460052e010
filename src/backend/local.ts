import { constants, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errnoCode } from '../errors.js';
import { native } from '../native.js';
import {
  BackendError,
  checkRange,
  exists,
  notFound,
  type Backend,
  type Body,
  type ByteRange,
  type ObjectInfo,
  checkKey,
  listByDirectory,
  tmpName,
} from './backend.js';

/** Objects from this size on are dropped from the page cache once durable, and reads this large once read (packs; not small metadata). */
const DROP_CACHE_FROM = 1024 * 1024;

/**
 * Reads this large into a caller's buffer (a restore's windows of a pack) go around the page
 * cache (O_DIRECT) where the file system allows it: the bytes come straight into the buffer,
 * with no copy from the cache and no cache to fill and drop again. On this machine a cold
 * restore of bench:repo's 1.25 GiB took 0.35 CPU-s less (system time 1.33–1.64 s against 1.74–1.80).
 */
const DIRECT_FROM = 1024 * 1024;
/** Offsets, lengths and memory of direct reads are aligned to this (any block size up to it). */
const DIRECT_ALIGN = 4096;

function dropCache(fd: number): void {
  try {
    native().dropCache(fd);
  } catch {
    // no addon: the pages stay cached, which is only slower
  }
}

/**
 * Objects as files under a directory (an external disk, a NAS mount). A put writes a
 * temporary file, fsyncs it, renames (or links, for create-only) it into place and fsyncs
 * the directory, so a crash leaves the old object, the new one, or a stray `.tmp-` file —
 * never a torn object.
 */
export class LocalBackend implements Backend {
  readonly location: string;
  readonly capabilities = { createOnly: true };
  readonly #root: string;
  /** Whether reads may try O_DIRECT (until the file system refuses it once). */
  #direct = true;

  constructor(root: string) {
    this.#root = root;
    this.location = root;
  }

  #path(key: string): string {
    return join(this.#root, checkKey(this.location, key));
  }

  async put(key: string, data: Body, opts: { createOnly?: boolean } = {}): Promise<void> {
    const path = this.#path(key);
    const dir = dirname(path);
    const tmp = tmpName(dir);
    try {
      await fs.mkdir(dir, { recursive: true });
      const fh = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await writeAll(fh, data instanceof Uint8Array ? [data] : data);
        await fh.sync();
        // Durable now: its pages need not stay cached (see native/fadvise.cc).
        if (!(data instanceof Uint8Array) || data.length >= DROP_CACHE_FROM) dropCache(fh.fd);
      } finally {
        await fh.close();
      }
      if (opts.createOnly) {
        try {
          await fs.link(tmp, path); // fails atomically with EEXIST
        } finally {
          await fs.unlink(tmp).catch(() => {});
        }
      } else {
        await fs.rename(tmp, path);
      }
      await syncDir(dir);
    } catch (err) {
      await fs.unlink(tmp).catch(() => {});
      if (errnoCode(err) === 'EEXIST') throw exists(this.location, key);
      throw this.#error(err, key, 'write');
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    const path = this.#path(key);
    if (range?.into !== undefined && range.length >= DIRECT_FROM && this.#direct) {
      const got = await this.#getDirect(path, key, range, range.into);
      if (got !== undefined) return got;
    }
    let fh;
    try {
      fh = await fs.open(path, 'r');
    } catch (err) {
      throw this.#error(err, key, 'read');
    }
    try {
      const { size } = await fh.stat();
      checkRange(this.location, key, size, range);
      const offset = range?.offset ?? 0;
      const length = range?.length ?? size;
      const into = range?.into;
      const buf =
        into !== undefined && into.length >= length ? Buffer.from(into.buffer, into.byteOffset, length) : Buffer.allocUnsafe(length);
      await this.#readAtLeast(fh, key, buf, length, offset);
      if (length >= DROP_CACHE_FROM) dropCache(fh.fd); // read once (a restore, a check): no need to keep it
      return buf;
    } catch (err) {
      throw err instanceof BackendError ? err : this.#error(err, key, 'read');
    } finally {
      await fh.close();
    }
  }

  /**
   * `range` read with O_DIRECT into an aligned place of `into`: a view of it, or undefined when
   * this cannot be (no room for the aligned span, no native addon, a file system that refuses:
   * then reads go through the page cache from now on).
   */
  async #getDirect(path: string, key: string, range: ByteRange, into: Uint8Array): Promise<Buffer | undefined> {
    const start = range.offset - (range.offset % DIRECT_ALIGN);
    const span = Math.ceil((range.offset + range.length) / DIRECT_ALIGN) * DIRECT_ALIGN - start;
    let at: number;
    try {
      at = (DIRECT_ALIGN - native().pageOffset(into)) % DIRECT_ALIGN;
    } catch {
      this.#direct = false;
      return undefined;
    }
    if (at + span > into.length) return undefined;
    let fh;
    try {
      fh = await fs.open(path, constants.O_RDONLY | constants.O_DIRECT);
    } catch (err) {
      if (errnoCode(err) !== 'EINVAL') throw this.#error(err, key, 'read');
      this.#direct = false;
      return undefined;
    }
    try {
      const { size } = await fh.stat();
      checkRange(this.location, key, size, range);
      const buf = Buffer.from(into.buffer, into.byteOffset + at, span);
      // The span may reach past the end of the file, to the next block: the bytes asked for are enough.
      await this.#readAtLeast(fh, key, buf, range.offset + range.length - start, start);
      return buf.subarray(range.offset - start, range.offset - start + range.length);
    } catch (err) {
      if (errnoCode(err) === 'EINVAL') {
        this.#direct = false;
        return undefined;
      }
      throw err instanceof BackendError ? err : this.#error(err, key, 'read');
    } finally {
      await fh.close();
    }
  }

  /** Fills `buf` from `position` on, reading at least `need` bytes (fewer: the object shrank while read). */
  async #readAtLeast(fh: FileHandle, key: string, buf: Buffer, need: number, position: number): Promise<void> {
    let done = 0;
    while (done < need) {
      const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
      if (bytesRead === 0)
        throw new BackendError('PHX_BACKEND', `${this.location}: ${key} shrank while being read`, { key, transient: true });
      done += bytesRead;
    }
  }

  async stat(key: string): Promise<ObjectInfo> {
    try {
      const st = await fs.stat(this.#path(key));
      return { key, size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      throw err instanceof BackendError ? err : this.#error(err, key, 'stat');
    }
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return listByDirectory(
      prefix,
      async (rel) => {
        let entries;
        try {
          entries = await fs.readdir(join(this.#root, rel), { withFileTypes: true });
        } catch (err) {
          if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
          throw this.#error(err, rel, 'list');
        }
        return entries.filter((e) => e.isDirectory() || e.isFile()).map((e) => ({ name: e.name, dir: e.isDirectory() }));
      },
      async (key) => {
        const st = await fs.stat(join(this.#root, key)).catch(() => undefined);
        return st === undefined ? undefined : { size: st.size, mtimeMs: st.mtimeMs };
      },
    );
  }

  async delete(key: string): Promise<void> {
    try {
      await fs.unlink(this.#path(key));
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw this.#error(err, key, 'delete');
    }
  }

  async close(): Promise<void> {}

  #error(err: unknown, key: string, op: string): BackendError {
    const code = errnoCode(err);
    if (code === 'ENOENT') return notFound(this.location, key);
    if (code === 'ENOSPC') {
      return new BackendError('PHX_BACKEND', `${this.location}: the disk is full (${op} ${key})`, {
        key,
        hint: 'free space on the repository disk; nothing was lost, the change is retried',
        cause: err,
      });
    }
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      return new BackendError('PHX_BACKEND', `${this.location}: permission denied (${op} ${key})`, {
        key,
        hint: 'check that the repository directory is writable by this user',
        cause: err,
      });
    }
    if (code === 'ENOTDIR') {
      return new BackendError('PHX_BACKEND', `${this.location} is not a directory: a local repository is a directory (${op} ${key})`, {
        key,
        hint: 'give --repo a directory (a new one is created by phoenix init), not a file',
        cause: err,
      });
    }
    // EIO, ETIMEDOUT, ESTALE (NFS) and the like may pass.
    const transient = code === 'EIO' || code === 'ETIMEDOUT' || code === 'ESTALE' || code === 'EAGAIN' || code === 'EBUSY';
    return new BackendError('PHX_BACKEND', `${this.location}: ${op} ${key} failed: ${(err as Error).message}`, {
      key,
      transient,
      cause: err,
    });
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `parts` back to back with as few calls as the kernel allows (writeFile cuts 512 KiB
 * pieces, one thread-pool round trip each); a short write goes on from where it stopped.
 */
async function writeAll(fh: fs.FileHandle, parts: readonly Uint8Array[]): Promise<void> {
  const rest = parts.filter((p) => p.length > 0);
  let i = 0;
  while (i < rest.length) {
    let n = (await fh.writev(rest.slice(i, i + 1024))).bytesWritten; // IOV_MAX is 1024
    for (; i < rest.length && n >= (rest[i] as Uint8Array).length; i++) n -= (rest[i] as Uint8Array).length;
    if (n > 0) rest[i] = (rest[i] as Uint8Array).subarray(n); // a short write ended inside this part
  }
}
