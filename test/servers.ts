import { CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers.js';

export interface S3Server {
  endpoint: string;
  bucket: string;
  stop(): Promise<void>;
}

/** An s3rver that can also be stopped for a while and started again (same port, same data). */
export interface RestartableS3Server extends S3Server {
  pause(): Promise<void>;
  resume(): Promise<void>;
}

/** Starts s3rver in a child process on 127.0.0.1 and a free port. */
export async function startS3rver(): Promise<RestartableS3Server> {
  const dir = tempDir('phx-s3rver-');
  const script = fileURLToPath(new URL('./fixtures/s3-server.js', import.meta.url));
  let child: ChildProcess | undefined;
  const run = async (port: number): Promise<number> => {
    const c = spawn(process.execPath, ['--openssl-legacy-provider', script, dir.path, String(port)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child = c;
    return new Promise<number>((resolve, reject) => {
      c.on('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
      createInterface({ input: c.stdout! }).once('line', (l) => resolve((JSON.parse(l) as { port: number }).port));
    });
  };
  const kill = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null) return;
    c.kill('SIGTERM');
    await new Promise((r) => c.once('exit', r));
  };
  const port = await run(0);
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket: 'phoenix-test',
    pause: kill,
    resume: async () => {
      await run(port);
    },
    stop: async () => {
      await kill();
      dir.cleanup();
    },
  };
}

/** True when a command exists on PATH. */
export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** A free TCP port on 127.0.0.1 (closed again before it is returned). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export const SWIFT_CREDENTIALS = { accessKeyId: 'test:tester', secretAccessKey: 'testing' };

/**
 * A single-node OpenStack Swift with s3api (test/fixtures/swift-server.sh), or the reason it
 * cannot run here. CI installs its Debian packages; elsewhere the tests say how to.
 */
export async function startSwift(): Promise<(S3Server & { credentials: typeof SWIFT_CREDENTIALS }) | string> {
  if (!have('swift-proxy-server') || !have('memcached')) {
    return 'skipped: OpenStack Swift is not installed (apt-get install swift-proxy swift-account swift-container swift-object memcached)';
  }
  const dir = tempDir('phx-swift-');
  const ports = [];
  for (let i = 0; i < 5; i++) ports.push(await freePort());
  const script = fileURLToPath(new URL('../../test/fixtures/swift-server.sh', import.meta.url));
  const child = spawn('bash', [script, dir.path, ...ports.map(String)], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  const port = await new Promise<number>((resolve, reject) => {
    child.on('exit', (c) => reject(new Error(`swift exited with ${c}`)));
    createInterface({ input: child.stdout! }).once('line', (l) => resolve((JSON.parse(l) as { port: number }).port));
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    process.kill(-(child.pid as number), 'SIGTERM');
    await new Promise((r) => child.once('exit', r));
    dir.cleanup();
  };
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: SWIFT_CREDENTIALS });
  // The proxy answers before the account, container and object servers do: retry until the
  // bucket can be made and an object written and read back (the object server answers 503 until
  // then; with the machine busy, its s3api said "Please reduce your request rate" for over 30 s).
  let made = false;
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      if (!made) await client.send(new CreateBucketCommand({ Bucket: 'phoenix-test' }));
      made = true;
      await client.send(new PutObjectCommand({ Bucket: 'phoenix-test', Key: 'ready-probe', Body: 'x' }));
      await client.send(new GetObjectCommand({ Bucket: 'phoenix-test', Key: 'ready-probe' }));
      await client.send(new DeleteObjectCommand({ Bucket: 'phoenix-test', Key: 'ready-probe' }));
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        // Not left running: its pipe would keep the test process (and the whole suite) alive.
        client.destroy();
        await stop();
        throw err;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  client.destroy();
  return {
    endpoint,
    bucket: 'phoenix-test',
    credentials: SWIFT_CREDENTIALS,
    stop,
  };
}

/** Azurite's well-known development account (documented by Microsoft; not a secret). */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteServer {
  /** The blob service URL, for `?endpoint=` and AZURE_STORAGE_ENDPOINT. */
  endpoint: string;
  container: string;
  connectionString: string;
  stop(): Promise<void>;
}

/** Starts Azurite's blob service (the npm dev dependency) in a child process on 127.0.0.1 and a free port, its data on disk in a temporary directory, with container `phoenix-test`. */
export async function startAzurite(): Promise<AzuriteServer> {
  const dir = tempDir('phx-azurite-');
  const main = fileURLToPath(new URL('../../node_modules/azurite/dist/src/blob/main.js', import.meta.url));
  const child = spawn(
    process.execPath,
    [main, '--blobHost', '127.0.0.1', '--blobPort', '0', '--location', dir.path, '--skipApiVersionCheck', '--disableProductStyleUrl'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    child.on('exit', (c) => reject(new Error(`azurite exited with ${c}`)));
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const m = /successfully listens on http:\/\/127\.0\.0\.1:(\d+)/.exec(l);
      if (m) resolve(Number(m[1]));
    });
  });
  const endpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
  const connectionString = `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint};`;
  const { BlobServiceClient } = await import('@azure/storage-blob');
  await BlobServiceClient.fromConnectionString(connectionString).getContainerClient('phoenix-test').create();
  return {
    endpoint,
    container: 'phoenix-test',
    connectionString,
    stop: async () => {
      if (child.exitCode === null) {
        // Azurite waits for idle keep-alive connections before it exits (minutes): its data is
        // a temporary directory, so it need not close cleanly.
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
      dir.cleanup();
    },
  };
}

