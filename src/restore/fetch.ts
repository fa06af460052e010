import { isNotFound } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import { type ChunkRef, chunkWhat, type Repository } from '../repo/index.js';

export interface FetchLimits {
  /** Chunks closer than this in a pack are read in one request (the gap is read and dropped). */
  gap: number;
  /** The most one request reads. */
  window: number;
  /** Bytes read and kept at most; past it the oldest windows are dropped (and read again if needed). */
  keep: number;
}

export const FETCH_LIMITS: FetchLimits = { gap: 1024 * 1024, window: 16 * 2 ** 20, keep: 256 * 2 ** 20 };

/** Whether the read of [start, end) of a pack may grow to take in `next` too (a chunk at or after `start`). */
export function widens(limits: FetchLimits, start: number, end: number, next: { offset: number; length: number }): boolean {
  return next.offset - end <= limits.gap && Math.max(end, next.offset + next.length) - start <= limits.window;
}

interface Window {
  pack: string;
  start: number;
  end: number;
  data: Promise<Buffer>;
  /** Uses still to come of the chunks inside. */
  remaining: number;
}

/**
 * Reads the sealed chunks of a restore with few requests. Every chunk the restore will need is
 * known up front, so reading one chunk reads the needed chunks after it in the same pack too
 * (one ranged get per run of nearby chunks, instead of one per chunk), and keeps them until
 * they are used. Files taken in the order of their first chunk use the windows in turn.
 */
export class ChunkFetcher {
  /** Per pack: the needed chunks, by offset. */
  readonly #needed = new Map<string, ChunkRef[]>();
  /** Uses still to come, per pack and offset (numbers as keys: a string per chunk cost about 130 bytes). */
  readonly #uses = new Map<string, Map<number, number>>();
  readonly #windows: Window[] = [];
  #kept = 0;
  /** Packs found gone, each with the one look at the relocations it caused. */
  readonly #refreshed = new Map<string, Promise<void>>();
  requests = 0;

  constructor(
    readonly repo: Repository,
    refs: Iterable<ChunkRef>,
    readonly limits: FetchLimits = FETCH_LIMITS,
  ) {
    for (const r of refs) {
      let uses = this.#uses.get(r.pack);
      if (uses === undefined) this.#uses.set(r.pack, (uses = new Map()));
      const n = uses.get(r.offset) ?? 0;
      uses.set(r.offset, n + 1);
      if (n === 0) {
        let list = this.#needed.get(r.pack);
        if (list === undefined) this.#needed.set(r.pack, (list = []));
        list.push(r);
      }
    }
    for (const list of this.#needed.values()) list.sort((a, b) => a.offset - b.offset);
  }

  /**
   * The sealed blob of `ref` (a view into a shared buffer: copy it before keeping or transferring
   * it). A pack gone since the records were read (prune repacked it meanwhile: restores hold no
   * lease) is looked for where the relocations say its chunk went.
   */
  async get(ref: ChunkRef): Promise<Buffer> {
    try {
      return await this.#get(ref);
    } catch (err) {
      if (!(err instanceof PhoenixError && isNotFound(err.cause))) throw err;
      let refreshed = this.#refreshed.get(ref.pack);
      if (refreshed === undefined) this.#refreshed.set(ref.pack, (refreshed = this.repo.refreshRelocations()));
      await refreshed;
      const now = await this.repo.relocated(ref);
      if (now === undefined) throw err;
      return this.#get(now);
    }
  }

  async #get(ref: ChunkRef): Promise<Buffer> {
    const end = ref.offset + ref.length;
    let w = this.#windows.find((x) => x.pack === ref.pack && x.start <= ref.offset && end <= x.end);
    if (w === undefined) w = this.#open(ref);
    w.remaining--;
    const uses = this.#uses.get(ref.pack);
    uses?.set(ref.offset, (uses.get(ref.offset) ?? 1) - 1);
    if (w.remaining <= 0) this.#drop(w);
    const data = await w.data;
    return data.subarray(ref.offset - w.start, end - w.start);
  }

  /** A window from `ref` over the needed chunks after it. */
  #open(ref: ChunkRef): Window {
    const list = this.#needed.get(ref.pack) ?? [ref];
    let i = lowerBound(list, ref.offset);
    const start = ref.offset;
    let end = ref.offset + ref.length;
    const uses = this.#uses.get(ref.pack);
    let remaining = Math.max(1, uses?.get(ref.offset) ?? 1);
    for (i++; i < list.length; i++) {
      const next = list[i] as ChunkRef;
      if (next.offset < end) continue; // overlaps (a different id at the same place cannot happen; be safe)
      if (!widens(this.limits, start, end, next)) break;
      end = next.offset + next.length;
      remaining += uses?.get(next.offset) ?? 0;
    }
    this.requests++;
    const data = this.repo.readPack(ref.pack, start, end - start, chunkWhat(ref));
    data.catch(() => {}); // awaited by get(); a window dropped unread must not reject unhandled
    const w: Window = { pack: ref.pack, start, end, data, remaining };
    this.#windows.push(w);
    this.#kept += end - start;
    while (this.#kept > this.limits.keep && this.#windows.length > 1) this.#drop(this.#windows[0] as Window);
    return w;
  }

  #drop(w: Window): void {
    const i = this.#windows.indexOf(w);
    if (i < 0) return;
    this.#windows.splice(i, 1);
    this.#kept -= w.end - w.start;
  }
}

function lowerBound(list: ChunkRef[], offset: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((list[mid] as ChunkRef).offset < offset) lo = mid + 1;
    else hi = mid;
  }
  return Math.min(lo, list.length - 1);
}
