import { readFileSync, realpathSync } from 'node:fs';
import { PhoenixError, errnoHint } from '../errors.js';
import type { Change, RescanReason } from '../model/change.js';
import type { Entry, Kind } from '../model/entry.js';
import { Filter, type FilterOptions } from '../model/filter.js';
import { displayPath, isWithin, joinRaw, parentOf, rawFromUtf8, toFsPath, type RawPath } from '../model/path.js';
import { Tree, type TreeOptions } from '../model/tree.js';
import { diff } from '../scanner/diff.js';
import { scan } from '../scanner/scan.js';
import { lstatEntry } from '../scanner/stat.js';
import { IN, Inotify, type InotifyEvent, type InotifyStats } from './inotify.js';

const DIR_MASK =
  IN.CREATE |
  IN.DELETE |
  IN.MODIFY |
  IN.CLOSE_WRITE |
  IN.ATTRIB |
  IN.MOVED_FROM |
  IN.MOVED_TO |
  IN.DELETE_SELF |
  IN.MOVE_SELF |
  IN.ONLYDIR |
  IN.DONT_FOLLOW |
  IN.EXCL_UNLINK;

export interface WatcherOptions extends FilterOptions {
  /** Every normalized change, in order. */
  onChange: (change: Change) => void;
  /** Something the user should know that does not stop watching (watch limit, unreadable paths). */
  onWarning?: (warning: PhoenixError) => void;
  /** The watcher cannot go on (the source was removed or moved away); it has closed itself. */
  onFatal?: (err: PhoenixError) => void;
  /** How long an IN_MOVED_FROM waits for its IN_MOVED_TO before it counts as a move out. */
  moveTimeoutMs?: number;
  /** How often directories that could not be watched (watch limit) are rescanned. */
  unwatchedScanMs?: number;
  /** A full reconcile as a safety net every so often; 0 for never. */
  periodicScanMs?: number;
  /** For its trees (how much stays in memory; the rest goes to disk). */
  tree?: TreeOptions;
}

export type WatcherState = 'starting' | 'watching' | 'degraded' | 'failed' | 'closed';
type OwnState = Exclude<WatcherState, 'degraded'>;

export interface WatcherStats extends InotifyStats {
  state: WatcherState;
  watches: number;
  unwatched: number;
  rescans: number;
  changes: number;
}

/** How many events behind an IN_MOVED_FROM are searched for its IN_MOVED_TO. */
const MOVE_WINDOW = 64;

type Job = InotifyEvent | { rescan: RawPath; reason: RescanReason };

/**
 * Watches every directory below a root with one inotify instance and turns raw events into
 * the normalized change stream (src/model/change.ts). Keeps the known tree (directories in
 * memory, the files of directories not used lately on disk, see Tree): it
 * gives removed entries their kind, lets a directory move rewrite the paths of its whole
 * subtree, and is what a reconcile scan is compared against after an overflow.
 *
 * Events, rescans and listings of new directories are handled strictly one after another,
 * in kernel order, so the stream never reorders changes to the same path.
 */
export class Watcher {
  readonly root: RawPath;
  readonly #opts: WatcherOptions;
  readonly #filter: Filter;
  #rootDev = 0;
  #inotify: Inotify | undefined;
  #tree = new Tree();
  readonly #wdToPath = new Map<number, RawPath>();
  readonly #pathToWd = new Map<RawPath, number>();
  readonly #unwatched = new Set<RawPath>();
  /** A watch was refused because fs.inotify.max_user_watches was reached. */
  #overLimit = false;
  #queue: Job[] = [];
  #head = 0;
  #running = false;
  #held: { job: InotifyEvent; since: number } | undefined;
  #moveTimer: NodeJS.Timeout | undefined;
  #timers: NodeJS.Timeout[] = [];
  #state: OwnState = 'starting';
  #rescans = 0;
  #changes = 0;
  #last: Change | undefined;
  #limitWarned = false;

  constructor(root: string, opts: WatcherOptions) {
    this.#opts = opts;
    this.#filter = new Filter(opts);
    let real: string;
    try {
      real = realpathSync(root);
    } catch (cause) {
      throw new PhoenixError('PHX_SOURCE_INVALID', `source ${root} cannot be opened: ${(cause as Error).message}`, {
        hint: 'check the path; the source must be an existing directory',
        cause,
      });
    }
    this.root = rawFromUtf8(real);
  }

