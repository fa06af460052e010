import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { EventsProcess, PHOENIX, tempDir } from './helpers.js';

const run = (...args: string[]) => spawnSync(process.execPath, [PHOENIX, ...args], { encoding: 'utf8', timeout: 30_000 });

describe('phoenix CLI', () => {
  it('usage errors exit 2 and say what is wrong', () => {
    const missing = run('events');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /missing required argument 'SOURCE'/);
    assert.equal(run('no-such-command').status, 2);
    assert.equal(run('--help').status, 0);
  });

  it('a source that is missing or not a directory exits 1 with a code and a hint', () => {
    const dir = tempDir();
    const gone = run('events', join(dir.path, 'nope'));
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /cannot be opened.*\[PHX_SOURCE_INVALID\]/);
    assert.match(gone.stderr, /hint: /);
    writeFileSync(join(dir.path, 'file'), '');
    const notDir = run('events', join(dir.path, 'file'));
    assert.equal(notDir.status, 1);
    assert.match(notDir.stderr, /is not a directory \[PHX_SOURCE_INVALID\]/);
    dir.cleanup();
  });

  it('exits 1 with PHX_SOURCE_GONE when the watched directory is removed', async () => {
    const dir = tempDir();
    const p = new EventsProcess(dir.path);
    await p.ready();
    dir.cleanup();
    assert.equal(await p.exited, 1);
    assert.match(p.stderr, /was removed; watching stopped \[PHX_SOURCE_GONE\]/);
  });

  it('human output: one readable line per change', async () => {
    const dir = tempDir();
    const child = spawn(process.execPath, [PHOENIX, 'events', dir.path], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: string[] = [];
    const seen = (re: RegExp): Promise<void> =>
      new Promise((resolve) => {
        const check = (): void => {
          if (lines.some((l) => re.test(l))) resolve();
          else setTimeout(check, 20);
        };
        check();
      });
    createInterface({ input: child.stdout }).on('line', (l) => lines.push(l));
    await seen(/^ready +dir +\. \(1 watches\)$/);
    writeFileSync(join(dir.path, 'hello world'), '');
    await seen(/^created +file +hello world$/);
    child.kill('SIGTERM');
    dir.cleanup();
  });
});
