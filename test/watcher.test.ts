import assert from 'node:assert/strict';
import {
  chmodSync,
  linkSync,
  lstatSync,
  readFileSync,
  readdirSync,
  mkdirSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { changeToJson } from '../src/cli/format.js';
import type { PhoenixError } from '../src/errors.js';
import type { Change } from '../src/model/change.js';
import { rawFromUtf8 } from '../src/model/path.js';
import { readLimit, Watcher, type WatcherOptions } from '../src/watcher/watcher.js';
import { applyEvent, realTree, tempDir, treeDiff, type JsonEvent } from './helpers.js';

/** A watcher in this process, with its changes kept and a way to wait for them. */
async function watch(root: string, opts: Partial<WatcherOptions> = {}) {
  const changes: Change[] = [];
  const warnings: PhoenixError[] = [];
  let wake: (() => void) | undefined;
  const w = new Watcher(root, {
    ...opts,
    onChange: (c) => {
      changes.push(c);
      wake?.();
    },
    onWarning: (e) => warnings.push(e),
  });
  await w.start();
  const initial = realTree(root);
  const waitFor = async (pred: (c: Change) => boolean, from = 0): Promise<number> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const i = changes.findIndex((c, idx) => idx >= from && pred(c));
      if (i >= 0) return i;
      assert.ok(Date.now() < deadline, 'timed out waiting for a change');
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 100);
      });
    }
  };
  let n = 0;
  const sync = async (): Promise<void> => {
    const name = `.sync-${++n}`;
    const from = changes.length;
    writeFileSync(join(root, name), '');
    const i = await waitFor((c) => c.type === 'created' && c.path === name, from);
    unlinkSync(join(root, name));
    await waitFor((c) => c.type === 'removed' && c.path === name, i);
  };
  const rebuilt = (): Map<string, string> => {
    const t = new Map<string, string>(initial);
    for (const c of changes) applyEvent(t as never, changeToJson(c) as unknown as JsonEvent);
    return t;
  };
  return { w, changes, warnings, waitFor, sync, rebuilt };
}