  /** `degraded` while some directories have no watch (the watch limit) and rely on rescans. */
  get state(): WatcherState {
    if (this.#state === 'watching' && this.#unwatched.size > 0) return 'degraded';
    return this.#state;
  }

  /** The tree as the watcher knows it now (read-only use). */
  get tree(): Tree {
    return this.#tree;
  }

  /** Directories that could not be watched and are covered by periodic rescans. */
  get unwatched(): ReadonlySet<RawPath> {
    return this.#unwatched;
  }

  /** Puts a watch on every directory, lists them, and resolves once every watch is in place. */
  async start(): Promise<void> {
    const top = lstatEntry(toFsPath(this.root, ''));
    if (top?.kind !== 'dir') {
      throw new PhoenixError('PHX_SOURCE_INVALID', `source ${displayPath(this.root)} is not a directory`, {
        hint: 'give the directory to watch',
      });
    }
    this.#rootDev = top.dev;
    this.#inotify = new Inotify(
      (events) => this.#enqueue(events),
      (err) => this.#fail(new PhoenixError('PHX_IO', err.message, { cause: err })),
    );
    this.#running = true; // events wait in the queue until the first scan is done
    try {
      const result = await scan(this.root, '', {
        filter: this.#filter,
        rootDev: this.#rootDev,
        beforeList: (rel) => this.#watch(rel),
        tree: this.#opts.tree,
      });
      this.#tree = result.tree;
      for (const p of result.problems) this.#warn(p.code, `${displayPath(p.path)}: ${p.message}`);
    } finally {
      this.#running = false;
    }
    if (this.#state === 'starting') this.#state = 'watching';
    this.#warnWatchLimit();
    const every = (ms: number | undefined, fn: () => void): void => {
      if (ms !== undefined && ms > 0) this.#timers.push(setInterval(fn, ms).unref());
    };
    this.#armUnwatched();
    every(this.#opts.periodicScanMs, () => this.#push({ rescan: '', reason: 'periodic' }));
    // Events that arrived during the scan are handled after the caller has seen start() resolve.
    setImmediate(() => void this.#run());
  }

  /**
   * Rescans the directories that have no watch every unwatchedScanMs, while there are any: an
   * idle watcher with every directory watched sets no timer at all (a laptop can sleep).
   */
  #armUnwatched(): void {
    if (this.#unwatchedTimer !== undefined || this.#unwatched.size === 0 || this.#state === 'closed' || this.#state === 'failed') return;
    this.#unwatchedTimer = setTimeout(() => {
      this.#unwatchedTimer = undefined;
      for (const dir of this.#unwatched) this.#push({ rescan: dir, reason: 'unwatched' });
      this.#armUnwatched();
    }, this.#opts.unwatchedScanMs ?? 30_000).unref();
  }

  #unwatchedTimer: NodeJS.Timeout | undefined;

  /** Asks for a reconcile scan of `scope` (relative raw path), in order with events. */
  rescan(scope: RawPath = '', reason: RescanReason = 'periodic'): void {
    this.#push({ rescan: scope, reason });
  }

  /** Stops reading inotify (for tests that make the kernel queue overflow). */
  pauseReader(): void {
    this.#inotify?.pause();
  }

  resumeReader(): void {
    this.#inotify?.resume();
  }

  stats(): WatcherStats {
    const base = this.#inotify?.stats() ?? { events: 0, batches: 0, overflows: 0, reads: 0, pendingBytes: 0 };
    return {
      ...base,
      state: this.state,
      watches: this.#wdToPath.size,
      unwatched: this.#unwatched.size,
      rescans: this.#rescans,
      changes: this.#changes,
    };
  }

  close(): void {
    if (this.#state !== 'failed') this.#state = 'closed';
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#moveTimer);
    clearTimeout(this.#unwatchedTimer);
    this.#inotify?.close();
    this.#inotify = undefined;
    this.#queue = [];
    this.#head = 0;
  }

  // ---- the event loop ----------------------------------------------------------------

  #enqueue(events: InotifyEvent[]): void {
    for (const e of events) this.#queue.push(e);
    void this.#run();
  }

  #push(job: Job): void {
    this.#queue.push(job);
    void this.#run();
  }

  async #run(): Promise<void> {
    if (this.#running || this.#inotify === undefined) return;
    this.#running = true;
    try {
      while (this.#head < this.#queue.length && this.#inotify !== undefined) {
        const job = this.#queue[this.#head] as Job;
        if ('rescan' in job) {
          this.#take();
          await this.#rescan(job.rescan, job.reason);
          continue;
        }
        if (job.mask & IN.MOVED_FROM) {
          const to = this.#findMovedTo(job.cookie);
          if (to === undefined && !this.#moveTimedOut(job)) break; // wait for the other half
          this.#take();
          const p = this.#handleMove(job, to);
          if (p) await p;
          continue;
        }
        this.#take();
        const p = this.#handle(job);
        if (p) await p;
      }
    } catch (err) {
      this.#fail(
        err instanceof PhoenixError ? err : new PhoenixError('PHX_IO', `watcher failed: ${(err as Error).message}`, { cause: err }),
      );
    } finally {
      this.#running = false;
      if (this.#head >= this.#queue.length) this.#last = undefined; // coalesce within a burst only
    }
  }

  #take(): void {
    this.#head++;
    if (this.#head >= this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  /**
   * Takes the matching IN_MOVED_TO out of the queue. The kernel queues the two halves of a
   * rename together, so only a short window behind the IN_MOVED_FROM is searched.
   */
  #findMovedTo(cookie: number): InotifyEvent | undefined {
    const end = Math.min(this.#queue.length, this.#head + 1 + MOVE_WINDOW);
    for (let i = this.#head + 1; i < end; i++) {
      const j = this.#queue[i] as Job;
      if (!('rescan' in j) && j.mask & IN.MOVED_TO && j.cookie === cookie) {
        this.#queue.splice(i, 1);
        return j;
      }
      if (!('rescan' in j) && j.mask & IN.Q_OVERFLOW) return undefined;
    }
    return undefined;
  }

  #moveTimedOut(job: InotifyEvent): boolean {
    const now = performance.now();
    if (this.#held?.job !== job) this.#held = { job, since: now };
    const timeout = this.#opts.moveTimeoutMs ?? 20;
    const left = this.#held.since + timeout - now;
    // A full window searched, or an overflow behind it (the other half may be lost): no wait.
    const next = this.#queue[this.#head + 1];
    const windowFull = this.#queue.length - this.#head - 1 >= MOVE_WINDOW;
    if (left <= 0 || windowFull || (next !== undefined && !('rescan' in next) && next.mask & IN.Q_OVERFLOW)) {
      this.#held = undefined;
      return true;
    }
    clearTimeout(this.#moveTimer);
    this.#moveTimer = setTimeout(() => void this.#run(), Math.ceil(left) + 1);
    return false;
  }

  // ---- event handlers ------------------------------------------------------------------

  #handle(ev: InotifyEvent): Promise<void> | void {
    if (ev.mask & IN.Q_OVERFLOW) return this.#rescan('', 'overflow');
    const dir = this.#wdToPath.get(ev.wd);
    if (dir === undefined) return; // a watch we dropped; its events are stale
    if (ev.name === '') return this.#handleSelf(ev, dir);
    const path = joinRaw(dir, ev.name);
    // An excluded entry added still changes its directory's mtime: say so (one removed is not
    // known, and #removed says so for what it does not know).
    const isDir = (ev.mask & IN.ISDIR) !== 0;
    if (ev.mask & (IN.CREATE | IN.MOVED_TO) && this.#filter.excludes(path, isDir)) return this.#dirChanged(dir);
    if (ev.mask & (IN.CREATE | IN.MOVED_TO)) return this.#appeared(path, isDir);
    if (ev.mask & IN.DELETE) return this.#removed(path);
    if (ev.mask & (IN.MODIFY | IN.CLOSE_WRITE)) return this.#modified(path, (ev.mask & IN.CLOSE_WRITE) !== 0);
    if (ev.mask & IN.ATTRIB) return this.#attributes(path);
  }

  #handleSelf(ev: InotifyEvent, dir: RawPath): Promise<void> | void {
    if (ev.mask & IN.IGNORED) {
      this.#forgetWatch(ev.wd);
      if (dir === '') return this.#fail(this.#sourceGone('was removed'));
      // A watch dropped while its directory still stands (an unmount, say): reconcile it.
      const e = this.#tree.get(dir);
      const now = lstatEntry(toFsPath(this.root, dir));
      if (e?.kind === 'dir' && now?.kind === 'dir') this.#push({ rescan: dir, reason: 'ignored' });
      return;
    }
    if (dir !== '') return; // the parent's events describe it
    if (ev.mask & IN.DELETE_SELF) return this.#fail(this.#sourceGone('was removed'));
    if (ev.mask & IN.MOVE_SELF) return this.#fail(this.#sourceGone('was moved or renamed'));
    if (ev.mask & IN.UNMOUNT) return this.#fail(this.#sourceGone('was unmounted'));
  }

  /** Something now stands at `path` (created, or moved in from outside). */
  #appeared(path: RawPath, isDir: boolean): Promise<void> | void {
    if (this.#filter.excludes(path, isDir)) return;
    const e = lstatEntry(toFsPath(this.root, path));
    if (e === undefined) return this.#dirChanged(parentOf(path)); // gone again (or moved on): its directory changed all the same
    if (this.#filter.excludes(path, e.kind === 'dir')) return;
    const old = this.#tree.get(path);
    if (old !== undefined && (old.kind === 'dir' || e.kind === 'dir')) {
      // Whatever stood here before (with its subtree) is gone; the listing below says what is there now.
      this.#drop(path);
      this.#emit({ type: 'removed', path, kind: old.kind });
    }
    this.#tree.set(path, e);
    this.#emit({ type: 'created', path, kind: e.kind });
    if (e.kind === 'file' && e.nlink > 1) this.#linkCount(e);
    if (e.kind === 'dir' && !this.#crossesDevice(e)) return this.#adoptDir(path);
  }

  /** A new directory: watch it first, then list it, so nothing written in between is missed. */
  async #adoptDir(path: RawPath): Promise<void> {
    const result = await scan(this.root, path, {
      filter: this.#filter,
      rootDev: this.#rootDev,
      beforeList: (rel) => this.#watch(rel),
      tree: this.#opts.tree,
    });
    for (const p of result.problems) this.#warn(p.code, `${displayPath(p.path)}: ${p.message}`);
    const found: Entry[] = [];
    for (const p of result.tree.walk(path)) {
      if (p === path) continue;
      const e = result.tree.get(p) as Entry;
      if (!this.#tree.has(p.slice(0, p.lastIndexOf('/')))) continue; // parent vanished meanwhile
      this.#tree.set(p, e);
      this.#emit({ type: 'created', path: p, kind: e.kind });
      if (e.kind === 'file' && e.nlink > 1) found.push(e);
    }
    result.tree.close();
    this.#linksOutside(path, found);
    this.#warnWatchLimit();
  }

  #removed(path: RawPath): Promise<void> | void {
    const old = this.#tree.get(path);
    if (old === undefined) return this.#dirChanged(parentOf(path)); // made and removed before it was seen
    this.#drop(path);
    this.#emit({ type: 'removed', path, kind: old.kind });
  }

  #modified(path: RawPath, closed: boolean): Promise<void> | void {
    const old = this.#tree.get(path);
    if (old === undefined) return this.#appeared(path, false);
    const e = lstatEntry(toFsPath(this.root, path));
    if (e === undefined) {
      this.#otherLinks(path, old, true); // written through this name, gone by now: its other names changed
      return this.#markStale(path, old); // deleted (IN_DELETE follows) or a parent moved on
    }
    this.#tree.set(path, e);
    this.#emit({ type: 'modified', path, kind: e.kind, closed });
    this.#linksOutside(path, changedHere(old, e));
  }

  /**
   * A new name for a file: its other names now have one more link (inotify does not say so to
   * a directory watch), which #otherLinks relies on if a name is gone before its event is read.
   */
  #linkCount(e: Entry): void {
    for (const p of [...this.#tree.linked()]) {
      const other = this.#tree.get(p) as Entry;
      if (other.ino === e.ino && other.dev === e.dev && other.nlink !== e.nlink) this.#tree.set(p, { ...other, nlink: e.nlink });
    }
  }

  /**
   * inotify reports a change to a hard-linked file under the name it was made through only.
   * Its other names in the tree changed as well: report them too (a walk of the tree, done
   * only for files with several links).
   */
  #otherLinks(path: RawPath, e: Entry, gone = false): void {
    this.#linksOutside(path, [e], gone);
  }

  /**
   * Files found by listing `scope` (a directory that was not watched yet, or rescanned) may have
   * been written before their events could be seen: their names outside the scope are checked.
   */
  #linksOutside(scope: RawPath, found: Iterable<Entry>, gone = false): void {
    const files = new Set<string>();
    // A name that is gone may have had more links than the tree says: a link made in a
    // directory that was listed (not watched) when it was made does not update the other
    // name's entry, and the IN_ATTRIB of the link merges with a chmod's right after it. Its
    // inode is then looked for among the files the tree knows to have several names.
    for (const e of found) if (e.kind === 'file' && (e.nlink > 1 || gone)) files.add(`${e.dev}:${e.ino}`);
    if (files.size === 0) return;
    for (const p of [...this.#tree.linked()]) {
      const other = this.#tree.get(p) as Entry;
      if (!isWithin(p, scope) && files.has(`${other.dev}:${other.ino}`)) this.#linkChanged(p, other);
    }
  }

  /** Another name of a file that changed: reported when it differs from what the tree says. */
  #linkChanged(p: RawPath, known: Entry): void {
    const now = lstatEntry(toFsPath(this.root, p));
    if (now === undefined || now.ino !== known.ino) return; // its own events follow
    if (known.mtimeNs === now.mtimeNs && known.ctimeNs === now.ctimeNs && known.size === now.size && known.mode === now.mode) return;
    this.#tree.set(p, now);
    this.#emit({ type: 'modified', path: p, kind: 'file', closed: true });
  }

  /**
   * An entry of `dir` came and went without a change to report for it (a temporary file made
   * and removed before its events were read): `dir`'s mtime moved all the same.
   */
  #dirChanged(dir: RawPath): Promise<void> | void {
    if (dir !== '' && this.#tree.get(dir)?.kind === 'dir') return this.#attributes(dir);
  }

  #attributes(path: RawPath): Promise<void> | void {
    const old = this.#tree.get(path);
    if (old === undefined) return this.#appeared(path, false);
    const e = lstatEntry(toFsPath(this.root, path));
    if (e === undefined) {
      this.#otherLinks(path, old, true);
      return this.#markStale(path, old);
    }
    if (e.kind !== old.kind) return this.#appeared(path, e.kind === 'dir');
    this.#tree.set(path, e);
    this.#emit({ type: 'attributes', path, kind: e.kind });
    this.#linksOutside(path, changedHere(old, e));
  }

  /** IN_MOVED_FROM with its IN_MOVED_TO, or alone (moved out of the tree). */
  #handleMove(fromEv: InotifyEvent, toEv: InotifyEvent | undefined): Promise<void> | void {
    const fromDir = this.#wdToPath.get(fromEv.wd);
    const toDir = toEv === undefined ? undefined : this.#wdToPath.get(toEv.wd);
    const from = fromDir === undefined ? undefined : joinRaw(fromDir, fromEv.name);
    const to = toDir === undefined || toEv === undefined ? undefined : joinRaw(toDir, toEv.name);
    const isDir = (fromEv.mask & IN.ISDIR) !== 0;
    const known = from === undefined ? undefined : this.#tree.get(from);
    const toExcluded = to !== undefined && this.#filter.excludes(to, isDir);

    if (to === undefined || toExcluded) {
      // Moved out, or into an excluded path (whose directory has a new mtime all the same). An
      // excluded or unknown `from` is not known: #removed says its directory changed.
      return both(toExcluded ? this.#dirChanged(toDir as RawPath) : undefined, from === undefined ? undefined : this.#removed(from));
    }
    if (from === undefined || known === undefined) {
      // Moved in, or made and moved on before it was seen (then its first directory changed too).
      return both(from === undefined ? undefined : this.#dirChanged(parentOf(from)), this.#appeared(to, isDir));
    }
    if (isWithin(to, from)) return; // the kernel refuses this; never seen

    this.#drop(to);
    for (const [oldPath, newPath] of this.#tree.move(from, to)) {
      const wd = this.#pathToWd.get(oldPath);
      if (wd !== undefined) {
        this.#pathToWd.delete(oldPath);
        this.#pathToWd.set(newPath, wd);
        this.#wdToPath.set(wd, newPath);
      }
      if (this.#unwatched.delete(oldPath)) this.#unwatched.add(newPath);
    }
    this.#emit({ type: 'moved', from, path: to, kind: known.kind });
    const now = lstatEntry(toFsPath(this.root, to));
    if (now !== undefined && now.kind === known.kind) this.#tree.set(to, now);
    // Events queued before this move named paths under `from` that were already gone when
    // they were handled (lstat found nothing), and exclusions are path patterns that may
    // now match differently: reconcile the moved subtree so that nothing inside is missed.
    if (known.kind === 'dir') return this.#reconcile(to);
  }

  // ---- watches and the known tree ------------------------------------------------------

  /** Adds the watch for directory `rel` (called just before it is listed). */
  #watch(rel: RawPath): void {
    const inotify = this.#inotify;
    if (inotify === undefined) return;
    const rc = inotify.addWatch(toFsPath(this.root, rel), DIR_MASK);
    if (typeof rc === 'number') {
      const prev = this.#wdToPath.get(rc);
      if (prev !== undefined && prev !== rel && this.#pathToWd.get(prev) === rc) this.#pathToWd.delete(prev);
      const oldWd = this.#pathToWd.get(rel);
      if (oldWd !== undefined && oldWd !== rc) this.#wdToPath.delete(oldWd);
      this.#wdToPath.set(rc, rel);
      this.#pathToWd.set(rel, rc);
      this.#unwatched.delete(rel);
      return;
    }
    if (rc === 'ENOENT' || rc === 'ENOTDIR') return; // vanished or replaced: its parent's events say so
    this.#unwatched.add(rel);
    if (this.#state !== 'starting') this.#armUnwatched();
    if (rc === 'ENOSPC') this.#overLimit = true;
    else
      this.#warn(
        rc,
        `cannot watch ${displayPath(rel) || '.'}: ${rc === 'EACCES' ? 'permission denied (EACCES)' : rc}; it is rescanned periodically instead`,
      );
  }

  #forgetWatch(wd: number): void {
    const p = this.#wdToPath.get(wd);
    this.#wdToPath.delete(wd);
    if (p !== undefined && this.#pathToWd.get(p) === wd) this.#pathToWd.delete(p);
  }

  /**
   * Forgets `path` and its subtree and removes the watches below it (they may still exist
   * elsewhere: moved out or replaced). Watch descriptors are never reused by the kernel
   * within an instance, so removing one it already dropped is harmless.
   */
  #drop(path: RawPath): void {
    for (const p of this.#tree.delete(path)) {
      const wd = this.#pathToWd.get(p);
      if (wd !== undefined) {
        this.#forgetWatch(wd);
        this.#inotify?.rmWatch(wd); // EINVAL when the kernel already dropped it: harmless
      }
      this.#unwatched.delete(p);
    }
  }

  /**
   * A change was seen but its path could not be read any more (a parent directory moved on
   * before the event was handled): make sure the next reconcile of wherever it now lives
   * reports it as modified, instead of trusting stat fields that may not have moved.
   */
  #markStale(path: RawPath, e: Entry): void {
    this.#tree.set(path, { ...e, mtimeNs: -1n, ctimeNs: -1n });
  }

  #crossesDevice(e: Entry): boolean {
    return this.#filter.oneFileSystem && e.dev !== this.#rootDev;
  }

  // ---- reconcile -----------------------------------------------------------------------

  async #rescan(scope: RawPath, reason: RescanReason): Promise<void> {
    this.#rescans++;
    this.#emit({ type: 'rescan', path: scope, kind: 'dir', reason });
    await this.#reconcile(scope);
  }

