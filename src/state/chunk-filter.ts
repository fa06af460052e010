/**
 * A Bloom filter of chunk ids, in front of the chunk index: most chunks a first backup reads
 * are new, and "not in the filter" answers them without a SQLite lookup (about 10 µs each at
 * 200,000 chunks, more as the index grows). Only "no" is certain: "maybe" asks SQLite. An id
 * missing from it by mistake would only make a chunk be stored twice, never lost — but every
 * insert into the index goes through `add`, so that does not happen within one process.
 *
 * Ids are hex HMAC-SHA-256 digests (uniformly random), so their own bits are the hashes:
 * double hashing over two 32-bit words of the id.
 *
 * It grows as ids come (a scalable Bloom filter): when the newest layer holds as many ids as it
 * was sized for, a layer twice as large as all before it is added, with two more bits per id,
 * and a lookup asks every layer. The false positives stay below about 1.5% at any size, and no
 * id is ever read back from the index to grow it: a first backup of 2,000,000 files had rebuilt
 * the filter from SQLite four times as it outgrew it (about 5 s of its main thread, with the
 * lookups that went to SQLite meanwhile).
 */
export class ChunkFilter {
  readonly #layers: Layer[] = [];
  #count = 0;

  /** A filter sized for `capacity` ids (it grows past that). */
  constructor(capacity: number) {
    this.#layers.push(new Layer(capacity, BITS_PER_ID));
  }

  /** Ids added. */
  get count(): number {
    return this.#count;
  }

  /** Its layers (one until it outgrows the size it was made for). */
  get layers(): number {
    return this.#layers.length;
  }

  add(id: string): void {
    let top = this.#layers[this.#layers.length - 1] as Layer;
    if (top.count >= top.capacity) {
      top = new Layer(2 * this.#layers.reduce((n, l) => n + l.capacity, 0), top.bitsPerId + 2);
      this.#layers.push(top);
    }
    top.add(word(id, 0), word(id, 8) | 1);
    this.#count++;
  }

  /** False: `id` was never added. True: it may have been. */
  mayHave(id: string): boolean {
    const h1 = word(id, 0);
    const h2 = word(id, 8) | 1;
    for (let i = this.#layers.length - 1; i >= 0; i--) if ((this.#layers[i] as Layer).mayHave(h1, h2)) return true;
    return false;
  }
}

/** One fixed-size Bloom filter. */
class Layer {
  readonly #bits: Uint32Array;
  readonly #mask: number;
  count = 0;

  constructor(
    readonly capacity: number,
    readonly bitsPerId: number,
  ) {
    let m = 1 << 16;
    while (m < capacity * bitsPerId && m < MAX_BITS) m *= 2;
    this.#bits = new Uint32Array(m / 32);
    this.#mask = m - 1;
  }

  add(h1: number, h2: number): void {
    for (let i = 0; i < PROBES; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.#mask;
      this.#bits[b >>> 5] = (this.#bits[b >>> 5] as number) | (1 << (b & 31));
    }
    this.count++;
  }

  mayHave(h1: number, h2: number): boolean {
    for (let i = 0; i < PROBES; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.#mask;
      if (((this.#bits[b >>> 5] as number) & (1 << (b & 31))) === 0) return false;
    }
    return true;
  }
}

/** Bits per id of the first layer: about 1% false positives at its nominal load, with PROBES probes. */
const BITS_PER_ID = 10;
const PROBES = 7;
/** 2^31 bits (256 MiB) per layer at most. */
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
