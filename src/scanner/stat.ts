import { lstatSync, type BigIntStats } from 'node:fs';
import { kindOfMode, type Entry } from '../model/entry.js';
import { rawFromBuffer } from '../model/path.js';
import { readlinkSync } from 'node:fs';

/** lstat of one path as an Entry, or undefined when it does not exist (any more). */
export function lstatEntry(path: Buffer): Entry | undefined {
  let st: BigIntStats | undefined;
  try {
    st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
  } catch (err) {
    // ENOTDIR: a parent was replaced by a file; the path no longer exists as such.
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
  if (st === undefined) return undefined;
  const mode = Number(st.mode);
  const kind = kindOfMode(mode);
  const e: Entry = {
    kind,
    mode,
    uid: Number(st.uid),
    gid: Number(st.gid),
    nlink: Number(st.nlink),
    size: kind === 'dir' ? 0 : Number(st.size),
    ino: st.ino,
    dev: Number(st.dev),
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
  };
  if (kind === 'symlink') {
    try {
      e.target = rawFromBuffer(readlinkSync(path, { encoding: 'buffer' }));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
  return e;
}
