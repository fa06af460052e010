// The messages between the main thread and the seal workers, as bytes: one transferred buffer
// per batch instead of an array of objects. Structured cloning an object per chunk and per file
// cost both sides more than a small file's own work (and made most of the main thread's garbage).
//
// Main → worker, per file: u32 job · u8 flags (1 fine, 2 hot, 4 seen) · [with seen: f64 size ·
//   i64 mtime ns · i64 ctime ns · u64 inode] · u32 path length · path · u32 chunks of its last
//   version · per chunk: 32-byte id · f64 plaintext size (0: unknown).
// Worker → main, records of: u8 kind · u32 job, then by kind:
//   CHUNK   32-byte id · u32 plaintext size · u32 sealed length · sealed bytes
//   BIG     32-byte id · u32 plaintext size · u32 index of its own buffer in the message
//   KNOWN   32-byte id · u32 plaintext size (a chunk of the last version: not sealed again)
//   RESTART (nothing)
//   OK      f64 size · u32 mode · u32 uid · u32 gid · i64 mtime ns · i64 ctime ns · u64 inode · u8 flags (1 torn, 2 fine, 4 in place)
//   END     u32 length · JSON of any other end (vanished, cancelled, error)
// A batch of jobs travels as a latin1 string of its bytes: posting a string costs the main
// thread a few µs, posting an ArrayBuffer (transferred or copied) 15–30 µs (a string posted
// to a worker that sleeps cost about 26 µs here: waking it). A worker's message:
// [bytes used, the records' buffer, the BIG blobs' buffers…], all transferred (as strings, the
// results made the main thread's heap grow by 70–140 MiB, for no gain in speed).

import type { JobEnd, ReadStat, SeenStat } from './seal-pool.js';

const CHUNK = 1;
const BIG = 2;
const KNOWN = 3;
const RESTART = 4;
const OK = 5;
const END = 6;

/** Sealed blobs this large travel in a buffer of their own (no copy); smaller ones are copied into the batch. */
const BIG_BYTES = 64 * 1024;

export type WorkerMessage = [number, ArrayBuffer, ...ArrayBuffer[]];

/** A file to back up, as a worker reads it. */
export interface FileJob {
  job: number;
  path: Buffer;
  /** The chunks of its last version: hex id, plaintext size (0 when the record does not say). */
  prev: Array<[string, number]>;
  /** The last version was cut with FINE_CHUNKER; `hot`: it was rewritten in place before (switch to it). */
  fine: boolean;
  hot: boolean;
  /** Its stat just before the job was sent, when the caller had one. */
  seen: SeenStat | undefined;
}

/** Bytes appended to a buffer that grows as needed; `take()` hands them over and starts afresh. */
class Out {
  buf: Buffer;
  at = 0;

  constructor(readonly initial: number) {
    this.buf = Buffer.allocUnsafeSlow(initial);
  }

  room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.at + n) size *= 2;
    const b = Buffer.allocUnsafeSlow(size);
    this.buf.copy(b, 0, 0, this.at);
    this.buf = b;
  }

  u8(v: number): void {
    this.buf[this.at++] = v;
  }

  u32(v: number): void {
    this.buf.writeUInt32LE(v, this.at);
    this.at += 4;
  }

  f64(v: number): void {
    this.buf.writeDoubleLE(v, this.at);
    this.at += 8;
  }

  bytes(b: Uint8Array): void {
    this.buf.set(b, this.at);
    this.at += b.length;
  }

  /** A stat's times and inode: i64 mtime ns · i64 ctime ns · u64 inode (readTimes reads them). */
  times(st: { mtimeNs: bigint; ctimeNs: bigint; ino: bigint }): void {
    this.buf.writeBigInt64LE(st.mtimeNs, this.at);
    this.buf.writeBigInt64LE(st.ctimeNs, this.at + 8);
    this.buf.writeBigUInt64LE(st.ino, this.at + 16);
    this.at += 24;
  }

  /** The bytes as a latin1 string; the buffer is used again for the next ones (unless a large job grew it). */
  takeString(): string {
    const s = this.buf.toString('latin1', 0, this.at);
    if (this.buf.length > 4 * this.initial) this.buf = Buffer.allocUnsafeSlow(this.initial);
    this.at = 0;
    return s;
  }

  /** The buffer (to transfer) and how much of it is used; the next bytes go to a new one. */
  take(): [number, ArrayBuffer] {
    const out: [number, ArrayBuffer] = [this.at, this.buf.buffer as ArrayBuffer];
    this.buf = Buffer.allocUnsafeSlow(this.initial);
    this.at = 0;
    return out;
  }
}

