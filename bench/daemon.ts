/**
 * Daemon benchmark: `phoenix watch` on a local repository and on the S3 test server (s3rver),
 * with lsyncd (Debian package) mirroring the same burst to a local directory, in one run.
 *   npm run bench:daemon     (BENCH_SCALE=0.1 for a quick run; BENCH_IDLE_S=60 idle seconds)
 * Prints: close-to-durable latency of single-file changes (p50/p95/p99), time until a burst of
 * 20,000 small files is durable, bytes and objects written per commit, CPU in the minute after the
 * burst and in the idle minute after that (with its context switches), and RSS
 * while watching a tree of 100,000 files.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listAll } from '../src/backend/backend.js';
import { openBackend } from '../src/backend/open.js';
import { startS3rver } from '../test/servers.js';
import { PHOENIX, pct, WatchProcess } from './watch-process.js';

const scale = Number(process.env.BENCH_SCALE ?? 1);
const idleSeconds = Number(process.env.BENCH_IDLE_S ?? 60);
const PASSWORD = 'bench';
const env = (): NodeJS.ProcessEnv => ({ ...process.env, PHOENIX_PASSWORD: PASSWORD });
const work = mkdtempSync(join(tmpdir(), 'phx-bench-daemon-'));

interface Row {
  metric: string;
  local: string;
  s3: string;
  lsyncd: string;
  lsyncd1s: string;
}

async function objectCount(repo: string): Promise<number> {
  const b = openBackend(repo);
  const n = (await listAll(b, '')).length;
  await b.close();
  return n;
}

/** Runs every measurement against one repository URL; returns figures by metric. */
async function measure(name: string, repo: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const dir = join(work, name);
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  const init = spawnSync(process.execPath, [PHOENIX, 'init', '--repo', repo], { env: env(), encoding: 'utf8' });
  if (init.status !== 0) throw new Error(init.stderr);
  const d = new WatchProcess(src, repo, join(dir, 'state'), env());
  await d.ready();

  // Single-file changes, one at a time: from the writer's close to the commit being durable.
  const lat = await d.closeToDurable(src, Math.max(20, Math.round(300 * scale)));
  out.set('close→durable p50 (ms)', pct(lat, 50).toFixed(1));
  out.set('close→durable p95 (ms)', pct(lat, 95).toFixed(1));
  out.set('close→durable p99 (ms)', pct(lat, 99).toFixed(1));

  // A burst of small files.
  const burst = Math.round(20_000 * scale);
  const s0 = await d.status();
  const objects0 = await objectCount(repo);
  const t0 = performance.now();
  mkdirSync(join(src, 'burst'));
  for (let i = 0; i < burst; i++) writeFileSync(join(src, 'burst', `f${i}`), `small file ${i}\n`.repeat(1 + (i % 60)));
  const written = performance.now() - t0;
  const ms = await d.until(t0, (s) => s.uploaded.files >= s0.uploaded.files + burst && s.pending === 0);
  const s1 = await d.status();
  const commits = s1.uploaded.commits - s0.uploaded.commits;
  const objects = (await objectCount(repo)) - objects0;
  out.set(`${burst} files burst durable (s)`, `${(ms / 1000).toFixed(2)} (written in ${(written / 1000).toFixed(2)})`);
  out.set('burst: commits', String(commits));
  out.set('burst: KiB uploaded per commit', ((s1.uploaded.bytes - s0.uploaded.bytes) / 1024 / Math.max(1, commits)).toFixed(1));
  out.set('burst: objects written per commit', (objects / Math.max(1, commits)).toFixed(2));

  // CPU after the burst: first the minute right after it, while the daemon winds down (the seal
  // workers stop after 30 s without work, the collector shrinks the heap), then an idle minute:
  // nothing to do, nothing held (the issue's goal: at most 100 ms, and no timer more often than
  // the lease's renewal, once a minute).
  await sleep(1000);
  const c0 = d.cpuMs();
  await sleep(idleSeconds * 1000);
  out.set(`CPU over the ${idleSeconds} s right after the burst (ms)`, (d.cpuMs() - c0).toFixed(0));
  const c1 = d.cpuMs();
  const w1 = d.contextSwitches();
  await sleep(idleSeconds * 1000);
  out.set(`idle CPU over ${idleSeconds} s, the minute after that (ms)`, (d.cpuMs() - c1).toFixed(0));
  out.set(`  context switches in that minute (all threads)`, String(d.contextSwitches() - w1));
  await d.stop();

  // RSS while watching a large tree (after its initial backup).
  if (name === 'local') {
    const big = join(dir, 'big');
    const files = Math.round(100_000 * scale);
    for (let i = 0; i < files; i++) {
      if (i % 100 === 0) mkdirSync(join(big, `d${i / 100}`), { recursive: true });
      writeFileSync(join(big, `d${Math.floor(i / 100)}`, `f${i}`), `file ${i}`);
    }
    const t = performance.now();
    const b = new WatchProcess(big, repo, join(dir, 'state-big'), env());
    await b.ready();
    out.set(`initial backup of ${files} files (s)`, ((performance.now() - t) / 1000).toFixed(1));
    await sleep(2000);
    out.set(`RSS watching ${files} files (MiB)`, b.rssMiB().toFixed(1));
    await b.stop();
  }
  return out;
}

