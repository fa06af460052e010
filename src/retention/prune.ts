import { listAll, type ObjectInfo } from '../backend/backend.js';
import { PhoenixError } from '../errors.js';
import { checkpointKey, mapLimited, packKey, partKey, type Repository } from '../repo/index.js';

/**
 * Garbage collection: deletes the packs and metadata parts that nothing the repository keeps
 * refers to (history that `forget` dropped, uploads a crash left behind), once they are older
 * than `minPackAgeMs` on the store's clock.
 *
 * Safety, in this build: prune deletes only while no writer holds a live lease on any source
 * (it takes the maintenance lease first, then looks; a writer takes its lease, then looks for
 * the maintenance lease: one of the two always sees the other). Before deleting it publishes a
 * deletion plan; a writer purges those packs from its deduplication index when it starts, and
 * before a commit after its lease ran out (a laptop that slept), so it never names a chunk
 * whose pack is gone.
 */
export interface PruneOptions {
  minPackAgeMs: number;
}

export interface PrunePlan {
  packs: Census;
  parts: Census;
  /** Keys to delete, packs first. */
  doomed: { packs: string[]; parts: string[] };
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

/** Refuses (PHX_LOCKED) while a writer is live, naming it. */
export async function noLiveWriters(repo: Repository): Promise<void> {
  const w = (await repo.liveWriters())[0];
  if (w === undefined) return;
  throw new PhoenixError(
    'PHX_LOCKED',
    `source ${JSON.stringify(w.source)} is being written by process ${w.pid} on ${w.host} (lease until ${new Date(w.expiresMs).toISOString()})`,
    {
      hint: 'prune deletes data only while no writer runs, in this version: stop phoenix watch (and backups) for the prune, then start them again',
    },
  );
}

/** What the repository keeps: every pack and part a kept commit, segment or checkpoint refers to. */
async function referenced(repo: Repository): Promise<{ packs: Set<string>; parts: Set<string> }> {
  const packs = new Set<string>();
  const parts = new Set<string>();
  for (const source of await repo.sources()) {
    const seen = new Set<string>();
    for (const info of await repo.commitList(source)) {
      if (!seen.has(info.key)) {
        seen.add(info.key);
        for (const p of await repo.partsOf(info.key)) parts.add(p);
      }
      const c = await repo.readCommit(info);
      for (const p of c.packs) packs.add(p);
      for (const ch of c.changes) if (ch.op === 'put') for (const r of ch.chunks) packs.add(r.pack);
    }
    for (const seq of await repo.checkpointSeqs(source)) {
      for (const p of await repo.partsOf(checkpointKey(source, seq))) parts.add(p);
      for await (const r of repo.checkpointRecords(source, seq)) for (const c of r.chunks) packs.add(c.pack);
    }
  }
  return { packs, parts };
}

export async function planPrune(repo: Repository, opts: PruneOptions): Promise<PrunePlan> {
  const now = await repo.storeNow();
  const used = await referenced(repo);
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
  const packs = census(await listAll(repo.backend, 'data/'), (id) => used.packs.has(id), doomed.packs);
  const parts = census(await listAll(repo.backend, 'meta/'), (id) => used.parts.has(id), doomed.parts);
  return { packs, parts, doomed };
}

/** Publishes the plan, then deletes: a run killed midway is finished by the next one. */
export async function applyPrune(repo: Repository, plan: PrunePlan): Promise<string | undefined> {
  if (plan.doomed.packs.length === 0 && plan.doomed.parts.length === 0) return undefined;
  const key = await repo.writeDeletionPlan(plan.doomed.packs, plan.doomed.parts);
  await mapLimited(plan.doomed.packs, 8, (id) => repo.backend.delete(packKey(id)));
  await mapLimited(plan.doomed.parts, 8, (id) => repo.backend.delete(partKey(id)));
  return key;
}
