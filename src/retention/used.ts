/**
 * The chunks a repository's kept history uses, per pack, as prune counts them: for each pack,
 * the first 8 bytes of each chunk id in use with its stored length, in sorted, deduplicated
 * typed arrays (12 bytes a chunk, where a Map of ids took about 150). The same chunk is named
 * by every instant and checkpoint that holds its file: additions wait in a small buffer and are
 * merged into the sorted run when the buffer is as large as the run.
 *
 * Whether a pack is used is exact. Bytes and counts treat two chunks of one pack whose ids agree
 * in their first 8 bytes as one (about 1 in 10^16 for a pair: repacking may then see a pack as a
 * little emptier than it is), and mayUse() may say yes for such an unused one (repacking then
 * copies it along); it never says no for a chunk in use.
 */
export class UsedChunks {
  readonly #packs = new Map<string, PackUse>();

  /** Chunk `id` of `pack`, `length` bytes stored, is in use. */
  add(pack: string, id: string, length: number): void {
    let p = this.#packs.get(pack);
    if (p === undefined) this.#packs.set(pack, (p = new PackUse()));
    p.add(keyOf(id), length);
  }

  /** Some chunk of `pack` is in use. */
  has(pack: string): boolean {
    return this.#packs.has(pack);
  }

  /** Chunks of `pack` in use (0 when none). */
  count(pack: string): number {
    return this.#packs.get(pack)?.sorted().n ?? 0;
  }

  /** Stored bytes of the chunks of `pack` in use (0 when none). */
  bytes(pack: string): number {
    return this.#packs.get(pack)?.bytes() ?? 0;
  }

  /** Chunk `id` of `pack` may be in use: never false for one that is. */
  mayUse(pack: string, id: string): boolean {
    return this.#packs.get(pack)?.has(keyOf(id)) ?? false;
  }
}

/** The first 8 bytes of a chunk id (hex); an id that is not hex (a damaged record) by a hash of it. */
function keyOf(id: string): bigint {
  if (/^[0-9a-f]{16}/i.test(id)) return BigInt(`0x${id.slice(0, 16)}`);
  let a = 0x811c9dc5;
  let b = 0x01000193;
  for (let i = 0; i < id.length; i++) {
    a = Math.imul(a ^ id.charCodeAt(i), 0x01000193);
    b = Math.imul(b ^ id.charCodeAt(i), 0x811c9dc5);
  }
  return (BigInt(a >>> 0) << 32n) | BigInt(b >>> 0);
}

class PackUse {
  #keys = new BigUint64Array(4);
  #lens = new Uint32Array(4);
  /** Sorted and deduplicated: the first `n`; added since: the `m` after them. */
  n = 0;
  #m = 0;

  add(key: bigint, length: number): void {
    const at = this.n + this.#m;
    if (at === this.#keys.length) {
      if (this.#m >= Math.max(64, this.n)) {
        this.sorted();
        this.add(key, length);
        return;
      }
      const keys = new BigUint64Array(this.#keys.length * 2);
      keys.set(this.#keys);
      const lens = new Uint32Array(this.#lens.length * 2);
      lens.set(this.#lens);
      this.#keys = keys;
      this.#lens = lens;
    }
    this.#keys[at] = key;
    this.#lens[at] = length;
    this.#m++;
  }

  /** Merges what was added into the sorted run. */
  sorted(): this {
    if (this.#m === 0) return this;
    const total = this.n + this.#m;
    const order = Array.from({ length: this.#m }, (_, i) => this.n + i).sort((a, b) => {
      const x = this.#keys[a] as bigint;
      const y = this.#keys[b] as bigint;
      return x < y ? -1 : x > y ? 1 : 0;
    });
    const keys = new BigUint64Array(Math.max(4, total));
    const lens = new Uint32Array(keys.length);
    let i = 0;
    let j = 0;
    let k = 0;
    const put = (key: bigint, len: number): void => {
      if (k > 0 && keys[k - 1] === key) return;
      keys[k] = key;
      lens[k] = len;
      k++;
    };
    while (i < this.n || j < order.length) {
      const fromRun = j >= order.length || (i < this.n && (this.#keys[i] as bigint) <= (this.#keys[order[j] as number] as bigint));
      if (fromRun) {
        put(this.#keys[i] as bigint, this.#lens[i] as number);
        i++;
      } else {
        const at = order[j] as number;
        put(this.#keys[at] as bigint, this.#lens[at] as number);
        j++;
      }
    }
    this.#keys = keys;
    this.#lens = lens;
    this.n = k;
    this.#m = 0;
    return this;
  }

  bytes(): number {
    this.sorted();
    let sum = 0;
    for (let i = 0; i < this.n; i++) sum += this.#lens[i] as number;
    return sum;
  }

  has(key: bigint): boolean {
    this.sorted();
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.#keys[mid] as bigint) < key) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.n && this.#keys[lo] === key;
  }
}
