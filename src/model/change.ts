import type { Kind } from './entry.js';
import type { RawPath } from './path.js';

/**
 * The normalized change stream: one input for every consumer, whether it came from inotify
 * or from a scan diff. Applying the changes in order to the tree as it was at `ready` gives
 * the current tree. `removed` and `moved` of a directory imply its whole subtree; `moved`
 * replaces whatever stood at `path`.
 */
export type Change =
  | { type: 'created'; path: RawPath; kind: Kind }
  /** Content written. `closed` when the writer closed the file (IN_CLOSE_WRITE). */
  | { type: 'modified'; path: RawPath; kind: Kind; closed: boolean }
  | { type: 'attributes'; path: RawPath; kind: Kind }
  | { type: 'removed'; path: RawPath; kind: Kind }
  | { type: 'moved'; from: RawPath; path: RawPath; kind: Kind }
  /**
   * A reconcile scan of the directory `path` ('' for the whole source) starts, because events
   * were lost (overflow), cannot be had (unwatched: the watch limit), a watch was dropped by
   * the kernel (ignored), or as the periodic safety net. The changes found follow it.
   */
  | { type: 'rescan'; path: RawPath; kind: 'dir'; reason: RescanReason };

export type RescanReason = 'overflow' | 'unwatched' | 'ignored' | 'periodic';
