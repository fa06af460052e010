import { createHash } from 'node:crypto';
import { isNotFound, listAll } from '../backend/backend.js';
import { displayPath } from '../model/path.js';
import { packKey, recordJson, type TreeState } from './format.js';
import { chunkWhat, openChunk, packId, type PackEntry } from './pack.js';
import { applyTracked, TreeDigest } from './digest.js';
import { mapLimited, type Repository } from './repository.js';

export interface CheckResult {
  errors: string[];
  /** Packs in the store (a listing). */
  packs: number;
  chunkRefs: number;
  blobsRead: number;
  /** Packs no kept record refers to (left by an interrupted upload, a backup running now, or history retention dropped: prune removes them), and their bytes. */
  unreferenced: { packs: number; bytes: number };
}

/**
 * Structure: every source's journal is complete and every commit decodes (each is read
 * once, and the tree is built from them alone); every step of a segment (thinned or compacted
 * history) gives the tree its digest says; every checkpoint decodes and equals that tree at
 * its seq (as far as the journal could be read); every chunk the latest tree refers to is
 * listed in its pack's header at that place. With `readData`, every pack is read whole, matched against its name, and every
 * blob is opened and re-hashed. Problems are collected, not thrown, so one run lists them all.
 */
export async function checkRepository(repo: Repository, opts: { readData?: boolean } = {}): Promise<CheckResult> {
  const errors: string[] = [];
  const headers = new Map<string, Map<string, PackEntry> | null>();
  const header = async (pack: string): Promise<Map<string, PackEntry> | null> => {
    if (!headers.has(pack)) {
      headers.set(
        pack,
        await repo.packHeader(pack).then(
          (entries) => new Map(entries.map((e) => [e.id, e])),
          (err: unknown) => {
            errors.push(isNotFound(err) ? `pack ${packKey(pack)} is missing` : (err as Error).message);
            return null;
          },
        ),
      );
    }
    return headers.get(pack) ?? null;
  };

  let chunkRefs = 0;
  const named = new Set<string>();
  for (const source of await repo.sources()) {
    try {
      const infos = await repo.commitList(source);
      const failed = (err: unknown): undefined => {
        errors.push((err as Error).message);
        return undefined;
      };
      const commits = await mapLimited(infos, 8, (c) => repo.readCommit(c).catch(failed));
      for (const c of commits) {
        for (const p of c?.packs ?? []) named.add(p);
        for (const ch of c?.changes ?? []) if (ch.op === 'put') for (const r of ch.chunks) named.add(r.pack);
      }
      const checkpoints = new Map<number, TreeState | undefined>();
      for (const seq of await repo.checkpointSeqs(source)) {
        const cp = await repo.readCheckpoint(source, seq).catch(failed);
        checkpoints.set(seq, cp);
        for (const r of cp?.values() ?? []) for (const c of r.chunks) named.add(c.pack);
      }
      // The tree from the journal alone, as far as the journal is readable.
      const state: TreeState = new Map();
      const digest = new TreeDigest(repo.keys);
      for (const [i, c] of commits.entries()) {
        if (c === undefined) break;
        for (const ch of c.changes) applyTracked(state, ch, digest);
        const step = infos[i]?.segment;
        const want = step === undefined ? undefined : await repo.stepDigest(infos[i] as (typeof infos)[number]);
        if (want !== undefined && want !== digest.hex())
          errors.push(`step ${c.seq} of segment ${infos[i]?.key} of ${JSON.stringify(source)} does not give the tree its digest says`);
        const cp = checkpoints.get(c.seq);
        if (cp !== undefined && !sameTree(state, cp))
          errors.push(`checkpoint ${c.seq} of ${JSON.stringify(source)} differs from its journal`);
      }
      for (const r of state.values()) {
        for (const c of r.chunks) {
          chunkRefs++;
          const h = await header(c.pack);
          const e = h?.get(c.id);
          if (h !== null && (e === undefined || e.offset !== c.offset || e.length !== c.length)) {
            errors.push(`${displayPath(r.path)} (${source}): chunk ${c.id.slice(0, 16)}… is not where its pack's header says`);
          }
        }
      }
    } catch (err) {
      errors.push((err as Error).message);
    }
  }

  let blobsRead = 0;
  const listed = await listAll(repo.backend, 'data/');
  const unreferenced = { packs: 0, bytes: 0 };
  for (const o of listed) {
    if (named.has(o.key.split('/').pop() as string)) continue;
    unreferenced.packs++;
    unreferenced.bytes += o.size;
  }
  if (opts.readData) {
    for (const o of listed) {
      const pack = o.key.split('/').pop() as string;
      const bytes = await repo.backend.get(o.key);
      // Named by its trailer's hash (packs of builds before 2026-11-24: by all their bytes).
      if (packId(bytes) !== pack && createHash('sha256').update(bytes).digest('hex') !== pack) {
        errors.push(`pack ${o.key} does not match its name (modified or damaged)`);
      }
      const h = await header(pack);
      if (h === null) continue;
      // The blobs and the trailer tile the pack: no byte is outside something authenticated.
      let end = 0;
      for (const e of [...h.values()].sort((a, b) => a.offset - b.offset)) {
        if (e.offset !== end) errors.push(`pack ${o.key} has bytes no header entry covers at offset ${end}`);
        end = e.offset + e.length;
      }
      if (end + 4 + bytes.readUInt32LE(bytes.length - 4) !== bytes.length)
        errors.push(`pack ${o.key} has bytes no header entry covers at offset ${end}`);
      for (const e of h.values()) {
        try {
          openChunk(repo.keys, e.id, bytes.subarray(e.offset, e.offset + e.length), chunkWhat({ id: e.id, pack }));
          blobsRead++;
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    }
  }
  return { errors, packs: listed.length, chunkRefs, blobsRead, unreferenced };
}

function sameTree(a: TreeState, b: TreeState): boolean {
  if (a.size !== b.size) return false;
  for (const [p, r] of a) {
    const o = b.get(p);
    if (o === undefined || recordJson(o) !== recordJson(r)) return false;
  }
  return true;
}
