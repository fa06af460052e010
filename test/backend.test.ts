import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isTransient } from '../src/backend/backend.js';
import { LocalBackend } from '../src/backend/local.js';
import { MemoryBackend } from '../src/backend/memory.js';
import { parseUrl } from '../src/backend/open.js';
import { S3Backend } from '../src/backend/s3.js';
import { FaultyBackend, LimitBackend, RetryBackend } from '../src/backend/wrappers.js';
import { PhoenixError } from '../src/errors.js';
import { backendConformance } from './backend-suite.js';
import { tempDir } from './helpers.js';
import {
  AZURITE_ACCOUNT,
  AZURITE_KEY,
  startApacheWebDav,
  startAzurite,
  startRcloneWebDav,
  startS3rver,
  startSshd,
  startSwift,
  type SshServer,
  type WebDavServer,
} from './servers.js';
import { SftpBackend } from '../src/backend/sftp.js';
import { WebDavBackend } from '../src/backend/webdav.js';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AzureBackend } from '../src/backend/azure.js';

backendConformance('memory', async () => ({ backend: new MemoryBackend() }));

backendConformance('local directory', async () => {
  const dir = tempDir('phx-local-');
  return { backend: new LocalBackend(dir.path), cleanup: async () => dir.cleanup() };
});

backendConformance('S3 (s3rver)', async () => {
  const server = await startS3rver();
  const threshold = 6 * 2 ** 20;
  const backend = new S3Backend({
    bucket: server.bucket,
    prefix: 'suite',
    endpoint: server.endpoint,
    multipartThreshold: threshold,
    partSize: 5 * 2 ** 20,
  });
  return { backend, multipartThreshold: threshold, cleanup: () => server.stop() };
});

backendConformance('S3 (OpenStack Swift s3api)', async () => {
  const server = await startSwift();
  if (typeof server === 'string') {
    console.log(`\n*** ${server} ***\n`);
    return server;
  }
  const threshold = 6 * 2 ** 20;
  const backend = new S3Backend({
    bucket: server.bucket,
    prefix: 'suite',
    endpoint: server.endpoint,
    credentials: server.credentials,
    multipartThreshold: threshold,
    partSize: 5 * 2 ** 20,
  });
  return { backend, multipartThreshold: threshold, cleanup: () => server.stop() };
});

backendConformance('Azure Blob (Azurite)', async () => {
  const server = await startAzurite();
  const threshold = 4 * 2 ** 20;
  const backend = new AzureBackend({
    container: server.container,
    prefix: 'suite',
    endpoint: server.endpoint,
    credentials: { account: AZURITE_ACCOUNT, key: AZURITE_KEY },
    singleShotLimit: threshold,
    blockSize: 2 ** 20,
  });
  return { backend, multipartThreshold: threshold, cleanup: () => server.stop() };
});

/** An sshd for every SFTP test of this file (started once). */
let sshd: Promise<SshServer | string> | undefined;
const sshServer = (): Promise<SshServer | string> => (sshd ??= startSshd());
after(async () => {
  const s = await sshd;
  if (typeof s === 'object') await s.stop();
});
const sftpUrl = (s: SshServer, user: string, path: string, query = `key=${s.keyFile}&known-hosts=${s.knownHosts}`): string =>
  `sftp://${user}@${s.host}:${s.port}${path}?${query}`;

backendConformance('SFTP (OpenSSH sshd, as root)', async () => {
  const s = await sshServer();
  if (typeof s === 'string') return s;
  return { backend: parseUrl(sftpUrl(s, 'root', `${s.dir}/root-repo`)) };
});

backendConformance('SFTP (OpenSSH sshd, as the unprivileged user nobody)', async () => {
  const s = await sshServer();
  if (typeof s === 'string') return s;
  const dir = `${s.dir}/nobody-repo`;
  mkdirSync(dir);
  spawnSync('chown', ['nobody', dir]);
  return { backend: parseUrl(sftpUrl(s, 'nobody', dir)) };
});

