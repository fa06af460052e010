/**
 * Dashboard benchmark (issue 10):
 *   1. close→durable latency and a burst of 20,000 small files with the dashboard open (its event
 *      stream connected, the overview polled every second, as the page does) against the same
 *      daemon with the dashboard and WebDAV off;
 *   2. listing a folder (1,000 entries) of a 100,000-file tree at an instant in the past, through
 *      the API and through WebDAV (`phoenix serve`), cold (the instant's tree is loaded) and warm,
 *      beside `rclone serve webdav` of the live directory and `restic ls` of a snapshot.
 *   npm run bench:web      (BENCH_SCALE=0.1 for a quick run)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { PHOENIX, pct, WatchProcess } from './watch-process.js';

const scale = Number(process.env.BENCH_SCALE ?? 1);
const PASSWORD = 'bench';
const env = (): NodeJS.ProcessEnv => ({ ...process.env, PHOENIX_PASSWORD: PASSWORD, RESTIC_PASSWORD: PASSWORD });
const work = mkdtempSync(join(tmpdir(), 'phx-bench-web-'));

function get(url: string, headers: Record<string, string>, method = 'GET'): Promise<{ status: number; body: Buffer }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The page's load on the daemon: the event stream read, the overview fetched every second. */
function dashboardClient(ui: string, token: string): { events: () => number; stop: () => void } {
  const u = new URL(`${ui}api/events`);
  let n = 0;
  const req = request({ host: u.hostname, port: u.port, path: u.pathname, headers: { Authorization: `Bearer ${token}` } }, (res) => {
    res.on('data', (d: Buffer) => (n += d.toString().split('event: feed').length - 1));
  });
  req.on('error', () => {});
  req.end();
  const poll = setInterval(() => void get(`${ui}api/overview`, { Authorization: `Bearer ${token}` }).catch(() => {}), 1000);
  return {
    events: () => n,
    stop: () => {
      clearInterval(poll);
      req.destroy();
    },
  };
}

async function daemonRun(name: string, dashboard: boolean): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const dir = join(work, name);
  const src = join(dir, 'src');
  const repo = join(dir, 'repo');
  mkdirSync(src, { recursive: true });
  const init = spawnSync(process.execPath, [PHOENIX, 'init', '--repo', repo], { env: env(), encoding: 'utf8' });
  if (init.status !== 0) throw new Error(init.stderr);
  const args = dashboard
    ? ['--ui-listen', '127.0.0.1:0', '--webdav-listen', '127.0.0.1:0']
    : ['--ui-listen', 'off', '--webdav-listen', 'off'];
  const d = new WatchProcess(src, repo, join(dir, 'state'), env(), args);
  await d.ready();
  let client: ReturnType<typeof dashboardClient> | undefined;
  if (dashboard) {
    const s = await d.status();
    client = dashboardClient(s.ui?.url ?? '', readFileSync(join(dir, 'state', 'ui-token'), 'utf8').trim());
  }
  const lat = await d.closeToDurable(src, Math.max(20, Math.round(300 * scale)));
  out.set('close→durable p50 (ms)', pct(lat, 50).toFixed(1));
  out.set('close→durable p99 (ms)', pct(lat, 99).toFixed(1));
  const burst = Math.round(20_000 * scale);
  const s0 = await d.status();
  mkdirSync(join(src, 'burst'));
  const t0 = performance.now();
  for (let i = 0; i < burst; i++) writeFileSync(join(src, 'burst', `f${i}`), `small file ${i}\n`.repeat(1 + (i % 60)));
  const ms = await d.until(t0, (s) => s.uploaded.files >= s0.uploaded.files + burst && s.pending === 0);
  out.set(`${burst}-file burst durable (s)`, (ms / 1000).toFixed(2));
  out.set('RSS after the burst (MiB)', d.rssMiB().toFixed(0));
  if (client) {
    await sleep(300);
    out.set('event-stream messages received', String(client.events()));
    client.stop();
  } else out.set('event-stream messages received', '–');
  await d.stop();
  rmSync(dir, { recursive: true, force: true });
  return out;
}

