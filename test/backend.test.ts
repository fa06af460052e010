import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTransient } from '../src/backend/backend.js';
import { LocalBackend } from '../src/backend/local.js';
import { MemoryBackend } from '../src/backend/memory.js';
import { parseUrl } from '../src/backend/open.js';
import { S3Backend } from '../src/backend/s3.js';
import { FaultyBackend, LimitBackend, RetryBackend } from '../src/backend/wrappers.js';
import { PhoenixError } from '../src/errors.js';
import { backendConformance } from './backend-suite.js';
import { tempDir } from './helpers.js';
import { AZURITE_ACCOUNT, AZURITE_KEY, startAzurite, startS3rver, startSwift } from './servers.js';
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

backendConformance('retry(limit(faulty(memory))) with transient faults', async () => {
  const faulty = new FaultyBackend(new MemoryBackend());
  faulty.add({ kind: 'error-before', times: 40 }).add({ op: 'put', kind: 'error-after', times: 10 });
  return { backend: new RetryBackend(new LimitBackend(faulty, 4), { baseDelayMs: 1, maxDelayMs: 5, attempts: 100 }) };
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
