import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const fixture = fileURLToPath(new URL('./fixtures/meta-roundtrip.js', import.meta.url));

describe('metadata at scale', () => {
  // The stated bound: 10,010,000 entries written as one commit and one checkpoint and read back
  // with the JavaScript heap capped at 160 MiB (one object per entry would need well over 1 GiB;
  // the stored objects themselves are buffers, outside that heap).
  it('commits and checkpoints 10 million entries and reads them back in a 160 MiB heap', () => {
    const r = spawnSync(process.execPath, ['--max-old-space-size=160', fixture], { encoding: 'utf8', timeout: 600_000 });
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''}\n${r.stderr.slice(-3000)}`);
    const out = JSON.parse(r.stdout) as { commitEntries: number; checkpointEntries: number; stored: number };
    assert.equal(out.commitEntries, 10_010_000);
    assert.equal(out.checkpointEntries, 10_010_000);
    process.stdout.write(`# ${r.stdout}`);
  });

  it('the same round trip fails in that heap if the tree is held whole (the bound is real)', () => {
    // A guard on the test itself: 10 million records in one array do not fit in 160 MiB.
    const r = spawnSync(
      process.execPath,
      [
        '--max-old-space-size=160',
        '-e',
        'const a = []; for (let i = 0; i < 10_010_000; i++) a.push({ path: "d00000/f" + i, type: "file", mode: 33188, size: i }); console.log(a.length)',
      ],
      {
        encoding: 'utf8',
        timeout: 600_000,
      },
    );
    assert.notEqual(r.status, 0);
  });
});