function readTimes(b: Buffer, at: number): { mtimeNs: bigint; ctimeNs: bigint; ino: bigint } {
  return { mtimeNs: b.readBigInt64LE(at), ctimeNs: b.readBigInt64LE(at + 8), ino: b.readBigUInt64LE(at + 16) };
}

/** Jobs for one worker, encoded as they are queued (main thread). */
export class JobEncoder {
  readonly #out = new Out(16 * 1024);

  get empty(): boolean {
    return this.#out.at === 0;
  }

  add(
    job: number,
    path: Buffer,
    prev: ReadonlyArray<{ id: string; size?: number }>,
    fine: boolean,
    hot: boolean,
    seen: SeenStat | undefined,
  ): void {
    const o = this.#out;
    o.room(45 + path.length + prev.length * 40);
    o.u32(job);
    o.u8((fine ? 1 : 0) | (hot ? 2 : 0) | (seen !== undefined ? 4 : 0));
    if (seen !== undefined) {
      o.f64(seen.size);
      o.times(seen);
    }
    o.u32(path.length);
    o.bytes(path);
    o.u32(prev.length);
    for (const c of prev) {
      o.buf.fill(0, o.at, o.at + 32).write(c.id, o.at, 32, 'hex');
      o.at += 32;
      o.f64(c.size ?? 0);
    }
  }

  take(): string {
    return this.#out.takeString();
  }
}

export function* decodeJobs(jobs: string): Generator<FileJob> {
  const b = Buffer.from(jobs, 'latin1');
  let at = 0;
  while (at < b.length) {
    const job = b.readUInt32LE(at);
    const flags = b[at + 4] as number;
    at += 5;
    let seen: SeenStat | undefined;
    if ((flags & 4) !== 0) {
      seen = { size: b.readDoubleLE(at), ...readTimes(b, at + 8) };
      at += 32;
    }
    const pathLen = b.readUInt32LE(at);
    const path = b.subarray(at + 4, at + 4 + pathLen);
    at += 4 + pathLen;
    const n = b.readUInt32LE(at);
    at += 4;
    const prev: Array<[string, number]> = [];
    for (let i = 0; i < n; i++, at += 40) prev.push([b.toString('hex', at, at + 32), b.readDoubleLE(at + 32)]);
    yield { job, path, prev, fine: (flags & 1) !== 0, hot: (flags & 2) !== 0, seen };
  }
}

/** Results of one worker, encoded as they come (worker thread). */
export class ResultEncoder {
  readonly #out = new Out(64 * 1024);
  #big: ArrayBuffer[] = [];
  /** Sealed bytes in the batch so far. */
  sealedBytes = 0;

  get empty(): boolean {
    return this.#out.at === 0;
  }

