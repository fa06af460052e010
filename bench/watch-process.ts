import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { queryStatus, type Status } from '../src/daemon/status.js';

export const PHOENIX = fileURLToPath(new URL('../../bin/phoenix.js', import.meta.url));

/** A `phoenix watch` child for the benchmarks: its status, when it is ready or settled, its CPU and RSS. */
export class WatchProcess {
  readonly child: ChildProcess;

  constructor(
    readonly src: string,
    readonly repo: string,
    readonly state: string,
    env: NodeJS.ProcessEnv,
    args: string[] = [],
  ) {
    this.child = spawn(process.execPath, [PHOENIX, 'watch', src, '--repo', repo, '--state', state, '--log-level', 'warn', ...args], {
      env,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  }

  status(): Promise<Status> {
    return queryStatus(this.state);
  }

  /** Until the start-up scan is over with nothing pending (`watching`: until the state says so, too). */
  async ready(watching = false): Promise<void> {
    for (;;) {
      const s = await this.status().catch(() => undefined);
      if (s && s.pending === 0 && (watching ? s.state === 'watching' : s.state !== 'scanning')) return;
      if (this.child.exitCode !== null) throw new Error(`phoenix watch exited with ${this.child.exitCode}`);
      await sleep(20);
    }
  }

  /** Polls until `done(status)`; returns the milliseconds since `t0`. */
  async until(t0: number, done: (s: Status) => boolean): Promise<number> {
    for (;;) {
      const s = await this.status();
      if (done(s)) return performance.now() - t0;
    }
  }

  /**
   * Close→durable latency of `n` single-file changes under `dir`, one at a time: from the
   * writer's close until a new commit holds it and nothing is pending (milliseconds each).
   */
  async closeToDurable(dir: string, n: number): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const before = (await this.status()).lastCommit?.seq ?? 0;
      const t0 = performance.now();
      writeFileSync(join(dir, `single-${i % 50}`), `version ${i} ${'x'.repeat(i % 4000)}`);
      out.push(await this.until(t0, (s) => (s.lastCommit?.seq ?? 0) > before && s.pending === 0));
      await sleep(5);
    }
    return out;
  }

  /** Until nothing is pending for a while; the last commit's seq. */
  async settled(): Promise<number> {
    let quiet = 0;
    for (;;) {
      const s = await this.status().catch(() => undefined);
      quiet = s && s.pending === 0 ? quiet + 1 : 0;
      if (quiet >= 10) return s?.sources[0]?.lastCommit?.seq ?? 0;
      await sleep(50);
    }
  }

  cpuMs(): number {
    const f = (readFileSync(`/proc/${this.child.pid}/stat`, 'utf8').split(') ')[1] ?? '').split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, in clock ticks of 10 ms
  }

  /** Context switches of all its threads so far (each wake-up is one), voluntary or not. */
  contextSwitches(): number {
    let n = 0;
    for (const t of readdirSync(`/proc/${this.child.pid}/task`)) {
      try {
        const status = readFileSync(`/proc/${this.child.pid}/task/${t}/status`, 'utf8');
        for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
      } catch {
        // the thread ended meanwhile
      }
    }
    return n;
  }

  rssMiB(): number {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.child.pid}/status`, 'utf8'));
    return Number(m?.[1] ?? NaN) / 1024;
  }

  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    await new Promise((r) => this.child.once('exit', r));
  }
}

export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}