/** Waits until `port` on 127.0.0.1 accepts connections (and sends `banner` first, when given); fails when `child` exits or after 10 s. */
async function listening(port: number, child: ChildProcess, what: string, banner?: string): Promise<void> {
  const { connect } = await import('node:net');
  for (let attempt = 1; ; attempt++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        if (banner === undefined) {
          s.destroy();
          resolve(true);
        }
      });
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString().startsWith(banner ?? ''));
      });
      s.once('error', () => resolve(false));
    });
    if (up) return;
    if (child.exitCode !== null || attempt > 200) throw new Error(`${what} did not start (exit ${child.exitCode})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface SshServer {
  host: string;
  port: number;
  /** The directory sshd's files are in (readable by every user: tests make repositories below it). */
  dir: string;
  /** A private key every user of the server accepts (in OpenSSH's format). */
  keyFile: string;
  /** A known_hosts file that holds the server's host key. */
  knownHosts: string;
  /** The host key's SHA-256 fingerprint, as ssh-keygen -l prints it. */
  fingerprint: string;
  stop(): Promise<void>;
}

/**
 * OpenSSH's sshd (Debian openssh-server) on 127.0.0.1 and a free port, with a generated host
 * key and a generated user key, SFTP through internal-sftp. Or the reason it cannot run here.
 */
export async function startSshd(): Promise<SshServer | string> {
  const sshd = ['/usr/sbin/sshd', '/usr/bin/sshd'].find((p) => spawnSync('test', ['-x', p]).status === 0);
  if (sshd === undefined || !have('ssh-keygen')) return 'skipped: OpenSSH is not installed (apt-get install openssh-server)';
  if (process.getuid?.() !== 0) return 'skipped: sshd on a test port needs root here';
  const made = tempDir('phx-sshd-');
  const dir = made.path;
  const keygen = (file: string): void => {
    const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'phoenix-test', '-f', file]);
    if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  };
  keygen(`${dir}/host_ed25519`);
  keygen(`${dir}/user_ed25519`);
  spawnSync('cp', [`${dir}/user_ed25519.pub`, `${dir}/authorized_keys`]);
  spawnSync('chmod', ['755', dir]);
  spawnSync('chmod', ['644', `${dir}/authorized_keys`]);
  spawnSync('mkdir', ['-p', '/run/sshd']); // the privilege separation directory
  const port = await freePort();
  const config = [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${dir}/host_ed25519`,
    `PidFile ${dir}/sshd.pid`,
    `AuthorizedKeysFile ${dir}/authorized_keys`,
    'StrictModes no',
    'UsePAM no',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'PermitRootLogin prohibit-password',
    'Subsystem sftp internal-sftp',
    'LogLevel ERROR',
    '',
  ].join('\n');
  const { writeFileSync, readFileSync } = await import('node:fs');
  writeFileSync(`${dir}/sshd_config`, config);
  // Its stderr stays quiet: the readiness probe below makes it log a closed connection.
  const child = spawn(sshd, ['-D', '-e', '-f', `${dir}/sshd_config`], { stdio: 'ignore' });
  await listening(port, child, 'sshd', 'SSH-'); // ready once it answers with its banner
  const pub = readFileSync(`${dir}/host_ed25519.pub`, 'utf8').trim().split(/\s+/);
  writeFileSync(`${dir}/known_hosts`, `[127.0.0.1]:${port} ${pub[0]} ${pub[1]}\n`);
  const fp =
    spawnSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${dir}/host_ed25519.pub`], { encoding: 'utf8' }).stdout.split(/\s+/)[1] ?? '';
  return {
    host: '127.0.0.1',
    port,
    dir,
    keyFile: `${dir}/user_ed25519`,
    knownHosts: `${dir}/known_hosts`,
    fingerprint: fp,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      made.cleanup();
    },
  };
}

export interface WebDavServer {
  /** `webdav://USER:PASS@127.0.0.1:PORT/PATH` of an empty collection. */
  url: string;
  /** The same without credentials (they are then in PHOENIX_WEBDAV_USER / PHOENIX_WEBDAV_PASSWORD). */
  bare: string;
  user: string;
  password: string;
  stop(): Promise<void>;
}