  /** A new chunk: `sealed` must not be a view into a larger buffer that is used on (it is transferred when large). */
  chunk(job: number, id: Uint8Array, bytes: number, sealed: Uint8Array): void {
    const o = this.#out;
    const big = sealed.length >= BIG_BYTES;
    o.room(45 + (big ? 0 : sealed.length));
    o.u8(big ? BIG : CHUNK);
    o.u32(job);
    o.bytes(id);
    o.u32(bytes);
    if (big) {
      const own = sealed.byteOffset === 0 && sealed.byteLength === sealed.buffer.byteLength ? sealed : new Uint8Array(sealed);
      o.u32(this.#big.length);
      this.#big.push(own.buffer as ArrayBuffer);
    } else {
      o.u32(sealed.length);
      o.bytes(sealed);
    }
    this.sealedBytes += sealed.length;
  }

  known(job: number, id: Uint8Array, bytes: number): void {
    const o = this.#out;
    o.room(41);
    o.u8(KNOWN);
    o.u32(job);
    o.bytes(id);
    o.u32(bytes);
  }

  restart(job: number): void {
    this.#out.room(5);
    this.#out.u8(RESTART);
    this.#out.u32(job);
  }

  end(job: number, end: JobEnd): void {
    const o = this.#out;
    if (end.status === 'ok') {
      o.room(54);
      o.u8(OK);
      o.u32(job);
      o.f64(end.size);
      o.u32(end.st.mode);
      o.u32(end.st.uid);
      o.u32(end.st.gid);
      o.times(end.st);
      o.u8((end.torn ? 1 : 0) | (end.fine ? 2 : 0) | (end.inPlace ? 4 : 0));
      return;
    }
    const json = Buffer.from(JSON.stringify(end));
    o.room(9 + json.length);
    o.u8(END);
    o.u32(job);
    o.u32(json.length);
    o.bytes(json);
  }

  /** The message to post, and its transfer list; the encoder starts afresh. */
  take(): { message: WorkerMessage; transfer: ArrayBuffer[] } {
    const [used, data] = this.#out.take();
    const big = this.#big;
    this.#big = [];
    this.sealedBytes = 0;
    return { message: [used, data, ...big], transfer: [data, ...big] };
  }
}

export interface ResultHandlers {
  /** `sealed` undefined: a chunk of the last version. `id` is hex. */
  chunk(job: number, id: string, bytes: number, sealed: Buffer | undefined): void;
  restart(job: number): void;
  end(job: number, end: JobEnd): void;
}

/** Hands each record of a worker's message to `h`, in order (main thread). Sealed blobs are views, not copies. */
export function decodeResults(message: WorkerMessage, h: ResultHandlers): void {
  const [used, data, ...big] = message;
  const b = Buffer.from(data, 0, used);
  let at = 0;
  while (at < used) {
    const kind = b[at] as number;
    const job = b.readUInt32LE(at + 1);
    at += 5;
    switch (kind) {
      case CHUNK: {
        const id = b.toString('hex', at, at + 32);
        const bytes = b.readUInt32LE(at + 32);
        const n = b.readUInt32LE(at + 36);
        h.chunk(job, id, bytes, b.subarray(at + 40, at + 40 + n));
        at += 40 + n;
        break;
      }
      case BIG: {
        const id = b.toString('hex', at, at + 32);
        const bytes = b.readUInt32LE(at + 32);
        h.chunk(job, id, bytes, Buffer.from(big[b.readUInt32LE(at + 36)] as ArrayBuffer));
        at += 40;
        break;
      }
      case KNOWN:
        h.chunk(job, b.toString('hex', at, at + 32), b.readUInt32LE(at + 32), undefined);
        at += 36;
        break;
      case RESTART:
        h.restart(job);
        break;
      case OK: {
        const st: ReadStat = {
          mode: b.readUInt32LE(at + 8),
          uid: b.readUInt32LE(at + 12),
          gid: b.readUInt32LE(at + 16),
          ...readTimes(b, at + 20),
        };
        const flags = b[at + 44] as number;
        h.end(job, {
          status: 'ok',
          size: b.readDoubleLE(at),
          st,
          torn: (flags & 1) !== 0,
          fine: (flags & 2) !== 0,
          inPlace: (flags & 4) !== 0,
        });
        at += 45;
        break;
      }
      case END: {
        const n = b.readUInt32LE(at);
        h.end(job, JSON.parse(b.toString('utf8', at + 4, at + 4 + n)) as JobEnd);
        at += 4 + n;
        break;
      }
      default:
        throw new Error(`internal: a seal worker sent a record of unknown kind ${kind}`);
    }
  }
}
