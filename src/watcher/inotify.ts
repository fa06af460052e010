import { PhoenixError } from '../errors.js';
import { rawFromBuffer, type RawPath } from '../model/path.js';
import { native, type NativeInotify } from '../native.js';
import { errnoNameOf } from '../scanner/scan.js';

/** inotify(7) mask bits (linux/inotify.h). */
export const IN = {
  ACCESS: 0x1,
  MODIFY: 0x2,
  ATTRIB: 0x4,
  CLOSE_WRITE: 0x8,
  CLOSE_NOWRITE: 0x10,
  OPEN: 0x20,
  MOVED_FROM: 0x40,
  MOVED_TO: 0x80,
  CREATE: 0x100,
  DELETE: 0x200,
  DELETE_SELF: 0x400,
  MOVE_SELF: 0x800,
  UNMOUNT: 0x2000,
  Q_OVERFLOW: 0x4000,
  IGNORED: 0x8000,
  ONLYDIR: 0x1000000,
  DONT_FOLLOW: 0x2000000,
  EXCL_UNLINK: 0x4000000,
  MASK_CREATE: 0x10000000,
  MASK_ADD: 0x20000000,
  ISDIR: 0x40000000,
  ONESHOT: 0x80000000,
} as const;

export interface InotifyEvent {
  wd: number;
  mask: number;
  cookie: number;
  /** The entry's name inside the watched directory (raw bytes), '' for the directory itself. */
  name: RawPath;
}

export interface InotifyStats {
  /** Events read from the kernel. */
  events: number;
  /** Batches handed to JavaScript. */
  batches: number;
  /** IN_Q_OVERFLOW events read. */
  overflows: number;
  /** read(2) calls that returned data. */
  reads: number;
  /** Bytes read but not yet handed to JavaScript. */
  pendingBytes: number;
}

/** Parses raw `struct inotify_event` records as the kernel wrote them. */
export function parseEvents(buf: Buffer): InotifyEvent[] {
  const out: InotifyEvent[] = [];
  let off = 0;
  while (off + 16 <= buf.length) {
    const len = buf.readUInt32LE(off + 12);
    let end = off + 16;
    const stop = end + len;
    while (end < stop && buf[end] !== 0) end++; // the name is NUL-padded
    out.push({
      wd: buf.readInt32LE(off),
      mask: buf.readUInt32LE(off + 4),
      cookie: buf.readUInt32LE(off + 8),
      name: rawFromBuffer(buf.subarray(off + 16, end)),
    });
    off = stop;
  }
  return out;
}

/**
 * One inotify instance with its native reader thread. Events arrive in batches, in kernel
 * order, through `onEvents`; an IN_Q_OVERFLOW is an event like any other. Never drops events:
 * when JavaScript cannot keep up, the kernel queue fills and says so with IN_Q_OVERFLOW.
 */
export class Inotify {
  readonly #native: NativeInotify;
  #closed = false;

  constructor(onEvents: (events: InotifyEvent[]) => void, onError: (err: Error) => void) {
    try {
      this.#native = new (native().Inotify)((buf, negErrno) => {
        if (this.#closed) return;
        if (buf.length > 0) onEvents(parseEvents(buf));
        if (negErrno !== 0) onError(new Error(`reading inotify events failed: ${errnoNameOf(negErrno)}`));
      });
    } catch (err) {
      const errno = (err as { errno?: number }).errno;
      if (errno === -24) {
        throw new PhoenixError('PHX_INSTANCE_LIMIT', 'cannot create an inotify instance: fs.inotify.max_user_instances is reached', {
          hint: 'raise it: sudo sysctl fs.inotify.max_user_instances=1024 (persist in /etc/sysctl.d/90-phoenix.conf)',
          cause: err,
        });
      }
      throw err;
    }
  }

  /** Adds or updates a watch. Returns the watch descriptor, or the errno name on failure. */
  addWatch(path: Buffer, mask: number): number | string {
    const rc = this.#native.addWatch(path, mask);
    return rc >= 0 ? rc : errnoNameOf(rc);
  }

  rmWatch(wd: number): void {
    this.#native.rmWatch(wd);
  }

  /** Stops reading (tests use this to make the kernel queue overflow for real). */
  pause(): void {
    this.#native.pause();
  }

  resume(): void {
    this.#native.resume();
  }

  stats(): InotifyStats {
    return this.#native.stats();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
  }
}