const webDav = (name: string, start: () => Promise<WebDavServer | string>): void =>
  backendConformance(`WebDAV (${name})`, async () => {
    const s = await start();
    if (typeof s === 'string') return s;
    return { backend: parseUrl(s.url), cleanup: () => s.stop() };
  });
webDav('rclone serve webdav', startRcloneWebDav);
webDav('Apache mod_dav', startApacheWebDav);

backendConformance('retry(limit(faulty(memory))) with transient faults', async () => {
  const faulty = new FaultyBackend(new MemoryBackend());
  faulty.add({ kind: 'error-before', times: 40 }).add({ op: 'put', kind: 'error-after', times: 10 });
  return { backend: new RetryBackend(new LimitBackend(faulty, 4), { baseDelayMs: 1, maxDelayMs: 5, attempts: 100 }) };
});

describe('local backend', () => {
  it('a large read into a buffer of the caller comes from the disk (O_DIRECT), not through the page cache', async (t) => {
    const dir = tempDir('phx-direct-');
    try {
      const file = join(dir.path, 'obj');
      const data = randomBytes(8 * 2 ** 20 + 5);
      writeFileSync(file, data); // in the page cache now (a put would drop it from there)
      try {
        closeSync(openSync(file, constants.O_RDONLY | constants.O_DIRECT));
      } catch {
        t.skip('this file system refuses O_DIRECT: reads go through the page cache');
        return;
      }
      const fromDisk = (): number => Number(/^read_bytes: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1]);
      const b = new LocalBackend(dir.path);
      const before = fromDisk();
      const got = await b.get('obj', { offset: 3, length: 8 * 2 ** 20, into: Buffer.alloc(8 * 2 ** 20 + 16 * 1024) });
      assert.ok(got.equals(data.subarray(3, 3 + 8 * 2 ** 20)));
      // A cached read would come from memory: read_bytes counts what came from the disk.
      assert.ok(fromDisk() - before >= 8 * 2 ** 20, `read from the disk: ${fromDisk() - before} bytes`);
      // Without room to align, or small: through the page cache, as before.
      const again = fromDisk();
      assert.ok((await b.get('obj', { offset: 0, length: 4096, into: Buffer.alloc(65536) })).equals(data.subarray(0, 4096)));
      // (the large one drops the file from the cache once read: last)
      assert.ok((await b.get('obj', { offset: 3, length: 2 ** 20, into: Buffer.alloc(2 ** 20) })).equals(data.subarray(3, 3 + 2 ** 20)));
      assert.equal(fromDisk() - again, 0);
    } finally {
      dir.cleanup();
    }
  });
});

