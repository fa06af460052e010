/**
 * The dashboard's JSON API over a repository (and, with a daemon, its live state): sources
 * and commits, the tree at an instant, a file's history and text diff, what changed between
 * two instants, what was deleted, downloads (a file, or a folder as tar) and restores. Every
 * answer that stands for a command carries the `phoenix` command that does the same.
 */

import { promises as fs } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { once } from 'node:events';
import { structuredPatch } from 'diff';
import { baseName, displayPath, isWithin, joinRaw, parentOf, rawFromUtf8, toFsPath, type RawPath } from '../model/path.js';
import { mapLimited, pathHistory, seqAt, treeDiff, type FileRecord, type JournalChange, type TreeState } from '../repo/index.js';
import { restore } from '../restore/restore.js';
import { streamRecords } from '../restore/stream.js';
import { parseTime } from '../util/duration.js';
import { jsonPath } from '../cli/output.js';
import type { Catalog, Snapshot } from './catalog.js';
import { HttpError, hostileContent, readJson, sendJson } from './http.js';
import { pathFrom, requestPath } from './paths.js';

/** Text diffs compare versions up to this size. */
export const TEXT_MAX = 512 * 1024;
const PREVIEW_MAX = 64 * 1024;
/** Commits looked through for the previous or next change under a folder. */
const TOUCH_SCAN = 5000;

/** What a live daemon adds: its sources' directories (in-place restores) and the overview. */
export interface Live {
  sourcePath(source: string): string | undefined;
  overview(): unknown;
}

export interface ApiContext {
  catalog: Catalog;
  repoUrl: string;
  live: Live | undefined;
}

const iso = (ms: number): string => new Date(ms).toISOString();
const mtimeMs = (r: FileRecord): number => Number(r.mtimeNs / 1_000_000n);

function entryJson(r: FileRecord): Record<string, unknown> {
  return {
    ...jsonPath(r.path),
    ...jsonPath(baseName(r.path), 'name'),
    type: r.type,
    size: r.size,
    mode: r.mode & 0o7777,
    mtime: iso(mtimeMs(r)),
    ...(r.target !== undefined ? jsonPath(r.target, 'target') : {}),
  };
}

