import assert from 'node:assert/strict';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { SealPool } from '../src/archiver/seal-pool.js';
import { MemoryBackend } from '../src/backend/memory.js';
import type { Change } from '../src/model/change.js';
import { rawFromUtf8, toFsPath, type RawPath } from '../src/model/path.js';
import { Tree } from '../src/model/tree.js';
import { SourceRunner, type ChangeSource, type CommitReport } from '../src/daemon/source.js';
import { Repository } from '../src/repo/repository.js';
import { scan } from '../src/scanner/scan.js';
import { lstatEntry } from '../src/scanner/stat.js';
import { StateDb } from '../src/state/db.js';
import type { WatcherOptions, WatcherState } from '../src/watcher/watcher.js';
import { prng } from './daemon-helpers.js';
import { tempDir } from './helpers.js';

/** A change source that reports what the test says, when it says it (the tree follows what it reports). */
class Scripted implements ChangeSource {
  readonly root: RawPath;
  tree = new Tree();
  state: WatcherState = 'starting';

  constructor(
    path: string,
    readonly opts: WatcherOptions,
  ) {
    this.root = rawFromUtf8(path);
  }

  async start(): Promise<void> {
    this.tree = (await scan(this.root)).tree;
    this.state = 'watching';
  }

  close(): void {
    this.state = 'closed';
  }

  stats(): { watches: number; unwatched: number } {
    return { watches: 0, unwatched: 0 };
  }

  report(c: Exclude<Change, { type: 'rescan' }>): void {
    if (c.type === 'moved') this.tree.move(c.from, c.path);
    else if (c.type === 'removed') this.tree.delete(c.path);
    else {
      const e = lstatEntry(toFsPath(this.root, c.path));
      if (e !== undefined) this.tree.set(c.path, e); // gone already: its removal comes later
    }
    this.opts.onChange(c);
  }
}

/** What a test sees of a SourceRunner fed by a scripted stream, on a real source directory. */
interface Rig {
  src: string;
  repo: Repository;
  s: Scripted;
  runner: SourceRunner;
  commits: CommitReport[];
  traces: Array<{ msg: string; fields: Record<string, unknown> }>;
  until(what: () => boolean): Promise<void>;
  /** The committed tree's paths. */
  tree(): Promise<string[]>;
}

/** A SourceRunner on `src` fed by a Scripted stream (handed to `onSource` when the runner makes it). */
function makeRunner(
  src: string,
  repo: Repository,
  db: StateDb,
  pool: SealPool,
  out: { commits: CommitReport[]; traces: Rig['traces'] },
  onSource: (s: Scripted) => void,
): SourceRunner {
  return new SourceRunner(
    { name: 's', path: src, exclude: [], oneFileSystem: false, guard: null },
    repo,
    db,
    pool,
    {
      info: () => {},
      warn: () => {},
      problem: (p, m) => assert.fail(`unexpected problem: ${p ?? ''} ${m}`),
      committed: (c) => {
        out.commits.push(c);
      },
      trace: (msg, fields) => {
        out.traces.push({ msg, fields });
      },
      bytesRead: () => {},
      fatal: (err) => assert.fail(err),
    },
    {
      settle: { closedMs: 1, openMs: 1, maxDelayMs: 10 },
      reconcileMs: 0,
      changes: (path, opts) => {
        const s = new Scripted(path, opts);
        onSource(s);
        return s;
      },
    },
  );
}

const until = async (what: () => boolean): Promise<void> => {
  while (!what()) await sleep(5);
};

