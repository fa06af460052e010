/**
 * Repository benchmark: Phoenix beside restic (Debian package) and tar, in one run.
 *   npm run bench:repo          (BENCH_SCALE=0.1 for a quick run; BENCH_ROUNDS=2 first backups each)
 * Tree: 20,000 files of 1–64 KiB, 20 of 5 MiB, 2 of 256 MiB (random bytes), scaled by BENCH_SCALE.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, rmSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const scale = Number(process.env.BENCH_SCALE ?? 1);
const PHOENIX = fileURLToPath(new URL('../../bin/phoenix.js', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'phx-bench-repo-'));
const src = join(work, 'src');

function writeRandom(path: string, size: number): void {
  const fd = openSync(path, 'w');
  for (let done = 0; done < size; done += 8 * 2 ** 20) writeSync(fd, randomBytes(Math.min(8 * 2 ** 20, size - done)));
  closeSync(fd);
}

function makeTree(): number {
  let total = 0;
  const small = Math.round(20_000 * scale);
  for (let i = 0; i < small; i++) {
    const dir = join(src, `d${i % 200}`);
    if (i < 200) mkdirSync(dir, { recursive: true });
    const size = 1024 + Math.floor(Math.random() * 63 * 1024);
    writeFileSync(join(dir, `f${i}`), randomBytes(size));
    total += size;
  }
  mkdirSync(join(src, 'medium'));
  for (let i = 0; i < Math.max(1, Math.round(20 * scale)); i++) {
    writeRandom(join(src, 'medium', `m${i}`), 5 * 2 ** 20);
    total += 5 * 2 ** 20;
  }
  mkdirSync(join(src, 'large'));
  for (let i = 0; i < 2; i++) {
    const size = Math.round(256 * 2 ** 20 * scale);
    writeRandom(join(src, 'large', `l${i}`), size);
    total += size;
  }
  return total;
}

function timed(cmd: string, args: string[], env: Record<string, string> = {}): { s: number; out: string } {
  const t = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return { s: (performance.now() - t) / 1000, out: r.stdout };
}

function flipOneByte(): void {
  const fd = openSync(join(src, 'large', 'l0'), 'r+');
  writeSync(fd, Buffer.from([Math.floor(Math.random() * 256)]), 0, 1, Math.floor(scale * 100 * 2 ** 20));
  closeSync(fd);
}

const total = makeTree();
execFileSync('sync');
// The reference: reading the tree from the page cache, as the first backups below do.
const tar = timed('sh', ['-c', `tar cf - -C "$1" . | cat >/dev/null`, 'sh', src]);
const results: { phoenix: Record<string, string>; restic: Record<string, string> } = { phoenix: {}, restic: {} };

// First backups alternate (phoenix, restic, phoenix, restic) on fresh repositories: this
// machine's page cache makes a write of 1.25 GiB cost very different CPU from one run to the
// next, whichever tool makes it. The table shows the best of each; every run is printed.
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
const haveRestic = spawnSync('sh', ['-c', 'command -v restic']).status === 0;
const phxEnv = { PHOENIX_PASSWORD: 'bench', PHOENIX_REPOSITORY: join(work, 'phx-repo'), XDG_STATE_HOME: join(work, 'phx-state') };
const resticEnv = { RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: join(work, 'restic-repo'), RESTIC_CACHE_DIR: join(work, 'restic-cache') };
const firsts: { phoenix: number[]; restic: number[] } = { phoenix: [], restic: [] };
for (let round = 0; round < rounds; round++) {
  for (const d of ['phx-repo', 'phx-state', 'restic-repo', 'restic-cache']) rmSync(join(work, d), { recursive: true, force: true });
  timed('node', [PHOENIX, 'init'], phxEnv);
  firsts.phoenix.push(timed('node', [PHOENIX, 'backup', src, '--json'], phxEnv).s);
  if (haveRestic) {
    timed('restic', ['init'], resticEnv);
    firsts.restic.push(timed('restic', ['backup', '--json', src], resticEnv).s);
  }
}
/** Restores start cold (repository not in the page cache) for both tools, where this process may drop caches. */
function dropCaches(): boolean {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}
/** The median of three runs, each after a sync (the last first backup's writeback must not land on it). */
function median3(cmd: string, args: string[], env: Record<string, string>): { s: number; out: string } {
  const runs = [0, 1, 2].map(() => {
    execFileSync('sync');
    return timed(cmd, args, env);
  });
  return runs.sort((a, b) => a.s - b.s)[1] as { s: number; out: string };
}
const best = (xs: number[]): string => (xs.length > 0 ? Math.min(...xs).toFixed(2) : 'n/a');

