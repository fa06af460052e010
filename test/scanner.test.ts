import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Filter } from '../src/model/filter.js';
import { rawFromUtf8 } from '../src/model/path.js';
import { diff } from '../src/scanner/diff.js';
import { scan } from '../src/scanner/scan.js';
import { readableAs, tempDir } from './helpers.js';

const root = (p: string): string => rawFromUtf8(p);

describe('scan', () => {
  it('reports every entry with its lstat: files, directories, symlinks, fifos; never follows links', async () => {
    const dir = tempDir();
    writeFileSync(join(dir.path, 'f'), 'hello');
    mkdirSync(join(dir.path, 'd/e'), { recursive: true });
    symlinkSync('/etc', join(dir.path, 'd/to-etc'));
    execFileSync('mkfifo', [join(dir.path, 'fifo')]);
    const bad = Buffer.concat([Buffer.from(`${dir.path}/x`), Buffer.from([0xc3, 0x28])]);
    writeFileSync(bad, 'not utf-8');
    const { tree, problems } = await scan(root(dir.path));
    assert.deepEqual(problems, []);
    assert.deepEqual([...tree.entries()].map(([p]) => p).sort(), ['d', 'd/e', 'd/to-etc', 'f', 'fifo', 'x\xc3\x28']);
    const f = tree.get('f');
    const st = lstatSync(join(dir.path, 'f'), { bigint: true });
    assert.equal(f?.kind, 'file');
    assert.equal(f?.size, 5);
    assert.equal(f?.mtimeNs, st.mtimeNs);
    assert.equal(f?.ctimeNs, st.ctimeNs);
    assert.equal(f?.ino, st.ino);
    assert.equal(f?.mode, Number(st.mode));
    assert.equal(tree.get('d/to-etc')?.kind, 'symlink');
    assert.equal(tree.get('d/to-etc')?.target, '/etc');
    assert.equal(tree.get('fifo')?.kind, 'other');
    assert.equal(tree.get('x\xc3\x28')?.size, 9);
    dir.cleanup();
  });

  it('applies exclusions in .gitignore syntax', async () => {
    const dir = tempDir();
    mkdirSync(join(dir.path, 'node_modules/pkg'), { recursive: true });
    mkdirSync(join(dir.path, 'src'));
    writeFileSync(join(dir.path, 'src/a.ts'), '');
    writeFileSync(join(dir.path, 'src/a.log'), '');
    const { tree } = await scan(root(dir.path), '', { filter: new Filter({ exclude: ['node_modules/', '*.log'] }) });
    assert.deepEqual([...tree.entries()].map(([p]) => p).sort(), ['src', 'src/a.ts']);
    dir.cleanup();
  });

  it('with oneFileSystem lists a mount point but does not enter it', async (ctx) => {
    const dir = tempDir();
    mkdirSync(join(dir.path, 'mnt'));
    writeFileSync(join(dir.path, 'local'), '');
    if (spawnSync('mount', ['-t', 'tmpfs', 'phx-test', join(dir.path, 'mnt')]).status !== 0) {
      dir.cleanup();
      ctx.skip('cannot mount a tmpfs here (needs root and mount rights)');
      return;
    }
    try {
      writeFileSync(join(dir.path, 'mnt/on-other-fs'), '');
      const one = await scan(root(dir.path), '', { filter: new Filter({ oneFileSystem: true }) });
      assert.deepEqual([...one.tree.entries()].map(([p]) => p).sort(), ['local', 'mnt']);
      const all = await scan(root(dir.path));
      assert.deepEqual([...all.tree.entries()].map(([p]) => p).sort(), ['local', 'mnt', 'mnt/on-other-fs']);
    } finally {
      spawnSync('umount', [join(dir.path, 'mnt')]);
      dir.cleanup();
    }
  });

  it('survives a tree deeper than PATH_MAX and reports what it could not read', async () => {
    const dir = tempDir();
    // 2,100 levels of "d/" is 4,200 bytes: past PATH_MAX (4,096) for absolute paths.
    const cwd = process.cwd();
    try {
      process.chdir(dir.path);
      for (let i = 0; i < 2100; i++) {
        mkdirSync('d');
        process.chdir('d');
      }
    } finally {
      process.chdir(cwd);
    }
    const { tree, problems } = await scan(root(dir.path));
    assert.ok(tree.size > 1500, `most levels scanned (${tree.size})`);
    assert.deepEqual(
      problems.map((p) => p.code),
      ['ENAMETOOLONG'],
    );
    execFileSync('rm', ['-rf', dir.path]); // rmSync recurses on the JavaScript stack
  });

  it('reports unreadable directories (EACCES) and goes on', async (ctx) => {
    if (process.getuid?.() !== 0) {
      ctx.skip('needs root to run the scan as another user (root itself reads everything)');
      return;
    }
    const script = fileURLToPath(new URL('./fixtures/scan-json.js', import.meta.url));
    if (!readableAs(65534, script, fileURLToPath(new URL('../../build/Release/phoenix_native.node', import.meta.url)))) {
      ctx.skip('the checkout is not readable by uid 65534 (it lies below a private directory, such as one mktemp -d made)');
      return;
    }
    const dir = tempDir();
    chmodSync(dir.path, 0o755);
    mkdirSync(join(dir.path, 'locked'));
    writeFileSync(join(dir.path, 'locked/secret'), 's');
    writeFileSync(join(dir.path, 'open'), 'o');
    chownSync(dir.path, 65534, 65534);
    chmodSync(join(dir.path, 'locked'), 0o700); // owned by root: nobody cannot list it
    const r = spawnSync(process.execPath, [script, dir.path], { uid: 65534, gid: 65534, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { paths: string[]; problems: Array<{ path: string; code: string }> };
    assert.deepEqual(out.paths.sort(), ['locked', 'open']);
    assert.deepEqual(
      out.problems.map((p) => [p.path, p.code]),
      [['locked', 'EACCES']],
    );
    dir.cleanup();
  });

  it('copes with entries vanishing during the walk', async () => {
    const dir = tempDir();
    for (let d = 0; d < 20; d++) {
      mkdirSync(join(dir.path, `d${d}`));
      for (let f = 0; f < 50; f++) writeFileSync(join(dir.path, `d${d}`, `f${f}`), '');
    }
    const churn = scan(root(dir.path));
    for (let d = 0; d < 20; d++) rmSync(join(dir.path, `d${d}`), { recursive: true });
    const { problems } = await churn;
    assert.deepEqual(problems, [], 'vanished entries are not problems');
    dir.cleanup();
  });
});

describe('diff', () => {
  it('yields removals (subtree tops only), creations parents first, modifications and attribute changes', async () => {
    const dir = tempDir();
    mkdirSync(join(dir.path, 'gone/sub'), { recursive: true });
    writeFileSync(join(dir.path, 'gone/sub/x'), '');
    writeFileSync(join(dir.path, 'same'), 'same');
    writeFileSync(join(dir.path, 'grows'), 'a');
    writeFileSync(join(dir.path, 'chmod'), 'c');
    writeFileSync(join(dir.path, 'replaced'), 'file');
    const before = (await scan(root(dir.path))).tree;
    rmSync(join(dir.path, 'gone'), { recursive: true });
    mkdirSync(join(dir.path, 'new/deeper'), { recursive: true });
    writeFileSync(join(dir.path, 'new/deeper/y'), '');
    writeFileSync(join(dir.path, 'grows'), 'abc');
    chmodSync(join(dir.path, 'chmod'), 0o600);
    unlinkSync(join(dir.path, 'replaced'));
    mkdirSync(join(dir.path, 'replaced'));
    const after = (await scan(root(dir.path))).tree;
    const changes = diff(before, after).map((c) => `${c.type} ${c.path} ${c.kind}`);
    assert.deepEqual(
      changes,
      [
        'removed replaced file',
        'removed gone dir',
        ...changes.filter((c) => c.startsWith('created')),
        'modified grows file',
        'attributes chmod file',
      ].sort((a, b) => changes.indexOf(a) - changes.indexOf(b)),
    );
    const created = changes.filter((c) => c.startsWith('created'));
    assert.deepEqual(
      new Set(created),
      new Set(['created new dir', 'created new/deeper dir', 'created new/deeper/y file', 'created replaced dir']),
    );
    assert.ok(created.indexOf('created new dir') < created.indexOf('created new/deeper dir'));
    assert.ok(created.indexOf('created new/deeper dir') < created.indexOf('created new/deeper/y file'));
    assert.deepEqual(diff(after, after), []);
    dir.cleanup();
  });
});
