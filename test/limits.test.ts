import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryBackend } from '../src/backend/memory.js';
import { RateLimiter, SMALL_TRANSFER, ThrottleBackend } from '../src/backend/wrappers.js';
import { parseRate } from '../src/util/rate.js';
import { resolveSettings } from '../src/config/settings.js';
import { PhoenixError } from '../src/errors.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './helpers.js';

const MiB = 1024 * 1024;

/** A virtual clock: sleeping advances it, nothing waits for real. */
function virtualClock() {
  let t = 0;
  return {
    now: () => t,
    sleep: async (ms: number) => {
      t += ms;
      await new Promise((r) => setImmediate(r));
    },
    get seconds() {
      return t / 1000;
    },
  };
}

describe('bandwidth limits', () => {
  it("rates: units, restic's plain KiB/s number, and refusals", () => {
    assert.equal(parseRate('2MiB/s'), 2 * MiB);
    assert.equal(parseRate('500KiB/s'), 500 * 1024);
    assert.equal(parseRate('10MB/s'), 10_000_000);
    assert.equal(parseRate('1.5M'), 1.5 * MiB);
    assert.equal(parseRate('2048'), 2048 * 1024, 'a bare number is KiB/s, as restic reads --limit-upload');
    assert.equal(parseRate('100 B/s'), 100);
    assert.equal(parseRate('0'), 0);
    for (const bad of ['fast', '2 MiB/h', '-1', 'MiB/s', '']) assert.equal(parseRate(bad), undefined, bad);
  });

  it('the settings take the flag over the configuration file, and name a bad value', async () => {
    const dir = tempDir('phx-limits-');
    try {
      const cfg = join(dir.path, 'phoenix.yaml');
      writeFileSync(cfg, 'limit-upload: 1MiB/s\nlimit-download: 4096\n');
      const s = await resolveSettings({ config: cfg, repo: '/tmp/x' }, {});
      assert.equal(s.limitUpload, MiB);
      assert.equal(s.limitDownload, 4096 * 1024);
      assert.equal((await resolveSettings({ config: cfg, repo: '/tmp/x', limitUpload: '2MiB/s' }, {})).limitUpload, 2 * MiB);
      writeFileSync(cfg, 'limit-upload: quickly\n');
      await assert.rejects(
        resolveSettings({ config: cfg, repo: '/tmp/x' }, {}),
        (e) => e instanceof PhoenixError && /limit-upload: "quickly" is not a rate/.test(e.message),
      );
    } finally {
      dir.cleanup();
    }
  });

  it('bulk uploads average the limit; a small transfer does not wait behind their debt', async () => {
    const clock = virtualClock();
    const limiter = new RateLimiter(MiB, clock);
    const b = new ThrottleBackend(new MemoryBackend(), limiter, undefined);
    // 20 packs of 4 MiB at 1 MiB/s: 80 MiB take 80 s, less the initial burst.
    const sent: Array<Promise<void>> = [];
    for (let i = 0; i < 20; i++) sent.push(b.put(`data/${i}`, Buffer.alloc(4 * MiB)));
    await Promise.all(sent);
    assert.ok(clock.seconds > 75 && clock.seconds < 81, `80 MiB at 1 MiB/s took ${clock.seconds} s`);

    // A 16 MiB pack starts and puts the budget deep in debt: a commit object goes out at
    // once and is done long before the pack counts as done; the next pack waits its turn.
    const before = clock.seconds;
    const order: string[] = [];
    await Promise.all([
      b.put('data/big', Buffer.alloc(16 * MiB)).then(() => order.push('pack')),
      b.put('journal/commit', Buffer.alloc(2000)).then(() => order.push('commit')),
      b.put('data/next', Buffer.alloc(SMALL_TRANSFER + 1)).then(() => order.push('next pack')),
    ]);
    assert.deepEqual(order, ['commit', 'pack', 'next pack']);
    assert.ok(clock.seconds - before >= 16, `17 MiB at 1 MiB/s took ${clock.seconds - before} s`);
  });

  it('downloads of whole objects are charged when they arrive', async () => {
    const clock = virtualClock();
    const mem = new MemoryBackend();
    for (let i = 0; i < 10; i++) await mem.put(`p/${i}`, Buffer.alloc(2 * MiB));
    const b = new ThrottleBackend(mem, undefined, new RateLimiter(2 * MiB, clock));
    for (let i = 0; i < 10; i++) assert.equal((await b.get(`p/${i}`)).length, 2 * MiB);
    // 20 MiB at 2 MiB/s: the first arrives at once, the rest wait for the ones before.
    assert.ok(clock.seconds > 8.5 && clock.seconds < 10, `${clock.seconds} s`);
    assert.equal((await b.get('p/0', { offset: 0, length: 10 })).length, 10);
  });
});
