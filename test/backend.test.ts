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
import { startS3rver, startSwift } from './servers.js';

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
    bad('ftp://host/x', /scheme ftp: is not supported/);
    bad('s3:///prefix', /bucket is missing|does not parse/);
    bad('s3://b/p?colour=blue', /unknown option colour/);
    bad('', /empty/);
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
