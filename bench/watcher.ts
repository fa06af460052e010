/**
 * Watcher benchmark: Phoenix's watcher beside chokidar and @parcel/watcher, in one run.
 *   npm run bench            (IDLE_SECONDS=20 by default; SCAN_FILES=100000)
 * Prints a table: write-to-event latency, missed events in a 20,000-file burst, RSS and
 * inotify watches on a 2,000-directory tree, CPU while idle, scanner speed against find(1).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import chokidar from 'chokidar';
import parcel from '@parcel/watcher';
import { rawFromUtf8 } from '../src/model/path.js';
import { scan } from '../src/scanner/scan.js';
import { Watcher } from '../src/watcher/watcher.js';

type Impl = 'phoenix' | 'chokidar' | 'parcel';
const IMPLS: Impl[] = ['phoenix', 'chokidar', 'parcel'];

/** A started watcher reporting (kind, absolute path) pairs. */
interface Running {
  close(): Promise<void>;
}
type Listener = (kind: 'add' | 'change' | 'unlink' | 'other', path: string) => void;

async function startImpl(impl: Impl, root: string, on: Listener): Promise<Running> {
  if (impl === 'phoenix') {
    const w = new Watcher(root, {
      onChange: (c) => {
        const abs = join(root, Buffer.from(c.path, 'latin1').toString());
        if (c.type === 'created') on('add', abs);
        else if (c.type === 'modified' && c.closed) on('change', abs);
        else if (c.type === 'removed') on('unlink', abs);
        else on('other', abs);
      },
    });
    await w.start();
    return { close: async () => w.close() };
  }
  if (impl === 'chokidar') {
    const w = chokidar.watch(root, { ignoreInitial: true });
    w.on('add', (p) => on('add', p))
      .on('change', (p) => on('change', p))
      .on('unlink', (p) => on('unlink', p));
    await new Promise<void>((r) => w.on('ready', () => r()));
    return { close: () => w.close() };
  }
  const sub = await parcel.subscribe(root, (err, events) => {
    if (err) on('other', String(err));
    for (const e of events) on(e.type === 'create' ? 'add' : e.type === 'update' ? 'change' : 'unlink', e.path);
  });
  return { close: () => sub.unsubscribe() };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

async function latency(impl: Impl): Promise<{ p50: number; p99: number }> {
  const root = mkdtempSync(join(tmpdir(), 'phx-bench-lat-'));
  const file = join(root, 'f');
  writeFileSync(file, 'x');
  let waiting: ((path: string) => void) | undefined;
  const w = await startImpl(impl, root, (kind, p) => {
    if ((kind === 'change' || kind === 'add') && p === file) waiting?.(p);
  });
  await sleep(300);
  const samples: number[] = [];
  for (let i = 0; i < 200; i++) {
    const got = new Promise<void>((r) => (waiting = () => r()));
    const t0 = performance.now();
    writeFileSync(file, `write ${i}`);
    await Promise.race([got, sleep(2000)]);
    samples.push(performance.now() - t0);
    waiting = undefined;
    await sleep(60); // chokidar drops a second change to one file within 50 ms
  }
  await w.close();
  rmSync(root, { recursive: true, force: true });
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99) };
}

/** 100 new directories x 200 files created as fast as possible, then every file deleted. */
async function burst(impl: Impl): Promise<{ missedCreate: number; missedDelete: number }> {
  const root = mkdtempSync(join(tmpdir(), 'phx-bench-burst-'));
  const added = new Set<string>();
  const removed = new Set<string>();
  let last = performance.now();
  const w = await startImpl(impl, root, (kind, p) => {
    last = performance.now();
    if (kind === 'add') added.add(p);
    if (kind === 'unlink') removed.add(p);
  });
  const files: string[] = [];
  for (let d = 0; d < 100; d++) {
    mkdirSync(join(root, `d${d}`));
    for (let f = 0; f < 200; f++) {
      const p = join(root, `d${d}`, `f${f}`);
      writeFileSync(p, 'x');
      files.push(p);
    }
  }
  const quiet = async (): Promise<void> => {
    last = performance.now();
    while (performance.now() - last < 2000) await sleep(100);
  };
  await quiet();
  for (const p of files) unlinkSync(p);
  await quiet();
  await w.close();
  rmSync(root, { recursive: true, force: true });
  return {
    missedCreate: files.filter((p) => !added.has(p)).length,
    missedDelete: files.filter((p) => !removed.has(p)).length,
  };
}

