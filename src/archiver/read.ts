import type { Entry } from '../model/entry.js';
import type { ChunkRef, ChunkWriter } from '../repo/index.js';
import type { ChunkOut, SealPool } from './seal-pool.js';

export { TORN_RETRIES } from './seal-pool.js';

export type ReadResult =
  /**
   * `chunks`: the file's refs, each with its size. A new chunk's ref is the ChunkWriter's own,
   * whose pack is '' until its pack is cut (ChunkWriter.add): it is final, in place, once the
   * commit has flushed its writer (and the commit before it has been written).
   */
  | { status: 'ok'; entry: Entry; chunks: ChunkRef[]; torn: boolean; fine: boolean; inPlace: boolean }
  | { status: 'vanished' }
  | { status: 'error'; message: string; code?: string };

/**
 * Reads and chunks one file on a worker thread. The file's size, mtime and ctime are compared
 * before and after the read; a file that changed meanwhile is read again, so no torn content is
 * committed as if it were whole (after a few tries the last read is kept, and reported).
 * `previous` is the file's last committed version: its chunks are not sealed again.
 * `refFor` turns a new chunk into its (deduplicated) ref, with its size.
 */
export async function readFile(
  pool: SealPool,
  path: Buffer,
  scanned: Entry,
  previous: readonly ChunkRef[],
  refFor: (id: string, sealed: Buffer, size: number) => ChunkRef,
  writer: ChunkWriter,
  onBytes: (n: number) => void,
  how: { fine: boolean; hot: boolean } = { fine: false, hot: false },
): Promise<ReadResult> {
  const prev = previous.length === 0 ? undefined : new Map(previous.map((c) => [c.id, c]));
  let chunks: ChunkRef[] = [];
  const end = await pool.readFile(
    path,
    scanned,
    previous,
    {
      chunk: (c: ChunkOut) => {
        onBytes(c.bytes);
        if (c.sealed === undefined) {
          const known = prev?.get(c.id);
          if (known === undefined) throw new Error(`seal worker skipped chunk ${c.id}, which the file's last version does not have`);
          // (Refs are never changed once their pack is named: records may share them.)
          chunks.push(known.size === c.bytes ? known : { ...known, size: c.bytes });
          return;
        }
        chunks.push(refFor(c.id, c.sealed, c.bytes));
        return writer.backpressure();
      },
      restart: () => {
        chunks = [];
      },
    },
    how,
  );
  switch (end.status) {
    case 'ok':
      // The size is what was read: a torn read may have stopped short of the file's end.
      return {
        status: 'ok',
        entry: { ...scanned, size: end.size, ...end.st },
        chunks,
        torn: end.torn,
        fine: end.fine,
        inPlace: end.inPlace,
      };
    case 'vanished':
    case 'error':
      return end;
    case 'cancelled':
      throw new Error('internal: a read was cancelled but its error was not reported');
  }
}
