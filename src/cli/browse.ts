import { once } from 'node:events';
import picomatch from 'picomatch';
import { PhoenixError } from '../errors.js';
import { baseName, displayPath, isWithin, type RawPath } from '../model/path.js';
import { type FileRecord, findNames, type HistoryEvent, pathHistory, type Repository, seqAt, stateAt, treeDiff } from '../repo/index.js';
import { streamRecords } from '../restore/stream.js';
import { parseTime } from '../util/duration.js';
import { sourcePath } from './args.js';
import { atOf, iso, withRepo, pickSource, print, showTime, type RepoFlags } from './common.js';
import { jsonPath } from './output.js';

export interface PathFlags extends RepoFlags {
  at?: string;
  pathBase64?: string;
}

const mtimeMs = (r: FileRecord): number => Number(r.mtimeNs / 1_000_000n);

/** Opens the repository, picks the source and closes the repository after `fn`. */
function withSource<T>(flags: RepoFlags, fn: (repo: Repository, source: string) => Promise<T>): Promise<T> {
  return withRepo(flags, async (repo) => fn(repo, await pickSource(repo, flags)));
}

export async function lsCommand(path: string | undefined, flags: PathFlags): Promise<void> {
  const at = atOf(flags);
  await withSource(flags, async (repo, source) => {
    const { state, seq } = await stateAt(repo, source, at);
    const under = sourcePath(path, flags.pathBase64);
    const rows = [...state.values()].filter((r) => isWithin(r.path, under)).sort((a, b) => (a.path < b.path ? -1 : 1));
    if (under !== '' && rows.length === 0) {
      throw new PhoenixError('PHX_NOT_IN_REPO', `${displayPath(under)} is not in commit ${seq}`, {
        hint: `phoenix versions ${displayPath(under)} shows where it was and when`,
      });
    }
    for (const r of rows) {
      const link = r.target !== undefined ? ` -> ${displayPath(r.target)}` : '';
      print(
        flags,
        {
          ...jsonPath(r.path),
          type: r.type,
          size: r.size,
          mode: r.mode,
          mtime: iso(mtimeMs(r)),
          ...(r.target !== undefined ? jsonPath(r.target, 'target') : {}),
        },
        `${r.type.padEnd(7)} ${(r.mode & 0o7777).toString(8).padStart(4, '0')} ${String(r.size).padStart(12)} ${showTime(mtimeMs(r))}  ${displayPath(r.path)}${link}`,
      );
    }
  });
}

export async function versionsCommand(path: string | undefined, flags: PathFlags): Promise<void> {
  await withSource(flags, async (repo, source) => {
    const p = sourcePath(path, flags.pathBase64);
    if (p === '')
      throw new PhoenixError('PHX_USAGE', 'versions needs a PATH inside the source', { hint: 'phoenix ls lists what there is' });
    const events = await pathHistory(repo, source, p);
    if (events.length === 0) {
      throw new PhoenixError('PHX_NOT_IN_REPO', `${displayPath(p)} was never backed up in ${JSON.stringify(source)}`, {
        hint: 'phoenix find NAME looks for it by name',
      });
    }
    for (const e of events) print(flags, historyJson(e, p), historyText(e, p));
    const last = events.at(-1) as HistoryEvent;
    if (last.event === 'deleted' && !flags.json) {
      const at = last.beforeMs === undefined ? '' : ` --at ${iso(last.beforeMs)}`;
      process.stderr.write(
        `${displayPath(last.path)} was deleted in commit ${last.seq}; to get it back: phoenix restore${at} --target DIR ${shellWord(displayPath(last.path))}\n`,
      );
    }
  });
}

function historyJson(e: HistoryEvent, asked: RawPath): Record<string, unknown> {
  const base = { seq: e.seq, time: iso(e.timeMs), event: e.event, ...jsonPath(e.path), ...(e.path !== asked ? { earlierName: true } : {}) };
  if (e.event === 'version') return { ...base, type: e.record.type, size: e.record.size, mtime: iso(mtimeMs(e.record)) };
  if (e.event === 'moved') return { ...base, ...jsonPath(e.from, 'from'), to: displayPath(e.path) };
  return { ...base, restoreAt: e.beforeMs === undefined ? null : iso(e.beforeMs) };
}

function historyText(e: HistoryEvent, asked: RawPath): string {
  const head = `${String(e.seq).padStart(6)}  ${showTime(e.timeMs)}  `;
  const name = e.path !== asked ? `  (as ${displayPath(e.path)})` : '';
  if (e.event === 'version') return `${head}${String(e.record.size).padStart(12)} bytes  ${e.record.type}${name}`;
  if (e.event === 'moved') return `${head}moved from ${displayPath(e.from)} to ${displayPath(e.path)}`;
  return `${head}deleted${name}`;
}