function makeTree(root: string, dirs: number, files: number): void {
  for (let d = 0; d < dirs; d++) {
    const dir = join(root, `dir${String(d).padStart(3, '0')}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < files; f++) writeFileSync(join(dir, `file${f}.txt`), `file ${d}/${f}\n`);
  }
}

async function startServe(repo: string, state: string): Promise<{ ui: string; dav: string; token: string; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    [PHOENIX, 'serve', '--repo', repo, '--state', state, '--ui-listen', '127.0.0.1:0', '--webdav-listen', '127.0.0.1:0'],
    {
      env: env(),
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let ui = '';
  let dav = '';
  await new Promise<void>((resolve, reject) => {
    child.on('exit', (c) => reject(new Error(`phoenix serve exited with ${c}`)));
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => {
      ui ||= /dashboard on (\S+)/.exec(l)?.[1] ?? '';
      dav ||= /WebDAV on (\S+)/.exec(l)?.[1] ?? '';
      if (ui && dav) resolve();
    });
  });
  return { ui, dav, token: readFileSync(join(state, 'ui-token'), 'utf8').trim(), child };
}

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function listings(): Promise<Array<[string, string, string]>> {
  const dirs = Math.max(10, Math.round(100 * scale));
  const files = 1000;
  const root = join(work, 'tree');
  makeTree(root, dirs, files);
  const repo = join(work, 'tree-repo');
  const state = join(work, 'tree-state');
  const run = (...args: string[]): void => {
    const r = spawnSync(process.execPath, [PHOENIX, ...args], { env: env(), encoding: 'utf8', maxBuffer: 1 << 30 });
    if (r.status !== 0) throw new Error(r.stderr);
  };
  run('init', '--repo', repo);
  run('backup', root, '--repo', repo, '--state', state, '--source', 'tree');
  const past = new Date().toISOString();
  await sleep(1100);
  for (let d = 0; d < dirs; d += 10) writeFileSync(join(root, `dir${String(d).padStart(3, '0')}`, 'file0.txt'), 'changed\n');
  run('backup', root, '--repo', repo, '--state', state, '--source', 'tree');
  const rows: Array<[string, string, string]> = [];
  const s = await startServe(repo, state);
  const bearer = { Authorization: `Bearer ${s.token}` };
  const basic = { Authorization: `Basic ${Buffer.from(`phoenix:${s.token}`).toString('base64')}`, Depth: '1' };
  const api = (d: number): Promise<unknown> =>
    get(`${s.ui}api/ls?source=tree&at=${encodeURIComponent(past)}&path=dir${String(d).padStart(3, '0')}`, bearer).then((r) => {
      if (r.status !== 200) throw new Error(r.body.toString());
    });
  const davList = (d: number): Promise<unknown> =>
    get(`${s.dav}tree/at/${encodeURIComponent(past)}/dir${String(d).padStart(3, '0')}/`, basic, 'PROPFIND').then((r) => {
      if (r.status !== 207) throw new Error(`${r.status}`);
    });
  const cold = await timeIt(() => api(0));
  const warm: number[] = [];
  for (let d = 1; d < Math.min(dirs, 21); d++) warm.push(await timeIt(() => api(d)));
  const davWarm: number[] = [];
  for (let d = 1; d < Math.min(dirs, 21); d++) davWarm.push(await timeIt(() => davList(d)));
  s.child.kill('SIGTERM');
  await new Promise((r) => s.child.once('exit', r));
  // WebDAV cold: a fresh server, the first PROPFIND loads the instant's tree.
  const s2 = await startServe(repo, state);
  const basic2 = { Authorization: `Basic ${Buffer.from(`phoenix:${s2.token}`).toString('base64')}`, Depth: '1' };
  const davCold = await timeIt(() => get(`${s2.dav}tree/at/${encodeURIComponent(past)}/dir000/`, basic2, 'PROPFIND'));
  s2.child.kill('SIGTERM');
  await new Promise((r) => s2.child.once('exit', r));
  const entries = dirs * (files + 1);
  rows.push([`phoenix API: folder of ${files} at a past instant, cold (loads the ${entries}-entry tree)`, cold.toFixed(0), '']);
  rows.push([`phoenix API: folder of ${files}, warm (median of ${warm.length})`, pct(warm, 50).toFixed(1), '']);
  rows.push([`phoenix WebDAV PROPFIND depth 1, cold`, davCold.toFixed(0), '']);
  rows.push([`phoenix WebDAV PROPFIND depth 1, warm (median of ${davWarm.length})`, pct(davWarm, 50).toFixed(1), '']);
  // Peers: rclone serving the live directory over WebDAV, restic ls of a snapshot of it.
  if (spawnSync('sh', ['-c', 'command -v rclone']).status === 0) {
    const rc = spawn('rclone', ['serve', 'webdav', root, '--addr', '127.0.0.1:0', '--config', '/dev/null'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const port = await new Promise<number>((resolve) =>
      createInterface({ input: rc.stderr as NodeJS.ReadableStream }).on('line', (l) => {
        const m = /http:\/\/127\.0\.0\.1:(\d+)\//.exec(l);
        if (m) resolve(Number(m[1]));
      }),
    );
    const rcl: number[] = [];
    for (let d = 1; d < Math.min(dirs, 21); d++)
      rcl.push(await timeIt(() => get(`http://127.0.0.1:${port}/dir${String(d).padStart(3, '0')}/`, { Depth: '1' }, 'PROPFIND')));
    rc.kill('SIGTERM');
    const m = pct(rcl, 50);
    rows.push([
      'rclone serve webdav of the live directory, PROPFIND depth 1 (median)',
      m.toFixed(1),
      `phoenix warm ${(pct(davWarm, 50) / m).toFixed(2)}×`,
    ]);
  }
  if (spawnSync('sh', ['-c', 'command -v restic']).status === 0) {
    const rrepo = join(work, 'restic-repo');
    spawnSync('restic', ['init', '--repo', rrepo], { env: env() });
    spawnSync('restic', ['backup', '--repo', rrepo, root], { env: env() });
    const t = await timeIt(async () =>
      spawnSync('restic', ['ls', '--repo', rrepo, 'latest', join(root, 'dir001')], { env: env(), maxBuffer: 1 << 28 }),
    );
    rows.push([
      'restic ls latest DIR (a process: opens the repository, loads the snapshot)',
      t.toFixed(0),
      `phoenix cold ${(cold / t).toFixed(2)}×`,
    ]);
  }
  return rows;
}

/** The median of each numeric figure over runs (the first run's text otherwise). */
function medians(runs: Array<Map<string, string>>): Map<string, string> {
  const out = new Map<string, string>();
  for (const k of runs[0]?.keys() ?? []) {
    const xs = runs.map((r) => Number(r.get(k)));
    out.set(k, xs.every(Number.isFinite) ? pct(xs, 50).toFixed(k.includes('(s)') ? 2 : 1) : (runs[0]?.get(k) ?? ''));
  }
  return out;
}

async function main(): Promise<void> {
  // Off and open alternate, BENCH_RUNS times each (default 3): a burst's time varies by tens of percent from run to run on 2 cores.
  const runs = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));
  const offRuns: Array<Map<string, string>> = [];
  const onRuns: Array<Map<string, string>> = [];
  for (let i = 0; i < runs; i++) {
    offRuns.push(await daemonRun(`off-${i}`, false));
    onRuns.push(await daemonRun(`on-${i}`, true));
  }
  const off = medians(offRuns);
  const on = medians(onRuns);
  const burstKey = [...off.keys()].find((k) => k.includes('burst')) ?? '';
  console.log(
    `\nphoenix watch with the dashboard open (event stream + overview each second) vs off (scale ${scale}; medians of ${runs} alternating runs)\n`,
  );
  console.log(
    `burst per run (s): off ${offRuns.map((r) => r.get(burstKey)).join(', ')}; open ${onRuns.map((r) => r.get(burstKey)).join(', ')}\n`,
  );
  console.log('| metric | dashboard off | dashboard open | open / off |');
  console.log('|---|---|---|---|');
  for (const [k, v] of off) {
    const w = on.get(k) ?? '';
    const ratio = Number(v) > 0 && Number(w) > 0 ? `${(Number(w) / Number(v)).toFixed(2)}×` : '';
    console.log(`| ${k} | ${v} | ${w} | ${ratio} |`);
  }
  if (process.env.BENCH_ONLY === 'daemon') return;
  const rows = await listings();
  console.log('\nlisting a folder at an instant in the past (milliseconds)\n');
  console.log('| what | ms | ratio |');
  console.log('|---|---|---|');
  for (const [a, b, c] of rows) console.log(`| ${a} | ${b} | ${c} |`);
  rmSync(work, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