/** lsyncd (default.rsync) mirroring a burst into a local directory: seconds until every file is there. */
async function lsyncd(delay: number | undefined): Promise<string> {
  if (spawnSync('sh', ['-c', 'command -v lsyncd']).status !== 0) return 'not installed (apt-get install lsyncd)';
  const dir = join(work, `lsyncd-${delay ?? 'default'}`);
  const src = join(dir, 'src');
  const dst = join(dir, 'dst');
  mkdirSync(src, { recursive: true });
  mkdirSync(dst);
  const conf = join(dir, 'lsyncd.lua');
  writeFileSync(
    conf,
    `settings { nodaemon = true, logfile = "${dir}/log", statusFile = "${dir}/status" }\nsync { default.rsync, source = "${src}", target = "${dst}"${delay === undefined ? '' : `, delay = ${delay}`} }\n`,
  );
  const child = spawn('lsyncd', [conf], { stdio: 'ignore' });
  await sleep(2000); // its start-up sync of the empty tree
  const burst = Math.round(20_000 * scale);
  const t0 = performance.now();
  mkdirSync(join(src, 'burst'));
  for (let i = 0; i < burst; i++) writeFileSync(join(src, 'burst', `f${i}`), `small file ${i}\n`.repeat(1 + (i % 60)));
  let secs = NaN;
  for (let waited = 0; waited < 120_000; waited += 100) {
    let count = 0;
    try {
      count = readdirSync(join(dst, 'burst')).length;
    } catch {
      /* not there yet */
    }
    if (count >= burst) {
      secs = (performance.now() - t0) / 1000;
      break;
    }
    await sleep(100);
  }
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  return Number.isNaN(secs) ? 'not done in 120 s' : secs.toFixed(2);
}

async function main(): Promise<void> {
  try {
    const local = await measure('local', join(work, 'repo'));
    const server = await startS3rver();
    let s3: Map<string, string>;
    try {
      s3 = await measure('s3', `s3://${server.bucket}/bench?endpoint=${encodeURIComponent(server.endpoint)}&path-style=true`);
    } finally {
      await server.stop();
    }
    const lsDefault = await lsyncd(undefined);
    const ls1 = await lsyncd(1);
    const rows: Row[] = [...local.keys()].map((metric) => ({
      metric,
      local: local.get(metric) ?? '',
      s3: s3.get(metric) ?? '–',
      lsyncd: metric.includes('burst durable') ? lsDefault : '',
      lsyncd1s: metric.includes('burst durable') ? ls1 : '',
    }));
    console.log(`\nphoenix watch (scale ${scale}); lsyncd mirrors the same burst to a local directory with rsync\n`);
    console.log('| metric | phoenix, local repo | phoenix, s3rver | lsyncd default | lsyncd delay=1 |');
    console.log('|---|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.metric} | ${r.local} | ${r.s3} | ${r.lsyncd} | ${r.lsyncd1s} |`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
