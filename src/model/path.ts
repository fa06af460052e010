/**
 * Paths on Linux are bytes. Phoenix keeps every path as a "raw path": a JavaScript string
 * holding one char (0–255) per byte (the latin1 mapping), which round-trips any byte
 * sequence exactly, compares and hashes cheaply, and works as a Map key. Convert at the
 * edges only: `toFsPath` for system calls, `displayPath` for people and JSON.
 *
 * Raw paths inside a tree are relative to its root, '/'-separated, with '' for the root.
 */
export type RawPath = string;

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function rawFromBuffer(buf: Uint8Array): RawPath {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('latin1');
}

export function rawToBuffer(p: RawPath): Buffer {
  return Buffer.from(p, 'latin1');
}

/** A raw path from a string as a user typed it (UTF-8). */
export function rawFromUtf8(s: string): RawPath {
  return Buffer.from(s, 'utf8').toString('latin1');
}

export function joinRaw(dir: RawPath, name: RawPath): RawPath {
  return dir === '' ? name : `${dir}/${name}`;
}

export function parentOf(p: RawPath): RawPath {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

export function baseName(p: RawPath): RawPath {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** Byte order of raw paths (one char per byte): a directory sorts before what is below it. */
export function compareRaw(a: RawPath, b: RawPath): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** True when `p` is `dir` itself or lies below it. */
export function isWithin(p: RawPath, dir: RawPath): boolean {
  return dir === '' || p === dir || (p.length > dir.length && p.startsWith(dir) && p.charCodeAt(dir.length) === 47);
}

/** The absolute path for system calls: root (absolute, raw) joined with a relative raw path. */
export function toFsPath(root: RawPath, rel: RawPath): Buffer {
  return rawToBuffer(rel === '' ? root : `${root}/${rel}`);
}

/** The UTF-8 reading of a raw path, or undefined when its bytes are not valid UTF-8. */
export function utf8Of(p: RawPath): string | undefined {
  try {
    return utf8.decode(rawToBuffer(p));
  } catch {
    return undefined;
  }
}

/** For people: UTF-8 where valid, with U+FFFD for bytes that are not. */
export function displayPath(p: RawPath): string {
  return rawToBuffer(p).toString('utf8');
}
