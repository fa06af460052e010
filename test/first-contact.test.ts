import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { queryStatus } from '../src/daemon/status.js';
import { PHOENIX, readableAs, tempDir } from './helpers.js';
import { DaemonProcess, PASSWORD } from './daemon-helpers.js';

/** The checkout this test runs from. */
const CHECKOUT = fileURLToPath(new URL('../..', import.meta.url));

/** A fresh HOME with nothing of Phoenix's in the environment: what a new user has. */
function newUser(): { home: string; env: NodeJS.ProcessEnv } {
  const dir = tempDir('phx-user-');
  after(dir.cleanup);
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: dir.path };
  for (const k of Object.keys(env)) if (k.startsWith('PHOENIX_') || k.startsWith('XDG_')) delete env[k];
  return { home: dir.path, env };
}

function cli(env: NodeJS.ProcessEnv, args: string[], opts: SpawnSyncOptions = {}) {
  const r = spawnSync(process.execPath, [PHOENIX, ...args], { encoding: 'utf8', env, timeout: 120_000, ...opts });
  const stdout = String(r.stdout);
  const stderr = String(r.stderr);
  assertNoStack(stderr);
  return {
    status: r.status,
    stdout,
    stderr,
    json: () =>
      stdout
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** No JavaScript stack trace ever reaches a user. */
function assertNoStack(text: string): void {
  const frame = text.split('\n').find((l) => /^\s+at .*(\(.*:\d+:\d+\)|:\d+:\d+)$/.test(l) || /^\w*Error: /.test(l));
  assert.equal(frame, undefined, `a stack frame reached the user:\n${text}`);
}

/** The run command of README's "two commands" section, as written there. */
function readmeRunCommand(): string {
  const readme = readFileSync(join(CHECKOUT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## The two commands'));
  const line = section.split('\n').find((l) => /#\s*run:/.test(l));
  assert.ok(line, 'README has a run command');
  return line.slice(0, line.indexOf('#')).trim();
}

/** Runs README's run command in the checkout, as `uid` (or this user), until it watches; then Ctrl-C. */
async function runReadmeCommand(home: string, env: NodeJS.ProcessEnv, uid?: number): Promise<{ code: number | null; stderr: string }> {
  const child = spawn('bash', ['-c', `exec ${readmeRunCommand()}`], {
    cwd: CHECKOUT,
    env: { ...env, HOME: home },
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(uid !== undefined ? { uid, gid: uid } : {}),
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const state = join(home, '.local', 'state', 'phoenix');
  for (const deadline = Date.now() + 120_000; ;) {
    if (child.exitCode !== null) break;
    const s = await queryStatus(state).catch(() => undefined);
    if (s !== undefined && s.state === 'watching' && s.pending === 0 && s.lastCommit !== null) break;
    assert.ok(Date.now() < deadline, `README's run command did not start watching:\n${stderr}`);
    await sleep(50);
  }
  child.kill('SIGINT');
  return { code: await exited, stderr };
}

const gitStatus = (): string =>
  spawnSync('git', ['-c', 'safe.directory=*', 'status', '--porcelain', '--untracked-files=all'], { cwd: CHECKOUT, encoding: 'utf8' })
    .stdout;
const addon = join(CHECKOUT, 'build', 'Release', 'phoenix_native.node');

describe('first contact: README run command', () => {
  it('starts, stops on Ctrl-C with exit 0, and leaves the checkout and build/ as they were', async (t) => {
    const isGit = existsSync(join(CHECKOUT, '.git'));
    const before = gitStatus();
    const built = statSync(addon).mtimeMs;
    const users: Array<number | undefined> = [undefined];
    if (process.getuid?.() === 0) {
      if (readableAs(65534, addon, PHOENIX)) users.push(65534);
      else
        t.diagnostic(
          'the checkout is not readable by uid 65534 (it lies below a private directory): the run command is tried as root only',
        );
    }
    for (const uid of users) {
      const { home, env } = newUser();
      mkdirSync(join(home, 'Documents'));
      writeFileSync(join(home, 'Documents', 'letter.txt'), 'dear diary');
      if (uid !== undefined) spawnSync('chown', ['-R', `${uid}:${uid}`, home]);
      const r = await runReadmeCommand(home, env, uid);
      assert.equal(r.code, 0, `exit code of README's run command${uid !== undefined ? ` as uid ${uid}` : ''}:\n${r.stderr}`);
      assert.match(r.stderr, /backed up \d+ changes/, 'at level info a person sees that backups happen');
      assert.ok(existsSync(addon), 'build/ is intact');
      assert.equal(statSync(addon).mtimeMs, built, 'nothing was rebuilt');
      if (isGit) assert.equal(gitStatus(), before, 'the checkout is as it was');
      // Every command finds what watch created: no --repo, no password.
      const ls = cli({ ...env, HOME: home }, ['ls', '--json'], uid !== undefined ? { uid, gid: uid } : {});
      assert.equal(ls.status, 0, ls.stderr);
      assert.deepEqual(
        ls.json().map((e) => e.path),
        ['letter.txt'],
      );
    }
  });
});

describe('first contact: settings', () => {
  it('every command reads ~/.config/phoenix/phoenix.yaml; an empty repository is not an error for log and sources', () => {
    const { home, env } = newUser();
    const cfg = join(home, '.config', 'phoenix');
    mkdirSync(cfg, { recursive: true });
    writeFileSync(join(cfg, 'pw'), 'a good long password\n');
    writeFileSync(join(cfg, 'phoenix.yaml'), 'repository: ../../backup\npassword-file: pw\n');
    assert.equal(cli(env, ['init']).status, 0);
    assert.ok(existsSync(join(home, 'backup', 'config')), 'the relative repository is relative to the file');
    const log = cli(env, ['log']);
    assert.equal(log.status, 0, log.stderr);
    assert.match(log.stderr, /empty/);
    assert.equal(cli(env, ['sources', '--json']).stdout, '');
    const src = join(home, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'a'), 'a');
    assert.equal(cli(env, ['backup', src]).status, 0);
    const sources = cli(env, ['sources', '--json']).json();
    assert.equal(sources.length, 1);
    assert.equal(sources[0]?.name, src);
    assert.equal(sources[0]?.path, src);
    assert.equal(typeof sources[0]?.host, 'string');
    assert.equal(sources[0]?.files, 1);
    assert.equal(sources[0]?.bytes, 1);
    assert.deepEqual((sources[0]?.lastCommit as { seq: number }).seq, 1);
    // backup --dry-run lists what would be committed and writes nothing.
    writeFileSync(join(src, 'a'), 'changed');
    writeFileSync(join(src, 'b'), 'new');
    const dry = cli(env, ['backup', '--dry-run', src, '--json']);
    assert.equal(dry.status, 0, dry.stderr);
    assert.deepEqual(
      dry
        .json()
        .map((c) => [c.path, c.change])
        .sort(),
      [
        ['a', 'changed'],
        ['b', 'new'],
      ],
    );
    assert.equal(cli(env, ['log', '--json']).json().length, 1, 'a dry run commits nothing');
    const [perSource, repoStats] = cli(env, ['stats', '--json']).json();
    assert.equal(perSource?.files, 1);
    assert.equal(perSource?.bytes, 1);
    assert.equal((repoStats?.packs as { count: number }).count, 1);
    assert.equal((repoStats?.journal as { count: number }).count, 1);
    // -q: a backup says nothing when all is well.
    assert.equal(cli(env, ['-q', 'backup', src]).stdout, '');
  });

  it('usage errors exit 2 with a code and a hint, and no command prints a stack trace', () => {
    const { home, env } = newUser();
    const file = join(home, 'a-file');
    writeFileSync(file, '');
    const e = { ...env, PHOENIX_PASSWORD: 'pw' };
    const scheme = cli(e, ['log', '--repo', 'ftp://x/y']);
    assert.equal(scheme.status, 2);
    assert.match(scheme.stderr, /\[PHX_BAD_URL\]/);
    const typo = cli(e, ['init', '--repo', 's3//bucket'], { cwd: home });
    assert.match(
      typo.stderr,
      /warning: repository "s3\/\/bucket" is read as the local directory .*s3\/bucket; did you mean s3:\/\/bucket\?/,
    );
    const notDir = cli(e, ['log', '--repo', file]);
    assert.equal(notDir.status, 1);
    assert.match(notDir.stderr, /is not a directory: a local repository is a directory/);
    assert.doesNotMatch(notDir.stderr, /ENOTDIR/);
    const noCreds = cli({ ...e, AWS_ACCESS_KEY_ID: '', AWS_PROFILE: '' }, ['log', '--repo', 's3://b/p?endpoint=http://127.0.0.1:9'], {
      cwd: home,
    });
    assert.equal(noCreds.status, 1);
    assert.match(noCreds.stderr, /no S3 credentials were found/);
    assert.doesNotMatch(noCreds.stderr, /NodeVersionSupportWarning/);
    assert.equal(cli(e, ['--version']).stdout.trim(), JSON.parse(readFileSync(join(CHECKOUT, 'package.json'), 'utf8')).version);
    assert.equal(cli(e, ['restore']).status, 2);
    assert.equal(cli(e, ['ls', '--at', 'soonish']).status, 2);
    assert.equal(cli(e, ['restore', '--target', '/tmp/x', '--overwrite', 'sometimes']).status, 2);
    assert.match(cli(e, ['--help']).stdout, /PHOENIX_PASSWORD_FILE/);
    assert.match(cli(e, ['restore', '--help']).stdout, /--overwrite <MODE>/);
  });

  it('a closed stdout ends a command quietly', () => {
    const { home, env } = newUser();
    const src = join(home, 'src');
    mkdirSync(src);
    for (let i = 0; i < 3000; i++) writeFileSync(join(src, `file-${i}`), `${i}`);
    const e = { ...env, PHOENIX_PASSWORD: 'pw', PHOENIX_REPOSITORY: join(home, 'repo') };
    assert.equal(cli(e, ['init']).status, 0);
    assert.equal(cli(e, ['backup', src]).status, 0);
    for (const cmd of ['ls', 'dump']) {
      const r = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${PHOENIX}" ${cmd} | head -c 10 >/dev/null`], {
        env: e,
        encoding: 'utf8',
      });
      assertNoStack(r.stderr);
      assert.equal(r.stderr, '', `${cmd} | head: ${r.stderr}`);
      assert.equal(r.status, 0);
    }
  });
});

describe('first contact: restore never destroys work', () => {
  function backedUp() {
    const { home, env } = newUser();
    const e = { ...env, PHOENIX_PASSWORD: 'pw', PHOENIX_REPOSITORY: join(home, 'repo') };
    const src = join(home, 'src');
    mkdirSync(join(src, 'docs'), { recursive: true });
    writeFileSync(join(src, 'docs', 'a.txt'), 'backed up a');
    writeFileSync(join(src, 'docs', 'b.txt'), 'backed up b');
    writeFileSync(join(src, 'same.txt'), 'unchanged');
    assert.equal(cli(e, ['init']).status, 0);
    assert.equal(cli(e, ['backup', src]).status, 0);
    const target = join(home, 'target');
    mkdirSync(join(target, 'docs'), { recursive: true });
    writeFileSync(join(target, 'docs', 'a.txt'), 'newer local work');
    writeFileSync(join(target, 'same.txt'), 'unchanged');
    writeFileSync(join(target, 'docs', 'extra.txt'), 'only here');
    const old = new Date('2020-01-01');
    utimesSync(join(target, 'same.txt'), old, old);
    return { home, e, target };
  }

  it('by default keeps a file whose content differs, names it, says which flag replaces it, and exits 1', () => {
    const { e, target } = backedUp();
    const r = cli(e, ['restore', '--target', target]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /kept: docs\/a\.txt/);
    assert.match(r.stderr, /--overwrite always/);
    assert.equal(readFileSync(join(target, 'docs', 'a.txt'), 'utf8'), 'newer local work');
    assert.equal(readFileSync(join(target, 'docs', 'b.txt'), 'utf8'), 'backed up b');
    assert.equal(readFileSync(join(target, 'docs', 'extra.txt'), 'utf8'), 'only here');
    assert.notEqual(statSync(join(target, 'same.txt')).mtime.getFullYear(), 2020, 'a file with the same content gets its metadata back');
    // Restoring again into what it restored: nothing differs but the kept file.
    const again = cli(e, ['restore', '--target', target, '--overwrite', 'never', '--json']);
    assert.equal(again.status, 0, 'never, when asked for, is not a failure');
    assert.equal(again.json().at(-1)?.kept, 1);
  });

  it('--dry-run lists what would be written, replaced, kept and deleted, and changes nothing', () => {
    const { e, target } = backedUp();
    const r = cli(e, ['restore', '--target', target, '--overwrite', 'always', '--delete', '--dry-run', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const actions = new Map(
      r
        .json()
        .filter((x) => x.action !== undefined)
        .map((x) => [x.path, x.action]),
    );
    assert.equal(actions.get('docs/a.txt'), 'replace');
    assert.equal(actions.get('docs/b.txt'), 'write');
    assert.equal(actions.get('docs/extra.txt'), 'delete');
    assert.equal(readFileSync(join(target, 'docs', 'a.txt'), 'utf8'), 'newer local work');
    assert.ok(!existsSync(join(target, 'docs', 'b.txt')));
    const fresh = join(dirname(target), 'not-yet');
    assert.equal(cli(e, ['restore', '--target', fresh, '--dry-run']).status, 0);
    assert.ok(!existsSync(fresh), 'a dry run creates no target');
  });

  it('--overwrite always and --delete make the target equal to the backup; if-newer keeps newer files', () => {
    const { e, target } = backedUp();
    const newer = cli(e, ['restore', '--target', target, '--overwrite', 'if-newer']);
    assert.equal(newer.status, 0, newer.stderr);
    assert.equal(readFileSync(join(target, 'docs', 'a.txt'), 'utf8'), 'newer local work', 'the local file is newer than the backup');
    const r = cli(e, ['restore', '--target', target, '--overwrite', 'always', '--delete']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(target, 'docs', 'a.txt'), 'utf8'), 'backed up a');
    assert.ok(!existsSync(join(target, 'docs', 'extra.txt')));
    assert.deepEqual(readdirSync(target).sort(), ['docs', 'same.txt']);
  });

  it('--include / --exclude choose what is restored; a --target that is a file is a clear error', () => {
    const { home, e } = backedUp();
    const out = join(home, 'inc');
    assert.equal(cli(e, ['restore', '--target', out, '--include', '*.txt', '--exclude', 'b.txt']).status, 0);
    assert.deepEqual(readdirSync(join(out, 'docs')), ['a.txt']);
    const file = join(home, 'a-file');
    writeFileSync(file, 'mine');
    const r = cli(e, ['restore', '--target', file]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /exists and is not a directory \[PHX_USAGE\]/);
    assert.equal(readFileSync(file, 'utf8'), 'mine');
  });

  it('dump writes a file to stdout, and a directory as a tar stream with names as exact bytes', () => {
    const { home, env } = newUser();
    const e = { ...env, PHOENIX_PASSWORD: 'pw', PHOENIX_REPOSITORY: join(home, 'repo') };
    const src = join(home, 'src');
    mkdirSync(join(src, 'd', 'e'), { recursive: true });
    const raw = Buffer.from(`${src}/d/caf\xe9-${'x'.repeat(120)}`, 'latin1');
    writeFileSync(raw, 'latin1 name');
    writeFileSync(join(src, 'd', 'e', 'big'), Buffer.alloc(3 * 2 ** 20, 7));
    assert.equal(cli(e, ['init']).status, 0);
    assert.equal(cli(e, ['backup', src]).status, 0);
    const file = spawnSync(process.execPath, [PHOENIX, 'dump', 'd/e/big'], { env: e, maxBuffer: 2 ** 26 });
    assert.equal(file.status, 0, String(file.stderr));
    assert.ok(Buffer.compare(file.stdout, Buffer.alloc(3 * 2 ** 20, 7)) === 0);
    const out = join(home, 'untar');
    mkdirSync(out);
    const tar = spawnSync('bash', ['-c', `"${process.execPath}" "${PHOENIX}" dump d | tar -x -C "${out}"`], { env: e, encoding: 'utf8' });
    assert.equal(tar.status, 0, tar.stderr);
    const names = readdirSync(join(out, 'd'), { encoding: 'buffer' })
      .map((n) => n.toString('latin1'))
      .sort();
    assert.deepEqual(names, [`caf\xe9-${'x'.repeat(120)}`, 'e']);
    assert.equal(statSync(join(out, 'd', 'e', 'big')).size, 3 * 2 ** 20);
  });
});

describe('first contact: history follows the file', () => {
  it('versions across a renamed folder, find, diff, exact argv bytes and --path-base64', async () => {
    const work = tempDir('phx-history-');
    after(work.cleanup);
    const src = join(work.path, 'src');
    const repo = join(work.path, 'repo');
    const state = join(work.path, 'state');
    mkdirSync(join(src, 'old', 'inner'), { recursive: true });
    const env = { ...process.env, PHOENIX_PASSWORD: PASSWORD, PHOENIX_REPOSITORY: repo, XDG_STATE_HOME: join(work.path, 'xdg') };
    assert.equal(cli(env, ['init']).status, 0);
    const d = new DaemonProcess({ src, repo, state, args: ['--log-level', 'info'] });
    let t1: string | undefined;
    try {
      await d.ready();
      writeFileSync(join(src, 'old', 'inner', 'notes.txt'), 'one');
      writeFileSync(Buffer.from(`${src}/caf\xe9.txt`, 'latin1'), 'latin1');
      await d.sync(src);
      t1 = new Date().toISOString();
      while (Date.now() <= Date.parse(t1)) await sleep(1); // later changes are later to the millisecond
      writeFileSync(join(src, 'old', 'inner', 'notes.txt'), 'two!');
      await d.sync(src);
      spawnSync('mv', [join(src, 'old'), join(src, 'new')]);
      await d.sync(src);
      writeFileSync(join(src, 'new', 'inner', 'notes.txt'), 'three');
      rmSync(Buffer.from(`${src}/caf\xe9.txt`, 'latin1'));
      await d.sync(src);
      assert.equal(await d.stop(), 0, d.stderr);
    } finally {
      d.child.kill('SIGKILL');
    }
    const v = cli(env, ['versions', 'new/inner/notes.txt', '--json']).json();
    const versions = v.filter((x) => x.event === 'version');
    assert.deepEqual(
      versions.map((x) => x.size),
      [3, 4, 5],
      JSON.stringify(v),
    );
    assert.deepEqual(
      versions.map((x) => x.earlierName ?? false),
      [true, true, false],
    );
    assert.ok(v.some((x) => x.event === 'moved' && x.from === 'old/inner/notes.txt' && x.path === 'new/inner/notes.txt'));
    // Asked by its old name, the history goes forwards to the new one.
    assert.equal(
      cli(env, ['versions', 'old/inner/notes.txt', '--json'])
        .json()
        .filter((x) => x.event === 'version').length,
      3,
    );

    const found = cli(env, ['find', 'notes.*', '--json']).json();
    assert.deepEqual(
      found.map((f) => [f.path, f.to === null]),
      [
        ['old/inner/notes.txt', false],
        ['new/inner/notes.txt', true],
      ],
    );

    const diff = cli(env, ['diff', t1 ?? '', 'now', '--json']).json();
    assert.ok(
      diff.some((x) => x.change === 'moved' && x.from === 'old' && x.path === 'new'),
      JSON.stringify(diff),
    );
    assert.ok(diff.some((x) => x.change === 'removed' && x.pathBase64 === Buffer.from('caf\xe9.txt', 'latin1').toString('base64')));
    assert.ok(!diff.some((x) => x.path === 'new/inner'), 'what moved with its directory is implied');

    // A name that is not UTF-8, from the command line's bytes and from --path-base64.
    const deleted = spawnSync('bash', ['-c', `"${process.execPath}" "${PHOENIX}" versions "$(printf 'caf\\351.txt')"`], {
      env,
      encoding: 'utf8',
    });
    assert.equal(deleted.status, 0, deleted.stderr);
    assert.match(deleted.stdout, /deleted/);
    assert.match(deleted.stderr, /was deleted in commit \d+; to get it back: phoenix restore --at \S+ --target DIR/);
    const b64 = cli(env, ['versions', '--path-base64', Buffer.from('caf\xe9.txt', 'latin1').toString('base64'), '--json']).json();
    assert.deepEqual(
      b64.map((x) => x.event),
      ['version', 'deleted'],
    );
    assert.equal(typeof b64[1]?.restoreAt, 'string');
  });
});

describe('first contact: honest reports', () => {
  it('after a clean stop the durable queue is empty (committed rows leave it)', async () => {
    const work = tempDir('phx-queue-');
    after(work.cleanup);
    const src = join(work.path, 'src');
    const repo = join(work.path, 'repo');
    const state = join(work.path, 'state');
    mkdirSync(src);
    const env = { ...process.env, PHOENIX_PASSWORD: PASSWORD };
    assert.equal(cli(env, ['init', '--repo', repo]).status, 0);
    const d = new DaemonProcess({ src, repo, state });
    try {
      await d.ready();
      // Changes that keep coming while commits are in flight, then stop.
      for (let i = 0; i < 200; i++) {
        writeFileSync(join(src, `f${i % 7}`), `${i}`);
        await sleep(2);
      }
      await d.sync(src);
      // A directory made and removed at once: its removal comes while its creation is committed.
      for (let i = 0; i < 5; i++) {
        mkdirSync(join(src, `d${i}`));
        writeFileSync(join(src, `d${i}`, 'x'), 'x');
        rmSync(join(src, `d${i}`), { recursive: true });
        await sleep(30);
      }
      for (let s = await d.status(); s.pending > 0; s = await d.status()) await sleep(20);
      assert.equal(await d.stop(), 0, d.stderr);
    } finally {
      d.child.kill('SIGKILL');
    }
    const Database = (await import('better-sqlite3')).default;
    const file = readdirSync(state).find((f) => f.endsWith('.sqlite')) as string;
    const db = new Database(join(state, file), { readonly: true });
    const rows = db.prepare('SELECT count(*) AS n FROM queue').get() as { n: number };
    db.close();
    assert.equal(rows.n, 0);
    const again = new DaemonProcess({ src, repo, state });
    try {
      await again.ready();
      assert.equal(await again.stop(), 0);
      assert.doesNotMatch(again.stderr, /replaying the queue/);
    } finally {
      again.child.kill('SIGKILL');
    }
  });

  it('check reports packs no commit names, and plain check and --read-data count the same packs', () => {
    const { home, env } = newUser();
    const e = { ...env, PHOENIX_PASSWORD: 'pw', PHOENIX_REPOSITORY: join(home, 'repo') };
    const src = join(home, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'a'), 'first');
    assert.equal(cli(e, ['init']).status, 0);
    assert.equal(cli(e, ['backup', src]).status, 0);
    writeFileSync(join(src, 'b'), 'second, whose commit is lost');
    assert.equal(cli(e, ['backup', src]).status, 0);
    // As if the daemon was killed after the pack was uploaded and before its commit.
    const journal = join(home, 'repo', 'journal');
    const dir = join(journal, readdirSync(journal)[0] as string);
    rmSync(join(dir, readdirSync(dir).sort().at(-1) as string));
    const plain = cli(e, ['check', '--json']).json()[0] as Record<string, number>;
    const full = cli(e, ['check', '--read-data', '--json']).json()[0] as Record<string, number>;
    assert.equal(plain.unreferencedPacks, 1);
    assert.ok((plain.unreferencedBytes ?? 0) > 0);
    assert.equal(plain.packs, full.packs);
    assert.match(cli(e, ['check']).stdout, /1 packs \(.*\) are named by no commit/);
  });

  it('an unreadable directory is reported as EACCES, not as the watch limit; unreadable files make the stop exit 1', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root, to run the daemon as another user');
    if (!readableAs(65534, PHOENIX, addon)) return t.skip('the checkout is not readable by uid 65534 (it lies below a private directory)');
    const work = tempDir('phx-eacces-');
    after(work.cleanup);
    const src = join(work.path, 'src');
    mkdirSync(join(src, 'private'), { recursive: true });
    writeFileSync(join(src, 'ok.txt'), 'fine');
    writeFileSync(join(src, 'secret.txt'), 'no');
    chownSync(work.path, 65534, 65534);
    for (const p of [src, join(src, 'ok.txt')]) chownSync(p, 65534, 65534);
    spawnSync('chmod', ['000', join(src, 'private'), join(src, 'secret.txt')]);
    const repo = join(work.path, 'repo');
    const state = join(work.path, 'state');
    const env = { ...process.env, PHOENIX_PASSWORD: PASSWORD, HOME: work.path };
    assert.equal(cli(env, ['init', '--repo', repo], { uid: 65534, gid: 65534 }).status, 0);
    const child = spawn(process.execPath, [PHOENIX, 'watch', src, '--repo', repo, '--state', state], {
      env,
      uid: 65534,
      gid: 65534,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    let status;
    for (const deadline = Date.now() + 60_000; ; await sleep(50)) {
      const s = await queryStatus(state).catch(() => undefined);
      if (s !== undefined && s.state !== 'scanning' && s.pending === 0 && s.lastCommit !== null) {
        status = s;
        break;
      }
      assert.ok(Date.now() < deadline && child.exitCode === null, stderr);
    }
    // The file that could not be read: its errno code and what to do, in status --json.
    const unreadable = status.errors.find((e) => e.path?.endsWith('secret.txt'));
    assert.ok(
      unreadable !== undefined && unreadable.code === 'EACCES' && /read access/.test(unreadable.hint ?? ''),
      JSON.stringify(status.errors),
    );
    child.kill('SIGTERM');
    assert.equal(await exited, 1, stderr);
    assert.doesNotMatch(stderr, /watch limit/);
    assert.match(stderr, /private.*(EACCES|permission denied)/);
    assert.match(stderr, /could not be backed up.*secret\.txt/);
  });
});

describe('first contact: the first password', () => {
  const pty = (env: NodeJS.ProcessEnv, script: Array<[string, string]>, ...args: string[]) => {
    const r = spawnSync(
      'python3',
      [join(CHECKOUT, 'test', 'fixtures', 'terminal.py'), JSON.stringify(script), process.execPath, PHOENIX, ...args],
      { env, encoding: 'utf8', timeout: 120_000 },
    );
    assertNoStack(r.stdout);
    return { status: r.status, out: r.stdout };
  };

  it('on a terminal: asked twice, again after a mismatch, a short one warned about, never asked a third time', (t) => {
    if (spawnSync('python3', ['--version']).status !== 0) return t.skip('needs python3 for a pseudo-terminal');
    const { home, env } = newUser();
    const src = join(home, 'Documents');
    mkdirSync(src);
    writeFileSync(join(src, 'a'), 'a');
    const r = pty(
      env,
      [
        ['new repository password: ', 'x!y\r'],
        ['the same again: ', 'x!z\r'],
        ['do not match', ''],
        ['new repository password: ', 'x!y\r'],
        ['the same again: ', 'x!y\r'],
        ['backed up \\d+ changes', '\x03'],
      ],
      'watch',
      src,
    );
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /only 3 characters/);
    assert.match(r.out, /not stored anywhere[\s\S]*PHOENIX_PASSWORD_FILE/);
    assert.equal(
      r.out.match(/new repository password: /g)?.length,
      2,
      `asked twice, and once more after the mismatch, nothing else:\n${r.out}`,
    );
    assert.equal(r.out.match(/password: /g)?.length, 2, 'not asked a third time to open what was just created');
    assert.doesNotMatch(r.out, /x!/, 'what is typed is not echoed');
    assert.ok(!existsSync(join(home, '.config', 'phoenix', 'password')), 'a chosen password is not written anywhere');
    // The next command asks once, on the terminal.
    const log = pty(env, [['repository password: ', 'x!y\r']], 'log');
    assert.equal(log.status, 0, log.out);
    assert.match(log.out, /\s1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d\d:\d\d/, 'on a terminal, local time with its offset');
  });
});
