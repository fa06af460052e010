import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** V8's `gc`: a full collection, or with `{ type: 'minor' }` a young one. */
type Gc = (opts?: { type: 'minor' }) => void;

let gc: Gc | undefined;
/** A few KiB allocated just before the young collection. */
const sink: { bytes?: number[] } = {};

/**
 * V8's collector, without `--expose-gc` on the command line: the flag set at run time gives
 * new contexts a `gc` function. Undefined where that fails (an engine that refuses the flag).
 */
function collector(): Gc | undefined {
  if (gc !== undefined) return gc;
  try {
    setFlagsFromString('--expose-gc');
    const f: unknown = runInNewContext('gc');
    if (typeof f === 'function') gc = f as Gc;
  } catch {
    // no collector: the memory stays with V8 until its next collection
  }
  return gc;
}

/** The young generation's committed bytes (both semi-spaces). */
export function youngBytes(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
}

/** At or below this, there is nothing worth giving back. */
const SMALL = 4 * 2 ** 20;
/** V8 judges "the process allocates little" over its last five seconds of allocations. */
const V8_WINDOW_MS = 6_000;

/**
 * Gives back the young generation a burst of work grew, once the process has been quiet for a
 * while. During a start-up scan or a burst of changes V8 grows its young generation to its
 * maximum (32 MiB in Node 20) and keeps it while the process is idle: an idle daemon allocates
 * too little to reach its next collection, the one at which V8 would shrink it. V8 shrinks it
 * at a young collection when the allocation rate of the last five seconds is low, and not
 * below what is live in it; so, once work has stopped for `quietMs`: a full collection (what
 * the burst left, and what it left pointing into the young generation), then, after six
 * quiet seconds more, a young collection, at which it shrinks. V8 grows it again at the next
 * burst. Nothing is done when the young generation is small already.
 *
 * `touch()` says work happened. It only notes the time: the one timer checks it when it
 * fires, so a stream of changes costs no timer per change, and a quiet process has no timer.
 */
export class QuietTrim {
  #last = 0;
  #timer: NodeJS.Timeout | undefined;
  /** When the full collection ran (0: not yet, since the last work). */
  #fullAt = 0;
  #stopped = false;
  /** Young generations shrunk (for tests). */
  runs = 0;

  constructor(readonly quietMs = 3_000) {}

  touch(): void {
    if (this.#stopped) return;
    this.#last = performance.now();
    if (this.#timer === undefined) this.#arm(this.quietMs);
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(() => this.#fire(), ms);
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = undefined;
    const now = performance.now();
    if (this.#fullAt !== 0 && this.#last > this.#fullAt) this.#fullAt = 0; // work came between: start over
    const idle = now - this.#last;
    if (idle < this.quietMs) return this.#arm(this.quietMs - idle);
    if (youngBytes() <= SMALL) return;
    const gc = collector();
    if (gc === undefined) return;
    if (this.#fullAt === 0) {
      gc();
      this.#fullAt = performance.now();
      return this.#arm(V8_WINDOW_MS);
    }
    // A young collection with nothing allocated since the last one is not counted as "little".
    sink.bytes = new Array<number>(512).fill(0);
    gc({ type: 'minor' });
    sink.bytes = undefined;
    this.#fullAt = 0;
    this.runs++;
  }

  /** No more collections, whatever is touched after. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
