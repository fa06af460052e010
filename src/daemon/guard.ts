import type { Repository } from '../repo/index.js';

/**
 * The mass-change guard: ransomware, a bad `rm -rf` or a sync tool gone wrong removes or
 * rewrites many files at once, and retention would in time age the good copy out. When the
 * commits of a short window remove or rewrite at least `files` files, or at least `fraction`
 * of the tree (once at least MIN_FRACTION_FILES did), the guard trips once for that spike and
 * names the instant just before it, which the daemon pins.
 */
export interface GuardOptions {
  files: number;
  fraction: number;
  windowMs: number;
}

export const DEFAULT_GUARD: GuardOptions = { files: 1000, fraction: 0.25, windowMs: 60_000 };
/** Below this many changes the fraction rule does not apply (a tree of 8 files losing 2 is no spike). */
export const MIN_FRACTION_FILES = 100;

export interface GuardTrip {
  /** When it tripped (the commit that crossed the line). */
  timeMs: number;
  removed: number;
  rewritten: number;
  /** The instant pinned: just before the first commit of the spike. */
  pinnedAtMs: number;
  /** The commit current then (the last one before the spike). */
  seq: number;
}

interface Seen {
  seq: number;
  timeMs: number;
  removed: number;
  /** Files rewritten by this commit that no commit of the window rewrote before. */
  rewritten: number;
}

/** A commit as the guard sees it: what it removed, and which files it rewrote. */
export interface Observed {
  seq: number;
  timeMs: number;
  removed: number;
  rewritten: Iterable<string>;
}

export class MassChangeGuard {
  readonly #window: Seen[] = [];
  /** The files rewritten within the window, by path, and when last: a log appended to 1,000 times is one file. */
  readonly #rewrites = new Map<string, number>();
  #tripped = false;
  /** The last commit before the window's first (what a trip pins). */
  #before: { seq: number; timeMs: number } | undefined;

  constructor(
    readonly opts: GuardOptions,
    last?: { seq: number; timeMs: number },
  ) {
    this.#before = last;
  }

