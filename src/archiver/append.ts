import type { ChunkerParams } from '../repo/index.js';

/** Pieces of the same size class merged into one, and the most trailing pieces kept before all are merged. */
const FAN_IN = 4;
const MAX_PIECES = 24;

/** The size class of a piece: pieces of one class are merged FAN_IN at a time. */
const sizeClass = (n: number): number => Math.floor(Math.log2(Math.max(1, n)) / 2);

/**
 * How many chunks of a file's last version to keep, if their bytes still have their ids (the
 * reader checks each one): the rest of the file, from the end of the last one kept, is cut
 * afresh with FastCDC. `prev` lists the last version's chunk sizes in order (undefined for
 * records that do not say them: then nothing is kept, and the whole file is cut, as always).
 *
 * A file that only grew keeps every chunk and adds its new bytes as a piece of their own, so an
 * append stores the appended bytes, not the file's last chunk again. Pieces (trailing chunks
 * smaller than the chunker's minimum) are merged as they accumulate, like the runs of a
 * log-structured merge: FAN_IN pieces of one size class become one piece of the next, so each
 * appended byte is stored again only a few times (once per class), and a file never ends in
 * more than about MAX_PIECES of them. Pieces that reach the minimum chunk size together are cut
 * into normal content-defined chunks. A file that shrank keeps the chunks that still fit (a
 * rewrite of old bytes fails the check at the first changed chunk: the cut starts there).
 */
export function chunksToKeep(prev: ReadonlyArray<number | undefined>, fileSize: number, p: ChunkerParams): number {
  if (prev.length === 0 || prev.some((s) => s === undefined || s <= 0)) return 0;
  const sizes = prev as readonly number[];
  const oldSize = sizes.reduce((a, b) => a + b, 0);
  if (fileSize < oldSize) {
    let end = 0;
    let keep = 0;
    while (keep < sizes.length && end + (sizes[keep] as number) <= fileSize) end += sizes[keep++] as number;
    return keep;
  }
  if (fileSize === oldSize) return sizes.length; // the same size: every chunk is checked, none is cut again
  // The trailing pieces, and the new bytes as one more.
  let first = sizes.length;
  while (first > 0 && (sizes[first - 1] as number) < p.min) first--;
  const pieces = sizes.slice(first);
  if (fileSize > oldSize) pieces.push(fileSize - oldSize);
  const total = pieces.reduce((a, b) => a + b, 0);
  if (total >= p.min || pieces.length > MAX_PIECES) return first; // all of them, cut by content
  // A stack of pieces, the new bytes on top: while the top FAN_IN are of one class, they become one.
  const stack = pieces.map((size, i) => ({ size, start: first + i }));
  while (stack.length >= FAN_IN) {
    const group = stack.slice(-FAN_IN);
    const cls = sizeClass((group[0] as { size: number }).size);
    if (!group.every((g) => sizeClass(g.size) === cls)) break;
    stack.splice(-FAN_IN, FAN_IN, { size: group.reduce((n, g) => n + g.size, 0), start: (group[0] as { start: number }).start });
  }
  // Old chunks below the lowest merged piece are kept; the new bytes (and what merged) are cut.
  const top = stack.at(-1) as { start: number };
  return Math.min(top.start, sizes.length);
}
