import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LocalBackend } from '../src/backend/local.js';
import { MemoryBackend } from '../src/backend/memory.js';
import { PhoenixError } from '../src/errors.js';
import { Repository, type JournalChange } from '../src/repo/index.js';
import { compactJournal } from '../src/retention/compact.js';
import { DaemonProcess, PASSWORD, phoenix, snapshot } from './daemon-helpers.js';
import { PHOENIX, tempDir, treeDiff } from './helpers.js';

const code = (e: unknown): string | undefined => (e instanceof PhoenixError ? e.code : undefined);
const openWith = (b: LocalBackend | MemoryBackend, pw: string): Promise<Repository> => Repository.open(b, async () => pw);
const stats = { files: 1, dirs: 0, deleted: 0, bytesUploaded: 0, bytesTotal: 0 };
const change = (i: number): JournalChange => ({ op: 'delete', path: `gone-${i}` });

describe('several keys per repository', () => {
  it('add a key, open with either password, remove the first: it no longer opens, and the data reads the same', async () => {
    const b = new MemoryBackend();
    const first = await Repository.init(b, { password: 'first', kdfN: 1024 });
    await first.writeCommit({ source: 's', seq: 1, timeMs: 1000, packs: [], stats, changes: [change(1)] });
    const original = first.keyId as string;
    assert.deepEqual(
      (await first.keyList()).map((k) => [k.id, k.current, k.createdMs]),
      [[original, true, null]],
    );
    await assert.rejects(first.removeKey(original), (e) => code(e) === 'PHX_USAGE', 'the key in use is not removed');

    const added = await first.addKey('second', { kdfN: 1024 });
    const config = JSON.parse((await b.get('config')).toString()) as Record<string, unknown>;
    assert.equal(config.phoenix, 4, 'the config says format 4 once keys are objects');
    assert.equal(config.masterKey, undefined, 'the config holds no key any more');
    assert.deepEqual((await first.keyList()).map((k) => k.id).sort(), [original, added].sort());

    const second = await openWith(b, 'second');
    assert.equal(second.keyId, added);
    assert.deepEqual(
      (await second.commitList('s')).map((c) => c.seq),
      [1],
    );
    assert.equal((await openWith(b, 'first')).keyId, original);
    await assert.rejects(openWith(b, 'third'), (e) => code(e) === 'PHX_WRONG_PASSWORD' && /none of the 2 keys/.test(String(e)));

    assert.equal(await second.removeKey(original.slice(0, 6)), original, 'a unique prefix names a key');
    await assert.rejects(openWith(b, 'first'), (e) => code(e) === 'PHX_WRONG_PASSWORD');
    await assert.rejects(second.removeKey(added), (e) => code(e) === 'PHX_USAGE', 'the last key stays');
    await assert.rejects(second.removeKey('nope'), (e) => code(e) === 'PHX_USAGE' && /no key "nope"/.test(String(e)));

    // The process that opened with the removed key goes on writing: it holds the master key.
    await first.writeCommit({ source: 's', seq: 2, timeMs: 2000, packs: [], stats, changes: [change(2)] });
    assert.deepEqual(
      (await (await openWith(b, 'second')).commitList('s')).map((c) => c.seq),
      [1, 2],
    );
  });

  it('a format upgrade by a process that opened before the key moved does not bring the removed key back', async () => {
    const b = new MemoryBackend();
    const old = await Repository.init(b, { password: 'old', kdfN: 1024 });
    for (let seq = 1; seq <= 12; seq++) {
      await old.writeCommit({ source: 's', seq, timeMs: seq * 10_000, packs: [], stats, changes: [change(seq)] });
    }
    const other = await openWith(b, 'old');
    await other.addKey('new', { kdfN: 1024 });
    await (await openWith(b, 'new')).removeKey(old.keyId as string);
    assert.equal(old.config.phoenix, 2, 'the early process still thinks the repository is of format 2');
    // Its first segment raises the format to 3: from the stored config, not its own copy.
    assert.ok((await compactJournal(old, 's', { olderThanMs: 0, spanMs: 60_000 })).segments > 0);
    const config = JSON.parse((await b.get('config')).toString()) as Record<string, unknown>;
    assert.equal(config.phoenix, 4);
    assert.equal(config.masterKey, undefined);
    await assert.rejects(openWith(b, 'old'), (e) => code(e) === 'PHX_WRONG_PASSWORD');
    assert.deepEqual(
      (await (await openWith(b, 'new')).commitList('s')).map((c) => c.seq),
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
  });

  it('a damaged or foreign key object is named, and never opens the repository', async () => {
    const b = new MemoryBackend();
    const repo = await Repository.init(b, { password: 'pw', kdfN: 1024 });
    const id = await repo.addKey('other', { kdfN: 1024 });
    // A key object sealed for another repository's master key under a password we know.
    const foreign = await Repository.init(new MemoryBackend(), { password: 'x', kdfN: 1024 });
    const fb = foreign.backend as MemoryBackend;
    const fid = await foreign.addKey('mine', { kdfN: 1024 });
    await b.put(`keys/${fid}`, await fb.get(`keys/${fid}`));
    await assert.rejects(openWith(b, 'mine'), (e) => code(e) === 'PHX_CORRUPT' && /does not belong to this repository/.test(String(e)));
    await b.put(`keys/${id}`, Buffer.from('{"v": 1'));
    await assert.rejects(openWith(b, 'other'), (e) => code(e) === 'PHX_WRONG_PASSWORD' && /damaged/.test(String(e)));
    assert.ok((await openWith(b, 'pw')).keyId !== undefined, 'the intact key still opens it');
  });

  it('an unencrypted repository has no keys: a clear error', async () => {
    const repo = await Repository.init(new MemoryBackend(), { insecureNoEncryption: true });
    await assert.rejects(repo.keyList(), (e) => code(e) === 'PHX_USAGE' && /not encrypted/.test(String(e)));
  });
});

describe('phoenix key (CLI)', () => {
  it('list, add, remove and passwd; two key adds at once from two processes keep both', async () => {
    const work = tempDir('phx-keys-');
    after(work.cleanup);
    const repo = join(work.path, 'repo');
    const env = { PHOENIX_REPOSITORY: repo, XDG_STATE_HOME: join(work.path, 'state') };
    assert.equal(phoenix(env, 'init').status, 0);
    const list = (pw: string): Array<{ id: string; current: boolean; user: string; created: string | null }> => {
      const r = phoenix({ ...env, PHOENIX_PASSWORD: pw }, 'key', 'list', '--json');
      assert.equal(r.status, 0, r.stderr);
      return r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { id: string; current: boolean; user: string; created: string | null });
    };
    const [initial] = list(PASSWORD);
    assert.ok(initial !== undefined && initial.current && initial.created === null);

    // Two processes add a key at the same moment (both also move the init key out of config).
    const files = ['a', 'b'].map((n) => {
      const f = join(work.path, `pw-${n}`);
      writeFileSync(f, `password ${n}\n`);
      return f;
    });
    const runs = files.map(
      (f) =>
        new Promise<number | null>((resolve) => {
          const c = spawn(process.execPath, [PHOENIX, 'key', 'add', '--new-password-file', f], {
            env: { ...process.env, ...env, PHOENIX_PASSWORD: PASSWORD },
            stdio: 'ignore',
          });
          c.on('exit', resolve);
        }),
    );
    assert.deepEqual(await Promise.all(runs), [0, 0]);
    const all = list('password a');
    assert.equal(all.length, 3, JSON.stringify(all));
    assert.equal(all.filter((k) => k.current).length, 1);
    assert.equal(list('password b').length, 3);

    const removed = phoenix({ ...env, PHOENIX_PASSWORD: 'password a' }, 'key', 'remove', initial.id);
    assert.equal(removed.status, 0, removed.stderr);
    const wrong = phoenix(env, 'log');
    assert.equal(wrong.status, 1);
    assert.match(wrong.stderr, /wrong password .*\[PHX_WRONG_PASSWORD\]/);
    assert.doesNotMatch(wrong.stderr, /\n\s+at /, 'no stack trace');

    const newFile = join(work.path, 'pw-c');
    writeFileSync(newFile, 'password c');
    const passwd = phoenix({ ...env, PHOENIX_PASSWORD: 'password b' }, 'key', 'passwd', '--new-password-file', newFile, '--json');
    assert.equal(passwd.status, 0, passwd.stderr);
    assert.equal(phoenix({ ...env, PHOENIX_PASSWORD: 'password b' }, 'log').status, 1, 'the old password is gone');
    assert.equal(list('password c').length, 2);
    const noNew = phoenix({ ...env, PHOENIX_PASSWORD: 'password c' }, 'key', 'add');
    assert.equal(noNew.status, 1);
    assert.match(noNew.stderr, /no new password was given.*\n.*--new-password-file/);
  });

  it('a running daemon keeps committing while its key is replaced, and restores with the new password', async () => {
    const work = tempDir('phx-keys-daemon-');
    after(work.cleanup);
    const src = join(work.path, 'src');
    const repo = join(work.path, 'repo');
    const state = join(work.path, 'state');
    mkdirSync(src);
    assert.equal(phoenix({}, 'init', '--repo', repo).status, 0);
    writeFileSync(join(src, 'before.txt'), 'before');
    const d = new DaemonProcess({ src, repo, state });
    try {
      await d.ready();
      await d.sync(src);
      const pwFile = join(work.path, 'new-pw');
      writeFileSync(pwFile, 'a new password');
      const r = phoenix({}, 'key', 'passwd', '--repo', repo, '--new-password-file', pwFile);
      assert.equal(r.status, 0, r.stderr);
      const env = { PHOENIX_PASSWORD: 'a new password' };
      const commits = (): number => phoenix(env, 'log', '--repo', repo, '--json').stdout.trim().split('\n').filter(Boolean).length;
      const had = commits();
      for (let i = 0; i < 20; i++) writeFileSync(join(src, `after-${i}.txt`), `after ${i}`);
      for (let tries = 0; ; tries++) {
        const s = await d.status();
        if (s.pending === 0 && commits() > had) {
          const target = join(work.path, 'restored');
          const restore = phoenix(env, 'restore', '--repo', repo, '--source', src, '--target', target);
          assert.equal(restore.status, 0, restore.stderr);
          const diff = treeDiff(snapshot(target), snapshot(src));
          if (diff.length === 0) break;
          if (tries > 600) assert.deepEqual(diff, []);
        }
        assert.ok(tries < 600, `no commit after the key changed:\n${d.stderr.slice(-2000)}`);
        await sleep(100);
      }
      assert.equal(await d.stop(), 0, d.stderr.slice(-3000));
      assert.ok(!/PHX_WRONG_PASSWORD/.test(d.stderr));
      assert.equal(readFileSync(join(src, 'before.txt'), 'utf8'), 'before');
    } finally {
      d.child.kill('SIGKILL');
    }
  });
});