  /** A commit landed; `entries` is the tree's size after it. A trip when this commit makes a spike. */
  observe(o: Observed, entries: number): GuardTrip | undefined {
    const since = o.timeMs - this.opts.windowMs;
    while (this.#window.length > 0 && (this.#window[0] as Seen).timeMs < since) {
      const old = this.#window.shift() as Seen;
      this.#before = { seq: old.seq, timeMs: old.timeMs };
    }
    for (const [p, t] of this.#rewrites) if (t < since) this.#rewrites.delete(p);
    let fresh = 0;
    for (const p of o.rewritten) {
      if (!this.#rewrites.has(p)) {
        if (this.#rewrites.size >= this.opts.files) break; // enough to trip: no need to hold more
        fresh++;
      }
      this.#rewrites.set(p, o.timeMs);
    }
    const c: Seen = { seq: o.seq, timeMs: o.timeMs, removed: o.removed, rewritten: fresh };
    // A spike is over once none of its commits is in the window any more.
    if (!this.#window.some((s) => s.removed + s.rewritten > 0)) this.#tripped = false;
    if (c.removed + c.rewritten === 0 && this.#window.length === 0) {
      this.#before = { seq: c.seq, timeMs: c.timeMs };
      return undefined;
    }
    this.#window.push(c);
    const removed = this.#window.reduce((n, s) => n + s.removed, 0);
    const rewritten = this.#rewrites.size;
    const changed = removed + rewritten;
    const treeBefore = entries + removed;
    const spike =
      changed >= this.opts.files || (changed >= MIN_FRACTION_FILES && treeBefore > 0 && changed >= this.opts.fraction * treeBefore);
    if (!spike || this.#tripped) return undefined;
    this.#tripped = true;
    const first = this.#window.find((s) => s.removed + s.rewritten > 0) as Seen;
    // The commit before the spike: the one before `first` in the window, or the one before the window.
    const i = this.#window.indexOf(first);
    const prev = i > 0 ? (this.#window[i - 1] as Seen) : this.#before;
    if (prev === undefined) return undefined; // the spike is the first commit: nothing before it to keep
    return { timeMs: c.timeMs, removed, rewritten, pinnedAtMs: first.timeMs - 1, seq: prev.seq };
  }

  /**
   * The instant a trip would pin if one came now: just before the window's first removal or
   * rewrite (undefined when the window has none: the commit before a spike that starts later
   * is the latest then, which retention always keeps).
   */
  candidate(): number | undefined {
    const first = this.#window.find((s) => s.removed + s.rewritten > 0);
    return first === undefined ? undefined : first.timeMs - 1;
  }
}

/**
 * A source's guard and the pins it writes: the trips of this run and those pinned in the
 * repository before, and the instants forget must keep as if pinned meanwhile (a pin being
 * written, or the instant a trip now would pin).
 */
export class GuardPins {
  /** This run's trips, and those pinned in the repository before. */
  readonly trips: GuardTrip[] = [];
  readonly #guard: MassChangeGuard | undefined;
  /** Pins not in the repository yet (being written, or to try again). */
  readonly #pinning = new Set<number>();
  /** Pins not written yet (the store failed): tried again after each commit. */
  readonly #toPin: Array<{ trip: GuardTrip; note: string }> = [];

  constructor(
    readonly repo: Repository,
    readonly source: string,
    /** null: no guard. */
    readonly opts: GuardOptions | null,
    last: { seq: number; timeMs: number } | undefined,
    readonly warn: (msg: string) => void,
  ) {
    if (opts !== null) this.#guard = new MassChangeGuard(opts, last);
  }

  /** The guard pins of earlier runs, from the repository. */
  async load(): Promise<void> {
    for (const p of await this.repo.pins(this.source)) {
      const g = p.guard;
      if (g === undefined) continue;
      const n = (k: string): number => Number(g[k] ?? 0);
      this.trips.push({ timeMs: n('timeMs'), removed: n('removed'), rewritten: n('rewritten'), pinnedAtMs: p.atMs, seq: n('seq') });
    }
  }

  /** A commit landed; `entries`: the tree's size after it. Pins the instant before a spike. */
  committed(o: Observed, entries: number): void {
    const trip = this.#guard?.observe(o, entries);
    if (trip === undefined) {
      if (this.#toPin.length > 0) this.#writePins();
      return;
    }
    this.trips.push(trip);
    const windowS = Math.round((this.opts ?? DEFAULT_GUARD).windowMs / 1000);
    const what = `${trip.removed} files removed and ${trip.rewritten} rewritten within ${windowS} s`;
    const at = new Date(trip.pinnedAtMs).toISOString();
    this.warn(
      `mass-change guard: ${what}; pinned the state before it (commit ${trip.seq}, phoenix restore --at ${at}); phoenix unpin --at ${at} releases it`,
    );
    this.#toPin.push({ trip, note: `mass-change guard: ${what}` });
    this.#pinning.add(trip.pinnedAtMs);
    this.#writePins();
  }

  /** The instants this source's guard is pinning or may pin: forget keeps them as if pinned. */
  held(): number[] {
    const c = this.#guard?.candidate();
    return c === undefined ? [...this.#pinning] : [...this.#pinning, c];
  }

  #writePins(): void {
    for (const p of this.#toPin.splice(0)) {
      const { trip } = p;
      const guard = { timeMs: trip.timeMs, removed: trip.removed, rewritten: trip.rewritten, seq: trip.seq };
      this.repo.pin(this.source, trip.pinnedAtMs, p.note, guard).then(
        () => this.#pinning.delete(trip.pinnedAtMs),
        (err: unknown) => {
          this.#toPin.push(p);
          this.warn(`mass-change guard: cannot write the pin yet (${(err as Error).message}); tried again after the next commit`);
        },
      );
    }
  }
}
