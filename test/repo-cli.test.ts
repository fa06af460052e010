import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PHOENIX, tempDir } from './helpers.js';
import { startS3rver } from './servers.js';

function phoenix(env: Record<string, string>, ...args: string[]) {
  const r = spawnSync(process.execPath, [PHOENIX, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  return {
    status: r.status,
    stdout: r.stdout,
    stderr: r.stderr,
    json: () =>
      r.stdout
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('phoenix init / backup / log / ls / versions / restore / check', () => {
  it('works end to end on a local repository, as a user runs it', async () => {
    const work = tempDir('phx-cli-');
    const src = join(work.path, 'src');
    const repo = join(work.path, 'repo');
    mkdirSync(join(src, 'empty'), { recursive: true });
    writeFileSync(join(src, 'notes.txt'), 'v1');
    symlinkSync('notes.txt', join(src, 'link'));
    writeFileSync(Buffer.from(`${src}/raw-\xff`, 'latin1'), 'bytes');
    const env = { PHOENIX_PASSWORD: 'pw', PHOENIX_REPOSITORY: repo, XDG_STATE_HOME: join(work.path, 'state') };

    assert.equal(phoenix(env, 'init').status, 0);
    const again = phoenix(env, 'init');
    assert.equal(again.status, 1);
    assert.match(again.stderr, /already holds a Phoenix repository \[PHX_REPO_EXISTS\]/);

    const b1 = phoenix(env, 'backup', src, '--json');
    assert.equal(b1.status, 0, b1.stderr);
    assert.equal(b1.json()[0]?.seq, 1);
    const t1 = new Date().toISOString();
    // Everything after this point must be later than t1, to the millisecond.
    while (Date.now() <= Date.parse(t1)) await new Promise((r) => setImmediate(r));
    const none = phoenix(env, 'backup', src, '--json');
    assert.equal(none.json()[0]?.seq, null, 'no changes: no commit');
    appendFileSync(join(src, 'notes.txt'), ' and v2');
    rmSync(join(src, 'empty'), { recursive: true });
    assert.equal(phoenix(env, 'backup', src).status, 0);

    const log = phoenix(env, 'log', '--json').json();
    assert.deepEqual(
      log.map((c) => c.seq),
      [1, 2],
    );
    assert.equal(log[1]?.deletes, 1);

    const ls1 = phoenix(env, 'ls', '--at', t1, '--json').json();
    assert.deepEqual(ls1.map((e) => e.path).sort(), ['empty', 'link', 'notes.txt', 'raw-\ufffd']);
    assert.equal(ls1.find((e) => e.path === 'raw-\ufffd')?.pathBase64, Buffer.from('raw-\xff', 'latin1').toString('base64'));
    assert.equal(ls1.find((e) => e.path === 'link')?.target, 'notes.txt');

    const versions = phoenix(env, 'versions', 'notes.txt', '--json').json();
    assert.deepEqual(
      versions.map((v) => [v.seq, v.event, v.size]),
      [
        [1, 'version', 2],
        [2, 'version', 9],
      ],
    );
    const gone = phoenix(env, 'versions', 'empty', '--json').json();
    assert.deepEqual(
      gone.map((v) => v.event),
      ['version', 'deleted'],
    );

    const out1 = join(work.path, 'out1');
    assert.equal(phoenix(env, 'restore', '--target', out1, '--at', t1).status, 0);
    assert.equal(readFileSync(join(out1, 'notes.txt'), 'utf8'), 'v1');
    assert.equal(readFileSync(Buffer.from(`${out1}/raw-\xff`, 'latin1'), 'utf8'), 'bytes');
    const out2 = join(work.path, 'out2');
    assert.equal(phoenix(env, 'restore', '--target', out2, 'notes.txt').status, 0);
    assert.equal(readFileSync(join(out2, 'notes.txt'), 'utf8'), 'v1 and v2');

    const check = phoenix(env, 'check', '--read-data', '--json');
    assert.equal(check.status, 0, check.stderr);
    assert.equal(check.json()[0]?.ok, true);

    const wrong = phoenix({ ...env, PHOENIX_PASSWORD: 'nope' }, 'ls');
    assert.equal(wrong.status, 1);
    assert.match(wrong.stderr, /wrong password .*\[PHX_WRONG_PASSWORD\]/);
    const noRepo = phoenix({ ...env, PHOENIX_REPOSITORY: join(work.path, 'nothing') }, 'log');
    assert.equal(noRepo.status, 1);
    assert.match(noRepo.stderr, /there is no Phoenix repository at .*\n.*hint: create one with: phoenix init/);
    assert.equal(phoenix({ ...env, PHOENIX_REPOSITORY: '' }, 'log').status, 2);
    assert.match(phoenix({ ...env, PHOENIX_REPOSITORY: 'ftp://x/y' }, 'log').stderr, /scheme ftp: is not supported .*\[PHX_BAD_URL\]/);
    assert.match(phoenix(env, 'ls', '--at', 'yesterday-ish').stderr, /cannot read the time/);
    work.cleanup();
  });

  it('backs up to and restores from an S3 server', async () => {
    const server = await startS3rver();
    const work = tempDir('phx-cli-s3-');
    try {
      const src = join(work.path, 'src');
      mkdirSync(src);
      writeFileSync(join(src, 'f'), 'on s3');
      const env = {
        PHOENIX_PASSWORD: 'pw',
        PHOENIX_REPOSITORY: `s3://${server.bucket}/cli?endpoint=${server.endpoint}`,
        XDG_STATE_HOME: join(work.path, 'state'),
        AWS_ACCESS_KEY_ID: 'S3RVER',
        AWS_SECRET_ACCESS_KEY: 'S3RVER',
      };
      assert.equal(phoenix(env, 'init').status, 0);
      assert.equal(phoenix(env, 'backup', src).status, 0);
      const out = join(work.path, 'out');
      assert.equal(phoenix(env, 'restore', '--target', out).status, 0);
      assert.equal(readFileSync(join(out, 'f'), 'utf8'), 'on s3');
      const missing = phoenix({ ...env, PHOENIX_REPOSITORY: `s3://no-bucket/x?endpoint=${server.endpoint}` }, 'init');
      assert.equal(missing.status, 1);
      assert.match(missing.stderr, /bucket no-bucket does not exist/);
    } finally {
      await server.stop();
      work.cleanup();
    }
  });
});

describe('phoenix policy / pin / forget / prune', () => {
  it('sets and shows a policy, pins, thins the history, prunes, and restores what was kept', async () => {
    const work = tempDir('phx-retention-cli-');
    const src = join(work.path, 'src');
    mkdirSync(src);
    const env = { PHOENIX_PASSWORD: 'pw', PHOENIX_REPOSITORY: join(work.path, 'repo'), XDG_STATE_HOME: join(work.path, 'state') };
    try {
      const init = phoenix(env, 'init', '--json').json()[0] as { retention: { policy: string } };
      assert.equal(init.retention.policy, 'all:24h hourly:7d daily:90d weekly:2y monthly:forever');
      const bad = phoenix(env, 'policy', 'set', 'daily:7d hourly:30d');
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /"hourly:30d" comes after "daily:7d" but its interval is not longer \[PHX_USAGE\]/);
      const times: string[] = [];
      for (let i = 0; i < 4; i++) {
        writeFileSync(join(src, 'f'), `version ${i} `.repeat(20_000 + i));
        assert.equal(phoenix(env, 'backup', src).status, 0);
        times.push((phoenix(env, 'log', '--json').json().at(-1) as { time: string }).time);
      }
      assert.equal(phoenix(env, 'pin', '--at', times[1] as string, '--note', 'good copy').status, 0);
      const log = phoenix(env, 'log', '--json').json();
      assert.deepEqual(
        log.map((c) => c.pinned),
        [false, true, false, false],
      );
      assert.equal(log[1]?.note, 'good copy');
      // Boundaries every 1000 days since the epoch: none falls within this test.
      assert.equal(phoenix(env, 'policy', 'set', '1000d:2000d', '--min-age', '0').status, 0);
      assert.deepEqual(
        phoenix(env, 'policy', 'show', '--json')
          .json()
          .map((p) => p.policy),
        ['1000d:2000d', '1000d:2000d'],
      );
      const dry = phoenix(env, 'forget', '--dry-run', '--json').json();
      assert.deepEqual(
        dry.map((d) => d.keep),
        [false, true, false, true],
      );
      assert.deepEqual(dry[1]?.keptBy, [`pin@${times[1]}`]);
      assert.equal(phoenix(env, 'log', '--json').json().length, 4, 'a dry run changes nothing');
      const forget = phoenix(env, 'forget');
      assert.equal(forget.status, 0, forget.stderr);
      assert.match(forget.stdout, /keeps 2 of 4 instants, dropped 2/);
      assert.deepEqual(
        phoenix(env, 'log', '--json')
          .json()
          .map((c) => c.seq),
        [2, 4],
      );
      const prune = phoenix(env, 'prune', '--min-pack-age', '0', '--json');
      assert.equal(prune.status, 0, prune.stderr);
      const census = prune.json()[0] as { packs: { unused: number; used: number } };
      assert.deepEqual([census.packs.used, census.packs.unused], [2, 2]);
      const check = phoenix(env, 'check', '--read-data');
      assert.equal(check.status, 0, check.stdout + check.stderr);
      // Inside the thinned range, the newest kept instant before it.
      const r = phoenix(env, 'restore', '--at', times[2] as string, '--target', join(work.path, 'out'), '--json');
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.json().at(-1)?.time, times[1]);
      assert.equal(readFileSync(join(work.path, 'out', 'f'), 'utf8'), `version 1 `.repeat(20_001));
      assert.equal(phoenix(env, 'unpin', '--at', times[1] as string).status, 0);
      assert.equal(phoenix(env, 'unpin', '--at', times[1] as string).status, 1);
    } finally {
      work.cleanup();
    }
  });
});