const WEBDAV_USER = 'phoenix';
const WEBDAV_PASSWORD = 'pass word+%';

/** `rclone serve webdav` (Debian rclone) over a temporary directory, with basic auth, on 127.0.0.1 and a free port. */
export async function startRcloneWebDav(): Promise<WebDavServer | string> {
  if (!have('rclone')) return 'skipped: rclone is not installed (apt-get install rclone)';
  const dir = tempDir('phx-rclone-');
  const child = spawn(
    'rclone',
    ['serve', 'webdav', dir.path, '--addr', '127.0.0.1:0', '--user', WEBDAV_USER, '--pass', WEBDAV_PASSWORD, '--config', '/dev/null'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    child.on('exit', (c) => reject(new Error(`rclone exited with ${c}`)));
    createInterface({ input: child.stderr! }).on('line', (l) => {
      const m = /Server started on .*http:\/\/127\.0\.0\.1:(\d+)\//.exec(l);
      if (m) resolve(Number(m[1]));
    });
  });
  return webDavServer(port, '/repo', async () => {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    dir.cleanup();
  });
}

function webDavServer(port: number, path: string, stop: () => Promise<void>): WebDavServer {
  const cred = `${encodeURIComponent(WEBDAV_USER)}:${encodeURIComponent(WEBDAV_PASSWORD)}`;
  return {
    url: `webdav://${cred}@127.0.0.1:${port}${path}`,
    bare: `webdav://127.0.0.1:${port}${path}`,
    user: WEBDAV_USER,
    password: WEBDAV_PASSWORD,
    stop,
  };
}