// Phoenix: the rest on the last round's repository.
{
  const none = median3('node', [PHOENIX, 'backup', src, '--json'], phxEnv);
  flipOneByte();
  const one = timed('node', [PHOENIX, 'backup', src, '--json'], phxEnv);
  const up = (JSON.parse(one.out) as { bytesUploaded: number }).bytesUploaded;
  results.phoenix = {
    first: best(firsts.phoenix),
    none: none.s.toFixed(2),
    oneByte: (up / 2 ** 20).toFixed(2),
    restore: 'n/a',
  };
}

// restic (the byte flipped above is already in its tree: flip another one for it)
if (haveRestic) {
  const none = median3('restic', ['backup', '--json', src], resticEnv);
  flipOneByte();
  const one = timed('restic', ['backup', '--json', src], resticEnv);
  const summary = one.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { message_type: string; data_added?: number })
    .find((m) => m.message_type === 'summary');
  results.restic = {
    first: best(firsts.restic),
    none: none.s.toFixed(2),
    oneByte: ((summary?.data_added ?? NaN) / 2 ** 20).toFixed(2),
    restore: 'n/a',
  };
} else {
  results.restic = { first: 'n/a', none: 'n/a', oneByte: 'n/a', restore: 'n/a' };
  console.log('restic not installed: apt-get install restic to compare');
}

// Restores alternate (phoenix, restic, three times), each from a cold page cache into an empty
// target: like the first backups, each writes 1.25 GiB into the page cache, whose cost varies
// from one run to the next. The table shows the median of each; every run is printed.
// Each restore gets a target of its own, and all are deleted at the end: on ext4 without a
// journal (this machine's), creating a file skips every inode deleted in the last minute or so
// (fs/ext4/ialloc.c, recently_deleted), so a restore right after the other tool's 20,000 files
// were deleted paid a cost set by that deletion, not by the tool: up to a tenth of the CPU.
const restores: { phoenix: number[]; restic: number[] } = { phoenix: [], restic: [] };
for (let round = 0; round < 3; round++) {
  dropCaches();
  restores.phoenix.push(timed('node', [PHOENIX, 'restore', '--target', join(work, `phx-out-${round}`)], phxEnv).s);
  if (!haveRestic) continue;
  dropCaches();
  restores.restic.push(timed('restic', ['restore', 'latest', '--target', join(work, `restic-out-${round}`)], resticEnv).s);
}
for (let round = 0; round < 3; round++) {
  for (const d of [`phx-out-${round}`, `restic-out-${round}`]) rmSync(join(work, d), { recursive: true, force: true });
}
const median = (xs: number[]): string => (xs.length > 0 ? ([...xs].sort((a, b) => a - b)[xs.length >> 1] as number).toFixed(2) : 'n/a');
results.phoenix.restore = median(restores.phoenix);
results.restic.restore = median(restores.restic);
console.log(
  `restores, in the order run: phoenix ${restores.phoenix.map((s) => s.toFixed(2)).join(', ')} s; restic ${restores.restic.map((s) => s.toFixed(2)).join(', ')} s`,
);

console.log(
  dropCaches()
    ? 'restores started with the page cache dropped (cold)'
    : 'restores may find the repository in the page cache (run as root to drop it first)',
);
const rows = [
  ['metric', 'phoenix', 'restic', 'ratio restic/phoenix', 'goal'],
  [`first backup, best of ${rounds} (s)`, results.phoenix.first, results.restic.first, ratio('first'), '>= 1.5x'],
  ['no-change backup, median of 3 (s)', results.phoenix.none, results.restic.none, ratio('none'), 'phoenix < 0.5 s'],
  ['one byte changed in a large file: uploaded (MiB)', results.phoenix.oneByte, results.restic.oneByte, '', 'phoenix < 2 MiB'],
  ['restore, median of 3 (s)', results.phoenix.restore, results.restic.restore, ratio('restore'), '>= 1.5x'],
];
function ratio(k: string): string {
  // restic's time over Phoenix's: above 1 means Phoenix is faster.
  const a = Number(results.phoenix[k]);
  const b = Number(results.restic[k]);
  return Number.isFinite(a) && Number.isFinite(b) ? `${(b / a).toFixed(2)}x` : '';
}
console.log(
  `first backups, in the order run: phoenix ${firsts.phoenix.map((x) => x.toFixed(2)).join(', ')} s; restic ${firsts.restic.map((x) => x.toFixed(2)).join(', ')} s`,
);
console.log(
  `tree: ${(total / 2 ** 20).toFixed(0)} MiB in ${Math.round(20_000 * scale) + Math.round(20 * scale) + 2} files; tar cf - | cat: ${tar.s.toFixed(2)} s (${(total / 2 ** 20 / tar.s).toFixed(0)} MiB/s)`,
);
const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
for (const r of rows) console.log(r.map((cell, c) => (cell ?? '').padEnd(widths[c]!)).join('  '));
rmSync(work, { recursive: true, force: true });
