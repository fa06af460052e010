/**
 * Retention benchmark: Phoenix beside restic (Debian package) where it has an equivalent, in one run.
 *   npm run bench:retention   (BENCH_SCALE=0.1 for a small prune tree; BENCH_DAYS, BENCH_COMMITS_PER_DAY,
 *                              BENCH_TREE for the simulated year; BENCH_RPO_N changes per RPO measurement;
 *                              BENCH_SKIP=prune,year,rpo to leave sections out)
 * Prints one table:
 *  1. prune after half of the bench:repo tree was deleted and forgotten: wall time, peak RSS and
 *     the repository's size after, beside `restic forget --keep-last 1 --prune` on the same data;
 *  2. a simulated year of a busy source (3,000 commits a day on a 100,000-entry tree, compressed
 *     time, in memory): journal objects, metadata bytes, and LIST requests (pages of 1,000 keys)
 *     at start-up and for a restore, with hourly compaction and daily forget under the default
 *     policy, beside the same journal without them;
 *  3. `phoenix watch`'s close→durable latency, p50 and p99, idle and while `phoenix prune` runs.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend, Body, ByteRange, ObjectInfo } from '../src/backend/backend.js';
import { MemoryBackend } from '../src/backend/memory.js';
import { type FileRecord, type JournalChange, Repository } from '../src/repo/index.js';
import { compactJournal } from '../src/retention/compact.js';
import { applyForget, planForget } from '../src/retention/forget.js';
import { applyPrune, planPrune } from '../src/retention/prune.js';
import { DEFAULT_POLICY, parsePolicy } from '../src/retention/policy.js';
import { PHOENIX, pct, WatchProcess } from './watch-process.js';

const scale = Number(process.env.BENCH_SCALE ?? 1);
const DAYS = Number(process.env.BENCH_DAYS ?? 365);
const PER_DAY = Number(process.env.BENCH_COMMITS_PER_DAY ?? 3000);
const TREE = Number(process.env.BENCH_TREE ?? 100_000);
const RPO_N = Number(process.env.BENCH_RPO_N ?? 200);
const skip = new Set((process.env.BENCH_SKIP ?? '').split(','));
const work = mkdtempSync(join(tmpdir(), 'phx-bench-retention-'));
const env = { ...process.env, PHOENIX_PASSWORD: 'bench', RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: join(work, 'restic-cache') };
const haveRestic = spawnSync('sh', ['-c', 'command -v restic']).status === 0;
const rows: string[][] = [];
const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');
const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && a > 0 ? `${(b / a).toFixed(2)}x` : 'n/a');

/** Wall seconds and peak RSS (MiB) of a command, under /usr/bin/time. */
function timed(cmd: string, args: string[], extra: Record<string, string> = {}): { s: number; rssMiB: number; stdout: string } {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { env: { ...env, ...extra }, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr.slice(-2000)}`);
  const [s, kb] = (r.stderr.trim().split('\n').at(-1) ?? '').split(' ').map(Number);
  return { s: s as number, rssMiB: (kb as number) / 1024, stdout: r.stdout };
}

function du(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? du(p) : statSync(p).size;
  }
  return n;
}

function writeRandom(path: string, size: number): void {
  const fd = openSync(path, 'w');
  for (let done = 0; done < size; done += 8 * 2 ** 20) writeSync(fd, randomBytes(Math.min(8 * 2 ** 20, size - done)));
  closeSync(fd);
}

// ---- 1. prune after half the tree was deleted ------------------------------------------------

function pruneSection(): void {
  const src = join(work, 'src');
  const small = Math.round(20_000 * scale);
  for (let i = 0; i < small; i++) {
    const dir = join(src, `d${i % 200}`);
    if (i < 200) mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `f${i}`), randomBytes(1024 + Math.floor(Math.random() * 63 * 1024)));
  }
  mkdirSync(join(src, 'medium'));
  for (let i = 0; i < Math.max(2, Math.round(20 * scale)); i++) writeRandom(join(src, 'medium', `m${i}`), 5 * 2 ** 20);
  mkdirSync(join(src, 'large'));
  for (let i = 0; i < 2; i++) writeRandom(join(src, 'large', `l${i}`), Math.round(256 * 2 ** 20 * scale));
  const phx = { PHOENIX_REPOSITORY: join(work, 'phx-repo'), XDG_STATE_HOME: join(work, 'phx-state') };
  const restic = { RESTIC_REPOSITORY: join(work, 'restic-repo') };
  timed('node', [PHOENIX, 'init'], phx);
  timed('node', [PHOENIX, 'backup', src], phx);
  if (haveRestic) {
    timed('restic', ['init'], restic);
    timed('restic', ['backup', src], restic);
  }
  // Half of everything goes: every other small file, half the medium ones, one large one.
  for (let i = 0; i < small; i += 2) rmSync(join(src, `d${i % 200}`, `f${i}`));
  for (let i = 0; i < Math.max(2, Math.round(20 * scale)); i += 2) rmSync(join(src, 'medium', `m${i}`));
  rmSync(join(src, 'large', 'l0'));
  timed('node', [PHOENIX, 'backup', src], phx);
  if (haveRestic) timed('restic', ['backup', src], restic);
  const before = du(join(work, 'phx-repo'));
  const forget = timed('node', [PHOENIX, 'forget', '--policy', '1000d:2000d', '--min-age', '0'], phx);
  const prune = timed('node', [PHOENIX, 'prune', '--min-pack-age', '0'], phx);
  const after = du(join(work, 'phx-repo'));
  let r = { s: NaN, rssMiB: NaN };
  let rBefore = NaN;
  let rAfter = NaN;
  if (haveRestic) {
    rBefore = du(join(work, 'restic-repo'));
    r = timed('restic', ['forget', '--keep-last', '1', '--prune'], restic);
    rAfter = du(join(work, 'restic-repo'));
  }
  const mib = (n: number): number => n / 2 ** 20;
  rows.push(['**prune after half the tree was deleted** (restic: forget --keep-last 1 --prune)', '', '', '']);
  rows.push(['  forget + prune wall (s)', f1(forget.s + prune.s), f1(r.s), ratio(forget.s + prune.s, r.s)]);
  rows.push(['  of which prune (s)', f1(prune.s), '', '']);
  rows.push([
    '  peak RSS (MiB)',
    f1(Math.max(forget.rssMiB, prune.rssMiB)),
    f1(r.rssMiB),
    ratio(Math.max(forget.rssMiB, prune.rssMiB), r.rssMiB),
  ]);
  rows.push([
    '  repository before → after (MiB)',
    `${f1(mib(before))} → ${f1(mib(after))}`,
    `${f1(mib(rBefore))} → ${f1(mib(rAfter))}`,
    '',
  ]);
  rmSync(src, { recursive: true, force: true });
}

// ---- 2. a simulated year ---------------------------------------------------------------------

/** Counts requests as S3 bills them: a LIST per page of 1,000 keys, a GET, a PUT. */
class Counting implements Backend {
  readonly location = 'memory:counting';
  readonly capabilities = { createOnly: true };
  lists = 0;
  gets = 0;
  puts = 0;
  constructor(readonly inner: MemoryBackend) {}
  put(key: string, data: Body, opts?: { createOnly?: boolean }): Promise<void> {
    this.puts++;
    return this.inner.put(key, data, opts);
  }
  get(key: string, range?: ByteRange): Promise<Buffer> {
    this.gets++;
    return this.inner.get(key, range);
  }
  stat(key: string): Promise<ObjectInfo> {
    return this.inner.stat(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let n = 0;
    for await (const o of this.inner.list(prefix)) {
      if (n++ % 1000 === 0) this.lists++;
      yield o;
    }
    if (n === 0) this.lists++;
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  async close(): Promise<void> {}
  reset(): void {
    this.lists = this.gets = this.puts = 0;
  }
}

const hex = (n: number): string => n.toString(16).padStart(64, '0');
const rec = (i: number, version: number): FileRecord => ({
  path: `d${Math.floor(i / 1000)}/f${i}`,
  type: 'file',
  mode: 0o100644,
  uid: 1000,
  gid: 1000,
  mtimeNs: BigInt(version) * 1_000_000_000n,
  size: 4096,
  chunks: [{ id: hex(i * 1_000_003 + version), pack: hex(version + 1), offset: 0, length: 4130, size: 4096 }],
});

async function metaBytes(b: MemoryBackend): Promise<{ objects: number; journal: number; bytes: number }> {
  let objects = 0;
  let journal = 0;
  let bytes = 0;
  for (const prefix of ['journal/', 'meta/', 'checkpoint/']) {
    for await (const o of b.list(prefix)) {
      objects++;
      if (prefix === 'journal/') journal++;
      bytes += o.size;
    }
  }
  return { objects, journal, bytes };
}

async function yearSection(): Promise<void> {
  const inner = new MemoryBackend();
  const b = new Counting(inner);
  const repo = await Repository.init(b, { insecureNoEncryption: true });
  const policy = parsePolicy(DEFAULT_POLICY);
  const stats = { files: 0, dirs: 0, deleted: 0, bytesUploaded: 0, bytesTotal: 0 };
  const t0 = Date.UTC(2026, 0, 5);
  const dirs: JournalChange[] = [];
  for (let d = 0; d < Math.ceil(TREE / 1000); d++)
    dirs.push({ op: 'put', path: `d${d}`, type: 'dir', mode: 0o40755, uid: 1000, gid: 1000, mtimeNs: 0n, size: 0, chunks: [] });
  const first = [...dirs, ...Array.from({ length: TREE }, (_, i): JournalChange => ({ op: 'put', ...rec(i, 0) }))];
  await repo.writeCommit({ source: 's', seq: 1, timeMs: t0, packs: [], stats, changes: first });
  let seq = 1;
  let x = 12345;
  const rnd = (): number => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const started = performance.now();
  let maintenanceMs = 0;
  const parts = { compact: 0, forget: 0, prune: 0 };
  let shown = { ...parts };
  const step = 86_400_000 / PER_DAY;
  for (let day = 0; day < DAYS; day++) {
    for (let hour = 0; hour < 24; hour++) {
      for (let k = 0; k < PER_DAY / 24; k++) {
        seq++;
        const timeMs = t0 + day * 86_400_000 + (hour * (PER_DAY / 24) + k) * step + 1;
        await repo.writeCommit({ source: 's', seq, timeMs, packs: [], stats, changes: [{ op: 'put', ...rec(rnd() % TREE, seq) }] });
      }
      const m0 = performance.now();
      await compactJournal(repo, 's', { olderThanMs: 600_000, spanMs: 3_600_000 });
      parts.compact += performance.now() - m0;
      maintenanceMs += performance.now() - m0;
    }
    const m0 = performance.now();
    await applyForget(repo, await planForget(repo, 's', policy));
    const m1 = performance.now();
    await applyPrune(repo, await planPrune(repo, { minPackAgeMs: 0 })); // the metadata parts nothing names any more
    parts.forget += m1 - m0;
    parts.prune += performance.now() - m1;
    maintenanceMs += performance.now() - m0;
    if (day % 30 === 29) {
      const s = (ms: number): string => (ms / 1000).toFixed(1);
      const sum = `compaction ${s(parts.compact - shown.compact)}, forget ${s(parts.forget - shown.forget)}, prune ${s(parts.prune - shown.prune)} s`;
      process.stderr.write(`  simulated day ${day + 1} of ${DAYS} (${s(performance.now() - started)} s; the last 30 days' ${sum})\n`);
      shown = { ...parts };
    }
  }
  const m = await metaBytes(inner);
  // Start-up: the journal and its instants, the checkpoints, the deletion plans; then the tree at the latest commit.
  const cold = await Repository.open(b, async () => undefined);
  b.reset();
  const commits = await cold.commitList('s');
  await cold.checkpointSeqs('s');
  await cold.deletionPlans();
  const startLists = b.lists;
  const startGets = b.gets;
  b.reset();
  const restoreRepo = await Repository.open(b, async () => undefined);
  b.reset();
  await restoreRepo.loadState('s');
  const restoreLists = b.lists;
  const restoreGets = b.gets;
  // An old instant: the newest kept 100 days before the latest (or the oldest kept).
  const latestMs = (commits.at(-1) as { timeMs: number }).timeMs;
  const back = [...commits].reverse().find((c) => c.timeMs <= latestMs - 100 * 86_400_000) ?? (commits[0] as { seq: number });
  const oldRepo = await Repository.open(b, async () => undefined);
  b.reset();
  const r0 = performance.now();
  const { commitsRead } = await oldRepo.loadState('s', back.seq);
  const oldMs = performance.now() - r0;
  const oldGets = b.gets;
  const total = 1 + DAYS * PER_DAY;
  // Without compaction and retention: one object per commit, every one listed at start-up (computed: the same writes).
  const plainLists = Math.ceil(total / 1000);
  rows.push([
    `**a simulated year**: ${DAYS} days × ${PER_DAY} commits on ${TREE} entries, default policy`,
    'compacted + thinned',
    'one object per commit',
    '',
  ]);
  rows.push(['  journal objects', String(m.journal), String(total), ratio(m.journal, total)]);
  rows.push(['  instants kept', String(commits.length), String(total), '']);
  rows.push(['  metadata objects (journal, parts, checkpoints)', String(m.objects), '', '']);
  rows.push(['  metadata bytes (MiB)', f1(m.bytes / 2 ** 20), '', '']);
  rows.push(['  start-up: LIST requests / GETs', `${startLists} / ${startGets}`, `${plainLists + 2} / 0`, '']);
  rows.push(['  restore of the latest: LIST requests / GETs', `${restoreLists} / ${restoreGets}`, `${plainLists + 1} / ${total}`, '']);
  rows.push([
    '  the tree 100 days back: GETs / commits and steps replayed / ms',
    `${oldGets} / ${commitsRead} / ${oldMs.toFixed(0)}`,
    '',
    '',
  ]);
  rows.push(['  maintenance time over the year: hourly compaction, daily forget and prune (s)', f1(maintenanceMs / 1000), '', '']);
  rows.push([
    '    of which compaction / forget / prune (s)',
    `${f1(parts.compact / 1000)} / ${f1(parts.forget / 1000)} / ${f1(parts.prune / 1000)}`,
    '',
    '',
  ]);
}