describe('backend wrappers and URLs', () => {
  it('retry gives up on permanent errors at once and on transient ones after the attempts', async () => {
    const faulty = new FaultyBackend(new MemoryBackend()).add({ kind: 'error-before' });
    const retry = new RetryBackend(faulty, { attempts: 3, baseDelayMs: 1 });
    await assert.rejects(retry.get('k'), (e) => isTransient(e));
    assert.equal(faulty.calls, 3);
    const plain = new RetryBackend(new MemoryBackend(), { attempts: 3, baseDelayMs: 1 });
    await assert.rejects(plain.get('missing'), (e) => e instanceof PhoenixError && e.code === 'PHX_NOT_FOUND');
  });

  it('the limit holds concurrency to its bound', async () => {
    let active = 0;
    let peak = 0;
    const mem = new MemoryBackend();
    const tracking = Object.assign(Object.create(mem) as MemoryBackend, {
      put: async (k: string, d: Uint8Array) => {
        peak = Math.max(peak, ++active);
        await new Promise((r) => setTimeout(r, 5));
        await mem.put(k, d);
        active--;
      },
    });
    const counting = new LimitBackend(tracking, 3);
    await Promise.all(Array.from({ length: 20 }, (_, i) => counting.put(`k${i}`, Buffer.from('x'))));
    assert.equal(peak, 3);
  });

  it('repository URLs: local paths, s3://, and clear errors for the rest', () => {
    assert.ok(parseUrl('/tmp/repo') instanceof LocalBackend);
    assert.ok(parseUrl('local:relative/repo') instanceof LocalBackend);
    const s3 = parseUrl('s3://bucket/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1');
    assert.ok(s3 instanceof S3Backend);
    assert.equal(s3.location, 's3://bucket/some/prefix');
    const bad = (url: string, re: RegExp): void =>
      assert.throws(
        () => parseUrl(url),
        (e) => e instanceof PhoenixError && e.code === 'PHX_BAD_URL' && re.test(e.message),
      );
    const az = parseUrl('azure://my-container/some/prefix?endpoint=http://127.0.0.1:10000/devstoreaccount1');
    assert.ok(az instanceof AzureBackend);
    assert.equal(az.location, 'azure://my-container/some/prefix');
    assert.ok(az.capabilities.createOnly, 'Azure enforces If-None-Match: *');
    const gs = parseUrl('gs://bucket/p');
    assert.ok(gs instanceof S3Backend);
    assert.equal(gs.location, 'gs://bucket/p');
    bad('azure://Not_Valid/x', /not a valid container name/);
    bad('azure://c0ntainer/x?region=x', /unknown option region \(known: endpoint\)/);
    bad('gs://b/x?path-style=true', /unknown option path-style/);
    const sftp = parseUrl('sftp://me@example.org:2222//srv/backup?key=/k');
    assert.ok(sftp instanceof SftpBackend);
    assert.equal(sftp.location, 'sftp://me@example.org:2222/srv/backup', "restic's //absolute is absolute");
    assert.equal(parseUrl('sftp://me@example.org/srv/backup').location, 'sftp://me@example.org/srv/backup');
    assert.equal(parseUrl('sftp://me@example.org/~/backup').location, 'sftp://me@example.org/~/backup');
    bad('sftp://me:secret@example.org/x', /holds a password/);
    bad('sftp://example.org/x?host-key=MD5:aa', /host-key must be a SHA-256 fingerprint/);
    bad('sftp://example.org/', /path is missing/);
    const dav = parseUrl('webdavs://user:secret@cloud.example.org/remote.php/dav/files/user/backup');
    assert.ok(dav instanceof WebDavBackend);
    assert.equal(dav.location, 'webdavs://cloud.example.org/remote.php/dav/files/user/backup', 'no password in messages');
    bad('webdav://host/x?depth=1', /takes no options/);
    bad('ftp://host/x', /scheme ftp: is not supported/);
    bad('s3:///prefix', /bucket is missing|does not parse/);
    bad('s3://b/p?colour=blue', /unknown option colour/);
    bad('', /empty/);
  });

  it('Azure: a missing container, a wrong key, no credentials and a refused connection are clear errors', async () => {
    const server = await startAzurite();
    try {
      const open = (
        container: string,
        credentials?: ConstructorParameters<typeof AzureBackend>[0]['credentials'],
        endpoint = server.endpoint,
      ) => new AzureBackend({ container, prefix: '', endpoint, ...(credentials ? { credentials } : {}) });
      const good = { account: AZURITE_ACCOUNT, key: AZURITE_KEY };
      await assert.rejects(
        open('no-such-container', good).put('x', Buffer.from('x')),
        (e) =>
          e instanceof PhoenixError &&
          /container no-such-container does not exist/.test(e.message) &&
          !isTransient(e) &&
          /create it/.test(e.hint ?? ''),
      );
      const wrongKey = { account: AZURITE_ACCOUNT, key: Buffer.alloc(64, 7).toString('base64') };
      await assert.rejects(
        open(server.container, wrongKey).stat('x'),
        (e) =>
          e instanceof PhoenixError &&
          /refused the credentials/.test(e.message) &&
          !isTransient(e) &&
          /AZURE_STORAGE_KEY/.test(e.hint ?? ''),
      );
      const saved = { ...process.env };
      for (const k of ['AZURE_STORAGE_CONNECTION_STRING', 'AZURE_STORAGE_ACCOUNT', 'AZURE_STORAGE_KEY', 'AZURE_STORAGE_SAS_TOKEN'])
        delete process.env[k];
      try {
        await assert.rejects(
          open(server.container).stat('x'),
          (e) =>
            e instanceof PhoenixError &&
            /no Azure credentials were found/.test(e.message) &&
            /AZURE_STORAGE_CONNECTION_STRING/.test(e.hint ?? ''),
        );
        process.env.AZURE_STORAGE_CONNECTION_STRING = server.connectionString;
        const viaEnv = open(server.container);
        await viaEnv.put('env/x', Buffer.from('from the connection string'));
        assert.equal((await viaEnv.get('env/x')).toString(), 'from the connection string');
      } finally {
        process.env = saved;
      }
      await assert.rejects(open(server.container, good, 'http://127.0.0.1:1/devstoreaccount1').stat('x'), (e) => isTransient(e));
    } finally {
      await server.stop();
    }
  });

  it('SFTP: unknown and changed host keys, refused logins and connections, permission denied and a full disk are clear errors', async (t) => {
    const s = await sshServer();
    if (typeof s === 'string') return t.skip(s);
    const fails = async (url: string, re: RegExp, hint: RegExp, transient = false): Promise<void> => {
      const b = parseUrl(url);
      await assert.rejects(
        b.put('x', Buffer.from('x')),
        (e) => e instanceof PhoenixError && re.test(e.message) && hint.test(e.hint ?? '') && isTransient(e) === transient,
        url,
      );
      await b.close();
    };
    const repo = `${s.dir}/errors`;
    // Unknown: the fingerprint, and how to accept it; never accepted silently.
    await fails(
      sftpUrl(s, 'root', repo, `key=${s.keyFile}&known-hosts=/dev/null`),
      new RegExp(`host key is unknown: ssh-ed25519 ${s.fingerprint.replace(/[+/]/g, '\\$&')}`),
      /ssh-keyscan -p \d+ 127\.0\.0\.1 >> ~\/\.ssh\/known_hosts.*host-key=SHA256:/,
    );
    // Accepted explicitly by its fingerprint ('+' unencoded, as people paste it).
    const pinned = parseUrl(sftpUrl(s, 'root', repo, `key=${s.keyFile}&known-hosts=/dev/null&host-key=${s.fingerprint}`));
    await pinned.put('pinned', Buffer.from('ok'));
    await pinned.close();
    // Changed: known_hosts has another key for this host.
    const other = `${s.dir}/other-host-key`;
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const otherPub = spawnSync('cat', [`${other}.pub`], { encoding: 'utf8' }).stdout.split(/\s+/);
    const changed = `${s.dir}/changed_known_hosts`;
    writeFileSync(changed, `# a comment\nexample.org ${otherPub[0]} ${otherPub[1]}\n[127.0.0.1]:${s.port} ${otherPub[0]} ${otherPub[1]}\n`);
    await fails(
      sftpUrl(s, 'root', repo, `key=${s.keyFile}&known-hosts=${changed}`),
      /THE HOST KEY HAS CHANGED/,
      /man in the middle.*ssh-keygen -R/,
    );
    // A hashed known_hosts line (ssh-keygen -H) is matched too.
    const hashed = `${s.dir}/hashed_known_hosts`;
    spawnSync('cp', [s.knownHosts, hashed]);
    spawnSync('ssh-keygen', ['-H', '-f', hashed]);
    const viaHashed = parseUrl(sftpUrl(s, 'root', repo, `key=${s.keyFile}&known-hosts=${hashed}`));
    await viaHashed.put('hashed', Buffer.from('ok'));
    await viaHashed.close();
    // A key the server does not accept.
    await fails(
      sftpUrl(s, 'root', repo, `key=${other}&known-hosts=${s.knownHosts}`),
      /refused to log root in \(tried .*other-host-key\)/,
      /authorized_keys/,
    );
    // Nobody listens.
    await fails(`sftp://root@127.0.0.1:1/x?key=${s.keyFile}`, /refused the connection/, /SSH server running/, true);
    // The unprivileged user cannot write root's directory.
    await fails(sftpUrl(s, 'nobody', `${s.dir}/root-only`), /permission denied \(put x\)/, /nobody needs to be able to write/);
    // The server's disk is full (a 1 MiB tmpfs, where this machine can mount one).
    const tiny = `${s.dir}/tiny`;
    mkdirSync(tiny);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', tiny]).status === 0) {
      try {
        const b = parseUrl(sftpUrl(s, 'root', tiny));
        await assert.rejects(
          b.put('big', Buffer.alloc(4 * 2 ** 20, 1)),
          (e) => e instanceof PhoenixError && /disk is full/.test(e.message),
        );
        await b.close();
      } finally {
        spawnSync('umount', [tiny]);
      }
    }
    // The SSH agent, where there is one: no key named, the agent's key logs in.
    if (spawnSync('sh', ['-c', 'command -v ssh-agent']).status === 0) {
      const sock = `${s.dir}/agent.sock`;
      const agent = spawnSync('ssh-agent', ['-a', sock], { encoding: 'utf8' });
      const pid = /SSH_AGENT_PID=(\d+)/.exec(agent.stdout)?.[1];
      try {
        assert.equal(spawnSync('ssh-add', [s.keyFile], { env: { ...process.env, SSH_AUTH_SOCK: sock } }).status, 0);
        const saved = process.env.SSH_AUTH_SOCK;
        process.env.SSH_AUTH_SOCK = sock;
        try {
          const viaAgent = new SftpBackend({ host: s.host, port: s.port, user: 'root', path: repo, knownHosts: [s.knownHosts] });
          await viaAgent.put('agent', Buffer.from('ok'));
          assert.equal((await viaAgent.get('agent')).toString(), 'ok');
          await viaAgent.close();
        } finally {
          if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
          else process.env.SSH_AUTH_SOCK = saved;
        }
      } finally {
        if (pid !== undefined) process.kill(Number(pid));
      }
    }
  });

  it('WebDAV: a refused login and a refused connection are clear errors', async (t) => {
    const s = await startRcloneWebDav();
    if (typeof s === 'string') return t.skip(s);
    try {
      const saved = { ...process.env };
      try {
        delete process.env.PHOENIX_WEBDAV_USER;
        const anonymous = parseUrl(s.bare);
        await assert.rejects(
          anonymous.put('x', Buffer.from('x')),
          (e) =>
            e instanceof PhoenixError && /refused the login/.test(e.message) && !isTransient(e) && /PHOENIX_WEBDAV_USER/.test(e.hint ?? ''),
        );
        await anonymous.close();
        // The same credentials from the variables.
        process.env.PHOENIX_WEBDAV_USER = s.user;
        process.env.PHOENIX_WEBDAV_PASSWORD = s.password;
        const viaEnv = parseUrl(s.bare);
        await viaEnv.put('env/x', Buffer.from('from the variables'));
        assert.equal((await viaEnv.get('env/x')).toString(), 'from the variables');
        await viaEnv.close();
      } finally {
        process.env = saved;
      }
      const refused = parseUrl('webdav://u:p@127.0.0.1:1/x');
      await assert.rejects(
        refused.stat('x'),
        (e) => e instanceof PhoenixError && /refused the connection/.test(e.message) && isTransient(e),
      );
      await refused.close();
    } finally {
      await s.stop();
    }
  });

  it('S3: a missing bucket and refused credentials are clear, permanent errors', async () => {
    const server = await startS3rver();
    try {
      const missing = new S3Backend({ bucket: 'no-such-bucket', prefix: '', endpoint: server.endpoint });
      await assert.rejects(
        missing.put('x', Buffer.from('x')),
        (e) => e instanceof PhoenixError && /bucket no-such-bucket does not exist/.test(e.message) && !isTransient(e),
      );
      await missing.close();
      const refused = new S3Backend({ bucket: 'no-port', prefix: '', endpoint: 'http://127.0.0.1:1' });
      await assert.rejects(refused.stat('x'), (e) => isTransient(e));
      await refused.close();
    } finally {
      await server.stop();
    }
  });
});
