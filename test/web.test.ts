import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, lstatSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DaemonProcess, PASSWORD, phoenix } from './daemon-helpers.js';
import { PHOENIX, tempDir } from './helpers.js';
import { have, startPrometheus } from './servers.js';

/** Name → sha256 of every file below `root` (names as raw latin1 strings). */
function contents(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (abs: Buffer, rel: string): void => {
    for (const name of readdirSync(abs, { encoding: 'buffer' })) {
      const a = Buffer.concat([abs, Buffer.from('/'), name]);
      const r = rel === '' ? name.toString('latin1') : `${rel}/${name.toString('latin1')}`;
      const st = lstatSync(a);
      if (st.isDirectory()) walk(a, r);
      else if (st.isFile()) out.set(r, createHash('sha256').update(readFileSync(a)).digest('hex'));
    }
  };
  walk(Buffer.from(root), '');
  return out;
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A raw HTTP request (the Host header as given: fetch would not let a test lie about it). */
function http(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string; path?: string } = {}): Promise<Reply> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        method: opts.method ?? 'GET',
        path: opts.path ?? `${u.pathname}${u.search}`,
        headers: opts.headers ?? {},
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** DaemonProcess.sync's marker files come and go: they are deletions too. */
const notMarker = (p: string): boolean => !p.startsWith('.phx-sync-');

const NOT_UTF8 = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x2e, 0x74, 0x78, 0x74]); // "caf\xe9.txt"

