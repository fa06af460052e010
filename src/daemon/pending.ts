import type { Change } from '../model/change.js';
import { isWithin, parentOf, type RawPath } from '../model/path.js';

/** When a changed path is ready to be read and committed. */
export interface SettleTimes {
  /** Quiet time after a close-after-write, a creation, a removal, a move or an attribute change. */
  closedMs: number;
  /** Quiet time after a write with the file still open (logs, databases). */
  openMs: number;
  /** A path that keeps changing is committed this long after its first change anyway. */
  maxDelayMs: number;
}

export const DEFAULT_SETTLE: SettleTimes = { closedMs: 20, openMs: 1000, maxDelayMs: 5000 };

interface Item {
  path: RawPath;
  /** When the oldest change not yet durable was seen. */
  firstMs: number;
  lastMs: number;
  open: boolean;
  inFlight: boolean;
  /** Seen changing again while its commit was being built. */
  againMs: number | undefined;
  /** The id of its latest row in the durable queue. */
  row: number;
  /** Removed (and perhaps back since): what was known below it is gone. */
  replaced: boolean;
  replacedTaken: boolean;
}

export interface Move {
  from: RawPath;
  to: RawPath;
  ms: number;
}

export interface Batch {
  moves: Move[];
  paths: RawPath[];
  /** Those of `paths` that were removed since their last commit (perhaps to come back). */
  replaced: RawPath[];
  /** When the oldest change of the batch was seen. */
  oldestMs: number | undefined;
}

/**
 * The changes of one source seen but not yet durable, coalesced per path: a path is only
 * "dirty" (what is there is read when it is committed), apart from moves, which are kept in
 * order because they become move entries in the journal. A removal or a move takes the
 * pending paths below it along, so each path is read at most once per commit.
 *
 * take() hands a batch to the committer and marks it in flight; done() drops what was made
 * durable (or puts it back on failure). Changes seen meanwhile keep their paths pending.
 */
export class PendingChanges {
  readonly #items = new Map<RawPath, Item>();
  readonly #moves: Move[] = [];
  #movesInFlight = 0;
  #taken: Item[] = [];
  #row = 0;

  constructor(readonly settle: SettleTimes = DEFAULT_SETTLE) {}

  get size(): number {
    return this.#items.size + this.#moves.length;
  }

  /** Paths and moves in the commit being made. */
  get inFlight(): number {
    return this.#taken.length + this.#movesInFlight;
  }

