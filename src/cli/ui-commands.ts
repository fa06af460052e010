/** `phoenix ui` (a login link to the running daemon's dashboard) and `phoenix serve` (the dashboard and WebDAV from a repository alone). */

import { spawn, spawnSync } from 'node:child_process';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { resolveSettings, type SettingsFlags } from '../config/settings.js';
import { askDaemon, serveRequests } from '../daemon/status.js';
import { PhoenixError } from '../errors.js';
import { Auth, loadToken } from '../web/auth.js';
import { Catalog } from '../web/catalog.js';
import { webConfig, type WebFlags } from '../web/config.js';
import { DavServer } from '../web/dav.js';
import { WebServer } from '../web/server.js';
import { openRepo } from './common.js';

const SERVE_SOCKET = 'serve.sock';

/** Asks `phoenix watch` (or else `phoenix serve`) of the state directory for a one-time link. */
export async function uiCommand(flags: { state?: string; config?: string; open?: boolean }): Promise<number> {
  const { stateDir } = await resolveSettings(flags);
  let answer: { url?: string; error?: string };
  try {
    answer = await askDaemon(stateDir, 'login');
  } catch (err) {
    if (!(err instanceof PhoenixError && err.code === 'PHX_NOT_RUNNING')) throw err;
    answer = await askDaemon<{ url?: string; error?: string }>(stateDir, 'login', SERVE_SOCKET).catch(() => {
      throw new PhoenixError('PHX_NOT_RUNNING', `no phoenix watch or phoenix serve is running with the state directory ${stateDir}`, {
        hint: 'start phoenix watch (its dashboard is on by default), or phoenix serve --repo URL to browse a repository alone',
      });
    });
  }
  if (answer.url === undefined) {
    throw new PhoenixError('PHX_USAGE', `the daemon cannot give a login link: ${answer.error ?? 'no answer'}`, {
      hint: 'start it with --ui-listen 127.0.0.1:8467 (or ui: {listen: ...} in the configuration)',
    });
  }
  process.stdout.write(`${answer.url}\n`);
  if (flags.open !== false) openBrowser(answer.url);
  return 0;
}

/** Opens the link where there is a desktop to open it on (xdg-open); says so on stderr either way. */
function openBrowser(url: string): void {
  const desktop = process.env.DISPLAY !== undefined || process.env.WAYLAND_DISPLAY !== undefined;
  const has = spawnSync('sh', ['-c', 'command -v xdg-open'], { stdio: 'ignore' }).status === 0;
  if (!desktop || !has) {
    process.stderr.write('open the link above in a browser on this machine (it works once, within two minutes)\n');
    return;
  }
  const child = spawn('xdg-open', [url], { stdio: 'ignore', detached: true });
  child.on('error', () => {});
  child.unref();
  process.stderr.write('opened in your browser (the link works once, within two minutes)\n');
}

/** `phoenix serve`: browse, history, restore and WebDAV from a repository, without a daemon. */
export async function serveCommand(flags: SettingsFlags & WebFlags & { open?: boolean }): Promise<number> {
  const settings = await resolveSettings(flags);
  const web = webConfig(settings.file, flags);
  if (web.ui === undefined && web.webdav === undefined) {
    throw new PhoenixError('PHX_USAGE', 'both the dashboard and WebDAV are off: there is nothing to serve', {
      hint: 'give --ui-listen 127.0.0.1:8467 or --webdav-listen 127.0.0.1:8468',
    });
  }
  const repo = await openRepo(settings);
  const auth = new Auth(loadToken(settings.stateDir));
  const catalog = new Catalog(repo);
  const ui =
    web.ui &&
    new WebServer({ catalog, repoUrl: settings.repository, live: undefined, auth, hub: undefined, metrics: undefined, hosts: web.hosts });
  const dav = web.webdav && new DavServer(catalog, auth, web.hosts);
  const sock = join(settings.stateDir, SERVE_SOCKET);
  let control: Server | undefined;
  try {
    if (ui) process.stderr.write(`phoenix serve: dashboard on ${await ui.listen(web.ui as NonNullable<typeof web.ui>)}\n`);
    if (dav)
      process.stderr.write(
        `phoenix serve: WebDAV on ${await dav.listen(web.webdav as NonNullable<typeof web.webdav>)} (user phoenix, password: the token in ${join(settings.stateDir, 'ui-token')})\n`,
      );
    control = await serveRequests(sock, () => (ui ? { url: ui.loginLink() } : { error: 'the dashboard is off' }));
    if (ui) {
      const link = ui.loginLink();
      process.stdout.write(`${link}\n`);
      if (flags.open === true) openBrowser(link);
    }
    process.stderr.write('phoenix serve: phoenix ui gives another login link; Ctrl-C stops\n');
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
  } finally {
    await Promise.all([ui?.close(), dav?.close(), new Promise<void>((r) => (control ? control.close(() => r()) : r()))]);
    await repo.close();
  }
  return 0;
}