// ---- 3. the daemon's RPO while prune runs ---------------------------------------------------

async function rpoSection(): Promise<void> {
  const dir = join(work, 'rpo');
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  mkdirSync(src, { recursive: true });
  writeFileSync(join(dir, 'phoenix.yaml'), 'lease-renew: 1s\nmaintenance: {compact-every: 0, forget-every: 0, prune-every: 0}\n');
  timed('node', [PHOENIX, 'init', '--repo', repoDir]);
  const w = new WatchProcess(src, repoDir, join(dir, 'state'), env, ['--config', join(dir, 'phoenix.yaml')]);
  await w.ready(true);
  // Garbage to prune: versions of a large file, forgotten.
  for (let i = 0; i < 20; i++) {
    writeRandom(join(src, 'big'), 4 * 2 ** 20);
    await w.settled();
  }
  const idle = await w.closeToDurable(src, RPO_N);
  timed('node', [PHOENIX, 'forget', '--repo', repoDir, '--policy', '1000d:2000d', '--min-age', '0']);
  let pruning = true;
  let runs = 0;
  const loop = (async () => {
    while (pruning) {
      // Asynchronously: this process measures the latencies meanwhile.
      const p = spawn('node', [PHOENIX, 'prune', '--repo', repoDir, '--min-pack-age', '0'], { env, stdio: 'ignore' });
      await new Promise((r) => p.once('exit', r));
      runs++;
    }
  })();
  const busy = await w.closeToDurable(src, RPO_N);
  pruning = false;
  await loop;
  await w.stop();
  rows.push([`**phoenix watch close→durable** (${RPO_N} changes; prune in a loop: ${runs} runs)`, 'idle', 'while prune runs', 'ratio']);
  rows.push(['  p50 (ms)', f1(pct(idle, 50)), f1(pct(busy, 50)), ratio(pct(idle, 50), pct(busy, 50))]);
  rows.push(['  p99 (ms)', f1(pct(idle, 99)), f1(pct(busy, 99)), ratio(pct(idle, 99), pct(busy, 99))]);
}

async function main(): Promise<void> {
  try {
    if (!skip.has('prune')) {
      process.stderr.write('prune after half the tree was deleted…\n');
      pruneSection();
    }
    if (!skip.has('year')) {
      process.stderr.write('a simulated year…\n');
      await yearSection();
    }
    if (!skip.has('rpo')) {
      process.stderr.write('the RPO while prune runs…\n');
      await rpoSection();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const header = ['metric', 'phoenix', 'restic / the other', 'ratio (other/phoenix)'];
  console.log(`\n| ${header.join(' | ')} |\n|${header.map(() => '---').join('|')}|`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  if (!haveRestic) console.log('\nrestic is not installed: apt-get install restic to compare');
}

await main();
