import { bodyBytes, checkRange, exists, notFound, type Backend, type Body, type ByteRange, type ObjectInfo } from './backend.js';

/** Objects in a Map: for fast tests of everything above the storage. */
export class MemoryBackend implements Backend {
  readonly location = 'memory:';
  readonly capabilities = { createOnly: true };
  readonly #objects = new Map<string, Buffer>();
  readonly #mtimes = new Map<string, number>();

  async put(key: string, data: Body, opts: { createOnly?: boolean } = {}): Promise<void> {
    if (opts.createOnly && this.#objects.has(key)) throw exists(this.location, key);
    this.#objects.set(key, Buffer.from(bodyBytes(data))); // a copy: callers may reuse their buffers
    this.#mtimes.set(key, Date.now());
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    const obj = this.#objects.get(key);
    if (obj === undefined) throw notFound(this.location, key);
    checkRange(this.location, key, obj.length, range);
    return Buffer.from(range === undefined ? obj : obj.subarray(range.offset, range.offset + range.length));
  }

  async stat(key: string): Promise<ObjectInfo> {
    const obj = this.#objects.get(key);
    if (obj === undefined) throw notFound(this.location, key);
    return { key, size: obj.length, mtimeMs: this.#mtimes.get(key) ?? 0 };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for (const [key, obj] of [...this.#objects])
      if (key.startsWith(prefix)) yield { key, size: obj.length, mtimeMs: this.#mtimes.get(key) ?? 0 };
  }

  async delete(key: string): Promise<void> {
    this.#objects.delete(key);
    this.#mtimes.delete(key);
  }

  async close(): Promise<void> {}
}
