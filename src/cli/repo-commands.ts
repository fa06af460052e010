import { resolve } from 'node:path';
import { backup, startScan, type BackupOptions } from '../archiver/backup.js';
import { openBackend } from '../backend/open.js';
import { PhoenixError } from '../errors.js';
import { displayPath, isWithin, rawFromUtf8, rawToBuffer, utf8Of, type RawPath } from '../model/path.js';
import { checkRepository } from '../repo/check.js';
import type { FileRecord } from '../repo/format.js';
import { Repository, type CommitInfo } from '../repo/repository.js';
import { restore } from '../restore/restore.js';
import type { StateDb } from '../state/db.js';
import { openRepo, openState, parseTime, password, pickSource, print, repoUrl, type RepoFlags } from './common.js';
import { mib } from './format.js';

const iso = (ms: number): string => new Date(ms).toISOString();

export async function initCommand(flags: RepoFlags & { insecureNoEncryption?: boolean }): Promise<void> {
  const backend = openBackend(repoUrl(flags));
  const pw = flags.insecureNoEncryption ? undefined : await password(flags, true);
  const repo = await Repository.init(backend, { ...(pw !== undefined ? { password: pw } : {}), insecureNoEncryption: flags.insecureNoEncryption ?? false });
  print(flags, { id: repo.config.id, location: backend.location, encryption: repo.config.encryption }, `created repository ${repo.config.id} at ${backend.location} (encryption: ${repo.config.encryption})`);
  await backend.close();
}

export async function backupCommand(source: string, flags: RepoFlags & { exclude: string[]; oneFileSystem?: boolean }): Promise<number> {
  const dir = resolve(source);
  const start = performance.now();
  const filter = { exclude: flags.exclude, oneFileSystem: flags.oneFileSystem ?? false };
  // The scan runs while the password's key is derived (about 0.1 s of scrypt).
  const scan = startScan(dir, filter);
  scan.catch(() => {}); // awaited by backup(); an error then is reported there
  const name = flags.source ?? dir;
  // The cache is read while the key is derived, too.
  let db: StateDb | undefined;
  let cache: BackupOptions['cache'];
  let repo: Repository;
  try {
    repo = await openRepo(flags, (config) => {
      db = openState(flags, config);
      cache = { seq: db.seq(name, config.id), files: db.files(name) };
    });
  } catch (err) {
    db?.close();
    throw err;
  }
  db ??= openState(flags, repo.config);
  try {
    const r = await backup(repo, db, dir, name, {
      ...filter,
      scan,
      ...(cache ? { cache } : {}),
      onProblem: (p, m) => process.stderr.write(`phoenix: warning: ${displayPath(p)}: ${m}\n`),
    });
    const secs = (performance.now() - start) / 1000;
    const s = r.stats;
    const json = { source: name, seq: r.commit?.seq ?? null, time: r.commit ? iso(r.commit.timeMs) : null, ...s, problems: r.problems, seconds: secs };
    const text = r.commit
      ? `commit ${r.commit.seq} of ${JSON.stringify(name)}: ${s.files} files, ${s.dirs} dirs changed, ${s.deleted} deleted, ${mib(s.bytesUploaded)} uploaded in ${secs.toFixed(2)} s`
      : `no changes in ${JSON.stringify(name)} since the last commit (${secs.toFixed(2)} s)`;
    print(flags, json, text);
    return r.problems > 0 ? 1 : 0;
  } finally {
    db.close();
    await repo.backend.close();
  }
}

export async function logCommand(flags: RepoFlags): Promise<void> {
  const repo = await openRepo(flags);
  const source = await pickSource(repo, flags);
  for (const info of await repo.commitList(source)) {
    const c = await repo.readCommit(info);
    const puts = c.changes.filter((x) => x.op === 'put').length;
    const dels = c.changes.filter((x) => x.op === 'delete').length;
    const moves = c.changes.filter((x) => x.op === 'move').length;
    print(
      flags,
      { seq: c.seq, time: iso(c.timeMs), puts, deletes: dels, moves, packs: c.packs.length, bytesUploaded: c.stats.bytesUploaded, bytesTotal: c.stats.bytesTotal },
      `${String(c.seq).padStart(6)}  ${iso(c.timeMs)}  ${puts} put, ${dels} deleted, ${moves} moved, ${mib(c.stats.bytesUploaded)} uploaded`,
    );
  }
  await repo.backend.close();
}

/** The seq current at `atMs` (the last commit at or before it), or undefined when there was none yet. */
function seqAt(commits: CommitInfo[], atMs: number | undefined): number | undefined {
  if (atMs === undefined) return commits.at(-1)?.seq;
  let seq: number | undefined;
  for (const c of commits) if (c.timeMs <= atMs) seq = c.seq;
  return seq;
}

async function stateAt(repo: Repository, source: string, at: string | undefined) {
  const commits = await repo.commitList(source);
  const atMs = at === undefined ? undefined : parseTime(at);
  const seq = seqAt(commits, atMs);
  if (seq === undefined) {
    throw new PhoenixError('PHX_NOT_IN_REPO', `there is no commit of ${JSON.stringify(source)} at or before ${iso(atMs ?? 0)}`, {
      hint: commits.length > 0 ? `the first is from ${iso((commits[0] as CommitInfo).timeMs)}` : 'back something up first',
    });
  }
  return repo.loadState(source, seq);
}