/** In a child process: watch a 2,000-directory tree, then report RSS, watches and idle CPU. */
async function child(impl: Impl, root: string, idleSeconds: number): Promise<void> {
  const w = await startImpl(impl, root, () => {});
  await sleep(1000);
  const rss = process.memoryUsage().rss;
  let watches = 0;
  for (const fd of readdirSync('/proc/self/fdinfo')) {
    try {
      watches += readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('inotify wd:')).length;
    } catch {
      // fd closed meanwhile
    }
  }
  const c0 = process.cpuUsage();
  await sleep(idleSeconds * 1000);
  const c = process.cpuUsage(c0);
  process.stdout.write(JSON.stringify({ rss, watches, cpuMs: (c.user + c.system) / 1000 }));
  await w.close();
  process.exit(0);
}

async function footprint(root: string, idleSeconds: number): Promise<Record<Impl, { rss: number; watches: number; cpuMs: number }>> {
  const self = fileURLToPath(import.meta.url);
  const runs = IMPLS.map(
    (impl) =>
      new Promise<[Impl, { rss: number; watches: number; cpuMs: number }]>((resolve, reject) => {
        const p = spawn(process.execPath, [self, 'child', impl, root, String(idleSeconds)], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.on('exit', (code) => (code === 0 ? resolve([impl, JSON.parse(out)]) : reject(new Error(`${impl} child exited ${code}`))));
      }),
  );
  return Object.fromEntries(await Promise.all(runs)) as Record<Impl, { rss: number; watches: number; cpuMs: number }>;
}

async function scanner(files: number): Promise<{ phoenixMs: number; findMs: number; entries: number }> {
  const root = mkdtempSync(join(tmpdir(), 'phx-bench-scan-'));
  const perDir = 100;
  for (let d = 0; d < files / perDir; d++) {
    mkdirSync(join(root, `d${d}`));
    for (let f = 0; f < perDir; f++) writeFileSync(join(root, `d${d}`, `f${f}`), '');
  }
  let phoenixMs = Infinity;
  let findMs = Infinity;
  let entries = 0;
  for (let i = 0; i < 5; i++) {
    let t = performance.now();
    const r = await scan(rawFromUtf8(root));
    phoenixMs = Math.min(phoenixMs, performance.now() - t);
    entries = r.tree.size;
    t = performance.now();
    spawnSync('sh', ['-c', `find "$1" -printf '%s %T@ %i\\n' >/dev/null`, 'sh', root]);
    findMs = Math.min(findMs, performance.now() - t);
  }
  rmSync(root, { recursive: true, force: true });
  return { phoenixMs, findMs, entries };
}

async function main(): Promise<void> {
  const [mode, implArg, rootArg, idleArg] = process.argv.slice(2);
  if (mode === 'child') return child(implArg as Impl, rootArg as string, Number(idleArg));
  const idle = Number(process.env.IDLE_SECONDS ?? 20);
  const scanFiles = Number(process.env.SCAN_FILES ?? 100_000);

  const lat: Record<string, { p50: number; p99: number }> = {};
  const miss: Record<string, { missedCreate: number; missedDelete: number }> = {};
  for (const impl of IMPLS) {
    lat[impl] = await latency(impl);
    miss[impl] = await burst(impl);
  }
  const tree = mkdtempSync(join(tmpdir(), 'phx-bench-tree-'));
  for (let a = 0; a < 40; a++) for (let b = 0; b < 50; b++) mkdirSync(join(tree, `a${a}`, `b${b}`), { recursive: true });
  const fp = await footprint(tree, idle);
  rmSync(tree, { recursive: true, force: true });
  const sc = await scanner(scanFiles);

  const f = (n: number, d = 2): string => n.toFixed(d);
  const rows: string[][] = [['metric', ...IMPLS, 'goal']];
  rows.push(['write-to-event p50 (ms)', ...IMPLS.map((i) => f(lat[i]!.p50)), '']);
  rows.push(['write-to-event p99 (ms)', ...IMPLS.map((i) => f(lat[i]!.p99)), '< 2']);
  rows.push(['20k burst: missed creations', ...IMPLS.map((i) => String(miss[i]!.missedCreate)), '0']);
  rows.push(['20k burst: missed deletions', ...IMPLS.map((i) => String(miss[i]!.missedDelete)), '0']);
  rows.push(['2,000 dirs: RSS (MiB)', ...IMPLS.map((i) => f(fp[i].rss / 2 ** 20, 1)), '']);
  rows.push(['2,000 dirs: inotify watches', ...IMPLS.map((i) => String(fp[i].watches)), '']);
  rows.push([`idle ${idle} s: CPU (ms)`, ...IMPLS.map((i) => f(fp[i].cpuMs, 1)), '~0']);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));
  console.log();
  console.log(`scanner, ${sc.entries} entries (warm cache, best of 5):`);
  console.log(
    `  phoenix scan ${f(sc.phoenixMs, 1)} ms   find -printf ${f(sc.findMs, 1)} ms   ratio ${f(sc.phoenixMs / sc.findMs)}x (goal <= 1.5x)`,
  );
}

await main();
