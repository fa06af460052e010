import type { RawPath } from '../model/path.js';
import { rawToBuffer } from '../model/path.js';

/**
 * A tar stream writer (POSIX ustar with GNU long names), for `phoenix dump`. Names and link
 * targets are written as their exact bytes: names longer than 100 bytes go in a GNU
 * `././@LongLink` entry, which GNU tar, bsdtar and Python's tarfile read as bytes (a PAX
 * `path` record would claim UTF-8). Sizes past 8 GiB use GNU's base-256 numbers.
 */
export interface TarEntry {
  path: RawPath;
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  size: number;
  target?: RawPath;
}

const BLOCK = 512;

/** The header block(s) of one entry; file content follows, padded with `padding(size)`. */
export function tarHeader(e: TarEntry): Buffer {
  const name = rawToBuffer(e.type === 'dir' ? `${e.path}/` : e.path);
  const link = rawToBuffer(e.target ?? '');
  const out: Buffer[] = [];
  if (name.length > 100) out.push(longLink('L', name));
  if (link.length > 100) out.push(longLink('K', link));
  out.push(
    header({
      name,
      link,
      type: e.type === 'file' ? '0' : e.type === 'dir' ? '5' : '2',
      mode: e.mode & 0o7777,
      uid: e.uid,
      gid: e.gid,
      mtime: e.mtimeSec,
      size: e.type === 'file' ? e.size : 0,
    }),
  );
  return Buffer.concat(out);
}

/** The header of a backed-up entry (a file, directory or symlink) stored under `name`. */
export function recordHeader(
  r: { type: string; mode: number; uid: number; gid: number; mtimeNs: bigint; size: number; target?: RawPath | undefined },
  name: RawPath,
): Buffer {
  return tarHeader({
    path: name,
    type: r.type as TarEntry['type'],
    mode: r.mode,
    uid: r.uid,
    gid: r.gid,
    mtimeSec: Number(r.mtimeNs / 1_000_000n) / 1000,
    size: r.size,
    ...(r.target !== undefined ? { target: r.target } : {}),
  });
}

/** Zero bytes that fill the last block of `size` bytes of content. */
export function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The end of an archive: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

function longLink(type: 'L' | 'K', bytes: Buffer): Buffer {
  const body = Buffer.concat([bytes, Buffer.alloc(1)]);
  const h = header({
    name: Buffer.from('././@LongLink'),
    link: Buffer.alloc(0),
    type,
    mode: 0,
    uid: 0,
    gid: 0,
    mtime: 0,
    size: body.length,
  });
  return Buffer.concat([h, body, padding(body.length)]);
}

function header(h: {
  name: Buffer;
  link: Buffer;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
}): Buffer {
  const b = Buffer.alloc(BLOCK);
  h.name.copy(b, 0, 0, Math.min(100, h.name.length));
  number(b, 100, 8, h.mode);
  number(b, 108, 8, h.uid);
  number(b, 116, 8, h.gid);
  number(b, 124, 12, h.size);
  number(b, 136, 12, Math.max(0, Math.floor(h.mtime)));
  b.fill(' ', 148, 156); // the checksum counts itself as spaces
  b.write(h.type, 156, 'latin1');
  h.link.copy(b, 157, 0, Math.min(100, h.link.length));
  b.write('ustar  \0', 257, 'latin1'); // GNU magic: long names are GNU entries
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

/** An octal field, or GNU base-256 when the value does not fit. */
function number(b: Buffer, at: number, width: number, v: number): void {
  const octal = v.toString(8);
  if (octal.length < width) {
    b.write(`${octal.padStart(width - 1, '0')}\0`, at, 'latin1');
    return;
  }
  b[at] = 0x80;
  let n = BigInt(v);
  for (let i = at + width - 1; i > at; i--) {
    b[i] = Number(n & 0xffn);
    n >>= 8n;
  }
}