/** A word for a shell command line. */
function sh(s: string): string {
  return /^[\w./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/** The arguments naming `p` on a command line (--path-base64 for names that are not UTF-8). */
function pathArg(p: RawPath): string {
  const j = jsonPath(p);
  return j.pathBase64 !== undefined ? `--path-base64 ${j.pathBase64}` : sh(p === '' ? '.' : (j.path as string));
}

function command(ctx: ApiContext, verb: string, source: string, rest: string): string {
  return `phoenix ${verb} --repo ${sh(ctx.repoUrl)} --source ${sh(source)} ${rest}`.trim();
}

async function sourceOf(ctx: ApiContext, q: URLSearchParams): Promise<string> {
  const s = q.get('source');
  const all = await ctx.catalog.sources();
  if (s === null) {
    if (all.length === 1) return all[0] as string;
    throw new HttpError(
      400,
      'PHX_USAGE',
      'which source? give source=NAME',
      `the repository holds ${all.map((x) => JSON.stringify(x)).join(', ') || 'none'}`,
    );
  }
  if (!all.includes(s)) throw new HttpError(404, 'PHX_NOT_IN_REPO', `the repository has no source ${JSON.stringify(s)}`);
  return s;
}

function timeParam(q: URLSearchParams, key: string): number | undefined {
  const v = q.get(key);
  if (v === null || v === '' || v === 'latest' || v === 'now') return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  try {
    return parseTime(v);
  } catch {
    throw new HttpError(
      400,
      'PHX_USAGE',
      `${key}=${v} is not a time`,
      'give ISO 8601 (2026-11-23T10:15:30.250Z) or milliseconds since the epoch',
    );
  }
}

async function snapshotOf(ctx: ApiContext, source: string, q: URLSearchParams): Promise<Snapshot> {
  const seq = q.get('seq');
  if (seq !== null) {
    if (!/^\d+$/.test(seq)) throw new HttpError(400, 'PHX_USAGE', `seq=${seq} is not a commit number`);
    return ctx.catalog.snapshot(source, { seq: Number(seq) });
  }
  return ctx.catalog.snapshot(source, { atMs: timeParam(q, 'at') });
}

function recordOf(snap: Snapshot, p: RawPath): FileRecord {
  const r = snap.get(p);
  if (r === undefined) {
    throw new HttpError(
      404,
      'PHX_NOT_IN_REPO',
      `${displayPath(p)} is not in commit ${snap.seq} (${iso(snap.timeMs)})`,
      'its history shows where it was and when',
    );
  }
  return r;
}

/** What a request names: its source, its path, and the tree at its instant. */
async function placeOf(ctx: ApiContext, q: URLSearchParams): Promise<{ source: string; p: RawPath; snap: Snapshot }> {
  const source = await sourceOf(ctx, q);
  return { source, p: requestPath(q), snap: await snapshotOf(ctx, source, q) };
}

/** The file a request names, with its record (400 for a folder: /api/tar has those). */
async function fileOf(ctx: ApiContext, q: URLSearchParams): Promise<{ source: string; p: RawPath; snap: Snapshot; r: FileRecord }> {
  const { source, p, snap } = await placeOf(ctx, q);
  const r = recordOf(snap, p);
  if (r.type !== 'file')
    throw new HttpError(400, 'PHX_USAGE', `${displayPath(p)} is a ${r.type}, not a file`, 'a folder downloads with /api/tar');
  return { source, p, snap, r };
}

type Handler = (ctx: ApiContext, q: URLSearchParams, req: IncomingMessage, res: ServerResponse) => Promise<void>;

export const API: Record<string, { method: 'GET' | 'POST'; handler: Handler }> = {
  '/api/overview': {
    method: 'GET',
    handler: async (ctx, _q, _req, res) => {
      const sources = await ctx.catalog.sources();
      const list = await Promise.all(
        sources.map(async (name) => {
          const c = await ctx.catalog.commits(name);
          return {
            name,
            commits: c.length,
            first: c[0] ? iso(c[0].timeMs) : null,
            last: c.at(-1) ? iso((c.at(-1) as { timeMs: number }).timeMs) : null,
          };
        }),
      );
      sendJson(res, 200, { repository: ctx.repoUrl, live: ctx.live?.overview() ?? null, sources: list });
    },
  },
  '/api/commits': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      const source = await sourceOf(ctx, q);
      const from = timeParam(q, 'from') ?? 0;
      const to = timeParam(q, 'to') ?? Number.MAX_SAFE_INTEGER;
      const limit = Math.min(Number(q.get('limit') ?? 100_000) || 100_000, 100_000);
      const commits = (await ctx.catalog.commits(source)).filter((c) => c.timeMs >= from && c.timeMs <= to);
      sendJson(res, 200, {
        source,
        total: commits.length,
        commits: commits
          .slice(-limit)
          .map((c) => ({ seq: c.seq, time: iso(c.timeMs), ...(c.segment !== undefined ? { thinned: true } : {}) })),
      });
    },
  },
  '/api/ls': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      const { source, p, snap } = await placeOf(ctx, q);
      if (!snap.isDir(p)) throw new HttpError(400, 'PHX_USAGE', `${displayPath(p)} is a ${recordOf(snap, p).type}, not a folder`);
      const at = iso(snap.timeMs);
      sendJson(res, 200, {
        source,
        seq: snap.seq,
        time: at,
        ...jsonPath(p),
        entries: snap.children(p).map(entryJson),
        command: command(ctx, 'ls', source, `--at ${at} ${pathArg(p)}`),
      });
    },
  },
  '/api/history': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      const source = await sourceOf(ctx, q);
      const p = requestPath(q);
      if (p === '') throw new HttpError(400, 'PHX_USAGE', 'history needs a path inside the source');
      const events = await pathHistory(ctx.catalog.repo, source, p);
      let prevSize: number | undefined;
      sendJson(res, 200, {
        source,
        ...jsonPath(p),
        command: command(ctx, 'versions', source, pathArg(p)),
        events: events.map((e) => {
          const base = { seq: e.seq, time: iso(e.timeMs), event: e.event, ...jsonPath(e.path) };
          if (e.event === 'version') {
            const out = {
              ...base,
              type: e.record.type,
              size: e.record.size,
              sizeChange: prevSize === undefined ? null : e.record.size - prevSize,
              mtime: iso(mtimeMs(e.record)),
            };
            prevSize = e.record.size;
            return out;
          }
          if (e.event === 'moved') return { ...base, ...jsonPath(e.from, 'from') };
          prevSize = undefined;
          return { ...base, restoreAt: e.beforeMs === undefined ? null : iso(e.beforeMs) };
        }),
      });
    },
  },
  '/api/textdiff': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      const source = await sourceOf(ctx, q);
      const pa = requestPath(q, 'a');
      const pb = q.has('b') || q.has('bBase64') ? requestPath(q, 'b') : pa;
      const seqA = Number(q.get('seqA'));
      const seqB = Number(q.get('seqB'));
      if (!Number.isInteger(seqA) || !Number.isInteger(seqB))
        throw new HttpError(400, 'PHX_USAGE', 'give seqA and seqB: the two commits to compare');
      const [ra, rb] = await Promise.all([
        ctx.catalog.snapshot(source, { seq: seqA }).then((s) => recordOf(s, pa)),
        ctx.catalog.snapshot(source, { seq: seqB }).then((s) => recordOf(s, pb)),
      ]);
      const [ba, bb] = await Promise.all([ctx.catalog.bytes(ra, TEXT_MAX), ctx.catalog.bytes(rb, TEXT_MAX)]);
      if (ba === undefined || bb === undefined) {
        sendJson(res, 200, { tooLarge: true, max: TEXT_MAX, sizes: [ra.size, rb.size] });
        return;
      }
      if (ba.includes(0) || bb.includes(0)) {
        sendJson(res, 200, { binary: true, same: ba.equals(bb), sizes: [ra.size, rb.size] });
        return;
      }
      const patch = structuredPatch(
        displayPath(pa),
        displayPath(pb),
        ba.toString('utf8'),
        bb.toString('utf8'),
        `commit ${seqA}`,
        `commit ${seqB}`,
        { context: 3 },
      );
      sendJson(res, 200, { same: ba.equals(bb), hunks: patch.hunks, sizes: [ra.size, rb.size] });
    },
  },
  '/api/diff': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      const source = await sourceOf(ctx, q);
      const p = requestPath(q);
      const commits = await ctx.catalog.commits(source);
      const a = timeParam(q, 'from') ?? 0;
      const b = timeParam(q, 'to') ?? Date.now();
      if (a > b) throw new HttpError(400, 'PHX_USAGE', 'from is later than to', 'give the earlier instant as from');
      const s1 = seqAt(commits, a) ?? 0;
      const s2 = seqAt(commits, b) ?? 0;
      const entries = s1 >= s2 ? [] : await treeDiff(ctx.catalog.repo, source, s1, s2, p);
      sendJson(res, 200, {
        source,
        from: { seq: s1, time: iso(a) },
        to: { seq: s2, time: iso(b) },
        command: command(ctx, 'diff', source, `${iso(a)} ${iso(b)} ${p === '' ? '' : pathArg(p)}`),
        changes: entries.map((e) => ({
          change: e.change,
          ...jsonPath(e.path),
          type: e.type,
          ...(e.change === 'moved' ? { ...jsonPath(e.from, 'from'), modified: e.modified } : {}),
        })),
      });
    },
  },
  '/api/deleted': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      const source = await sourceOf(ctx, q);
      const to = timeParam(q, 'to') ?? Date.now();
      const from = timeParam(q, 'from') ?? to - 7 * 86_400_000;
      const list = await ctx.catalog.deletions(source, from, to);
      sendJson(res, 200, {
        source,
        from: iso(from),
        to: iso(to),
        deleted: list.map((d) => ({
          ...jsonPath(d.path),
          type: d.type,
          size: d.size,
          entries: d.entries,
          seq: d.seq,
          time: iso(d.timeMs),
          restoreAt: iso(d.restoreAtMs),
        })),
      });
    },
  },
  '/api/preview': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      // A file's start as text, for the dashboard to show as text (never as markup).
      const { r } = await fileOf(ctx, q);
      const data = await ctx.catalog.head(r, PREVIEW_MAX);
      if (data.includes(0)) sendJson(res, 200, { binary: true, size: r.size });
      else sendJson(res, 200, { text: data.toString('utf8'), truncated: r.size > PREVIEW_MAX, size: r.size });
    },
  },
  '/api/touching': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      // The commit before (or after) `at` that changed something at or below `path`.
      const source = await sourceOf(ctx, q);
      const p = requestPath(q);
      const commits = await ctx.catalog.commits(source);
      const at = timeParam(q, 'at') ?? Number.MAX_SAFE_INTEGER;
      const next = q.get('direction') === 'next';
      const current = seqAt(commits, at) ?? 0;
      const order = next ? commits.filter((c) => c.seq > current) : commits.filter((c) => c.seq < current).reverse();
      const touches = (ch: JournalChange): boolean =>
        isWithin(ch.path, p) || isWithin(p, ch.path) || (ch.op === 'move' && (isWithin(ch.from, p) || isWithin(p, ch.from)));
      let found: { seq: number; timeMs: number } | undefined;
      // The current commit itself counts when going back: the state before it is "the previous change".
      const candidates = next ? order : [...commits.filter((c) => c.seq === current), ...order];
      for (let i = 0; i < candidates.length && i < TOUCH_SCAN && found === undefined; i += 16) {
        const slice = candidates.slice(i, i + 16);
        const read = await mapLimited(slice, 8, (c) => ctx.catalog.repo.readCommit(c));
        const hit = read.find((c) => c.changes.some(touches));
        if (hit !== undefined) found = hit;
      }
      if (found === undefined) {
        sendJson(res, 200, { time: null, seq: null });
        return;
      }
      // Back: the instant just before the change; forward: the change itself.
      const idx = commits.findIndex((c) => c.seq === found.seq);
      const target = next ? found : (commits[idx - 1] ?? found);
      sendJson(res, 200, { seq: target.seq, time: iso(target.timeMs), change: { seq: found.seq, time: iso(found.timeMs) } });
    },
  },
  '/api/file': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      const { source, p, snap, r } = await fileOf(ctx, q);
      hostileContent(res, displayPath(baseName(p)));
      res.setHeader('Content-Length', r.size);
      res.setHeader('X-Phoenix-Command', encodeURI(command(ctx, 'dump', source, `--at ${iso(snap.timeMs)} ${pathArg(p)}`)));
      res.writeHead(200);
      for await (const b of ctx.catalog.content(r)) if (!res.write(b)) await once(res, 'drain');
      res.end();
    },
  },
  '/api/tar': {
    method: 'GET',
    handler: async (ctx, q, _req, res) => {
      const { p, snap } = await placeOf(ctx, q);
      if (p !== '') recordOf(snap, p);
      const rows = snap.below(p).filter((r) => r.type !== 'other');
      const strip = p === '' ? '' : `${parentOf(p)}`;
      hostileContent(res, `${p === '' ? 'source' : displayPath(baseName(p))}.tar`);
      res.setHeader('Content-Type', 'application/x-tar');
      res.writeHead(200);
      await streamRecords(
        ctx.catalog.repo,
        rows,
        async (b) => {
          if (!res.write(b)) await once(res, 'drain');
        },
        { name: (r) => (strip === '' ? r.path : r.path.slice(strip.length + 1)) },
      );
      res.end();
    },
  },
  '/api/restore': {
    method: 'POST',
    handler: async (ctx, _q, req, res) => {
      const body = await readJson(req);
      const q = new URLSearchParams();
      for (const k of ['source', 'at', 'seq']) if (typeof body[k] === 'string' || typeof body[k] === 'number') q.set(k, String(body[k]));
      const source = await sourceOf(ctx, q);
      const snap = await snapshotOf(ctx, source, q);
      const paths = pathsOf(body.paths);
      for (const p of paths) if (p !== '') recordOf(snap, p);
      const mode = body.mode ?? 'skip';
      if (mode !== 'skip' && mode !== 'overwrite' && mode !== 'keep-both')
        throw new HttpError(400, 'PHX_USAGE', `mode ${String(mode)}: give skip, overwrite or keep-both`);
      const inPlace = body.inPlace === true;
      let target: string;
      if (inPlace) {
        const dir = ctx.live?.sourcePath(source);
        if (dir === undefined)
          throw new HttpError(
            400,
            'PHX_USAGE',
            `an in-place restore needs the daemon that watches ${JSON.stringify(source)}`,
            'restore to a new folder instead',
          );
        target = dir;
      } else {
        if (typeof body.target !== 'string' || !body.target.startsWith('/'))
          throw new HttpError(400, 'PHX_USAGE', 'give target: an absolute folder to restore into');
        target = body.target;
        const st = await fs.lstat(target).catch(() => undefined);
        if (st !== undefined && !st.isDirectory()) throw new HttpError(400, 'PHX_USAGE', `the target ${target} exists and is not a folder`);
      }
      const preview = body.preview === true;
      const startedMs = Date.now();
      const selected = paths.filter((p) => p !== '');
      const overwrite = mode === 'overwrite' ? 'if-changed' : 'never';
      const r = await restore(ctx.catalog.repo, snap.state, target, { paths: selected, overwrite, dryRun: preview });
      // Keep both: what the target has with other content stays; the backed-up version goes beside it.
      const besides: Array<{ kept: RawPath; as: RawPath }> = [];
      if (mode === 'keep-both' && r.kept.length > 0) {
        const stamp = iso(snap.timeMs)
          .replace(/[:]/g, '')
          .replace(/\.\d+Z$/, 'Z');
        const state: TreeState = new Map();
        for (const k of r.kept) {
          const rec = snap.get(k);
          if (rec === undefined || rec.type !== 'file') continue;
          const as = besideName(k, stamp);
          besides.push({ kept: k, as });
          state.set(as, { ...rec, path: as });
        }
        if (!preview && state.size > 0) await restore(ctx.catalog.repo, state, target, { overwrite: 'never' });
      }
      const replaced = [...r.plan.actions].filter(([, a]) => a === 'replace').map(([p]) => p);
      const at = iso(snap.timeMs);
      const flags = `--at ${at} --target ${sh(target)}${mode === 'overwrite' ? ' --overwrite if-changed' : ''} ${selected.map(pathArg).join(' ')}`;
      sendJson(res, 200, {
        preview,
        source,
        seq: snap.seq,
        time: at,
        target,
        inPlace,
        mode,
        files: r.files,
        dirs: r.dirs,
        bytes: r.bytes,
        unchanged: r.unchanged,
        replaced: replaced.map((p) => jsonPath(p)),
        kept: mode === 'keep-both' ? [] : r.kept.map((p) => jsonPath(p)),
        besides: besides.map((b) => ({ ...jsonPath(b.kept, 'kept'), ...jsonPath(b.as, 'as') })),
        // An in-place restore is itself a change the daemon commits: the state before it is the instant to go back to.
        ...(inPlace && !preview ? { undo: { at: iso(startedMs - 1), paths: selected.map((p) => jsonPath(p)) } } : {}),
        command:
          command(ctx, 'restore', source, flags) +
          (besides.length > 0
            ? `   # and each of the ${besides.length} changed since: phoenix dump --at ${at} PATH > 'NAME (restored …)'`
            : ''),
      });
    },
  },
  '/api/undo': {
    method: 'POST',
    handler: async (ctx, _q, req, res) => {
      // Puts the named paths of the source back as they were at `at` (before an in-place restore):
      // restored where they existed then, removed where they did not.
      const body = await readJson(req);
      const q = new URLSearchParams();
      if (typeof body.source === 'string') q.set('source', body.source);
      if (typeof body.at === 'string') q.set('at', body.at);
      const source = await sourceOf(ctx, q);
      const dir = ctx.live?.sourcePath(source);
      if (dir === undefined) throw new HttpError(400, 'PHX_USAGE', 'undo needs the daemon that watches the source');
      const snap = await snapshotOf(ctx, source, q);
      const paths = pathsOf(body.paths).filter((p) => p !== '');
      const back = paths.filter((p) => snap.get(p) !== undefined);
      const removed = paths.filter((p) => snap.get(p) === undefined);
      for (const p of removed) await removeInside(dir, p);
      const r =
        back.length > 0
          ? await restore(ctx.catalog.repo, snap.state, dir, { paths: back, overwrite: 'if-changed', delete: true })
          : undefined;
      sendJson(res, 200, {
        source,
        time: iso(snap.timeMs),
        restored: back.map((p) => jsonPath(p)),
        removed: removed.map((p) => jsonPath(p)),
        files: r?.files ?? 0,
        command:
          back.length > 0
            ? command(
                ctx,
                'restore',
                source,
                `--at ${iso(snap.timeMs)} --target ${sh(dir)} --overwrite if-changed --delete ${back.map(pathArg).join(' ')}`,
              )
            : null,
      });
    },
  },
};

