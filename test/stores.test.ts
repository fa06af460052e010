import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DaemonProcess, isExcluded, phoenix, snapshot, Workload, WORKLOAD_EXCLUDES } from './daemon-helpers.js';
import { tempDir, treeDiff } from './helpers.js';
import { startApacheWebDav, startAzurite, startRcloneWebDav, startS3rver, startSshd } from './servers.js';

const excludeArgs = WORKLOAD_EXCLUDES.flatMap((p) => ['--exclude', p]);

/**
 * `phoenix init`, a daemon through a short live workload, then a restore that must equal the
 * source and a `check --read-data`: the whole product on one store. `env` holds the store's
 * credentials; it is set in this process too, where the test reads the repository itself.
 */
async function daemonRoundTrip(url: string, env: Record<string, string>, seed: number): Promise<void> {
  Object.assign(process.env, env);
  const work = tempDir('phx-store-');
  after(work.cleanup);
  const src = join(work.path, 'src');
  const state = join(work.path, 'state');
  mkdirSync(src);
  const init = phoenix(env, 'init', '--repo', url);
  assert.equal(init.status, 0, init.stderr);
  const w = new Workload(src, seed);
  await w.run(100);
  const d = new DaemonProcess({ src, repo: url, state, args: excludeArgs, env });
  try {
    await d.ready();
    await w.run(300);
    await d.sync(src);
    const snap = snapshot(src, isExcluded);
    assert.equal(await d.stop(), 0, d.stderr.slice(-3000));
    const target = join(work.path, 'restored');
    const r = phoenix(env, 'restore', '--repo', url, '--source', src, '--target', target);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(treeDiff(snapshot(target), snap), []);
    const check = phoenix(env, 'check', '--repo', url, '--read-data');
    assert.equal(check.status, 0, check.stdout + check.stderr);
  } finally {
    d.child.kill('SIGKILL');
  }
}

describe('phoenix watch on every store: a live workload, then restore equals the source', () => {
  it('azure:// (Azurite), credentials from AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY', async () => {
    const server = await startAzurite();
    after(() => server.stop());
    const { AZURITE_ACCOUNT, AZURITE_KEY } = await import('./servers.js');
    await daemonRoundTrip(
      `azure://${server.container}/daemon?endpoint=${encodeURIComponent(server.endpoint)}`,
      { AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_KEY: AZURITE_KEY },
      11,
    );
  });

  it('sftp:// (OpenSSH sshd), the key named by PHOENIX_SFTP_KEY, the host key from known_hosts', async (t) => {
    const s = await startSshd();
    if (typeof s === 'string') return t.skip(s);
    after(() => s.stop());
    await daemonRoundTrip(
      `sftp://root@127.0.0.1:${s.port}${s.dir}/daemon-repo?known-hosts=${s.knownHosts}`,
      { PHOENIX_SFTP_KEY: s.keyFile },
      13,
    );
  });

  it('webdav:// (rclone serve webdav), credentials in the URL', async (t) => {
    const s = await startRcloneWebDav();
    if (typeof s === 'string') return t.skip(s);
    after(() => s.stop());
    await daemonRoundTrip(s.url, {}, 14);
  });

  it('webdav:// (Apache mod_dav), credentials from PHOENIX_WEBDAV_USER and PHOENIX_WEBDAV_PASSWORD', async (t) => {
    const s = await startApacheWebDav();
    if (typeof s === 'string') return t.skip(s);
    after(() => s.stop());
    await daemonRoundTrip(s.bare, { PHOENIX_WEBDAV_USER: s.user, PHOENIX_WEBDAV_PASSWORD: s.password }, 15);
  });

  it('gs:// (through the S3-compatible API; s3rver stands in for storage.googleapis.com), keys from GS_ACCESS_KEY_ID', async () => {
    const server = await startS3rver();
    after(() => server.stop());
    await daemonRoundTrip(
      `gs://${server.bucket}/daemon?endpoint=${encodeURIComponent(server.endpoint)}`,
      { GS_ACCESS_KEY_ID: 'S3RVER', GS_SECRET_ACCESS_KEY: 'S3RVER', AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '' },
      12,
    );
  });
});