  /** When the oldest change not yet durable was seen (undefined when none). */
  oldestMs(): number | undefined {
    let min = this.#moves[0]?.ms;
    for (const it of this.#items.values()) if (min === undefined || it.firstMs < min) min = it.firstMs;
    return min;
  }

  /** Adds a change seen at `now` (and written to the durable queue as row `row`). */
  add(c: Change, now: number, row = 0): void {
    this.#row = row;
    switch (c.type) {
      case 'rescan':
        return;
      case 'created':
        this.#touch(c.path, now, false);
        return;
      case 'modified':
        this.#touch(c.path, now, !c.closed);
        return;
      case 'attributes':
        this.#touch(c.path, now, undefined);
        return;
      case 'removed':
        this.#touch(c.path, now, false, this.#dropBelow(c.path, false));
        (this.#items.get(c.path) as Item).replaced = true;
        return;
      case 'moved': {
        const replacedFirst = this.#dropBelow(c.path, true);
        // Moved out of a directory removed (and made again) earlier in this batch: what moves is
        // not what the last commit had there, so the target is read afresh, not moved from it.
        const remade = this.#removedAbove(c.from);
        // What was pending below `from` is pending at its new place.
        for (const [p, it] of [...this.#items]) {
          if (!isWithin(p, c.from)) continue;
          this.#items.delete(p);
          it.path = c.path + p.slice(c.from.length);
          this.#items.set(it.path, it);
          // A commit in flight may read it at either place: check it again at the new one.
          if (it.inFlight) it.againMs ??= now;
        }
        this.#moves.push({ from: c.from, to: c.path, ms: now });
        this.#touch(c.path, now, false, replacedFirst);
        if (remade) (this.#items.get(c.path) as Item).replaced = true;
      }
    }
  }

  /** The earliest time at which some pending path or move is ready. */
  nextReadyMs(): number | undefined {
    const move = this.#moves[this.#movesInFlight];
    let min = move === undefined ? undefined : move.ms + this.settle.closedMs;
    for (const it of this.#items.values()) {
      if (it.inFlight) continue;
      const t = this.#readyAt(it);
      if (min === undefined || t < min) min = t;
    }
    return min;
  }

  /** Marks ready paths (every path when `all`) and every move in flight; at most `max` paths. */
  take(now: number, all: boolean, max: number): Batch {
    const paths: RawPath[] = [];
    const replaced: RawPath[] = [];
    let oldestMs = this.#moves[0]?.ms;
    for (const it of this.#items.values()) {
      if (paths.length >= max) break;
      if (it.inFlight || (!all && this.#readyAt(it) > now)) continue;
      it.inFlight = true;
      it.againMs = undefined;
      it.replacedTaken = it.replaced;
      it.replaced = false;
      this.#taken.push(it);
      paths.push(it.path);
      if (it.replacedTaken) replaced.push(it.path);
      if (oldestMs === undefined || it.firstMs < oldestMs) oldestMs = it.firstMs;
    }
    this.#movesInFlight = this.#moves.length;
    return { moves: this.#moves.slice(0, this.#movesInFlight), paths, replaced, oldestMs };
  }

  /** The batch taken last is durable (`ok`), or must be tried again. */
  done(ok: boolean): void {
    for (const it of this.#taken) {
      it.inFlight = false;
      const again = it.againMs;
      it.againMs = undefined;
      if (!ok) {
        it.replaced ||= it.replacedTaken;
        continue;
      }
      if (again !== undefined) it.firstMs = again;
      else if (this.#items.get(it.path) === it) this.#items.delete(it.path);
    }
    if (ok) this.#moves.splice(0, this.#movesInFlight);
    this.#movesInFlight = 0;
    this.#taken = [];
  }

  /**
   * The paths that stay pending after the batch in flight, whose latest queue row is at or
   * before `row` (rows that are being dropped): each gets a new row id from `nextId`.
   */
  requeue(row: number, nextId: () => number): Array<{ path: RawPath; firstMs: number; open: boolean; replaced: boolean; row: number }> {
    const out = [];
    for (const it of this.#items.values()) {
      if (it.row > row || (it.inFlight && it.againMs === undefined)) continue;
      it.row = nextId();
      out.push({ path: it.path, firstMs: it.againMs ?? it.firstMs, open: it.open, replaced: it.replaced, row: it.row });
    }
    return out;
  }

  #readyAt(it: Item): number {
    return Math.min(it.firstMs + this.settle.maxDelayMs, it.lastMs + (it.open ? this.settle.openMs : this.settle.closedMs));
  }

  #touch(path: RawPath, now: number, open: boolean | undefined, firstMs = now): void {
    const it = this.#items.get(path);
    if (it === undefined) {
      this.#items.set(path, {
        path,
        firstMs: Math.min(firstMs, now),
        lastMs: now,
        open: open ?? false,
        inFlight: false,
        againMs: undefined,
        row: this.#row,
        replaced: false,
        replacedTaken: false,
      });
      return;
    }
    it.row = Math.max(it.row, this.#row);
    it.lastMs = now;
    it.firstMs = Math.min(it.firstMs, firstMs);
    if (open !== undefined) it.open = open;
    if (it.inFlight) it.againMs ??= now;
  }

  /** A directory above `path` was removed since its last commit (and perhaps made again). */
  #removedAbove(path: RawPath): boolean {
    for (let q = parentOf(path); q !== ''; q = parentOf(q)) if (this.#items.get(q)?.replaced === true) return true;
    return false;
  }

  /** Drops the pending paths at and below `path` (which a removal or a move replaces); their oldest time. */
  #dropBelow(path: RawPath, includeSelf: boolean): number {
    let first = Infinity;
    for (const [p, it] of this.#items) {
      if (!isWithin(p, path) || (p === path && !includeSelf)) continue;
      first = Math.min(first, it.firstMs);
      if (p !== path) this.#items.delete(p);
    }
    if (includeSelf) this.#items.delete(path);
    return first;
  }
}
