import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DaemonProcess, phoenix } from './daemon-helpers.js';
import { tempDir } from './helpers.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
/** Screenshots of the main pages: test artifacts (PHX_ARTIFACTS, or test-artifacts/ in the project). */
const ARTIFACTS = process.env.PHX_ARTIFACTS ?? new URL('../../test-artifacts/', import.meta.url).pathname;

describe(
  'the dashboard in a real browser',
  { skip: CHROMIUM === undefined ? 'chromium is not installed (apt-get install chromium)' : false, timeout: 300_000 },
  () => {
    const work = tempDir('phx-browser-');
    const src = join(work.path, 'src');
    const repo = join(work.path, 'repo');
    const state = join(work.path, 'state');
    let d: DaemonProcess;
    let t1 = '';
    // playwright-core is loaded only when the browser is there.
    let context: import('playwright-core').BrowserContext;
    let page: import('playwright-core').Page;
    /** Uncaught errors in the dashboard's pages: there must be none. */
    const errors: string[] = [];

    before(async () => {
      mkdirSync(src);
      writeFileSync(join(src, 'notes.txt'), 'first version\n');
      writeFileSync(join(src, 'gone.txt'), 'about to be deleted\n');
      assert.equal(phoenix({}, 'init', '--repo', repo).status, 0);
      d = new DaemonProcess({ src, repo, state, args: ['--source', 'home', '--ui-listen', '127.0.0.1:0', '--webdav-listen', 'off'] });
      await d.ready();
      await d.sync('home');
      t1 = new Date().toISOString();
      await sleep(1100);
      writeFileSync(join(src, 'notes.txt'), 'second version\n');
      await d.sync('home');
      mkdirSync(ARTIFACTS, { recursive: true });
      const { chromium } = await import('playwright-core');
      context = await chromium.launchPersistentContext(join(work.path, 'profile'), {
        executablePath: CHROMIUM,
        headless: true,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-background-networking',
          '--disable-component-update',
          '--no-first-run',
        ],
        acceptDownloads: true,
        viewport: { width: 1280, height: 900 },
      });
      page = context.pages()[0] ?? (await context.newPage());
      page.on('pageerror', (e) => errors.push(e.message));
    });
    after(async () => {
      await context?.close();
      await d?.stop();
      work.cleanup();
    });

    it('logs in through the link of phoenix ui, and the RPO gauge moves with a change', async () => {
      const r = phoenix({}, 'ui', '--state', state, '--no-open');
      assert.equal(r.status, 0, r.stderr);
      await page.goto(r.stdout.trim());
      await page.waitForURL((u) => u.pathname === '/');
      const gauge = page.locator('#rpo-gauge');
      await gauge.waitFor();
      const before = await page.locator('#last-commit').innerText();
      assert.match(await page.locator('#protected-through').innerText(), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/);
      writeFileSync(join(src, 'new.txt'), 'a change\n');
      for (const deadline = Date.now() + 30_000; (await page.locator('#last-commit').innerText()) === before; await sleep(100)) {
        assert.ok(Date.now() < deadline, 'the gauge never showed the new commit');
      }
      assert.match(await page.locator('#exposed').innerText(), /^\d+\.\d\d s$/);
      await page.screenshot({ path: join(ARTIFACTS, 'overview.png'), fullPage: true });
      // A second use of the same link fails: it worked once.
      const again = await context.newPage();
      await again.goto(r.stdout.trim());
      await again.locator('#login-message').filter({ hasText: 'used already' }).waitFor();
      await again.close();
    });

    it('scrubs the time slider back to an earlier second and shows the older content', async () => {
      await page.click('#nav-browse');
      await page.locator('#listing a.entry', { hasText: 'notes.txt' }).click();
      await page.locator('#preview', { hasText: 'second version' }).waitFor();
      const commits = await page.evaluate(
        async () => ((await (await fetch('/api/commits?source=home')).json()) as { commits: Array<{ time: string }> }).commits,
      );
      const index = commits.filter((c) => c.time <= t1).length - 1;
      assert.ok(index >= 0);
      await page.locator('#time-slider').fill(String(index));
      await page.waitForURL((u) => u.searchParams.has('at'));
      await page.locator('#listing a.entry', { hasText: 'notes.txt' }).click();
      await page.locator('#preview', { hasText: 'first version' }).waitFor();
      await page.screenshot({ path: join(ARTIFACTS, 'browse.png'), fullPage: true });
    });

    it("opens a file's history and its diff, and downloads a version byte for byte", async () => {
      await page.click('#open-history');
      await page.locator('#history tbody tr').first().waitFor();
      await page.locator('.pick-a').first().check();
      await page.locator('.pick-b').nth(1).check();
      await page.locator('#diff .del', { hasText: '-first version' }).waitFor();
      await page.locator('#diff .add', { hasText: '+second version' }).waitFor();
      await page.screenshot({ path: join(ARTIFACTS, 'history.png'), fullPage: true });
      const [download] = await Promise.all([page.waitForEvent('download'), page.locator('.download-version').first().click()]);
      assert.equal(download.suggestedFilename(), 'notes.txt');
      assert.equal(readFileSync((await download.path()) as string, 'utf8'), 'first version\n');
    });

    it('restores a deleted file from "recently deleted" in place, and undoes the restore', async () => {
      rmSync(join(src, 'gone.txt'));
      await d.sync('home');
      await page.click('#nav-deleted');
      const row = page.locator('#deleted tr', { hasText: 'gone.txt' });
      await row.waitFor();
      await page.screenshot({ path: join(ARTIFACTS, 'deleted.png'), fullPage: true });
      await row.locator('.restore-deleted').click();
      await page.locator('#restore-dialog').waitFor();
      assert.ok(await page.locator('#restore-in-place').isChecked());
      await page.click('#restore-go');
      await page.locator('#restore-result', { hasText: 'Restored 1 files' }).waitFor();
      assert.match(
        await page.locator('#restore-result code').innerText(),
        /^phoenix restore --repo .* --source home --at \S+ --target \S+ gone\.txt$/,
      );
      assert.equal(readFileSync(join(src, 'gone.txt'), 'utf8'), 'about to be deleted\n');
      await page.screenshot({ path: join(ARTIFACTS, 'restore.png'), fullPage: true });
      await d.sync('home');
      await page.click('#undo-restore');
      await page.locator('#undo-result', { hasText: '1 removed' }).waitFor();
      assert.equal(existsSync(join(src, 'gone.txt')), false);
    });

    it('moves between changes with [ and ], shows what changed, and a live timeline', async () => {
      // At the latest commit, "[" goes to the instant before the last change under the root, where notes.txt was older.
      await page.goto(`${new URL(page.url()).origin}/?view=browse`);
      await page.locator('#listing').waitFor();
      const latest = await page.locator('#browse-at').innerText();
      await page.keyboard.press('[');
      for (const deadline = Date.now() + 10_000; (await page.locator('#browse-at').innerText()) === latest; await sleep(50)) {
        assert.ok(Date.now() < deadline, '[ did not move to an earlier change');
      }
      await page.keyboard.press(']');
      await page.locator('#browse-at', { hasText: /commit \d+/ }).waitFor();
      await page.click('#nav-changes');
      await page.locator('#changes tr', { hasText: 'notes.txt' }).waitFor();
      await page.screenshot({ path: join(ARTIFACTS, 'changes.png'), fullPage: true });
      await page.click('#nav-timeline');
      await page.locator('#timeline').waitFor({ state: 'attached' });
      writeFileSync(join(src, 'timeline.txt'), 'seen live\n');
      const row = page.locator('#timeline tr.change', { hasText: 'timeline.txt' }).first();
      await row.waitFor({ timeout: 30_000 });
      await page.screenshot({ path: join(ARTIFACTS, 'timeline.png'), fullPage: true });
      await d.sync('home');
      await row.locator('a').click();
      await page.locator('#history tbody tr').first().waitFor();
      assert.match(await page.locator('h2').innerText(), /timeline\.txt/);
      assert.deepEqual(errors, []);
    });

    it('never renders a backed-up HTML file as a page of its origin', async () => {
      writeFileSync(join(src, 'evil.html'), '<script>document.title = "pwned"</script><h1>evil</h1>');
      await d.sync('home');
      const origin = new URL(page.url()).origin;
      const evil = await context.newPage();
      const download = evil.waitForEvent('download', { timeout: 10_000 });
      await evil.goto(`${origin}/api/file?source=home&path=evil.html`).catch(() => undefined); // a download aborts the navigation
      assert.equal((await download).suggestedFilename(), 'evil.html');
      assert.notEqual(await evil.title(), 'pwned');
      await evil.close();
    });
  },
);
