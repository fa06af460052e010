import { setTimeout } from 'node:timers/promises';
import { listAll, type ObjectInfo } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import {
  checkpointKey,
  chunkWhat,
  ChunkWriter,
  mapLimited,
  openChunk,
  packKey,
  parseHeader,
  partKey,
  type ChunkRef,
  type LiveWriter,
  type Repository,
} from '../repo/index.js';
import { UsedChunks } from './used.js';

/**
 * Garbage collection: deletes the packs and metadata parts that nothing the repository keeps
 * refers to (history that `forget` dropped, uploads a crash left behind), once they are older
 * than `minPackAgeMs` on the store's clock. It runs beside live writers, in two phases:
 *
 * 1. It publishes a deletion plan (what it means to delete) and waits until every live writer
 *    (every source, every host) has acknowledged it in its lease: a writer purges the plan's
 *    packs from its deduplication index, lets the commit in flight land, then says `acked`.
 *    Writers that start later purge plans first; one whose lease ran out (a laptop that
 *    slept) looks for plans before its next commit and makes that commit again if it found one.
 * 2. It reads every commit and checkpoint written since it planned, takes back whatever they
 *    refer to, and deletes the rest. A run killed anywhere is finished by the next one.
 */
export interface PruneOptions {
  minPackAgeMs: number;
  /** Repack the most wasteful packs until the unused bytes in packs still in use are at most this share of them (restic's --max-unused). */
  maxUnusedPercent?: number;
  /** Repack at most this many bytes of packs in one run. */
  maxRepackBytes?: number;
}

export const DEFAULT_MAX_UNUSED_PERCENT = 5;

export interface PrunePlan {
  packs: Census;
  parts: Census;
  /** Each source's journal as it was when the plan was made: what was written after it is read again before deleting. */
  heads: Map<string, { seq: number; checkpoints: Set<number> }>;
  /** When the first unused object that is too young now may be deleted (store clock); undefined: none waits. */
  eligibleAtMs: number | undefined;
  /** Keys to delete, packs first. */
  doomed: { packs: string[]; parts: string[] };
  /** Packs still in use but mostly unused: their live chunks are copied to new packs, then they go too. */
  repack: Array<{ pack: string; size: number; used: UsedChunks }>;
  /** Bytes of the live chunks to copy, and the unused bytes in packs still in use after this run. */
  repackBytes: number;
  unusedAfter: number;
}

export interface Census {
  total: number;
  bytes: number;
  used: number;
  usedBytes: number;
  unused: number;
  unusedBytes: number;
  /** Unused, but younger than the minimum age: kept this time. */
  young: number;
  youngBytes: number;
}

export const DEFAULT_MIN_PACK_AGE = '24h';

/**
 * Waits until every live writer's lease acknowledges the deletion plan `key` (or is gone).
 * `onWait` hears who is still awaited. Throws PHX_LOCKED after `timeoutMs`, naming them.
 */
export async function waitForAcks(
  repo: Repository,
  key: string,
  timeoutMs: number,
  onWait?: (pending: LiveWriter[]) => void,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let said = 0; ;) {
    if (signal?.aborted) throw new PhoenixError('PHX_LOCKED', 'prune was stopped while it waited for the writers; nothing was deleted');
    const pending = (await repo.liveWriters()).filter((w) => w.acked === undefined || w.acked < key);
    if (pending.length === 0) return;
    if (Date.now() >= deadline) {
      const w = pending[0] as LiveWriter;
      throw new PhoenixError(
        'PHX_LOCKED',
        `the writer of source ${JSON.stringify(w.source)} (process ${w.pid} on ${w.host}) has not acknowledged the deletion plan; nothing was deleted`,
        {
          hint: 'a phoenix watch acknowledges at its next lease renewal (lease-renew:, every minute by default) once its commit in flight has landed; run prune again later',
        },
      );
    }
    if (Date.now() >= said) {
      onWait?.(pending);
      said = Date.now() + 10_000;
    }
    await setTimeout(200);
  }
}

/**
 * What the repository keeps: the chunks (by pack) and the parts every kept commit, segment and
 * checkpoint refers to; with `since`, only those written after it (what prune takes back).
 * `named`: packs that commits list as theirs (a commit's own uploads).
 */
