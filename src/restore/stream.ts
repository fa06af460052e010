/** Backed-up entries streamed to a writer: one file's bytes, or a tar of many (`phoenix dump`, the dashboard's folder download). */

import { displayPath, type RawPath } from '../model/path.js';
import { PhoenixError } from '../errors.js';
import { chunkWhat, type FileRecord, openChunk, type Repository } from '../repo/index.js';
import { ChunkFetcher } from './fetch.js';
import { padding, recordHeader, TAR_END } from './tar.js';

/**
 * Writes the content of `rows` (in order) through `write`, each file's chunks verified. With
 * `tar`, each entry gets its header (named by `tar.name`), files are padded, and the archive
 * is ended. One chunk fetcher serves all rows, so nearby chunks of many small files come in
 * one request.
 */
export async function streamRecords(
  repo: Repository,
  rows: readonly FileRecord[],
  write: (b: Uint8Array) => Promise<void>,
  tar?: { name: (r: FileRecord) => RawPath },
): Promise<void> {
  const fetcher = new ChunkFetcher(
    repo,
    rows.flatMap((r) => r.chunks),
  );
  for (const r of rows) {
    if (tar) await write(recordHeader(r, tar.name(r)));
    if (r.type !== 'file') continue;
    let n = 0;
    for (const ref of r.chunks) {
      const data = openChunk(repo.keys, ref.id, await fetcher.get(ref), chunkWhat(ref));
      n += data.length;
      await write(data);
    }
    if (n !== r.size)
      throw new PhoenixError('PHX_CORRUPT', `${displayPath(r.path)}: its chunks hold ${n} bytes, the record says ${r.size}`, {
        hint: 'run phoenix check --read-data',
      });
    if (tar) await write(padding(r.size));
  }
  if (tar) await write(TAR_END);
}