  /** Scans `scope`, emits what differs from the known tree, and makes the scan the known tree. */
  async #reconcile(scope: RawPath): Promise<void> {
    if (scope !== '' && !this.#tree.has(scope)) return;
    const result = await scan(this.root, scope, {
      filter: this.#filter,
      rootDev: this.#rootDev,
      beforeList: (rel) => this.#watch(rel),
      tree: this.#opts.tree,
    });
    for (const p of result.problems) this.#warn(p.code, `${displayPath(p.path)}: ${p.message}`);
    const changes = diff(this.#tree, result.tree, scope);
    // Watches on directories that are gone (or no longer directories) in the scope.
    for (const [wd, p] of [...this.#wdToPath]) {
      if (p !== '' && isWithin(p, scope) && result.tree.get(p)?.kind !== 'dir') {
        this.#forgetWatch(wd);
        this.#inotify?.rmWatch(wd);
      }
    }
    for (const p of [...this.#unwatched])
      if (isWithin(p, scope) && result.tree.get(p)?.kind !== 'dir' && p !== '') this.#unwatched.delete(p);
    if (scope === '') {
      this.#tree = result.tree;
    } else {
      this.#tree.delete(scope);
      // The scope itself may be gone by now (moved on or removed while it was scanned).
      for (const p of result.tree.walk(scope)) {
        const e = result.tree.get(p);
        if (e !== undefined) this.#tree.set(p, e);
      }
    }
    for (const c of changes) this.#emit(c);
    if (scope !== '') {
      this.#linksOutside(
        scope,
        changes.flatMap((c) => result.tree.get(c.path) ?? []),
      );
      result.tree.close();
    }
    this.#warnWatchLimit();
  }

  // ---- output --------------------------------------------------------------------------

  #emit(c: Change): void {
    const last = this.#last;
    // Coalesce a run of writes to one file; a close upgrades the pending modification.
    if (c.type === 'modified' && last?.type === 'modified' && last.path === c.path && !last.closed && !c.closed) return;
    this.#last = c;
    this.#changes++;
    this.#opts.onChange(c);
  }

  #warn(code: string, message: string): void {
    this.#opts.onWarning?.(new PhoenixError('PHX_IO', message, { hint: errnoHint(code) ?? `the system said ${code}` }));
  }

  #warnWatchLimit(): void {
    // Only a watch refused for the limit (ENOSPC) is about the limit: EACCES and others are said where they happen.
    if (!this.#overLimit || this.#unwatched.size === 0 || this.#limitWarned) return;
    this.#limitWarned = true;
    const limit = readLimit('max_user_watches');
    const dirs = 1 + this.#tree.dirCount;
    const suggested = Math.max(524288, 2 ** Math.ceil(Math.log2(dirs * 2)));
    this.#opts.onWarning?.(
      new PhoenixError(
        'PHX_WATCH_LIMIT',
        `inotify watch limit reached: fs.inotify.max_user_watches is ${limit ?? 'unknown'} and this source needs ` +
          `${dirs} watches (one per directory; other programs of this user use watches too). ` +
          `${this.#unwatched.size} directories are not watched; they are rescanned every ` +
          `${Math.round((this.#opts.unwatchedScanMs ?? 30_000) / 1000)} s instead, so changes there are seen late, not missed.`,
        {
          hint:
            `raise the limit: sudo sysctl -w fs.inotify.max_user_watches=${suggested} ; to keep it after a reboot: ` +
            `echo fs.inotify.max_user_watches=${suggested} | sudo tee /etc/sysctl.d/90-phoenix.conf`,
        },
      ),
    );
  }