async function referenced(
  repo: Repository,
  since?: PrunePlan['heads'],
): Promise<{ packs: UsedChunks; parts: Set<string>; named: Set<string> }> {
  // Records name packs through the relocations: another process may have repacked since this
  // one last read them (a daemon's maintainer after a `phoenix prune`), and a new pack that only
  // a new relocation leads to must count as used.
  await repo.refreshRelocations();
  const packs = new UsedChunks();
  const use = (r: { id: string; pack: string; length: number }): void => packs.add(r.pack, r.id, r.length);
  const parts = new Set<string>();
  const named = new Set<string>();
  // Checkpoints share the parts of the tree that did not change between them: each is read once.
  const partsRead = new Set<string>();
  for (const source of await repo.sources()) {
    const after = since?.get(source) ?? { seq: 0, checkpoints: new Set<number>() };
    const seen = new Set<string>();
    for (const info of await repo.commitList(source)) {
      if (info.seq <= after.seq) continue;
      // One read per commit: its head names its parts (a segment's are read once, with its head).
      const head = await repo.readCommitHead(info);
      if (!seen.has(info.key)) {
        seen.add(info.key);
        for (const p of info.segment === undefined ? head.parts.map(([id]) => id) : await repo.partsOf(info.key)) parts.add(p);
      }
      for (const p of head.packs) named.add(p);
      for await (const ch of repo.commitChanges(head)) if (ch.op === 'put') for (const r of ch.chunks) use(r);
    }
    for (const seq of await repo.checkpointSeqs(source)) {
      if (after.checkpoints.has(seq)) continue;
      for (const p of await repo.partsOf(checkpointKey(source, seq))) parts.add(p);
      for await (const r of repo.checkpointRecords(source, seq, { skipParts: partsRead })) for (const c of r.chunks) use(c);
    }
  }
  return { packs, parts, named };
}

export async function planPrune(repo: Repository, opts: PruneOptions): Promise<PrunePlan> {
  const now = await repo.storeNow();
  const heads = new Map<string, { seq: number; checkpoints: Set<number> }>();
  for (const source of await repo.sources()) {
    const chain = await repo.journalObjects(source);
    heads.set(source, { seq: chain.at(-1)?.seq ?? 0, checkpoints: new Set(await repo.checkpointSeqs(source)) });
  }
  const used = await referenced(repo);
  let eligibleAtMs: number | undefined;
  const census = (objects: ObjectInfo[], isUsed: (id: string) => boolean, doomed: string[]): Census => {
    const c: Census = { total: 0, bytes: 0, used: 0, usedBytes: 0, unused: 0, unusedBytes: 0, young: 0, youngBytes: 0 };
    for (const o of objects) {
      const id = o.key.split('/').pop() as string;
      c.total++;
      c.bytes += o.size;
      if (isUsed(id)) {
        c.used++;
        c.usedBytes += o.size;
      } else if (o.mtimeMs === undefined || now - o.mtimeMs < opts.minPackAgeMs) {
        const at = (o.mtimeMs ?? now) + opts.minPackAgeMs;
        eligibleAtMs = eligibleAtMs === undefined ? at : Math.min(eligibleAtMs, at);
        c.young++;
        c.youngBytes += o.size;
      } else {
        c.unused++;
        c.unusedBytes += o.size;
        doomed.push(id);
      }
    }
    return c;
  };
  const doomed = { packs: [] as string[], parts: [] as string[] };
  const listed = await listAll(repo.backend, 'data/');
  const packs = census(listed, (id) => used.packs.has(id), doomed.packs);
  const parts = census(await listAll(repo.backend, 'meta/'), (id) => used.parts.has(id), doomed.parts);
  // Repacking: of the packs in use (and old enough), the most wasteful first, until the unused
  // share of what stays is at most maxUnusedPercent (or maxRepackBytes are copied).
  const inUse = listed
    .map((o) => {
      const id = o.key.split('/').pop() as string;
      const old = o.mtimeMs !== undefined && now - o.mtimeMs >= opts.minPackAgeMs;
      return { pack: id, size: o.size, chunks: used.packs.count(id), usedBytes: used.packs.bytes(id), old };
    })
    .filter((p) => used.packs.has(p.pack));
  const total = inUse.reduce((n, p) => n + p.size, 0);
  // A pack's trailer (its header) is not waste: about 100 bytes per entry.
  const waste = (p: (typeof inUse)[number]): number => Math.max(0, p.size - p.usedBytes - 100 * p.chunks - 4);
  let unusedAfter = inUse.reduce((n, p) => n + waste(p), 0);
  const limit = ((opts.maxUnusedPercent ?? DEFAULT_MAX_UNUSED_PERCENT) / 100) * total;
  const repack: PrunePlan['repack'] = [];
  let repackBytes = 0;
  for (const p of inUse.filter((x) => x.old && waste(x) > 0).sort((a, b) => waste(b) - waste(a))) {
    if (unusedAfter <= limit || repackBytes + p.usedBytes > (opts.maxRepackBytes ?? Infinity)) break;
    repack.push({ pack: p.pack, size: p.size, used: used.packs });
    repackBytes += p.usedBytes;
    unusedAfter -= waste(p);
  }
  return { packs, parts, doomed, heads, eligibleAtMs, repack, repackBytes, unusedAfter };
}