function jsonPath(r: FileRecord): Record<string, unknown> {
  const s = utf8Of(r.path);
  const o: Record<string, unknown> = { path: s ?? displayPath(r.path) };
  if (s === undefined) o.pathBase64 = rawToBuffer(r.path).toString('base64');
  return o;
}

export async function lsCommand(path: string | undefined, flags: RepoFlags & { at?: string }): Promise<void> {
  const repo = await openRepo(flags);
  const source = await pickSource(repo, flags);
  const { state, seq } = await stateAt(repo, source, flags.at);
  const under = path === undefined ? '' : rawFromUtf8(path.replace(/^\/+|\/+$/g, ''));
  const rows = [...state.values()].filter((r) => isWithin(r.path, under)).sort((a, b) => (a.path < b.path ? -1 : 1));
  if (under !== '' && rows.length === 0) throw new PhoenixError('PHX_NOT_IN_REPO', `${path} is not in commit ${seq}`);
  for (const r of rows) {
    print(
      flags,
      { ...jsonPath(r), type: r.type, size: r.size, mode: r.mode, mtime: iso(Number(r.mtimeNs / 1_000_000n)), ...(r.target !== undefined ? { target: displayPath(r.target) } : {}) },
      `${r.type.padEnd(7)} ${(r.mode & 0o7777).toString(8).padStart(4, '0')} ${String(r.size).padStart(12)} ${iso(Number(r.mtimeNs / 1_000_000n))}  ${displayPath(r.path)}${r.target !== undefined ? ` -> ${displayPath(r.target)}` : ''}`,
    );
  }
  await repo.backend.close();
}

export async function versionsCommand(path: string, flags: RepoFlags): Promise<void> {
  const repo = await openRepo(flags);
  const source = await pickSource(repo, flags);
  let p: RawPath = rawFromUtf8(path.replace(/^\/+|\/+$/g, ''));
  // Walk the journal backwards would need the state; forwards, following moves, is simple.
  const events: Array<Record<string, unknown>> = [];
  for (const info of await repo.commitList(source)) {
    const c = await repo.readCommit(info);
    for (const ch of c.changes) {
      if (ch.op === 'put' && ch.path === p) events.push({ seq: c.seq, time: iso(c.timeMs), event: 'version', size: ch.size, type: ch.type, mtime: iso(Number(ch.mtimeNs / 1_000_000n)) });
      else if (ch.op === 'delete' && isWithin(p, ch.path)) events.push({ seq: c.seq, time: iso(c.timeMs), event: 'deleted' });
      else if (ch.op === 'move' && isWithin(p, ch.from)) {
        const to = ch.path + p.slice(ch.from.length);
        events.push({ seq: c.seq, time: iso(c.timeMs), event: 'moved', to: displayPath(to) });
        p = to;
      }
    }
  }
  if (events.length === 0) throw new PhoenixError('PHX_NOT_IN_REPO', `${path} was never backed up in ${JSON.stringify(source)}`);
  for (const e of events) {
    const extra = e.event === 'version' ? `${String(e.size).padStart(12)} bytes  ${String(e.type)}` : e.event === 'moved' ? `moved to ${String(e.to)}` : 'deleted';
    print(flags, e, `${String(e.seq).padStart(6)}  ${String(e.time)}  ${extra}`);
  }
  await repo.backend.close();
}

export async function restoreCommand(paths: string[], flags: RepoFlags & { target: string; at?: string }): Promise<number> {
  const repo = await openRepo(flags);
  const source = await pickSource(repo, flags);
  const { state, seq } = await stateAt(repo, source, flags.at);
  const tty = process.stderr.isTTY && !flags.json;
  let lastDraw = 0;
  let problems = 0;
  const r = await restore(repo, state, flags.target, {
    paths: paths.map((p) => rawFromUtf8(p.replace(/^\/+|\/+$/g, ''))),
    onProgress: (p) => {
      if (!tty || performance.now() - lastDraw < 100) return;
      lastDraw = performance.now();
      const pct = p.totalBytes > 0 ? Math.floor((100 * p.bytes) / p.totalBytes) : 100;
      const bar = '#'.repeat(Math.floor(pct / 4)).padEnd(25, '.');
      process.stderr.write(`\r[${bar}] ${pct}%  ${p.files} files  ${mib(p.bytes)} / ${mib(p.totalBytes)}`);
    },
    onProblem: (p, m) => {
      problems++;
      process.stderr.write(`phoenix: warning: ${displayPath(p)}: ${m}\n`);
    },
  });
  if (tty) process.stderr.write('\n');
  print(flags, { seq, ...r }, `restored commit ${seq} to ${flags.target}: ${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks, ${mib(r.bytes)}`);
  await repo.backend.close();
  return problems > 0 ? 1 : 0;
}

/** `phoenix check`: the work is checkRepository's; this prints what it found. */
export async function checkCommand(flags: RepoFlags & { readData?: boolean }): Promise<number> {
  const repo = await openRepo(flags);
  const { errors, packs, chunkRefs, blobsRead } = await checkRepository(repo, { readData: flags.readData ?? false });
  for (const e of errors) process.stderr.write(`phoenix: error: ${e}\n`);
  print(
    flags,
    { ok: errors.length === 0, errors, packs, chunkRefs, blobsRead },
    errors.length === 0
      ? `no errors: ${packs} packs, ${chunkRefs} chunk references${flags.readData ? `, ${blobsRead} blobs read and verified` : ''}`
      : `${errors.length} errors found`,
  );
  await repo.backend.close();
  return errors.length === 0 ? 0 : 1;
}

