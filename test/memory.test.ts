import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuietTrim, youngBytes as newSpace } from '../src/util/quiet.js';

/** Garbage that survives a few young collections: what makes V8 grow its young generation. */
function burst(): void {
  let keep: object[] = [];
  for (let i = 0; i < 2_000_000; i++) {
    keep.push({ i, s: `entry ${i}` });
    if (keep.length > 200_000) keep = [];
  }
}

describe('QuietTrim', () => {
  it('waits until work has stopped for its quiet time, then gives back the young generation once', async () => {
    const q = new QuietTrim(2_000);
    burst();
    const grown = newSpace();
    assert.ok(grown >= 8 * 2 ** 20, `the burst grew the young generation (${grown} bytes)`);
    q.touch();
    // Work goes on for a while: no collection while it does.
    for (let i = 0; i < 2; i++) {
      await sleep(1_500);
      assert.equal(q.runs, 0);
      q.touch();
    }
    // Quiet for 2 s: a full collection; 6 s later, the young one.
    await sleep(5_000);
    assert.equal(q.runs, 0);
    // It comes (late, on a loaded machine: timers fire late, never early).
    for (let waited = 0; q.runs === 0 && waited < 60_000; waited += 250) await sleep(250);
    assert.equal(q.runs, 1);
    assert.ok(newSpace() < grown / 4, `young generation ${newSpace()} bytes after, ${grown} before`);
    // Quiet stays quiet: no timer until the next touch.
    await sleep(3_000);
    assert.equal(q.runs, 1);
    q.stop();
  });
});
