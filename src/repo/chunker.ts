import { createHash } from 'node:crypto';
import { native } from '../native.js';

/**
 * FastCDC content-defined chunking (Xia et al., 2016) with normalized chunking: a gear
 * rolling hash, a stricter mask before the average size and a looser one after it, so chunk
 * sizes cluster around the average. The same bytes always cut at the same places, so an
 * edit changes only the chunks around it.
 */
export interface ChunkerParams {
  min: number;
  avg: number;
  max: number;
}

export const DEFAULT_CHUNKER: ChunkerParams = { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 };

/**
 * For large files rewritten in place again and again (databases, disk images, mailboxes): a
 * small write costs one such chunk instead of one of about a MiB. Every fine chunk is smaller
 * than DEFAULT_CHUNKER.min.
 */
export const FINE_CHUNKER: ChunkerParams = { min: 32 * 1024, avg: 64 * 1024, max: 192 * 1024 };

/** The gear table: 256 pseudo-random 32-bit values from SHA-256 of a fixed seed. */
const GEAR = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) t[i] = createHash('sha256').update(`phoenix-fastcdc-gear-${i}`).digest().readUInt32LE(0);
  return t;
})();

/** A mask with `bits` one-bits spread over the high part of the 32-bit hash. */
function spreadMask(bits: number): number {
  let m = 0;
  for (let i = 0; i < bits; i++) m |= 1 << (31 - Math.floor((i * 32) / bits));
  return m >>> 0;
}

/**
 * Length of the next chunk of data[start, end), or -1 when more data is needed to decide;
 * `eof` when no more data follows `end`. Runs in the native addon (native/cdc.cc), which
 * cuts exactly where `referenceCut` does.
 */
export function nextCut(data: Uint8Array, start: number, end: number, p: ChunkerParams, eof: boolean): number {
  const bits = Math.round(Math.log2(p.avg));
  return native().gearCut(data, start, end, p.min, p.avg, p.max, spreadMask(bits + 2), spreadMask(bits - 2), eof, GEAR);
}

/** `nextCut` in TypeScript: the definition of the cut points (FORMAT.md), kept for tests. */
export function referenceCut(data: Uint8Array, start: number, end: number, p: ChunkerParams, eof: boolean): number {
  const n = end - start;
  if (n <= p.min) return eof ? n : -1;
  const bits = Math.round(Math.log2(p.avg));
  const maskS = spreadMask(bits + 2);
  const maskL = spreadMask(bits - 2);
  const normal = Math.min(n, p.avg);
  const limit = Math.min(n, p.max);
  let fp = 0;
  let i = p.min;
  for (; i < normal; i++) {
    fp = ((fp << 1) + (GEAR[data[start + i] as number] as number)) >>> 0;
    if ((fp & maskS) === 0) return i + 1;
  }
  for (; i < limit; i++) {
    fp = ((fp << 1) + (GEAR[data[start + i] as number] as number)) >>> 0;
    if ((fp & maskL) === 0) return i + 1;
  }
  if (limit === p.max || eof) return limit;
  return -1; // need more data to decide
}
