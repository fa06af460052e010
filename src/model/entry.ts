import type { RawPath } from './path.js';

export type Kind = 'file' | 'dir' | 'symlink' | 'other';

/** What Phoenix knows about one entry of a tree: its lstat, never following links. */
export interface Entry {
  kind: Kind;
  /** Permission and type bits, as st_mode. */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  ino: bigint;
  dev: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** Symlink target bytes (raw), for symlinks only. */
  target?: RawPath;
}

const S_IFMT = 0o170000;

export function kindOfMode(mode: number): Kind {
  switch (mode & S_IFMT) {
    case 0o100000:
      return 'file';
    case 0o040000:
      return 'dir';
    case 0o120000:
      return 'symlink';
    default:
      return 'other';
  }
}

/** A different object now stands at the path: another type or another inode. */
export function replaced(a: Entry, b: Entry): boolean {
  return a.kind !== b.kind || a.ino !== b.ino;
}

/**
 * Content changed: a file's size or mtime, a symlink's target. A directory's size and times
 * follow its children, whose own changes say all there is, so they do not count here.
 */
export function contentChanged(a: Entry, b: Entry): boolean {
  if (a.kind === 'dir') return false;
  return a.size !== b.size || a.mtimeNs !== b.mtimeNs || a.target !== b.target;
}

/** Metadata: mode or owner; for non-directories also ctime (chmod, chown, link count, xattrs). */
export function attributesChanged(a: Entry, b: Entry): boolean {
  if (a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid) return true;
  return a.kind !== 'dir' && a.ctimeNs !== b.ctimeNs;
}