describe('Watcher', () => {
  it('reports a real kernel queue overflow and reconciles by rescanning', async () => {
    const dir = tempDir();
    mkdirSync(join(dir.path, 'busy'));
    mkdirSync(join(dir.path, 'moving/inner'), { recursive: true });
    writeFileSync(join(dir.path, 'moving/inner/f'), 'f');
    const t = await watch(dir.path);
    const max = readLimit('max_queued_events') ?? 16384;
    t.w.pauseReader();
    for (let i = 0; i < max; i++) writeFileSync(join(dir.path, 'busy', `n${i}`), ''); // >= 2 events each
    renameSync(join(dir.path, 'moving'), join(dir.path, 'moved'));
    writeFileSync(join(dir.path, 'moved/inner/g'), 'g');
    t.w.resumeReader();
    await t.waitFor((c) => c.type === 'rescan' && c.reason === 'overflow');
    await t.sync();
    assert.ok(t.w.stats().overflows >= 1, 'the overflow is counted');
    assert.deepEqual(treeDiff(t.rebuilt() as never, realTree(dir.path)), []);
    // Watches follow the reconcile: a write into the moved directory is seen under its new name.
    writeFileSync(join(dir.path, 'moved/inner/h'), 'h');
    await t.waitFor((c) => c.type === 'created' && c.path === 'moved/inner/h');
    t.w.close();
    dir.cleanup();
  });

  it('with the files of all but one directory on disk: moves, creations, deletions and a full reconcile still rebuild the tree exactly', async () => {
    const dir = tempDir();
    const root = dir.path;
    for (const d of ['a', 'b', 'c', 'a/deep']) {
      mkdirSync(join(root, d));
      for (let i = 0; i < 20; i++) writeFileSync(join(root, d, `f${i}\xff`), `${d}${i}`);
    }
    const t = await watch(root, { tree: { hotFiles: 2, keepDirs: 1 } });
    assert.ok(t.w.tree.hotFiles < 60, `files in memory after the start: ${t.w.tree.hotFiles}`);
    renameSync(join(root, 'a'), join(root, 'b/a-moved')); // a subtree whose files are on disk
    writeFileSync(join(root, 'b/a-moved/deep/f3\xff'), 'rewritten, longer');
    unlinkSync(join(root, 'c/f1\xff'));
    renameSync(join(root, 'c/f2\xff'), join(root, 'b/from-c'));
    mkdirSync(join(root, 'new'));
    for (let i = 0; i < 10; i++) writeFileSync(join(root, 'new', `n${i}`), 'x');
    rmSync(join(root, 'c'), { recursive: true });
    await t.sync();
    assert.deepEqual(treeDiff(t.rebuilt(), realTree(root)), []);
    // A full reconcile compares two spilled trees; changes made meanwhile are found either way.
    writeFileSync(join(root, 'b/f5\xff'), 'changed before the rescan');
    t.w.rescan('', 'periodic');
    await t.waitFor((c) => c.type === 'rescan');
    await t.sync();
    assert.deepEqual(treeDiff(t.rebuilt(), realTree(root)), []);
    assert.equal(t.w.tree.get(rawFromUtf8('b/a-moved/deep/f3\xff'))?.size, 'rewritten, longer'.length);
    assert.ok(t.w.tree.hotFiles < t.w.tree.size - t.w.tree.dirCount, 'files are on disk');
    t.w.close();
    dir.cleanup();
  });

  it('the watch limit: a clear message, a degraded state, and periodic scans of what is not watched', async (ctx) => {
    const file = '/proc/sys/fs/inotify/max_user_watches';
    const original = readFileSync(file, 'utf8').trim();
    try {
      writeFileSync(file, original);
    } catch {
      ctx.skip(`cannot write ${file} (needs root): the watch-limit test lowers it for a moment`);
      return;
    }
    const dir = tempDir();
    for (let i = 0; i < 30; i++) mkdirSync(join(dir.path, `d${i}`));
    const used = countWatchesInUse();
    writeFileSync(file, String(used + 10));
    let t: Awaited<ReturnType<typeof watch>>;
    try {
      t = await watch(dir.path, { unwatchedScanMs: 200 });
    } finally {
      writeFileSync(file, original);
    }
    const warning = t.warnings.find((w) => w.code === 'PHX_WATCH_LIMIT');
    assert.ok(warning, 'a PHX_WATCH_LIMIT warning');
    assert.match(warning.message, /fs\.inotify\.max_user_watches is \d+ and this source needs 31 watches/);
    assert.match(warning.hint ?? '', /sudo sysctl -w fs\.inotify\.max_user_watches=\d+/);
    assert.equal(t.w.state, 'degraded');
    assert.ok(t.w.unwatched.size > 0 && t.w.unwatched.size <= 30);
    // A directory without a watch: its changes come from the periodic scan.
    const blind = [...t.w.unwatched][0] as string;
    writeFileSync(join(dir.path, blind, 'seen-by-scan'), 'x');
    await t.waitFor((c) => c.type === 'created' && c.path === `${blind}/seen-by-scan`);
    assert.ok(t.changes.some((c) => c.type === 'rescan' && c.reason === 'unwatched'));
    // With the limit restored, the next periodic scan places the missing watches.
    await t.waitFor(() => t.w.unwatched.size === 0);
    assert.equal(t.w.state, 'watching');
    t.w.close();
    dir.cleanup();
  });

  it('a hard-linked file written in a directory not watched yet: its other name is reported too', async () => {
    const dir = tempDir();
    const root = dir.path;
    writeFileSync(join(root, 'F'), 'one');
    linkSync(join(root, 'F'), join(root, 'L'));
    const t = await watch(root);
    // Faster than the watcher can add a watch on D: the write's own events are never seen, and
    // the listing of D finds F; L, outside D, changed with it.
    mkdirSync(join(root, 'D'));
    renameSync(join(root, 'F'), join(root, 'D/F'));
    writeFileSync(join(root, 'D/F'), 'two, and longer');
    await t.waitFor((c) => c.type === 'modified' && c.path === 'L');
    await t.sync();
    assert.deepEqual(treeDiff(t.rebuilt(), realTree(root)), []);
    t.w.close();
    dir.cleanup();
  });

  it('a hard-linked file changed through a name that is replaced before its event is read: its other name is reported', async () => {
    const dir = tempDir();
    const root = dir.path;
    writeFileSync(join(root, 'F'), 'one');
    linkSync(join(root, 'F'), join(root, 'L'));
    const t = await watch(root);
    // chmod through F, then an editor's atomic save replaces F: by the time the IN_ATTRIB is
    // read, F names another file, and only the tree knows which inode the chmod reached.
    t.w.pauseReader();
    chmodSync(join(root, 'F'), 0o755);
    writeFileSync(join(root, 'F.new'), 'two');
    renameSync(join(root, 'F.new'), join(root, 'F'));
    t.w.resumeReader();
    await t.waitFor((c) => c.path === 'L' && c.type !== 'created');
    await t.sync();
    assert.deepEqual(treeDiff(t.rebuilt(), realTree(root)), []);
    t.w.close();
    dir.cleanup();
  });

  it('a file made and removed, or made and moved away, before its events are read: its directory is reported changed (its mtime moved)', async () => {
    const dir = tempDir();
    const root = dir.path;
    mkdirSync(join(root, 'D'));
    mkdirSync(join(root, 'E'));
    mkdirSync(join(root, 'G'));
    const t = await watch(root);
    try {
      t.w.pauseReader();
      writeFileSync(join(root, 'D/tmp'), 'x'); // a temporary file: no change to report for it
      unlinkSync(join(root, 'D/tmp'));
      writeFileSync(join(root, 'E/t2'), 'y'); // made in E, and in G by the time it is seen
      renameSync(join(root, 'E/t2'), join(root, 'G/t2'));
      t.w.resumeReader();
      await t.waitFor((c) => c.type === 'created' && c.path === 'G/t2');
      await t.sync();
      for (const d of ['D', 'E']) {
        assert.ok(
          t.changes.some((c) => c.type === 'attributes' && c.path === d),
          `${d} is reported: ${JSON.stringify(t.changes)}`,
        );
        assert.equal(t.w.tree.get(d)?.mtimeNs, lstatSync(join(root, d), { bigint: true }).mtimeNs, `the tree has ${d}'s new mtime`);
      }
      assert.deepEqual(treeDiff(t.rebuilt(), realTree(root)), []);
    } finally {
      t.w.close();
      dir.cleanup();
    }
  });

  it('a removed source is a clear error state, not a crash', async () => {
    const dir = tempDir();
    let fatal: PhoenixError | undefined;
    const w = new Watcher(dir.path, { onChange: () => {}, onFatal: (e) => (fatal = e) });
    await w.start();
    dir.cleanup();
    const deadline = Date.now() + 10_000;
    while (fatal === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(fatal?.code, 'PHX_SOURCE_GONE');
    assert.equal(w.state, 'failed');
  });
});

/** inotify watches held by all processes now (per /proc/PID/fdinfo). */
function countWatchesInUse(): number {
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
        const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
        n += info.split('\n').filter((l) => l.startsWith('inotify wd:')).length;
      }
    } catch {
      // processes come and go
    }
  }
  return n;
}
