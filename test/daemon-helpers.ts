import { setTimeout as sleep } from 'node:timers/promises';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  linkSync,
  mkdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { openBackend } from '../src/backend/open.js';
import { queryStatus, type Status } from '../src/daemon/status.js';
import { Repository } from '../src/repo/repository.js';
import { PHOENIX } from './helpers.js';

export { snapshot } from './helpers.js';

export const PASSWORD = 'daemon test password';

export function phoenix(env: Record<string, string>, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [PHOENIX, ...args], {
    encoding: 'utf8',
    env: { ...process.env, PHOENIX_PASSWORD: PASSWORD, ...env },
    timeout: 300_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A `phoenix watch` child process, with the test's view of it: status, sync, stop, kill. */
export class DaemonProcess {
  readonly child: ChildProcess;
  stderr = '';
  readonly exited: Promise<number | null>;
  #syncs = 0;

  constructor(
    readonly opts: { src: string; repo: string; state: string; args?: string[]; env?: Record<string, string>; fromConfig?: boolean },
  ) {
    this.child = spawn(
      process.execPath,
      [
        PHOENIX,
        'watch',
        ...(opts.fromConfig ? [] : [opts.src]),
        '--repo',
        opts.repo,
        '--state',
        opts.state,
        '--log-level',
        process.env.PHX_TEST_LOG_LEVEL ?? 'debug',
        ...(opts.args ?? []),
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, PHOENIX_PASSWORD: PASSWORD, ...opts.env },
      },
    );
    this.child.stderr?.on(
      'data',
      (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(process.env.PHX_KEEP ? -200_000_000 : -200_000)),
    );
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
  }

  status(): Promise<Status> {
    return queryStatus(this.opts.state);
  }

  /** Waits until the daemon answers and has finished its start-up scan. */
  async ready(timeoutMs = 120_000): Promise<Status> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`phoenix watch exited (${this.child.exitCode}):\n${this.stderr.slice(-3000)}`);
      const s = await this.status().catch(() => undefined);
      if (s !== undefined && s.state !== 'scanning') return s;
      if (Date.now() > deadline) throw new Error(`phoenix watch not ready:\n${this.stderr.slice(-3000)}`);
      await sleep(50);
    }
  }

  /**
   * Waits until every change made before this call is durable: a marker file is created, and
   * once the repository holds it (events are handled in kernel order) and nothing is pending,
   * it is removed, and the same wait is made for its removal.
   */
  async sync(source: string, timeoutMs = 180_000): Promise<void> {
    const marker = `.phx-sync-${++this.#syncs}`;
    const repo = await Repository.open(openBackend(this.opts.repo), async () => PASSWORD);
    try {
      writeFileSync(join(this.opts.src, marker), '');
      await this.#until(async () => (await repo.loadState(source)).state.has(marker), timeoutMs);
      rmSync(join(this.opts.src, marker));
      await this.#until(async () => !(await repo.loadState(source)).state.has(marker), timeoutMs);
    } finally {
      await repo.backend.close();
    }
  }

  async #until(committed: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`phoenix watch exited (${this.child.exitCode}):\n${this.stderr.slice(-3000)}`);
      const s = await this.status();
      if (s.pending === 0 && (await committed())) return;
      if (Date.now() > deadline) throw new Error(`not durable in time: ${JSON.stringify(s)}\n${this.stderr.slice(-3000)}`);
      await sleep(50);
    }
  }

  async stop(): Promise<number | null> {
    this.child.kill('SIGTERM');
    return this.exited;
  }

  async kill9(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * The seed of a randomized end-to-end test: `fixed`, or PHX_SEED when set, to run the same test
 * on other workloads (PHX_SEED=123 PHX_KEEP=1 node --test --test-name-pattern=... dist/test/...).
 */
export function seedFor(fixed: number): number {
  const s = Number(process.env.PHX_SEED);
  return Number.isInteger(s) && process.env.PHX_SEED !== '' ? s : fixed;
}

/** A small seeded PRNG (mulberry32): the same seed, the same workload. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Paths the workload's daemon excludes (`--exclude '*.tmp' --exclude 'cache/'`). */
export const WORKLOAD_EXCLUDES = ['*.tmp', 'cache/'];
export const isExcluded = (rel: string): boolean =>
  rel === 'cache' || rel.startsWith('cache/') || /\.tmp$/.test(rel.slice(rel.lastIndexOf('/') + 1));

const NAME_PARTS = ['a', 'b', 'notes', 'sp ace', 'ünï', Buffer.from([0x78, 0xff, 0xfe]).toString('latin1'), 'new\nline', 'x%+y'];

/**
 * A random live workload on `root`: every kind of change (writes, appends, truncations,
 * deletions, renames, atomic saves through an excluded .tmp name, directories created, moved
 * and removed, chmod, utimes, symlinks, hard links, bursts of small files, large files written
 * in pieces) plus writes to excluded paths. Paths are raw latin1 strings (any bytes).
 */
export class Workload {
  readonly #rand: () => number;
  readonly files = new Set<string>();
  readonly dirs = new Set<string>(['']);
  /** What was done, with times (kept with PHX_KEEP, for a look at a failed run). */
  readonly journal: string[] = [];
  #n = 0;

  constructor(
    readonly root: string,
    seed: number,
  ) {
    this.#rand = prng(seed);
    mkdirSync(join(root, 'cache'), { recursive: true });
  }

  #abs(rel: string): Buffer {
    return Buffer.from(rel === '' ? this.root : `${this.root}/${rel}`, 'latin1');
  }

  #pick<T>(items: Iterable<T>): T | undefined {
    const arr = [...items];
    return arr.length === 0 ? undefined : arr[Math.floor(this.#rand() * arr.length)];
  }

  #newName(dir: string): string {
    const base = `${this.#pick(NAME_PARTS) ?? 'f'}-${++this.#n}`;
    return dir === '' ? base : `${dir}/${base}`;
  }

  #data(size: number): Buffer {
    const b = Buffer.allocUnsafe(size);
    let x = Math.floor(this.#rand() * 2 ** 32);
    for (let i = 0; i < size; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      b[i] = x >>> 24;
    }
    return b;
  }

  #forget(rel: string): void {
    for (const set of [this.files, this.dirs]) for (const p of [...set]) if (p === rel || p.startsWith(`${rel}/`)) set.delete(p);
  }

  #rename(from: string, to: string): void {
    for (const set of [this.files, this.dirs]) {
      for (const p of [...set]) {
        if (p === from || p.startsWith(`${from}/`)) {
          set.delete(p);
          set.add(to + p.slice(from.length));
        }
      }
    }
  }

  #note(what: string, ...paths: string[]): void {
    if (process.env.PHX_KEEP)
      this.journal.push(`${Date.now()} ${what} ${paths.map((p) => JSON.stringify(Buffer.from(p, 'latin1').toString('utf8'))).join(' ')}`);
  }

  /** One random operation; operations that no longer apply are skipped. */
  step(): void {
    const r = this.#rand();
    const dir = this.#pick(this.dirs) ?? '';
    const file = this.#pick(this.files);
    this.#note(`op ${r.toFixed(3)}`, dir, file ?? '');
    try {
      if (r < 0.25 || file === undefined) {
        const p = this.#rand() < 0.5 && file !== undefined ? file : this.#newName(dir);
        writeFileSync(this.#abs(p), this.#data(Math.floor(this.#rand() * 20_000)));
        this.files.add(p);
      } else if (r < 0.35) {
        appendFileSync(this.#abs(file), this.#data(Math.floor(this.#rand() * 5000)));
      } else if (r < 0.38) {
        truncateSync(this.#abs(file), Math.floor(this.#rand() * 100));
      } else if (r < 0.46) {
        rmSync(this.#abs(file), { force: true });
        this.files.delete(file);
      } else if (r < 0.54) {
        const to = this.#newName(dir);
        renameSync(this.#abs(file), this.#abs(to));
        this.#rename(file, to);
      } else if (r < 0.62) {
        // An editor's atomic save: write a temporary (excluded) name, rename it over the file.
        writeFileSync(this.#abs(`${file}.tmp`), this.#data(Math.floor(this.#rand() * 8000)));
        renameSync(this.#abs(`${file}.tmp`), this.#abs(file));
      } else if (r < 0.67) {
        const d = this.#newName(dir);
        mkdirSync(this.#abs(d));
        this.dirs.add(d);
      } else if (r < 0.72) {
        const d = this.#pick([...this.dirs].filter((x) => x !== ''));
        if (d === undefined) return;
        const to = this.#newName(this.#pick([...this.dirs].filter((x) => x !== d && !x.startsWith(`${d}/`))) ?? '');
        renameSync(this.#abs(d), this.#abs(to));
        this.#rename(d, to);
      } else if (r < 0.74) {
        const d = this.#pick([...this.dirs].filter((x) => x !== ''));
        if (d === undefined) return;
        rmSync(this.#abs(d), { recursive: true, force: true });
        this.#forget(d);
      } else if (r < 0.79) {
        chmodSync(this.#abs(file), this.#pick([0o600, 0o644, 0o755, 0o640]) ?? 0o644);
      } else if (r < 0.82) {
        const t = new Date(Date.now() - Math.floor(this.#rand() * 1e9));
        utimesSync(this.#abs(file), t, t);
      } else if (r < 0.85) {
        symlinkSync(Buffer.from(this.#pick(NAME_PARTS) ?? 'x', 'latin1'), this.#abs(this.#newName(dir)));
      } else if (r < 0.87) {
        // A second name for a file. The workload changes the file through its first name only:
        // a change made through a name that is deleted before Phoenix reads its event leaves
        // nothing to go by until a scan (README: Limits).
        linkSync(this.#abs(file), this.#abs(this.#newName(dir)));
      } else if (r < 0.92) {
        writeFileSync(this.#abs(`cache/${++this.#n}`), this.#data(3000));
        writeFileSync(this.#abs(`${this.#newName(dir)}.tmp`), 'scratch');
      } else if (r < 0.93) {
        const d = this.#newName(dir);
        mkdirSync(this.#abs(d));
        this.dirs.add(d);
        for (let i = 0; i < 150; i++) {
          writeFileSync(this.#abs(`${d}/burst-${i}`), `burst ${i} ${this.#n}`);
          this.files.add(`${d}/burst-${i}`);
        }
      } else if (r < 0.94) {
        const p = this.#newName(dir);
        writeFileSync(this.#abs(p), this.#data(3 * 2 ** 20 + Math.floor(this.#rand() * 1000)));
        this.files.add(p);
      } else {
        // Rewrite in place (same inode), the way databases and logs change.
        writeFileSync(this.#abs(file), this.#data(Math.floor(this.#rand() * 3000)), { flag: 'r+' });
      }
    } catch (err) {
      const c = (err as NodeJS.ErrnoException).code;
      if (c === 'ENOENT' || c === 'ENOTDIR' || c === 'EEXIST' || c === 'EISDIR' || c === 'ENOTEMPTY' || c === 'EINVAL') {
        // the picked path went away with an earlier operation (a directory moved or removed)
        this.#forget(file ?? '\0');
        return;
      }
      throw err;
    }
  }

  /** `n` operations, yielding to the event loop now and then so the daemon commits in between. */
  async run(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      this.step();
      if (i % 25 === 24) await sleep(Math.floor(this.#rand() * 15));
    }
  }

  /** A file grown in pieces while the daemon may be reading it. */
  async appendSlowly(pieces: number, size: number): Promise<void> {
    const p = this.#newName('');
    for (let i = 0; i < pieces; i++) {
      appendFileSync(this.#abs(p), this.#data(size));
      await sleep(3);
    }
    this.files.add(p);
  }

  /** A new, empty directory for flood(). */
  floodDir(): string {
    const d = this.#newName('');
    mkdirSync(this.#abs(d));
    this.dirs.add(d);
    return d;
  }

  /** Many small files at once in directory `d` (used to overflow the kernel queue). */
  flood(d: string, n: number): void {
    for (let i = 0; i < n; i++) writeFileSync(this.#abs(`${d}/${i}`), '');
  }
}