/** Runs `body` against a SourceRunner on a new source (`setup` fills it first) and a memory repository. */
async function withRunner(setup: (src: string) => void, body: (rig: Rig) => Promise<void>): Promise<void> {
  const src = tempDir('phx-source-src-');
  const state = tempDir('phx-source-state-');
  const repo = await Repository.init(new MemoryBackend(), { insecureNoEncryption: true });
  const db = new StateDb(join(state.path, 'db.sqlite'));
  const pool = new SealPool(repo.keys);
  let source: Scripted | undefined;
  const commits: CommitReport[] = [];
  const traces: Rig['traces'] = [];
  const runner = makeRunner(src.path, repo, db, pool, { commits, traces }, (s) => (source = s));
  const tree = async (): Promise<string[]> =>
    [...(await repo.loadState('s', runner.seq)).state.keys()].map((p) => Buffer.from(p, 'latin1').toString()).sort();
  try {
    setup(src.path);
    await runner.start();
    // Nothing was committed before: the start-up reconcile finds everything.
    await until(() => commits.length === 1);
    await body({ src: src.path, repo, s: source as Scripted, runner, commits, traces, until, tree });
    assert.equal(await runner.stop(Date.now() + 10_000), true, 'nothing left pending');
  } finally {
    await runner.stop(Date.now());
    await pool.close();
    db.close();
    src.cleanup();
    state.cleanup();
  }
}

/** The tree under `root` as a committed tree would say it: path, type and, for files, size. */
function diskTree(root: string, dir = ''): string[] {
  return readdirSync(join(root, dir)).flatMap((name) => {
    const p = dir === '' ? name : `${dir}/${name}`;
    const st = lstatSync(join(root, p));
    return st.isDirectory()
      ? [`${p} dir`, ...diskTree(root, p)]
      : [`${p} ${st.isFile() ? 'file' : 'symlink'} ${st.isFile() ? st.size : 0}`];
  });
}

/** The committed tree at `seq`, as diskTree says it. */
async function committedTree(repo: Repository, seq: number): Promise<string[]> {
  const { state } = await repo.loadState('s', seq);
  return [...state.values()].map((r) => {
    const p = Buffer.from(r.path, 'latin1').toString();
    return r.type === 'dir' ? `${p} dir` : `${p} ${r.type} ${r.type === 'file' ? r.size : 0}`;
  });
}

