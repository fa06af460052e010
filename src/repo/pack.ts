import { createHash } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { corrupt, type Keys } from './crypto.js';
import { packKey } from './format.js';

/**
 * Packs hold many chunks in one object: sealed blobs back to back, then the sealed header
 * (JSON: [[id, offset, length], …]), then the header's length as a 4-byte little-endian
 * integer. A blob is the sealed form of one flag byte (0 stored, 1 deflate-raw) and the data.
 * A pack's id is the SHA-256 of its trailer (the sealed header and its length). Chunks are compressed when the entropy of their first
 * 8 KiB is below 7.2 bits a byte, and kept compressed only when that saves an eighth.
 */
export const PACK_TARGET = 16 * 2 ** 20;

export interface PackEntry {
  id: string;
  offset: number;
  length: number;
}

const STORED = Buffer.from([0]);
const DEFLATED = Buffer.from([1]);

export function sealBlob(keys: Keys, data: Uint8Array): Buffer {
  // Compress when a sample says it may pay: random or already-compressed data (entropy near
  // 8 bits a byte) is not tried at all, which spares a zlib stream per chunk.
  if (data.length >= 512 && sampleEntropy(data) < 7.2) {
    const z = deflateRawSync(data, { level: 1 });
    // Keep compression only when it saves at least an eighth.
    if (z.length < data.length - (data.length >> 3)) return keys.sealParts([DEFLATED, z]);
  }
  return keys.sealParts([STORED, data]);
}

const SAMPLE = 8192;
/** c·log2(c) for every count a sample can hold. */
const C_LOG_C = Float64Array.from({ length: SAMPLE + 1 }, (_, c) => (c === 0 ? 0 : c * Math.log2(c)));

/** Shannon entropy, in bits per byte, of the first 8 KiB: log2(n) − Σ c·log2(c) / n. */
export function sampleEntropy(data: Uint8Array): number {
  const n = Math.min(data.length, SAMPLE);
  if (n === 0) return 0;
  const counts = new Uint32Array(256);
  for (let i = 0; i < n; i++) {
    const b = data[i] as number;
    counts[b] = (counts[b] as number) + 1;
  }
  let sum = 0;
  for (const c of counts) sum += C_LOG_C[c] as number;
  return Math.log2(n) - sum / n;
}

export function openBlob(keys: Keys, sealed: Uint8Array, what: string, into?: Buffer): Buffer {
  const body = keys.open(sealed, what, into);
  if (body.length < 1) throw corrupt(what, 'empty blob');
  const flag = body[0];
  if (flag === 0) return body.subarray(1);
  if (flag === 1) {
    try {
      return inflateRawSync(body.subarray(1));
    } catch {
      throw corrupt(what, 'its compressed data does not inflate');
    }
  }
  throw corrupt(what, `unknown blob flag ${String(flag)}`);
}

/**
 * A chunk's blob opened and checked against its id: the bytes are the ones that were backed up.
 * With `into` (scratch memory, used again for the next chunk), they may be a view of it.
 */
export function openChunk(keys: Keys, id: string, sealed: Uint8Array, what: string, into?: Buffer): Buffer {
  const data = openBlob(keys, sealed, what, into);
  if (keys.id(data).toString('hex') !== id) throw corrupt(what, 'its content does not match its id');
  return data;
}

/** How errors name a chunk. */
export function chunkWhat(ref: { id: string; pack: string }): string {
  return `chunk ${ref.id.slice(0, 16)}… in pack ${packKey(ref.pack)}`;
}

/** Collects blobs for one pack. */
export class PackBuilder {
  readonly #parts: Buffer[] = [];
  readonly entries: PackEntry[] = [];
  size = 0;

  add(id: string, sealedBlob: Buffer): PackEntry {
    const e = { id, offset: this.size, length: sealedBlob.length };
    this.#parts.push(sealedBlob);
    this.entries.push(e);
    this.size += sealedBlob.length;
    return e;
  }

  /** The pack as parts (its blobs, then the trailer), to be stored back to back, and its id. */
  finish(keys: Keys): { id: string; parts: Buffer[]; size: number } {
    const header = keys.seal(Buffer.from(JSON.stringify(this.entries.map((e) => [e.id, e.offset, e.length]))));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(header.length);
    const trailer = Buffer.concat([header, len]);
    return { id: packId(trailer), parts: [...this.#parts, trailer], size: this.size + trailer.length };
  }
}

/**
 * A pack's id: SHA-256 of its trailer (`bytes` is the pack, or its trailer alone). The trailer
 * only: the header lists every blob's id, offset and length, and every blob and the header are
 * authenticated, so hashing all the bytes again added nothing but a second pass over the data.
 */
export function packId(bytes: Uint8Array): string {
  if (bytes.length < 4) return '';
  const len = Buffer.from(bytes.buffer, bytes.byteOffset + bytes.length - 4, 4).readUInt32LE(0);
  if (len + 4 > bytes.length) return '';
  return createHash('sha256')
    .update(bytes.subarray(bytes.length - 4 - len))
    .digest('hex');
}

/** Parses a pack's header from its tail (the last 4 bytes and the header before them). */
export function parseHeader(keys: Keys, tail: Buffer, what: string): PackEntry[] {
  try {
    const parsed = JSON.parse(keys.open(tail, `header of ${what}`).toString()) as Array<[string, number, number]>;
    return parsed.map(([id, offset, length]) => ({ id, offset, length }));
  } catch (err) {
    if (err instanceof Error && 'code' in err && err.code === 'PHX_CORRUPT') throw err;
    throw corrupt(`header of ${what}`, 'it does not parse');
  }
}