describe('the dashboard, its API, metrics and WebDAV', { timeout: 600_000 }, () => {
  const work = tempDir('phx-web-');
  const src = join(work.path, 'src');
  const repo = join(work.path, 'repo');
  const state = join(work.path, 'state');
  let d: DaemonProcess;
  let ui = '';
  let dav = '';
  let token = '';
  let t1 = '';
  const auth = (): Record<string, string> => ({ Authorization: `Bearer ${token}` });
  const api = async <T>(path: string, params: Record<string, string> = {}): Promise<T> => {
    const r = await http(`${ui}${path.slice(1)}?${new URLSearchParams(params)}`, { headers: auth() });
    assert.equal(r.status, 200, `${path}: ${r.body.toString()}`);
    return JSON.parse(r.body.toString()) as T;
  };
  const post = async <T>(path: string, body: unknown): Promise<T> => {
    const r = await http(`${ui}${path.slice(1)}`, {
      method: 'POST',
      headers: { ...auth(), 'Content-Type': 'application/json', 'X-Phoenix-Request': '1', Origin: ui.replace(/\/$/, '') },
      body: JSON.stringify(body),
    });
    assert.equal(r.status, 200, `${path}: ${r.body.toString()}`);
    return JSON.parse(r.body.toString()) as T;
  };

  before(async () => {
    mkdirSync(join(src, 'docs'), { recursive: true });
    writeFileSync(join(src, 'notes.txt'), 'one\ntwo\nthree\n');
    writeFileSync(join(src, 'docs', 'a.md'), '# a\n');
    writeFileSync(join(src, 'evil.html'), '<script>document.title="pwned"</script>');
    writeFileSync(Buffer.concat([Buffer.from(`${src}/`), NOT_UTF8]), 'bytes');
    assert.equal(phoenix({}, 'init', '--repo', repo).status, 0);
    d = new DaemonProcess({
      src,
      repo,
      state,
      args: ['--source', 'web', '--ui-listen', '127.0.0.1:0', '--webdav-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0'],
    });
    const s = await d.ready();
    assert.ok(s.ui && s.webdav, JSON.stringify(s));
    ui = s.ui.url;
    dav = s.webdav.url;
    token = readFileSync(join(state, 'ui-token'), 'utf8').trim();
    await d.sync('web');
    t1 = new Date().toISOString();
    await sleep(20);
    writeFileSync(join(src, 'notes.txt'), 'one\nTWO\nthree\nfour\n');
    rmSync(join(src, 'docs', 'a.md'));
    await d.sync('web');
  });
  after(async () => {
    await d?.stop();
    work.cleanup();
  });

  it('keeps its token in ui-token (0600) and says where it listens in status --json', async () => {
    assert.equal(statSync(join(state, 'ui-token')).mode & 0o777, 0o600);
    assert.match(ui, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.match(dav, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    // --metrics-listen: /metrics without a token, and nothing else; the Host is still checked.
    const m = (await d.status()).metrics?.url ?? '';
    assert.match(m, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const open = await http(m);
    assert.equal(open.status, 200);
    assert.match(open.body.toString(), /^# HELP /m);
    assert.equal((await http(m.replace(/metrics$/, 'api/overview'))).status, 404);
    assert.equal((await http(m, { headers: { Host: 'evil.example' } })).status, 403);
  });

  it('refuses to listen beyond loopback without --ui-public, and says why', () => {
    const r = phoenix({}, 'watch', src, '--repo', repo, '--state', join(work.path, 'other-state'), '--ui-listen', '0.0.0.0:0');
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--ui-listen 0\.0\.0\.0:0: 0\.0\.0\.0 is not a loopback address/);
    assert.match(r.stderr, /--ui-public/);
    const bad = phoenix({}, 'watch', src, '--repo', repo, '--state', join(work.path, 'other-state'), '--webdav-listen', 'here');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--webdav-listen "here" is not an address to listen on/);
  });

  it('refuses what is not logged in (401), a wrong Host (403), cross-site requests (403) and bad paths (400)', async () => {
    assert.equal((await http(`${ui}api/overview`)).status, 401);
    assert.equal((await http(`${ui}metrics`)).status, 401);
    assert.equal((await http(`${ui}api/overview`, { headers: { Authorization: 'Bearer wrong' } })).status, 401);
    // DNS rebinding: evil.example resolving to 127.0.0.1 still says Host: evil.example.
    const port = new URL(ui).port;
    assert.equal((await http(`${ui}api/overview`, { headers: { ...auth(), Host: `evil.example:${port}` } })).status, 403);
    assert.equal((await http(`${ui}login`, { headers: { Host: `evil.example:${port}` } })).status, 403);
    assert.equal((await http(`${ui}api/overview`, { headers: { ...auth(), Host: `localhost:${port}` } })).status, 200);
    const body = JSON.stringify({ source: 'web', paths: ['notes.txt'], target: join(work.path, 'x') });
    const json = { ...auth(), 'Content-Type': 'application/json' };
    const cases: Array<[string, Record<string, string>]> = [
      ['no custom header', json],
      ['another origin', { ...json, 'X-Phoenix-Request': '1', Origin: 'http://evil.example' }],
      ['cross-site fetch', { ...json, 'X-Phoenix-Request': '1', 'Sec-Fetch-Site': 'cross-site' }],
    ];
    for (const [what, headers] of cases) {
      const r = await http(`${ui}api/restore`, { method: 'POST', headers, body });
      assert.equal(r.status, 403, what);
    }
    for (const path of ['../etc/passwd', 'docs/../../x', 'a//b', './x']) {
      const r = await http(`${ui}api/ls?${new URLSearchParams({ path })}`, { headers: auth() });
      assert.equal(r.status, 400, path);
    }
    assert.equal((await http(`${ui}api/ls?pathBase64=***`, { headers: auth() })).status, 400);
    const home = await http(ui, { headers: auth() });
    assert.equal(home.status, 200);
    assert.match(String(home.headers['content-security-policy']), /default-src 'none'; script-src 'self' 'sha256-/);
    assert.equal(home.headers['x-frame-options'], 'DENY');
  });

  it('serves a backed-up evil.html only as a sandboxed attachment, never as a page', async () => {
    const r = await http(`${ui}api/file?source=web&path=evil.html`, { headers: auth() });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    assert.match(String(r.headers['content-disposition']), /^attachment; filename\*=UTF-8''evil\.html$/);
    assert.match(String(r.headers['content-security-policy']), /^sandbox/);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.equal(r.body.toString(), '<script>document.title="pwned"</script>');
    const dav1 = await http(`${dav}web/latest/evil.html`, {
      headers: { Authorization: `Basic ${Buffer.from(`phoenix:${token}`).toString('base64')}` },
    });
    assert.equal(dav1.headers['content-type'], 'application/octet-stream');
    assert.match(String(dav1.headers['content-security-policy']), /^sandbox/);
  });

  it('trades a one-time link from phoenix ui for an HttpOnly, SameSite=Strict session cookie', async () => {
    const r = phoenix({}, 'ui', '--state', state, '--no-open');
    assert.equal(r.status, 0, r.stderr);
    const link = new URL(r.stdout.trim());
    assert.equal(link.pathname, '/login');
    const code = new URLSearchParams(link.hash.slice(1)).get('code') ?? '';
    const login = (c: string): Promise<Reply> =>
      http(`${ui}api/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Phoenix-Request': '1' },
        body: JSON.stringify({ code: c }),
      });
    const ok = await login(code);
    assert.equal(ok.status, 200, ok.body.toString());
    const cookie = String(ok.headers['set-cookie']);
    assert.match(cookie, /^phoenix_session_[0-9a-f]{12}=[^;]+; Path=\/; HttpOnly; SameSite=Strict/);
    assert.equal((await login(code)).status, 401, 'a link works once');
    const pair = cookie.split(';')[0] as string;
    assert.equal((await http(`${ui}api/overview`, { headers: { Cookie: pair } })).status, 200);
    const [name, value] = pair.split('=') as [string, string];
    assert.equal(
      (await http(`${ui}api/overview`, { headers: { Cookie: `${name}=${value.slice(0, -2)}xx` } })).status,
      401,
      'a forged cookie',
    );
  });

  it('browses any instant, a file history with a text diff, what changed and what was deleted', async () => {
    const then = await api<{ entries: Array<{ path: string; pathBase64?: string; type: string }> }>('/api/ls', {
      source: 'web',
      at: t1,
      path: 'docs',
    });
    assert.deepEqual(
      then.entries.map((e) => e.path),
      ['docs/a.md'],
    );
    const now = await api<{ entries: Array<{ path: string; pathBase64?: string }> }>('/api/ls', { source: 'web' });
    const odd = now.entries.find((e) => e.pathBase64 !== undefined);
    assert.equal(odd?.pathBase64, NOT_UTF8.toString('base64'));
    const bytes = await http(`${ui}api/file?${new URLSearchParams({ source: 'web', pathBase64: NOT_UTF8.toString('base64') })}`, {
      headers: auth(),
    });
    assert.equal(bytes.body.toString(), 'bytes');
    const old = await http(`${ui}api/file?${new URLSearchParams({ source: 'web', at: t1, path: 'notes.txt' })}`, { headers: auth() });
    assert.equal(old.body.toString(), 'one\ntwo\nthree\n');
    const h = await api<{ events: Array<{ seq: number; event: string; size: number }> }>('/api/history', {
      source: 'web',
      path: 'notes.txt',
    });
    const versions = h.events.filter((e) => e.event === 'version');
    assert.equal(versions.length, 2);
    const diff = await api<{ hunks: Array<{ lines: string[] }> }>('/api/textdiff', {
      source: 'web',
      a: 'notes.txt',
      seqA: String(versions[0]?.seq),
      seqB: String(versions[1]?.seq),
    });
    assert.deepEqual(
      diff.hunks.flatMap((x) => x.lines),
      [' one', '-two', '+TWO', ' three', '+four'],
    );
    const changed = await api<{ changes: Array<{ change: string; path: string }> }>('/api/diff', { source: 'web', from: t1 });
    assert.deepEqual(
      changed.changes.map((c) => `${c.change} ${c.path}`),
      ['removed docs/a.md', 'modified notes.txt'],
    );
    const gone = await api<{ deleted: Array<{ path: string; restoreAt: string }> }>('/api/deleted', { source: 'web' });
    assert.deepEqual(gone.deleted.map((x) => x.path).filter(notMarker), ['docs/a.md']);
    const tar = await http(`${ui}api/tar?${new URLSearchParams({ source: 'web', at: t1, path: 'docs' })}`, { headers: auth() });
    const listed = spawnSync('tar', ['-t'], { input: tar.body, encoding: 'utf8' });
    assert.deepEqual(listed.stdout.trim().split('\n'), ['docs/', 'docs/a.md']);
  });

  it('restores a deleted file in place, and undoes it; keeps both where the file changed since', async () => {
    const gone = await api<{ deleted: Array<{ path: string; restoreAt: string }> }>('/api/deleted', { source: 'web' });
    const a = gone.deleted.find((x) => notMarker(x.path)) as { path: string; restoreAt: string };
    const r = await post<{ files: number; undo: { at: string; paths: unknown[] }; command: string }>('/api/restore', {
      source: 'web',
      at: a.restoreAt,
      paths: [{ path: a.path }],
      inPlace: true,
      mode: 'skip',
    });
    assert.equal(r.files, 1);
    assert.match(r.command, /^phoenix restore --repo \S+ --source web --at \S+ --target \S+ docs\/a\.md$/);
    assert.equal(readFileSync(join(src, 'docs', 'a.md'), 'utf8'), '# a\n');
    await d.sync('web');
    const u = await post<{ removed: unknown[] }>('/api/undo', { source: 'web', at: r.undo.at, paths: r.undo.paths });
    assert.equal(u.removed.length, 1);
    assert.equal(readdirSync(join(src, 'docs')).length, 0);
    // Keep both: notes.txt now differs from its version at t1; it stays, and t1's goes beside it.
    const kb = await post<{ besides: Array<{ kept: string; as: string }> }>('/api/restore', {
      source: 'web',
      at: t1,
      paths: ['notes.txt'],
      inPlace: true,
      mode: 'keep-both',
    });
    assert.equal(kb.besides.length, 1);
    assert.equal(readFileSync(join(src, 'notes.txt'), 'utf8'), 'one\nTWO\nthree\nfour\n');
    assert.match(kb.besides[0]?.as ?? '', /^notes \(restored \d{4}-\d\d-\d\dT\d{6}Z\)\.txt$/);
    assert.equal(readFileSync(join(src, kb.besides[0]?.as ?? ''), 'utf8'), 'one\ntwo\nthree\n');
    rmSync(join(src, kb.besides[0]?.as ?? ''));
    // A preview writes nothing and says what an overwrite would replace.
    const pv = await post<{ replaced: Array<{ path: string }> }>('/api/restore', {
      source: 'web',
      at: t1,
      paths: ['notes.txt'],
      inPlace: true,
      mode: 'overwrite',
      preview: true,
    });
    assert.deepEqual(
      pv.replaced.map((x) => x.path),
      ['notes.txt'],
    );
    assert.equal(readFileSync(join(src, 'notes.txt'), 'utf8'), 'one\nTWO\nthree\nfour\n');
    await d.sync('web');
  });

  it('restores a selection to a new folder, and never in place without the daemon: phoenix serve', async () => {
    const target = join(work.path, 'to-folder');
    const r = await post<{ files: number; target: string }>('/api/restore', { source: 'web', at: t1, paths: ['docs'], target });
    assert.equal(r.files, 1);
    assert.equal(readFileSync(join(target, 'docs', 'a.md'), 'utf8'), '# a\n');
    // phoenix serve: the repository alone (its own state directory, token and login link).
    const serveState = join(work.path, 'serve-state');
    const child = spawn(
      process.execPath,
      [PHOENIX, 'serve', '--repo', repo, '--state', serveState, '--ui-listen', '127.0.0.1:0', '--webdav-listen', '127.0.0.1:0'],
      {
        env: { ...process.env, PHOENIX_PASSWORD: PASSWORD },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    try {
      const link = await new Promise<string>((resolve, reject) => {
        child.on('exit', (c) => reject(new Error(`phoenix serve exited with ${c}`)));
        createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => resolve(l.trim()));
      });
      const base = new URL(link).origin;
      const t = readFileSync(join(serveState, 'ui-token'), 'utf8').trim();
      assert.notEqual(t, token, 'a state directory of its own, a token of its own');
      const h = { Authorization: `Bearer ${t}` };
      const ls = await http(`${base}/api/ls?source=web&path=docs&at=${encodeURIComponent(t1)}`, { headers: h });
      assert.equal(ls.status, 200, ls.body.toString());
      assert.equal((JSON.parse(ls.body.toString()) as { entries: unknown[] }).entries.length, 1);
      const ov = JSON.parse((await http(`${base}/api/overview`, { headers: h })).body.toString()) as { live: unknown };
      assert.equal(ov.live, null);
      assert.equal((await http(`${base}/api/events`, { headers: h })).status, 404);
      assert.equal((await http(`${base}/metrics`, { headers: h })).status, 404);
      const inPlace = await http(`${base}/api/restore`, {
        method: 'POST',
        headers: { ...h, 'Content-Type': 'application/json', 'X-Phoenix-Request': '1' },
        body: JSON.stringify({ source: 'web', at: t1, paths: ['docs'], inPlace: true }),
      });
      assert.equal(inPlace.status, 400);
      assert.match(inPlace.body.toString(), /needs the daemon/);
      // phoenix ui finds phoenix serve when no daemon uses the state directory.
      const again = phoenix({}, 'ui', '--state', serveState, '--no-open');
      assert.equal(again.status, 0, again.stderr);
      assert.match(again.stdout, /^http:\/\/127\.0\.0\.1:\d+\/login#code=/);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });

  it('streams changes as events, and resumes after Last-Event-ID without losing or repeating any', async () => {
    type Ev = { id: number; path?: string };
    /** A stream: `connected` once its first status message came, `done` once an event satisfies `until`. */
    const read = (
      until: (e: Ev) => boolean,
      lastId?: string,
    ): { connected: Promise<void>; done: Promise<{ events: Ev[]; lastId: string; close: () => void }> } => {
      let onConnected = (): void => {};
      const connected = new Promise<void>((r) => (onConnected = r));
      const done = new Promise<{ events: Ev[]; lastId: string; close: () => void }>((resolve, reject) => {
        const u = new URL(`${ui}api/events`);
        const req = request(
          { host: u.hostname, port: u.port, path: u.pathname, headers: { ...auth(), ...(lastId ? { 'Last-Event-ID': lastId } : {}) } },
          (res) => {
            let buf = '';
            const events: Ev[] = [];
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              buf += chunk;
              let i;
              while ((i = buf.indexOf('\n\n')) >= 0) {
                const msg = buf.slice(0, i);
                buf = buf.slice(i + 2);
                const id = /^id: (\d+)$/m.exec(msg)?.[1];
                const data = /^data: (.*)$/m.exec(msg)?.[1];
                if (/^event: status$/m.test(msg)) onConnected();
                if (/^event: feed$/m.test(msg) && data !== undefined && id !== undefined) {
                  events.push(...(JSON.parse(data) as Ev[]));
                  if (events.some(until)) resolve({ events, lastId: id, close: () => req.destroy() });
                }
              }
            });
          },
        );
        req.on('error', (e) => (e.message.includes('aborted') || e.message.includes('socket hang up') ? undefined : reject(e)));
        req.end();
      });
      return { connected, done };
    };
    const first = read((e) => e.path === 'feed-1.txt');
    await first.connected;
    writeFileSync(join(src, 'feed-1.txt'), '1');
    const a = await first.done;
    a.close();
    assert.ok(
      a.events.some((e) => e.path === 'feed-1.txt'),
      JSON.stringify(a.events),
    );
    // Written while no stream is connected: committed (so seen and in the feed) before the reconnect.
    writeFileSync(join(src, 'feed-2.txt'), '2');
    await d.sync('web');
    const b = await read((e) => e.path === 'feed-2.txt', a.lastId).done;
    b.close();
    assert.ok(
      b.events.some((e) => e.path === 'feed-2.txt'),
      JSON.stringify(b.events),
    );
    assert.ok(
      b.events.every((e) => e.id > Number(a.lastId)),
      'nothing before Last-Event-ID again',
    );
  });

  it('serves Prometheus metrics that promtool accepts and a real Prometheus scrapes with the token', async (t) => {
    const text = (await http(`${ui}metrics`, { headers: auth() })).body.toString();
    for (const name of [
      'phoenix_protected_through_timestamp_seconds{source="web"}',
      'phoenix_pending_changes{source="web"}',
      'phoenix_commits_total{source="web"}',
      'phoenix_changes_committed_total{source="web",kind="put"}',
      'phoenix_commit_latency_seconds_bucket',
      'phoenix_read_bytes_total',
      'phoenix_uploaded_bytes_total',
      'phoenix_inotify_overflows_total{source="web"} 0',
      'phoenix_rescans_total{source="web",reason="overflow"} 0',
      'phoenix_inotify_watches{source="web"}',
      'phoenix_inotify_watches_limit',
      'phoenix_unwatched_directories{source="web"} 0',
      'phoenix_backend_requests_total{op="put",result="ok"}',
      'phoenix_backend_last_success_timestamp_seconds',
      'phoenix_errors_total',
      'phoenix_source_state{source="web",state="watching"} 1',
      'phoenix_build_info{',
      'process_resident_memory_bytes',
    ]) {
      assert.ok(text.includes(name), `${name} missing`);
    }
    if (!have('promtool')) return t.skip('promtool is not installed (apt-get install prometheus)');
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    const rules = spawnSync('promtool', ['check', 'rules', new URL('../../contrib/phoenix-alerts.yml', import.meta.url).pathname], {
      encoding: 'utf8',
    });
    assert.equal(rules.status, 0, rules.stdout + rules.stderr);
    const prom = await startPrometheus(new URL(ui).host, token);
    if (typeof prom === 'string') return t.skip(prom);
    try {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const r = await prom.query('phoenix_pending_changes');
        if (r.length > 0) {
          assert.equal(r[0]?.metric.source, 'web');
          break;
        }
        assert.ok(Date.now() < deadline, 'Prometheus never got phoenix_pending_changes');
        await sleep(250);
      }
    } finally {
      await prom.stop();
    }
  });

  it('serves every instant over WebDAV: rclone copies at/T/ equal to phoenix restore --at T, names as bytes', async (t) => {
    const basic = { Authorization: `Basic ${Buffer.from(`phoenix:${token}`).toString('base64')}` };
    assert.equal((await http(`${dav}web/latest/`, { method: 'PROPFIND', headers: { Depth: '1' } })).status, 401);
    assert.equal((await http(`${dav}web/latest/notes.txt`, { method: 'PUT', headers: basic, body: 'x' })).status, 405);
    assert.equal((await http(`${dav}web/latest/x`, { method: 'MKCOL', headers: basic })).status, 405);
    assert.equal((await http(`${dav}web/latest/`, { method: 'PROPFIND', headers: { ...basic, Depth: 'infinity' } })).status, 403);
    const list = await http(`${dav}web/latest/`, { method: 'PROPFIND', headers: { ...basic, Depth: '1' } });
    assert.equal(list.status, 207);
    assert.ok(list.body.toString().includes('<D:href>/web/latest/caf%E9.txt</D:href>'), list.body.toString());
    const part = await http(`${dav}web/latest/notes.txt`, { headers: { ...basic, Range: 'bytes=4-6' } });
    assert.equal(part.status, 206);
    assert.equal(part.body.toString(), 'TWO');
    assert.equal(part.headers['content-range'], 'bytes 4-6/19');
    const opts = await http(`${dav}web/`, { method: 'OPTIONS', headers: basic });
    assert.equal(opts.headers.dav, '1');
    if (!have('rclone')) return t.skip('rclone is not installed (apt-get install rclone)');
    const pass = spawnSync('rclone', ['obscure', token], { encoding: 'utf8' }).stdout.trim();
    const copy = join(work.path, 'rclone-copy');
    const remote = `:webdav,url='${dav}',user=phoenix,pass='${pass}':web/at/${t1}`;
    const r = spawnSync('rclone', ['copy', '--config', '/dev/null', remote, copy], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const restored = join(work.path, 'restored');
    const p = phoenix({}, 'restore', '--repo', repo, '--source', 'web', '--at', t1, '--target', restored);
    assert.equal(p.status, 0, p.stderr);
    const want = contents(restored);
    assert.ok(want.has(NOT_UTF8.toString('latin1')));
    assert.deepEqual(contents(copy), want);
    if (have('cadaver')) {
      // cadaver: the read-only basics, as a person would use them.
      const home = join(work.path, 'cadaver-home');
      mkdirSync(home);
      writeFileSync(join(home, '.netrc'), `machine 127.0.0.1\nlogin phoenix\npassword ${token}\n`, { mode: 0o600 });
      const got = join(work.path, 'got.txt');
      const c = spawnSync('cadaver', [`${dav}web/`], {
        input: `ls\ncd latest\nget notes.txt ${got}\nput ${join(src, 'notes.txt')} new.txt\nquit\n`,
        env: { ...process.env, HOME: home },
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.match(c.stdout, /Coll:\s+at/);
      assert.match(c.stdout, /405 Method Not Allowed/);
      assert.equal(readFileSync(got, 'utf8'), 'one\nTWO\nthree\nfour\n');
    }
  });
});
