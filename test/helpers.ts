import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { kindOfMode, type Kind } from '../src/model/entry.js';
import { rawFromBuffer, type RawPath } from '../src/model/path.js';

export const PHOENIX = fileURLToPath(new URL('../../bin/phoenix.js', import.meta.url));

export function tempDir(prefix = 'phx-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** The real tree under `root`: relative raw path → kind (the root itself left out). */
export function realTree(root: string): Map<RawPath, Kind> {
  const out = new Map<RawPath, Kind>();
  const walk = (abs: Buffer, rel: RawPath): void => {
    for (const name of readdirSync(abs, { encoding: 'buffer' })) {
      const childAbs = Buffer.concat([abs, Buffer.from('/'), name]);
      const childRel = rel === '' ? rawFromBuffer(name) : `${rel}/${rawFromBuffer(name)}`;
      const kind = kindOfMode(Number(lstatSync(childAbs).mode));
      out.set(childRel, kind);
      if (kind === 'dir') walk(childAbs, childRel);
    }
  };
  walk(Buffer.from(root), '');
  return out;
}

export interface JsonEvent {
  event: string;
  path: string;
  kind: string;
  from?: string;
  pathBase64?: string;
  fromBase64?: string;
  closed?: boolean;
  reason?: string;
}

/** The raw path an event line names (`pathBase64` wins where present). */
export function rawOf(ev: JsonEvent, key: 'path' | 'from' = 'path'): RawPath {
  const b64 = key === 'path' ? ev.pathBase64 : ev.fromBase64;
  if (b64 !== undefined) return Buffer.from(b64, 'base64').toString('latin1');
  const s = key === 'path' ? ev.path : (ev.from as string);
  return Buffer.from(s, 'utf8').toString('latin1');
}

/** Applies one change line to a rebuilt tree, the way README says a consumer should. */
export function applyEvent(tree: Map<RawPath, Kind>, ev: JsonEvent): void {
  const p = rawOf(ev);
  const dropSubtree = (q: RawPath): void => {
    tree.delete(q);
    for (const k of [...tree.keys()]) if (k.startsWith(`${q}/`)) tree.delete(k);
  };
  switch (ev.event) {
    case 'created':
      tree.set(p, ev.kind as Kind);
      break;
    case 'removed':
      dropSubtree(p);
      break;
    case 'moved': {
      const from = rawOf(ev, 'from');
      const moving = [...tree.entries()].filter(([k]) => k === from || k.startsWith(`${from}/`));
      dropSubtree(from);
      dropSubtree(p);
      for (const [k, kind] of moving) tree.set(p + k.slice(from.length), kind);
      break;
    }
    default:
      break;
  }
}

/** `phoenix events --json` as a user runs it, with its output parsed line by line. */
export class EventsProcess {
  readonly events: JsonEvent[] = [];
  readonly child: ChildProcess;
  stderr = '';
  #waiters: Array<() => void> = [];
  #syncs = 0;
  readonly exited: Promise<number | null>;

  constructor(
    readonly root: string,
    args: string[] = [],
  ) {
    this.child = spawn(process.execPath, [PHOENIX, 'events', root, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.events.push(JSON.parse(line) as JsonEvent);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code) => {
        for (const w of this.#waiters.splice(0)) w();
        resolve(code);
      }),
    );
  }

  /** Resolves once an event matching `pred` has been printed (looking from index `from`). */
  async waitFor(pred: (e: JsonEvent) => boolean, from = 0, timeoutMs = 60_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e, idx) => idx >= from && pred(e));
      if (i >= 0) return i;
      if (this.child.exitCode !== null) throw new Error(`phoenix events exited (${this.child.exitCode}): ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for an event; last: ${JSON.stringify(this.events.slice(-3))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  ready(): Promise<number> {
    return this.waitFor((e) => e.event === 'ready');
  }

  /**
   * Waits until everything done before this call has been reported: events are printed in
   * kernel order, so once a marker file created now is reported (and then its removal),
   * every earlier change has been too.
   */
  async sync(): Promise<void> {
    const name = `.phx-sync-${++this.#syncs}`;
    const { writeFileSync, unlinkSync } = await import('node:fs');
    const from = this.events.length;
    writeFileSync(join(this.root, name), '');
    const i = await this.waitFor((e) => e.event === 'created' && e.path === name, from);
    unlinkSync(join(this.root, name));
    await this.waitFor((e) => e.event === 'removed' && e.path === name, i);
  }

  /** The tree rebuilt from `initial` and every event printed after `ready`. */
  rebuild(initial: Map<RawPath, Kind>): Map<RawPath, Kind> {
    const tree = new Map(initial);
    const start = this.events.findIndex((e) => e.event === 'ready');
    for (const ev of this.events.slice(start + 1)) applyEvent(tree, ev);
    return tree;
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
    return await this.exited;
  }
}

/** Readable differences between two trees, for assertion messages. */
export function treeDiff<V>(actual: Map<RawPath, V>, expected: Map<RawPath, V>, max = 10): string[] {
  const out: string[] = [];
  for (const [k, v] of expected) if (actual.get(k) !== v) out.push(`missing or wrong: ${JSON.stringify(k)} (${v}, got ${actual.get(k)})`);
  for (const [k, v] of actual) if (!expected.has(k)) out.push(`extra: ${JSON.stringify(k)} (${v})`);
  return out.slice(0, max);
}

/** What a tree holds, for comparison: type, mode, content hash, mtime (ms), link target; `skip` leaves paths out. */
export function snapshot(root: string, skip: (rel: string) => boolean = () => false): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (abs: Buffer, rel: string): void => {
    for (const name of readdirSync(abs, { encoding: 'buffer' })) {
      const a = Buffer.concat([abs, Buffer.from('/'), name]);
      const r = rel === '' ? name.toString('latin1') : `${rel}/${name.toString('latin1')}`;
      if (skip(r)) continue;
      const st = lstatSync(a, { bigint: true });
      const mode = (Number(st.mode) & 0o7777).toString(8);
      if (st.isDirectory()) {
        out.set(r, `dir ${mode} ${st.mtimeNs / 1_000_000n}`);
        walk(a, r);
      } else if (st.isSymbolicLink()) {
        out.set(r, `link ${readlinkSync(a, { encoding: 'buffer' }).toString('hex')}`);
      } else {
        const h = createHash('sha256').update(readFileSync(a)).digest('hex').slice(0, 16);
        out.set(r, `file ${mode} ${st.size} ${h} ${st.mtimeNs / 1_000_000n}`);
      }
    }
  };
  walk(Buffer.from(root), '');
  return out;
}

/**
 * True when user `uid` can read every one of `paths`: a clone below a private directory (mode
 * 0700, as `mktemp -d` makes) cannot run its tests as another user, and such tests skip.
 */
export function readableAs(uid: number, ...paths: string[]): boolean {
  const probe = spawnSync(
    process.execPath,
    ['-e', `for (const p of ${JSON.stringify(paths)}) require('fs').accessSync(p, require('fs').constants.R_OK)`],
    { uid, gid: uid },
  );
  return probe.status === 0;
}