function shellWord(s: string): string {
  return /^[\w./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/**
 * `phoenix find PATTERN`: where and when entries matching a glob existed. A pattern without a
 * slash matches names (`*.pdf`), one with a slash whole paths (`docs/**\/*.pdf`).
 */
export async function findCommand(pattern: string, flags: RepoFlags & { from?: string; to?: string }): Promise<void> {
  const range = {
    fromMs: flags.from === undefined ? undefined : parseTime(flags.from),
    toMs: flags.to === undefined ? undefined : parseTime(flags.to),
  };
  return withSource(flags, async (repo, source) => {
    const raw = sourcePath(pattern);
    const isMatch = picomatch(raw, { dot: true });
    const byName = !raw.includes('/');
    const spans = await findNames(repo, source, (p) => isMatch(byName ? baseName(p) : p), range);
    for (const s of spans) {
      const until = s.toMs === undefined ? 'still there' : `until ${showTime(s.toMs)}`;
      print(
        flags,
        { ...jsonPath(s.path), type: s.type, size: s.size, from: iso(s.fromMs), to: s.toMs === undefined ? null : iso(s.toMs) },
        `${s.type.padEnd(7)} ${String(s.size).padStart(12)}  ${showTime(s.fromMs)} ${until}  ${displayPath(s.path)}`,
      );
    }
    if (spans.length === 0 && !flags.json)
      process.stderr.write(`nothing matching ${pattern} was backed up in ${JSON.stringify(source)} in that time\n`);
  });
}

/** `phoenix diff T1 T2 [PATH]`: what changed between two instants. */
export async function diffCommand(t1: string, t2: string, path: string | undefined, flags: PathFlags): Promise<void> {
  const [a, b] = [parseTime(t1), parseTime(t2)];
  if (a > b) throw new PhoenixError('PHX_USAGE', `${t1} is later than ${t2}`, { hint: 'give the earlier instant first' });
  await withSource(flags, async (repo, source) => {
    const commits = await repo.commitList(source);
    const seq1 = seqAt(commits, a) ?? 0;
    const seq2 = seqAt(commits, b) ?? 0;
    const entries = seq1 === seq2 ? [] : await treeDiff(repo, source, seq1, seq2, sourcePath(path, flags.pathBase64));
    const mark = { added: '+', removed: '-', modified: 'M', moved: '>' } as const;
    for (const e of entries) {
      const json = {
        change: e.change,
        ...jsonPath(e.path),
        type: e.type,
        ...(e.change === 'moved' ? { ...jsonPath(e.from, 'from'), modified: e.modified } : {}),
      };
      const text =
        e.change === 'moved'
          ? `${mark.moved}  ${displayPath(e.from)} -> ${displayPath(e.path)}${e.modified ? ' (modified)' : ''}`
          : `${mark[e.change]}  ${displayPath(e.path)}`;
      print(flags, json, `${text}${e.type === 'dir' ? '/' : ''}`);
    }
    if (!flags.json) process.stderr.write(`commit ${seq1} → ${seq2}: ${entries.length} changes\n`);
  });
}

/**
 * `phoenix dump PATH`: a file's content on stdout, or a directory (or the whole source) as a
 * tar stream, names as their exact bytes.
 */
export async function dumpCommand(path: string | undefined, flags: PathFlags): Promise<void> {
  const at = atOf(flags);
  await withSource(flags, async (repo, source) => {
    const { state, seq } = await stateAt(repo, source, at);
    const p = sourcePath(path, flags.pathBase64);
    const top = state.get(p);
    if (p !== '' && top === undefined)
      throw new PhoenixError('PHX_NOT_IN_REPO', `${displayPath(p)} is not in commit ${seq}`, { hint: 'phoenix ls lists what there is' });
    if (top?.type === 'file') {
      if (process.stdout.isTTY)
        throw new PhoenixError('PHX_USAGE', 'dump writes the file to stdout, which is a terminal', {
          hint: `redirect it: phoenix dump ${path ?? ''} > FILE`,
        });
      await streamRecords(repo, [top], write);
      return;
    }
    if (process.stdout.isTTY)
      throw new PhoenixError('PHX_USAGE', 'dump writes a tar stream to stdout, which is a terminal', {
        hint: `pipe it: phoenix dump ${path ?? ''} | tar tv`,
      });
    const rows = [...state.values()].filter((r) => isWithin(r.path, p) && r.type !== 'other').sort((x, y) => (x.path < y.path ? -1 : 1));
    await streamRecords(repo, rows, write, { name: (r) => r.path });
  });
}

async function write(b: Uint8Array): Promise<void> {
  if (!process.stdout.write(b)) await once(process.stdout, 'drain');
}