describe('SourceRunner with a scripted change stream (in process)', () => {
  it('commits what the stream reports: the start-up backlog, a directory move as one move, and a removal only once it is reported', async () => {
    const setup = (src: string): void => {
      writeFileSync(join(src, 'a'), 'a');
      mkdirSync(join(src, 'd'));
      writeFileSync(join(src, 'd', 'b'), 'b');
    };
    await withRunner(setup, async ({ src, s, commits, traces, runner, until, tree }) => {
      assert.deepEqual(await tree(), ['a', 'd', 'd/b']);

      renameSync(join(src, 'd'), join(src, 'e'));
      s.report({ type: 'moved', from: 'd', path: 'e', kind: 'dir' });
      await until(() => commits.length === 2);
      assert.equal(commits[1]?.kinds.move, 1, 'a directory move is one move entry');
      assert.deepEqual(await tree(), ['a', 'e', 'e/b']);

      // `a` is gone from the disk, but its removal is not reported yet (it is behind in the
      // kernel's queue): a change reported for it must not remove it.
      rmSync(join(src, 'a'));
      s.report({ type: 'modified', path: rawFromUtf8('a'), kind: 'file', closed: true });
      await until(() => traces.some((t) => t.msg === 'gone' && t.fields.path === 'a') && runner.pending.size === 0);
      assert.equal(commits.length, 2, 'nothing to commit');
      assert.deepEqual(await tree(), ['a', 'e', 'e/b']);
      s.report({ type: 'removed', path: rawFromUtf8('a'), kind: 'file' });
      await until(() => commits.length === 3);
      assert.equal(commits[2]?.kinds.delete, 1);
      assert.deepEqual(await tree(), ['e', 'e/b']);
    });
  });

  it('replaces the target of a move whose source the commit does not know (moved away already, or made since): what stood there is gone', async () => {
    const setup = (src: string): void => {
      for (const d of ['d2', 'd4', 'd6']) mkdirSync(join(src, d));
      writeFileSync(join(src, 'd2', 'x'), 'x');
      writeFileSync(join(src, 'd4', 'old4'), 'old4');
      writeFileSync(join(src, 'd6', 'old6'), 'old6');
    };
    await withRunner(setup, async ({ src, s, commits, runner, until, tree }) => {
      assert.deepEqual(await tree(), ['d2', 'd2/x', 'd4', 'd4/old4', 'd6', 'd6/old6']);
      // `rm -rf d4; mv d2 d4; mkdir d2; echo y > d2/y; rm -rf d6; mv d2 d6`, reported in one
      // batch: the move onto d6 has a source no commit has seen, and d6's removal is folded
      // into it, as the removal of d4 is into the move onto d4.
      const at = (p: string): RawPath => rawFromUtf8(p);
      rmSync(join(src, 'd4'), { recursive: true });
      s.report({ type: 'removed', path: at('d4/old4'), kind: 'file' });
      s.report({ type: 'removed', path: at('d4'), kind: 'dir' });
      renameSync(join(src, 'd2'), join(src, 'd4'));
      s.report({ type: 'moved', from: at('d2'), path: at('d4'), kind: 'dir' });
      mkdirSync(join(src, 'd2'));
      s.report({ type: 'created', path: at('d2'), kind: 'dir' });
      writeFileSync(join(src, 'd2', 'y'), 'y');
      s.report({ type: 'created', path: at('d2/y'), kind: 'file' });
      rmSync(join(src, 'd6'), { recursive: true });
      s.report({ type: 'removed', path: at('d6/old6'), kind: 'file' });
      s.report({ type: 'removed', path: at('d6'), kind: 'dir' });
      renameSync(join(src, 'd2'), join(src, 'd6'));
      s.report({ type: 'moved', from: at('d2'), path: at('d6'), kind: 'dir' });
      await until(() => commits.length >= 2 && runner.pending.size === 0);
      assert.equal(commits[1]?.kinds.move, 1, 'the move of a known directory is one move entry');
      assert.deepEqual(await tree(), ['d4', 'd4/x', 'd6', 'd6/y']);
    });
  });
  it('commits the tree that is on the disk, whatever the changes and however they fall into commits (random operations, as the watcher reports them)', async () => {
    // Seeds 1 to 16, and 53: it found a move out of a directory removed and made again in one batch.
    for (const seed of [...Array.from({ length: 16 }, (_, i) => i + 1), 53]) {
      const rnd = prng(seed);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
      const setup = (src: string): void => {
        mkdirSync(join(src, 'd0'));
        writeFileSync(join(src, 'd0', 'f0'), 'first');
      };
      await withRunner(setup, async ({ src, s, runner, until, repo }) => {
        const abs = (p: string): string => join(src, p);
        const at = (p: string): RawPath => rawFromUtf8(p);
        const isDir = (p: string): boolean => existsSync(abs(p)) && lstatSync(abs(p)).isDirectory();
        const dirs = ['d0', 'd1', 'd2', 'd3', 'd0/n', 'd1/n', 'd2/n', 'd3/n'];
        const files = dirs.flatMap((d) => ['f0', 'f1', 'f2'].map((f) => `${d}/${f}`));
        // rm -rf, reporting what the kernel reports: each entry, children before their directory
        const removeTree = (p: string): void => {
          if (!existsSync(abs(p))) return;
          const walk = (q: string): Array<[string, 'dir' | 'file']> =>
            isDir(q) ? [...readdirSync(abs(q)).flatMap((n) => walk(`${q}/${n}`)), [q, 'dir']] : [[q, 'file']];
          const gone = walk(p);
          rmSync(abs(p), { recursive: true });
          for (const [q, kind] of gone) s.report({ type: 'removed', path: at(q), kind });
        };
        const mkdirs = (d: string): void => {
          const parts = d.split('/');
          for (let i = 1; i <= parts.length; i++) {
            const q = parts.slice(0, i).join('/');
            if (existsSync(abs(q))) continue;
            mkdirSync(abs(q));
            s.report({ type: 'created', path: at(q), kind: 'dir' });
          }
        };
        for (let op = 0; op < 120; op++) {
          const k = rnd();
          if (k < 0.35) {
            const f = pick(files);
            const dir = f.slice(0, f.lastIndexOf('/'));
            mkdirs(dir);
            if (isDir(f)) continue;
            const isNew = !existsSync(abs(f));
            writeFileSync(abs(f), 'x'.repeat(Math.floor(rnd() * 100)));
            if (isNew) s.report({ type: 'created', path: at(f), kind: 'file' });
            s.report({ type: 'modified', path: at(f), kind: 'file', closed: true });
          } else if (k < 0.5) {
            const f = pick(files);
            if (!existsSync(abs(f)) || isDir(f)) continue;
            rmSync(abs(f));
            s.report({ type: 'removed', path: at(f), kind: 'file' });
          } else if (k < 0.6) {
            removeTree(pick(dirs));
          } else if (k < 0.8) {
            // a directory moves, onto a place emptied first (rename(2) needs it empty)
            const from = pick(dirs);
            const to = pick(dirs);
            if (!isDir(from) || from === to || to.startsWith(`${from}/`) || from.startsWith(`${to}/`)) continue;
            if (to.includes('/') && !isDir(to.slice(0, to.lastIndexOf('/')))) continue;
            removeTree(to);
            renameSync(abs(from), abs(to));
            s.report({ type: 'moved', from: at(from), path: at(to), kind: 'dir' });
          } else if (k < 0.9) {
            // a file moves, onto another file or not
            const from = pick(files);
            const to = pick(files);
            const toDir = to.slice(0, to.lastIndexOf('/'));
            if (from === to || !existsSync(abs(from)) || isDir(from) || !isDir(toDir) || isDir(to)) continue;
            renameSync(abs(from), abs(to));
            s.report({ type: 'moved', from: at(from), path: at(to), kind: 'file' });
          } else {
            const f = pick(files);
            if (!existsSync(abs(f)) || isDir(f)) continue;
            chmodSync(abs(f), rnd() < 0.5 ? 0o600 : 0o644);
            s.report({ type: 'attributes', path: at(f), kind: 'file' });
          }
          // Commits run between the operations now and then, and see the disk as it is then.
          if (rnd() < 0.15) await sleep(Math.floor(rnd() * 4));
          if (rnd() < 0.1 || op === 119) {
            await until(() => runner.pending.size === 0);
            assert.deepEqual((await committedTree(repo, runner.seq)).sort(), diskTree(src).sort(), `seed ${seed}, after operation ${op}`);
          }
        }
      });
    }
  });
  it('at start-up, finds what changed while it was not running, directory by directory: a subtree gone, a directory made a file and a link, a file made a directory', async () => {
    const src = tempDir('phx-source-src-');
    const state = tempDir('phx-source-state-');
    const repo = await Repository.init(new MemoryBackend(), { insecureNoEncryption: true });
    const db = new StateDb(join(state.path, 'db.sqlite'));
    const pool = new SealPool(repo.keys);
    const out: { commits: CommitReport[]; traces: Rig['traces'] } = { commits: [], traces: [] };
    const at = (p: string): string => join(src.path, p);
    try {
      for (const d of ['gone', 'gone/deep', 'to-file', 'to-file/x', 'to-link', 'same', 'changed']) mkdirSync(at(d));
      for (const f of ['gone/a', 'gone/deep/b', 'to-file/x/c', 'to-link/d', 'same/e', 'changed/f', 'was-file', 'top'])
        writeFileSync(at(f), f);
      const first = makeRunner(src.path, repo, db, pool, out, () => {});
      await first.start();
      await until(() => out.commits.length === 1);
      assert.equal(await first.stop(Date.now() + 10_000), true);

      // While no daemon runs:
      rmSync(at('gone'), { recursive: true });
      rmSync(at('to-file'), { recursive: true });
      writeFileSync(at('to-file'), 'now a file');
      rmSync(at('to-link'), { recursive: true });
      symlinkSync('same', at('to-link'));
      rmSync(at('was-file'));
      mkdirSync(at('was-file'));
      writeFileSync(at('was-file/g'), 'g');
      writeFileSync(at('changed/f'), 'longer than before');
      mkdirSync(at('new'));
      writeFileSync(at('new/h'), 'h');

      const second = makeRunner(src.path, repo, db, pool, out, () => {});
      await second.start();
      await until(() => out.commits.length === 2 && second.pending.size === 0);
      assert.deepEqual((await committedTree(repo, second.seq)).sort(), diskTree(src.path).sort());
      // The subtrees gone are one delete each, not one per entry below them.
      assert.equal(out.commits[1]?.kinds.delete, 3);
      assert.equal(await second.stop(Date.now() + 10_000), true);
    } finally {
      await pool.close();
      db.close();
      src.cleanup();
      state.cleanup();
    }
  });
});