  #sourceGone(what: string): PhoenixError {
    return new PhoenixError('PHX_SOURCE_GONE', `the source ${displayPath(this.root)} ${what}; watching stopped`, {
      hint: 'restore or re-create the directory, then start Phoenix again',
    });
  }

  #fail(err: PhoenixError): void {
    if (this.#state === 'failed' || this.#state === 'closed') return;
    this.#state = 'failed';
    this.close();
    this.#opts.onFatal?.(err);
  }
}

/**
 * The files a write or chmod at a name reached, whose other names are checked in one walk: the
 * file there now, and the one the tree knew when an atomic save has replaced it since (only when
 * the tree knows it has several names: an editor's every save would otherwise walk them all; a
 * link count the tree missed waits for the next rescan).
 */
function changedHere(old: Entry, now: Entry): Entry[] {
  const replaced = old.kind === 'file' && old.nlink > 1 && (old.ino !== now.ino || old.dev !== now.dev);
  return replaced ? [now, old] : [now];
}

/** Reads /proc/sys/fs/inotify/NAME, or undefined. */
export function readLimit(name: 'max_user_watches' | 'max_queued_events' | 'max_user_instances'): number | undefined {
  try {
    return Number(readFileSync(`/proc/sys/fs/inotify/${name}`, 'utf8').trim());
  } catch {
    return undefined;
  }
}

export type { Kind };

/** The end of two handlers, either of which may have gone on asynchronously. */
function both(a: Promise<void> | void, b: Promise<void> | void): Promise<void> | void {
  if (a === undefined) return b;
  return b === undefined ? a : Promise.all([a, b]).then(() => {});
}