/** Copies the live chunks of `plan.repack` into new packs (each checked against its id first); where each went. */
async function repackLive(repo: Repository, plan: PrunePlan): Promise<Array<{ from: string; to: ChunkRef }>> {
  const writer = new ChunkWriter(repo);
  const moves: Array<Promise<{ from: string; to: ChunkRef }>> = [];
  for (const p of plan.repack) {
    const bytes = await repo.backend.get(packKey(p.pack));
    const len = bytes.readUInt32LE(bytes.length - 4);
    const entries = parseHeader(repo.keys, bytes.subarray(bytes.length - 4 - len, bytes.length - 4), `pack ${packKey(p.pack)}`);
    for (const e of entries) {
      if (!p.used.mayUse(p.pack, e.id)) continue;
      const blob = Buffer.from(bytes.subarray(e.offset, e.offset + e.length));
      openChunk(repo.keys, e.id, blob, chunkWhat({ id: e.id, pack: p.pack })); // never copy a damaged chunk on
      moves.push(writer.addSealed(e.id, blob).then((to) => ({ from: p.pack, to })));
      await writer.backpressure();
    }
  }
  await writer.flush();
  return Promise.all(moves);
}

/**
 * Publishes the plan, waits for the live writers' acknowledgements, takes back what was
 * committed meanwhile, then deletes. Returns the plan's key and what was taken back.
 */
export async function applyPrune(
  repo: Repository,
  plan: PrunePlan,
  opts: { ackTimeoutMs?: number; onWait?: (pending: LiveWriter[]) => void; signal?: AbortSignal } = {},
): Promise<{ key: string; takenBack: number; repacked: number } | undefined> {
  if (plan.doomed.packs.length === 0 && plan.doomed.parts.length === 0 && plan.repack.length === 0) return undefined;
  // Repacked chunks are findable at their new place before their old pack is doomed.
  const moved = plan.repack.length > 0 ? await repackLive(repo, plan) : [];
  if (moved.length > 0) await repo.writeRelocations(moved);
  // A pack repacking just wrote is never doomed, even when it has the name of one the plan saw
  // unused (a run killed before it published the relocation left the same bytes behind).
  const written = new Set(moved.map((m) => m.to.pack));
  const doomedPacks = [...plan.doomed.packs, ...plan.repack.map((p) => p.pack)].filter((p) => !written.has(p));
  const key = await repo.writeDeletionPlan(doomedPacks, plan.doomed.parts, moved);
  // This process, too, must not name them any more (the writers forget them when they apply the plan).
  repo.forgetParts(plan.doomed.parts);
  await waitForAcks(repo, key, opts.ackTimeoutMs ?? ACK_TIMEOUT_MS, opts.onWait, opts.signal);
  const since = await referenced(repo, plan.heads);
  const packs = doomedPacks.filter((id) => !since.packs.has(id) && !since.named.has(id));
  const parts = plan.doomed.parts.filter((id) => !since.parts.has(id));
  await mapLimited(packs, 8, (id) => repo.backend.delete(packKey(id)));
  await mapLimited(parts, 8, (id) => repo.backend.delete(partKey(id)));
  return { key, takenBack: doomedPacks.length - packs.length + plan.doomed.parts.length - parts.length, repacked: plan.repack.length };
}

/** How long prune waits for the writers' acknowledgements: two lease lifetimes. */
export const ACK_TIMEOUT_MS = 10 * 60_000;
