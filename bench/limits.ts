/**
 * Bandwidth limits: the rate `phoenix backup --limit-upload` and `phoenix restore
 * --limit-download` achieve against the limit, on a local repository and on s3rver, beside
 * restic 0.14 with the same limits (`--limit-upload`/`--limit-download` in KiB/s) on the same
 * data, in one run.
 *
 *   npm run bench:limits            (BENCH_MIB=96 BENCH_LIMIT_MIB=8 change the size and the limit)
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startS3rver } from '../test/servers.js';
import { PHOENIX } from './watch-process.js';

const MIB = Number(process.env.BENCH_MIB ?? 96);
const LIMIT_MIB = Number(process.env.BENCH_LIMIT_MIB ?? 8);
const work = mkdtempSync(join(tmpdir(), 'phx-bench-limits-'));
const src = join(work, 'src');
mkdirSync(src);
// Incompressible files of 4 MiB: what is uploaded is what is read.
for (let i = 0; i < MIB / 4; i++) writeFileSync(join(src, `f${i}`), randomBytes(4 * 2 ** 20));
const haveRestic = spawnSync('sh', ['-c', 'command -v restic']).status === 0;
const env = {
  ...process.env,
  PHOENIX_PASSWORD: 'bench',
  RESTIC_PASSWORD: 'bench',
  RESTIC_CACHE_DIR: join(work, 'restic-cache'),
  XDG_STATE_HOME: join(work, 'state'),
  AWS_ACCESS_KEY_ID: 'S3RVER',
  AWS_SECRET_ACCESS_KEY: 'S3RVER',
};

function timed(cmd: string, args: string[], extra: Record<string, string> = {}): number {
  const t = performance.now();
  const r = spawnSync(cmd, args, { env: { ...env, ...extra }, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
  return (performance.now() - t) / 1000;
}

const rows: string[][] = [];
const row = (what: string, tool: string, seconds: number, mib: number, limited = true): void => {
  const rate = mib / seconds;
  const share = limited ? `${((rate / LIMIT_MIB) * 100).toFixed(1)}%` : '-';
  rows.push([what, tool, limited ? LIMIT_MIB.toFixed(1) : 'none', rate.toFixed(2), share, seconds.toFixed(1)]);
};
const limit = `${LIMIT_MIB}MiB/s`;
const kib = String(LIMIT_MIB * 1024);

const s3 = await startS3rver();
try {
  const targets: Array<{ name: string; phoenix: string; free: string; restic?: Record<string, string> }> = [
    {
      name: 'local',
      phoenix: join(work, 'phx-local'),
      free: join(work, 'phx-local-free'),
      restic: { RESTIC_REPOSITORY: join(work, 'restic-local') },
    },
    {
      name: 's3rver',
      phoenix: `s3://${s3.bucket}/phx?endpoint=${encodeURIComponent(s3.endpoint)}`,
      free: `s3://${s3.bucket}/phx-free?endpoint=${encodeURIComponent(s3.endpoint)}`,
      restic: { RESTIC_REPOSITORY: `s3:${s3.endpoint}/${s3.bucket}/restic`, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' },
    },
  ];
  for (const t of targets) {
    timed('node', [PHOENIX, 'init', '--repo', t.phoenix]);
    row(
      `backup ${MIB} MiB, ${t.name}`,
      'phoenix',
      timed('node', [PHOENIX, 'backup', '--repo', t.phoenix, '--limit-upload', limit, src]),
      MIB,
    );
    const target = join(work, `restore-${t.name}`);
    row(
      `restore ${MIB} MiB, ${t.name}`,
      'phoenix',
      timed('node', [PHOENIX, 'restore', '--repo', t.phoenix, '--source', src, '--target', target, '--limit-download', limit]),
      MIB,
    );
    rmSync(target, { recursive: true, force: true });
    // The same without a limit: how fast the store is here.
    timed('node', [PHOENIX, 'init', '--repo', t.free]);
    row(`backup ${MIB} MiB, ${t.name}`, 'phoenix', timed('node', [PHOENIX, 'backup', '--repo', t.free, src]), MIB, false);
    row(
      `restore ${MIB} MiB, ${t.name}`,
      'phoenix',
      timed('node', [PHOENIX, 'restore', '--repo', t.free, '--source', src, '--target', target]),
      MIB,
      false,
    );
    rmSync(target, { recursive: true, force: true });
    if (haveRestic && t.restic !== undefined) {
      try {
        timed('restic', ['init'], t.restic);
        timed('restic', ['cat', 'config'], t.restic);
      } catch (err) {
        rows.push([
          `backup ${MIB} MiB, ${t.name}`,
          'restic',
          `${LIMIT_MIB}`,
          'fails here',
          '-',
          (err as Error).message.split('\n')[1] ?? '',
        ]);
        continue;
      }
      row(`backup ${MIB} MiB, ${t.name}`, 'restic', timed('restic', ['backup', '--limit-upload', kib, src], t.restic), MIB);
      row(
        `restore ${MIB} MiB, ${t.name}`,
        'restic',
        timed('restic', ['restore', 'latest', '--target', target, '--limit-download', kib], t.restic),
        MIB,
      );
      rmSync(target, { recursive: true, force: true });
    }
  }
} finally {
  await s3.stop();
  rmSync(work, { recursive: true, force: true });
}

const head = ['transfer', 'tool', 'limit MiB/s', 'achieved MiB/s', 'of the limit', 'seconds'];
console.log(`| ${head.join(' | ')} |\n|${head.map(() => '---').join('|')}|`);
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
