/**
 * Scale benchmark: Phoenix beside restic (Debian package) on a large tree, in one run.
 *   npm run bench:scale      (BENCH_FILES=200000 for a smaller tree; BENCH_META_S=600 for the
 *                             metadata scenario's length; BENCH_SKIP=restic to leave restic out)
 * Prints one table: first backup (wall, peak RSS), no-change backup, restore with a cold page
 * cache, `phoenix watch` start-up and steady RSS on that tree and on 100,000 files, the
 * log-append and in-place scenarios (repository growth per commit), and the metadata written
 * during one change a second on a 100,000-file tree, extrapolated to a day.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PHOENIX, WatchProcess } from './watch-process.js';

const FILES = Number(process.env.BENCH_FILES ?? 2_000_000);
const META_S = Number(process.env.BENCH_META_S ?? 600);
const skip = new Set((process.env.BENCH_SKIP ?? '').split(','));
const work = mkdtempSync(join(tmpdir(), 'phx-bench-scale-'));
const env = { ...process.env, PHOENIX_PASSWORD: 'bench', RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: join(work, 'restic-cache') };
const haveRestic = !skip.has('restic') && spawnSync('sh', ['-c', 'command -v restic']).status === 0;
const rows: Array<[string, string, string, string, string]> = [];
const MiB = 2 ** 20;

/** Runs a command under /usr/bin/time: wall seconds and peak RSS (MiB). */
function timed(cmd: string, args: string[]): { s: number; rssMiB: number; stdout: string } {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { env, encoding: 'utf8', maxBuffer: 1 << 30 });
  const last = r.stderr.trim().split('\n').at(-1) ?? '';
  const [s, kb] = last.split(' ').map(Number);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr.slice(-2000)}`);
  return { s: s as number, rssMiB: (kb as number) / 1024, stdout: r.stdout };
}

function dropCaches(): void {
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    console.log('cannot drop the page cache (not root): restores are warm');
  }
}

function du(dir: string): number {
  let n = 0;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) n += statSync(p).size;
    }
  };
  walk(dir);
  return n;
}

const metaBytes = (repo: string): number => ['journal', 'checkpoint', 'meta'].reduce((n, d) => n + safeDu(join(repo, d)), 0);
const safeDu = (d: string): number => {
  try {
    return du(d);
  } catch {
    return 0;
  }
};

function generate(root: string, files: number): void {
  const perDir = 1000;
  mkdirSync(root, { recursive: true });
  for (let d = 0; d * perDir < files; d++) {
    const dir = join(root, `d${String(d).padStart(5, '0')}`);
    mkdirSync(dir);
    for (let f = 0; f < perDir && d * perDir + f < files; f++) writeFileSync(join(dir, `f${f}`), `${d}:${f}\n`);
  }
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');
const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && a > 0 ? (b / a).toFixed(2) : 'n/a');

// ---- the big tree ----------------------------------------------------------------------

const big = join(work, 'big');
const t0 = performance.now();
generate(big, FILES);
console.log(`generated ${FILES} files in ${((performance.now() - t0) / 1000).toFixed(0)} s under ${big}`);
// The tree's writeback done before either tool runs: otherwise the first one to run pays for it.
spawnSync('sync');
const phxRepo = join(work, 'phx-repo');
const phxState = join(work, 'phx-state');
const resticRepo = join(work, 'restic-repo');

// Each first backup starts with the tree read just before (`tar cf - | cat`) and the writeback
// that read caused (atime) done. This machine pages out memory not accessed for 60 s (DAMON's
// pageout scheme, kdamond), so whichever tool ran first on the tree as generated read much of
// it from disk and paid 20-40 s that the one after it did not. Warmed, runs still vary by 10-15%
// (the same build twice in a row: 122.6 and 103.9 s one time, 114.5 and 112.9 another), so each
// tool backs up twice, in the order Phoenix, restic, restic, Phoenix (each into an empty
// repository), and the table gives the mean of its two runs: an order effect, or a drift of the
// machine's speed during the four runs, weighs on both alike.
const warm = (dir: string): void => {
  spawnSync('sh', ['-c', 'tar cf - -C "$1" . | cat >/dev/null', 'sh', dir]);
  spawnSync('sync');
};
/** One first backup: wall seconds and peak RSS. */
type Run = { s: number; rssMiB: number };
const phxFirst = (repo: string, state: string): Run => {
  spawnSync(process.execPath, [PHOENIX, 'init', '--repo', repo], { env });
  warm(big);
  return timed(process.execPath, [PHOENIX, 'backup', big, '--repo', repo, '--state', state, '-q']);
};
const resticFirst = (repo: string): Run => {
  spawnSync('restic', ['-r', repo, 'init'], { env });
  warm(big);
  return timed('restic', ['-r', repo, 'backup', '-q', big]);
};
const scrap = (...dirs: string[]): void => dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
const firsts: { p: Run[]; r: Run[] } = { p: [], r: [] };
firsts.p.push(phxFirst(join(work, 'phx-repo-1'), join(work, 'phx-state-1')));
scrap(join(work, 'phx-repo-1'), join(work, 'phx-state-1'));
if (haveRestic) {
  firsts.r.push(resticFirst(join(work, 'restic-repo-1')));
  scrap(join(work, 'restic-repo-1'));
  firsts.r.push(resticFirst(resticRepo));
}
firsts.p.push(phxFirst(phxRepo, phxState)); // the repository the rows below go on with
/** The mean wall time of `runs` and the larger peak RSS. */
const summary = (runs: Run[]): Run => ({
  s: runs.reduce((n, r) => n + r.s, 0) / runs.length,
  rssMiB: Math.max(...runs.map((r) => r.rssMiB)),
});
const pFirst = summary(firsts.p);
const rFirst = haveRestic ? summary(firsts.r) : undefined;
const each = (runs: Run[]): string => runs.map((r) => f1(r.s)).join(', ');
rows.push([
  `first backup of ${FILES} files, mean of two (s)`,
  f1(pFirst.s),
  f1(rFirst?.s ?? NaN),
  ratio(pFirst.s, rFirst?.s ?? NaN),
  '≥ 1 (wall ≤ restic)',
]);
rows.push(['  each run, in order P R R P (s)', each(firsts.p), haveRestic ? each(firsts.r) : 'n/a', '', '']);
rows.push([
  '  peak RSS, the larger of two (MiB)',
  f1(pFirst.rssMiB),
  f1(rFirst?.rssMiB ?? NaN),
  ratio(pFirst.rssMiB, rFirst?.rssMiB ?? NaN),
  '≥ 1 (RSS ≤ restic)',
]);
const pNone = timed(process.execPath, [PHOENIX, 'backup', big, '--repo', phxRepo, '--state', phxState, '-q']);
const rNone = haveRestic ? timed('restic', ['-r', resticRepo, 'backup', '-q', big]) : undefined;
rows.push(['no-change backup (s)', f1(pNone.s), f1(rNone?.s ?? NaN), ratio(pNone.s, rNone?.s ?? NaN), '≥ 2 (≤ 0.5× restic)']);
rows.push(['  peak RSS (MiB)', f1(pNone.rssMiB), f1(rNone?.rssMiB ?? NaN), ratio(pNone.rssMiB, rNone?.rssMiB ?? NaN), '']);

// Both outputs are deleted after both restores: on ext4 without a journal, creating a file skips
// every inode deleted in about the last minute, so a restore right after the deletion of the
// other's 2,000,000 files would pay for that deletion (see bench/repository.ts).
dropCaches();
const pRestore = timed(process.execPath, [PHOENIX, 'restore', '--target', join(work, 'phx-out'), '--repo', phxRepo, '--source', big, '-q']);
dropCaches();
const rRestore = haveRestic ? timed('restic', ['-r', resticRepo, 'restore', 'latest', '--target', join(work, 'restic-out')]) : undefined;
for (const out of ['phx-out', 'restic-out']) rmSync(join(work, out), { recursive: true, force: true });
rows.push(['restore, cold cache (s)', f1(pRestore.s), f1(rRestore?.s ?? NaN), ratio(pRestore.s, rRestore?.s ?? NaN), '≥ 1']);
rows.push(['  peak RSS (MiB)', f1(pRestore.rssMiB), f1(rRestore?.rssMiB ?? NaN), ratio(pRestore.rssMiB, rRestore?.rssMiB ?? NaN), '']);

async function watchStartup(src: string, repo: string, state: string): Promise<{ s: number; rss: number }> {
  const start = performance.now();
  const w = new WatchProcess(src, repo, state, env);
  await w.ready(true);
  const s = (performance.now() - start) / 1000;
  // Steady: the daemon gives back the young generation its start-up grew 9 s after the work stops.
  await sleep(15_000);
  const rss = w.rssMiB();
  await w.stop();
  return { s, rss };
}
const bigWatch = await watchStartup(big, phxRepo, phxState);
rows.push([`phoenix watch on ${FILES} files: start-up to watching (s)`, f1(bigWatch.s), '—', '', '≤ 30 s']);
rows.push(['  steady RSS (MiB)', f1(bigWatch.rss), '—', '', FILES >= 2_000_000 ? '≤ 300 MiB' : '']);
rmSync(big, { recursive: true, force: true });
rmSync(phxRepo, { recursive: true, force: true });
rmSync(phxState, { recursive: true, force: true });
rmSync(resticRepo, { recursive: true, force: true });

// ---- 100,000 files ------------------------------------------------------------------------

const mid = join(work, 'mid');
generate(mid, 100_000);
const midRepo = join(work, 'mid-repo');
const midState = join(work, 'mid-state');
spawnSync(process.execPath, [PHOENIX, 'init', '--repo', midRepo], { env });
timed(process.execPath, [PHOENIX, 'backup', mid, '--repo', midRepo, '--state', midState, '-q']);
const midWatch = await watchStartup(mid, midRepo, midState);
rows.push(['phoenix watch on 100,000 files: start-up (s)', f1(midWatch.s), '—', '', '']);
rows.push(['  steady RSS (MiB)', f1(midWatch.rss), '—', '', '≤ 120 MiB']);

// Metadata written by one change a second, for META_S seconds, extrapolated to a day.
{
  const w = new WatchProcess(mid, midRepo, midState, env);
  await w.ready(true);
  const before = metaBytes(midRepo);
  const end = Date.now() + META_S * 1000;
  for (let i = 0; Date.now() < end; i++) {
    writeFileSync(join(mid, `d${String(i % 100).padStart(5, '0')}`, `f${i % 1000}`), `change ${i}\n`);
    await sleep(1000);
  }
  await w.settled();
  const written = metaBytes(midRepo) - before;
  await w.stop();
  rows.push([
    `metadata written, 1 change/s on 100,000 files (MB/day, from ${META_S} s)`,
    f1((written / 1e6) * (86_400 / META_S)),
    '—',
    '',
    '≤ 200 MB/day',
  ]);
}
rmSync(mid, { recursive: true, force: true });

// ---- a log that grows, a file rewritten in place -------------------------------------------

async function growth(
  name: string,
  setup: (dir: string) => void,
  step: (dir: string, i: number) => number,
  steps: number,
  gapMs: number,
  warm: number,
): Promise<{ perCommit: number; amplification: number; restic: number }> {
  const dir = join(work, name);
  mkdirSync(dir);
  setup(dir);
  const repo = join(work, `${name}-repo`);
  const state = join(work, `${name}-state`);
  spawnSync(process.execPath, [PHOENIX, 'init', '--repo', repo], { env });
  const w = new WatchProcess(dir, repo, state, env);
  await w.ready(true);
  let before = 0;
  let changed = 0;
  let seq0 = 0;
  for (let i = 0; i < steps; i++) {
    if (i === warm) {
      seq0 = await w.settled();
      before = du(repo);
      changed = 0;
    }
    changed += step(dir, i);
    await sleep(gapMs);
  }
  const commits = (await w.settled()) - seq0;
  const grew = du(repo) - before;
  await w.stop();
  // restic: one snapshot after each of a few of the same steps.
  let restic = NaN;
  if (haveRestic) {
    const rr = join(work, `${name}-restic`);
    spawnSync('restic', ['-r', rr, 'init'], { env });
    spawnSync('restic', ['-r', rr, 'backup', '-q', dir], { env });
    const b0 = du(rr);
    const n = 10;
    for (let i = 0; i < n; i++) {
      step(dir, steps + i);
      spawnSync('restic', ['-r', rr, 'backup', '-q', dir], { env });
    }
    restic = (du(rr) - b0) / n;
    rmSync(rr, { recursive: true, force: true });
  }
  rmSync(dir, { recursive: true, force: true });
  rmSync(repo, { recursive: true, force: true });
  rmSync(state, { recursive: true, force: true });
  return { perCommit: grew / commits, amplification: grew / changed, restic };
}

const LINE = 'x'.repeat(106) + '\n';
const log = await growth(
  'log',
  (d) => {
    const chunk = Buffer.from(`${'2026-12-01T00:00:00Z host app: request served in 12 ms, status 200, bytes 5120\n'.repeat(1 << 14)}`);
    const fd = openSync(join(d, 'app.log'), 'w');
    for (let n = 0; n < 20 * MiB; n += chunk.length) writeSync(fd, chunk);
    closeSync(fd);
  },
  (d) => {
    appendFileSync(join(d, 'app.log'), LINE);
    return LINE.length;
  },
  120,
  250,
  0,
);
rows.push([
  'log of 20 MiB, +107 bytes every 250 ms: growth per commit (KiB)',
  f1(log.perCommit / 1024),
  f1(log.restic / 1024),
  ratio(log.perCommit, log.restic),
  '≤ 4 KiB + appended',
]);
rows.push(['  amplification (growth / appended bytes)', f1(log.amplification), f1(log.restic / LINE.length), '', '']);

const inplace = await growth(
  'inplace',
  (d) => {
    const fd = openSync(join(d, 'disk.img'), 'w');
    const block = Buffer.alloc(MiB);
    for (let i = 0; i < 100; i++) {
      for (let j = 0; j < block.length; j += 4) block.writeUInt32LE((i * 7919 + j) >>> 0, j);
      writeSync(fd, block);
    }
    closeSync(fd);
  },
  (d, i) => {
    const fd = openSync(join(d, 'disk.img'), 'r+');
    const buf = Buffer.alloc(4096, i & 0xff);
    writeSync(fd, buf, 0, buf.length, 50 * MiB + (i % 16) * 4096 * 37);
    closeSync(fd);
    return buf.length;
  },
  30,
  600,
  5,
);
rows.push([
  '100 MiB file, 4 KiB written in the middle: growth per commit (KiB)',
  f1(inplace.perCommit / 1024),
  f1(inplace.restic / 1024),
  ratio(inplace.perCommit, inplace.restic),
  '≤ 256 KiB',
]);

// ---- the table -------------------------------------------------------------------------

const head: [string, string, string, string, string] = ['metric', 'phoenix', 'restic 0.14', 'restic / phoenix', 'goal'];
console.log(`\n| ${head.join(' | ')} |\n|${head.map(() => '---').join('|')}|`);
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
rmSync(work, { recursive: true, force: true });
