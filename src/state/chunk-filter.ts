/**
 * A Bloom filter of chunk ids, in front of the chunk index: most chunks a first backup reads
 * are new, and "not in the filter" answers them without a SQLite lookup (about 10 µs each at
 * 200,000 chunks, more as the index grows). Only "no" is certain: "maybe" asks SQLite. An id
 * missing from it by mistake would only make a chunk be stored twice, never lost — but every
 * insert into the index goes through `add`, so that does not happen within one process.
 *
 * Ids are hex HMAC-SHA-256 digests (uniformly random), so their own bits are the hashes:
 * double hashing over two 32-bit words of the id, BITS_PER_ID bits per id it was sized for
 * (about 1% false positives at that load).
 */
export class ChunkFilter {
  readonly #bits: Uint32Array;
  readonly #mask: number;
  #count = 0;

  /** A filter with room for `capacity` ids at its false-positive rate (more fit, at a higher rate). */
  constructor(readonly capacity: number) {
    let m = 1 << 16;
    while (m < capacity * BITS_PER_ID && m < MAX_BITS) m *= 2;
    this.#bits = new Uint32Array(m / 32);
    this.#mask = m - 1;
  }

  /** Ids added; past `capacity` the filter answers "maybe" more often, and should be built again larger. */
  get count(): number {
    return this.#count;
  }

  get full(): boolean {
    return this.#count > this.capacity;
  }

  add(id: string): void {
    const h1 = word(id, 0);
    const h2 = word(id, 8) | 1;
    for (let i = 0; i < PROBES; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.#mask;
      this.#bits[b >>> 5] = (this.#bits[b >>> 5] as number) | (1 << (b & 31));
    }
    this.#count++;
  }

  /** False: `id` was never added. True: it may have been. */
  mayHave(id: string): boolean {
    const h1 = word(id, 0);
    const h2 = word(id, 8) | 1;
    for (let i = 0; i < PROBES; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.#mask;
      if (((this.#bits[b >>> 5] as number) & (1 << (b & 31))) === 0) return false;
    }
    return true;
  }
}

const BITS_PER_ID = 10;
const PROBES = 7;
/** 2^31 bits (256 MiB) at most: 200 million ids at the nominal rate. */
const MAX_BITS = 2 ** 31;

/** Eight hex digits of `id` from `at` as an unsigned 32-bit number (any other character counts as 0). */
function word(id: string, at: number): number {
  let v = 0;
  for (let i = at; i < at + 8; i++) {
    const c = id.charCodeAt(i);
    const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : 0;
    v = (v << 4) | d;
  }
  return v >>> 0;
}