/** Apache httpd with mod_dav_fs (Debian apache2) on 127.0.0.1 and a free port, basic auth from an htpasswd file. */
export async function startApacheWebDav(): Promise<WebDavServer | string> {
  const httpd = '/usr/sbin/apache2';
  if (spawnSync('test', ['-x', httpd]).status !== 0 || !have('htpasswd')) {
    return 'skipped: Apache is not installed (apt-get install apache2 apache2-utils)';
  }
  const made = tempDir('phx-apache-');
  const dir = made.path;
  const port = await freePort();
  const { mkdirSync, writeFileSync } = await import('node:fs');
  mkdirSync(`${dir}/dav`);
  mkdirSync(`${dir}/lock`);
  const hp = spawnSync('htpasswd', ['-b', '-c', `${dir}/htpasswd`, WEBDAV_USER, WEBDAV_PASSWORD]);
  if (hp.status !== 0) throw new Error(`htpasswd failed: ${hp.stderr}`);
  const user = process.getuid?.() === 0 ? 'nobody' : undefined;
  if (user !== undefined) {
    spawnSync('chown', ['-R', user, `${dir}/dav`, `${dir}/lock`]);
    spawnSync('chmod', ['755', dir]); // the server's user reaches its directories
  }
  const mods = ['mpm_event', 'authn_core', 'authn_file', 'authz_core', 'authz_user', 'auth_basic', 'dav', 'dav_fs', 'alias'];
  writeFileSync(
    `${dir}/httpd.conf`,
    [
      `ServerRoot ${dir}`,
      'ServerName 127.0.0.1',
      `Listen 127.0.0.1:${port}`,
      ...mods.map((m) => `LoadModule ${m}_module /usr/lib/apache2/modules/mod_${m}.so`),
      ...(user !== undefined ? [`User ${user}`, 'Group nogroup'] : []),
      `PidFile ${dir}/httpd.pid`,
      `ErrorLog ${dir}/error.log`,
      `Mutex file:${dir}/lock default`,
      `DavLockDB ${dir}/lock/davlock`,
      'LimitRequestBody 0',
      // Keep-alive connections are not closed under a client that reuses them (a reset request).
      'MaxKeepAliveRequests 0',
      'KeepAliveTimeout 60',
      `Alias /repo ${dir}/dav`,
      `<Directory ${dir}/dav>`,
      '  Dav On',
      '  AuthType Basic',
      '  AuthName phoenix',
      `  AuthUserFile ${dir}/htpasswd`,
      '  Require valid-user',
      '</Directory>',
      '',
    ].join('\n'),
  );
  const child = spawn(httpd, ['-X', '-f', `${dir}/httpd.conf`], { stdio: ['ignore', 'ignore', 'inherit'] });
  await listening(port, child, 'apache');
  return webDavServer(port, '/repo', async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    made.cleanup();
  });
}

export interface PrometheusServer {
  url: string;
  /** Runs an instant query; the result vector. */
  query(q: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  stop(): Promise<void>;
}

/** Debian's Prometheus on 127.0.0.1 and a free port, scraping `target` (HOST:PORT) every second with a bearer token. */
export async function startPrometheus(target: string, token: string): Promise<PrometheusServer | string> {
  if (!have('prometheus')) return 'skipped: prometheus is not installed (apt-get install prometheus)';
  const dir = tempDir('phx-prom-');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(`${dir.path}/token`, token, { mode: 0o600 });
  writeFileSync(
    `${dir.path}/prometheus.yml`,
    [
      'global: {scrape_interval: 1s, evaluation_interval: 1s}',
      'scrape_configs:',
      '  - job_name: phoenix',
      `    authorization: {type: Bearer, credentials_file: ${dir.path}/token}`,
      `    static_configs: [{targets: ['${target}']}]`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const child = spawn(
    'prometheus',
    [
      `--config.file=${dir.path}/prometheus.yml`,
      `--storage.tsdb.path=${dir.path}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-5000)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) return `prometheus exited (${child.exitCode}): ${stderr}`;
    const ok = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`prometheus not ready: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    async query(q) {
      const r = (await (await fetch(`${url}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as {
        data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
      };
      return r.data.result;
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
      dir.cleanup();
    },
  };
}
