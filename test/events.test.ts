import assert from 'node:assert/strict';
import { chmodSync, linkSync, mkdirSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readLimit } from '../src/watcher/watcher.js';
import { EventsProcess, realTree, tempDir, treeDiff } from './helpers.js';

const running: EventsProcess[] = [];
after(() => {
  for (const p of running) p.child.kill('SIGKILL');
});

/** Starts `phoenix events` on a fresh directory prepared by `setup`, waits for `ready`. */
async function session(setup: (root: string) => void = () => {}, args: string[] = []) {
  const dir = tempDir();
  setup(dir.path);
  const proc = new EventsProcess(dir.path, args);
  running.push(proc);
  await proc.ready();
  const initial = realTree(dir.path);
  return {
    root: dir.path,
    proc,
    initial,
    /** Syncs, then checks that the rebuilt tree equals the real one. */
    async check(): Promise<void> {
      await proc.sync();
      const rebuilt = proc.rebuild(initial);
      const real = realTree(dir.path);
      assert.deepEqual(treeDiff(rebuilt, real), [], 'tree rebuilt from events differs from the real tree');
    },
    async close(): Promise<void> {
      assert.equal(await proc.stop(), 0);
      dir.cleanup();
    },
  };
}

describe('phoenix events --json', () => {
  it('prints ready first, then created, modified (closed), moved, attributes and removed lines', async () => {
    const s = await session((root) => mkdirSync(join(root, 'old')));
    assert.deepEqual(s.proc.events[0], { event: 'ready', path: '.', kind: 'dir' });
    // One step at a time: events are handled when read, and a path that is gone by then
    // is reported as it is then (coalesced), which would make this test depend on timing.
    const steps = [
      () => writeFileSync(join(s.root, 'a.txt'), 'hello'),
      () => renameSync(join(s.root, 'a.txt'), join(s.root, 'b.txt')),
      () => chmodSync(join(s.root, 'b.txt'), 0o600),
      () => mkdirSync(join(s.root, 'd')),
      () => unlinkSync(join(s.root, 'b.txt')),
      () => rmSync(join(s.root, 'old'), { recursive: true }),
    ];
    for (const step of steps) {
      step();
      await s.proc.sync();
    }
    await s.check();
    const lines = s.proc.events.filter((e) => !e.path.startsWith('.phx-sync'));
    const has = (o: object): boolean =>
      lines.some((e) => Object.entries(o).every(([k, v]) => (e as unknown as Record<string, unknown>)[k] === v));
    assert.ok(has({ event: 'created', path: 'a.txt', kind: 'file' }));
    assert.ok(has({ event: 'modified', path: 'a.txt', kind: 'file', closed: true }));
    assert.ok(has({ event: 'moved', path: 'b.txt', from: 'a.txt', kind: 'file' }));
    assert.ok(has({ event: 'attributes', path: 'b.txt', kind: 'file' }));
    assert.ok(has({ event: 'created', path: 'd', kind: 'dir' }));
    assert.ok(has({ event: 'removed', path: 'b.txt', kind: 'file' }));
    assert.ok(has({ event: 'removed', path: 'old', kind: 'dir' }));
    assert.equal(s.proc.events.filter((e) => e.event === 'ready').length, 1);
    await s.close();
  });

  it('burst: 200 directories x 100 files, 50 directory renames, 5,000 deletions: nothing missed', async () => {
    const s = await session();
    for (let d = 0; d < 200; d++) {
      const dir = join(s.root, `d${d}`);
      mkdirSync(dir); // files land in the brand-new directory right away, before its watch may exist
      for (let f = 0; f < 100; f++) writeFileSync(join(dir, `f${f}`), `${d}/${f}`);
    }
    await s.check();
    for (let d = 0; d < 50; d++) renameSync(join(s.root, `d${d}`), join(s.root, `r${d}`));
    for (let d = 0; d < 50; d++) writeFileSync(join(s.root, `r${d}`, 'after-rename'), 'x');
    await s.check();
    const created = s.proc.events.filter((e) => e.event === 'created' && e.path.includes('/after-rename'));
    assert.ok(
      created.every((e) => e.path.startsWith('r')),
      'writes after a rename use the new path',
    );
    let n = 0;
    for (let d = 50; d < 200 && n < 5000; d++) for (let f = 0; f < 100 && n < 5000; f++, n++) unlinkSync(join(s.root, `d${d}`, `f${f}`));
    await s.check();
    await s.close();
  });

  it('renames: within and across directories, nested directory moves, over an existing file, out of and into the root', async () => {
    const outside = tempDir('phx-outside-');
    const s = await session((root) => {
      mkdirSync(join(root, 'a/b/c'), { recursive: true });
      writeFileSync(join(root, 'a/b/c/deep.txt'), 'deep');
      mkdirSync(join(root, 'x'));
      writeFileSync(join(root, 'x/one'), '1');
      writeFileSync(join(root, 'x/two'), '2');
    });
    renameSync(join(s.root, 'x/one'), join(s.root, 'x/uno')); // within a directory
    renameSync(join(s.root, 'x/uno'), join(s.root, 'a/uno')); // across directories
    renameSync(join(s.root, 'x/two'), join(s.root, 'a/uno')); // over an existing file
    renameSync(join(s.root, 'a'), join(s.root, 'A')); // a directory with a nested subtree
    writeFileSync(join(s.root, 'A/b/c/new.txt'), 'written after the move');
    renameSync(join(s.root, 'A/b'), join(s.root, 'x/B')); // a subdirectory to another parent
    writeFileSync(join(s.root, 'x/B/c/newer.txt'), 'again');
    await s.check();
    const ev = s.proc.events;
    assert.ok(
      ev.some((e) => e.event === 'moved' && e.path === 'A' && e.from === 'a' && e.kind === 'dir'),
      'a directory move is one event',
    );
    assert.ok(
      ev.some((e) => e.event === 'created' && e.path === 'x/B/c/newer.txt'),
      'writes after moves use the new path',
    );
    assert.ok(
      !ev.some((e) => e.event === 'created' && (e.path === 'a/b/c/deep.txt' || e.path === 'A/b/c/deep.txt')),
      'a move uploads nothing: no creations for what moved',
    );
    mkdirSync(join(outside.path, 'incoming/sub'), { recursive: true });
    writeFileSync(join(outside.path, 'incoming/sub/file'), 'in');
    renameSync(join(outside.path, 'incoming'), join(s.root, 'incoming')); // into the root
    renameSync(join(s.root, 'x/B'), join(outside.path, 'gone')); // out of the root
    writeFileSync(join(outside.path, 'gone/c/ignored-now'), 'not ours any more');
    for (let i = 0; i < 20; i++) {
      writeFileSync(join(s.root, 'flip'), String(i)); // rapid create-delete-create
      unlinkSync(join(s.root, 'flip'));
    }
    writeFileSync(join(s.root, 'flip'), 'last');
    await s.check();
    assert.ok(
      ev.some((e) => e.event === 'created' && e.path === 'incoming/sub/file'),
      'a moved-in subtree is listed',
    );
    assert.ok(
      ev.some((e) => e.event === 'removed' && e.path === 'x/B' && e.kind === 'dir'),
      'moved out is a removal',
    );
    assert.ok(!ev.some((e) => e.path.includes('ignored-now')), 'nothing is reported from outside the root');
    await s.close();
    outside.cleanup();
  });

  it('attributes, symlinks, hard links, odd names and excluded subtrees', async () => {
    const s = await session(
      (root) => {
        writeFileSync(join(root, 'plain'), 'p');
        mkdirSync(join(root, 'cache/deep'), { recursive: true });
      },
      ['--exclude', 'cache/', '--exclude', '*.tmp'],
    );
    chmodSync(join(s.root, 'plain'), 0o640);
    utimesSync(join(s.root, 'plain'), new Date(1_000_000), new Date(2_000_000));
    symlinkSync('plain', join(s.root, 'link'));
    symlinkSync('nowhere', join(s.root, 'dangling'));
    unlinkSync(join(s.root, 'link'));
    symlinkSync('dangling', join(s.root, 'link')); // retargeted
    linkSync(join(s.root, 'plain'), join(s.root, 'hard'));
    writeFileSync(join(s.root, 'with space'), '1');
    writeFileSync(join(s.root, 'new\nline'), '2');
    const bad = Buffer.concat([Buffer.from(s.root + '/bad-'), Buffer.from([0xff, 0xfe]), Buffer.from('.bin')]);
    writeFileSync(bad, '3');
    writeFileSync(join(s.root, 'cache/deep/skipped'), 'x');
    writeFileSync(join(s.root, 'scratch.tmp'), 'x');
    mkdirSync(join(s.root, 'kept'));
    writeFileSync(join(s.root, 'kept/also.tmp'), 'x');
    await s.proc.sync();
    const ev = s.proc.events;
    const seen = (pred: (e: (typeof ev)[number]) => boolean, what: string): void => assert.ok(ev.some(pred), what);
    seen((e) => e.event === 'attributes' && e.path === 'plain', 'chmod and utimes are attribute changes');
    seen((e) => e.event === 'created' && e.path === 'link' && e.kind === 'symlink', 'a symlink is reported as a symlink');
    seen((e) => e.event === 'created' && e.path === 'dangling' && e.kind === 'symlink', 'dangling symlinks too');
    seen((e) => e.event === 'created' && e.path === 'hard' && e.kind === 'file', 'a hard link is a new name');
    seen((e) => e.event === 'created' && e.path === 'with space', 'spaces');
    seen((e) => e.event === 'created' && e.path === 'new\nline', 'newlines');
    const badEv = ev.find((e) => e.pathBase64 !== undefined);
    assert.ok(badEv, 'a name that is not UTF-8 carries pathBase64');
    assert.deepEqual(
      Buffer.from(badEv.pathBase64 as string, 'base64'),
      Buffer.from([...Buffer.from('bad-'), 0xff, 0xfe, ...Buffer.from('.bin')]),
    );
    assert.ok(!ev.some((e) => e.path.startsWith('cache/') || e.path.endsWith('.tmp')), 'excluded paths are never reported');
    const real = realTree(s.root);
    for (const k of [...real.keys()]) if (k.startsWith('cache/') || k.endsWith('.tmp')) real.delete(k);
    const initial = new Map(s.initial);
    for (const k of [...initial.keys()]) if (k.startsWith('cache/')) initial.delete(k);
    assert.deepEqual(treeDiff(s.proc.rebuild(initial), real), []);
    await s.close();
  });

  it('overflow for real: a stopped process misses events, is told, and the rescan reconciles', async () => {
    const s = await session((root) => {
      mkdirSync(join(root, 'keep'));
      mkdirSync(join(root, 'flood')); // watched before the stop, so its events queue up
      for (let i = 0; i < 100; i++) writeFileSync(join(root, 'keep', `k${i}`), 'k');
    });
    const max = readLimit('max_queued_events') ?? 16384;
    s.proc.child.kill('SIGSTOP'); // the reader thread stops too: the kernel queue fills
    try {
      // Each new file is at least IN_CREATE + IN_CLOSE_WRITE: twice the queue's size in all.
      for (let i = 0; i < max; i++) writeFileSync(join(s.root, 'flood', `f${i}`), '');
      for (let i = 0; i < 50; i++) unlinkSync(join(s.root, 'keep', `k${i}`));
      renameSync(join(s.root, 'keep'), join(s.root, 'kept'));
    } finally {
      s.proc.child.kill('SIGCONT');
    }
    await s.proc.waitFor((e) => e.event === 'overflow');
    await s.check();
    assert.equal(s.proc.events.find((e) => e.event === 'overflow')?.path, '.');
    await s.close();
  });
});