function pathsOf(v: unknown): RawPath[] {
  if (!Array.isArray(v) || v.length === 0) throw new HttpError(400, 'PHX_USAGE', 'give paths: a list of {path} or {pathBase64}');
  return v.map((x: unknown) => {
    if (typeof x === 'string') return pathFrom(x, undefined);
    if (typeof x === 'object' && x !== null) {
      const o = x as Record<string, unknown>;
      if (typeof o.pathBase64 === 'string') return pathFrom('', o.pathBase64);
      if (typeof o.path === 'string') return pathFrom(o.path, undefined);
    }
    throw new HttpError(400, 'PHX_USAGE', 'each path is a string, {path} or {pathBase64}');
  });
}

/** `dir/name.ext` → `dir/name (restored 2026-12-02T101530Z).ext`. */
function besideName(p: RawPath, stamp: string): RawPath {
  const name = baseName(p);
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  return joinRaw(parentOf(p), `${stem} (restored ${stamp})${ext}`);
}

/** Removes `rel` below `root`, never through a symlink on the way. */
async function removeInside(root: string, rel: RawPath): Promise<void> {
  const parts = rel.split('/');
  let cur = '';
  for (const part of parts.slice(0, -1)) {
    cur = joinRaw(cur, part);
    const st = await fs.lstat(toFsPath(rawFromUtf8(root), cur)).catch(() => undefined);
    if (st === undefined) return;
    if (!st.isDirectory()) throw new HttpError(409, 'PHX_USAGE', `${displayPath(cur)} is no longer a folder: not removing below it`);
  }
  await fs.rm(toFsPath(rawFromUtf8(root), rel), { recursive: true, force: true });
}
