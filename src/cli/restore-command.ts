import ignore from 'ignore';
import { PhoenixError } from '../errors.js';
import { displayPath, type RawPath } from '../model/path.js';
import { stateAt } from '../repo/index.js';
import { actionOf, type Overwrite } from '../restore/plan.js';
import { restore } from '../restore/restore.js';
import { sourcePath } from './args.js';
import { atOf, iso, withRepo, pickSource, print, showTime, type RepoFlags } from './common.js';
import { mib } from './format.js';
import { jsonPath, type Verbosity } from './output.js';

export interface RestoreFlags extends RepoFlags, Verbosity {
  target: string;
  at?: string;
  overwrite?: Overwrite;
  delete?: boolean;
  dryRun?: boolean;
  include: string[];
  exclude: string[];
  pathBase64: string[];
}

export async function restoreCommand(paths: string[], flags: RestoreFlags): Promise<number> {
  const at = atOf(flags);
  return withRepo(flags, async (repo) => {
    const source = await pickSource(repo, flags);
    const { state, seq, commits } = await stateAt(repo, source, at);
    const used = commits.find((c) => c.seq === seq);
    const selected = [...paths.map((p) => sourcePath(p)), ...flags.pathBase64.map((b) => sourcePath(undefined, b))];
    const wanted = selection(flags.include, flags.exclude);
    const tty = process.stderr.isTTY && !flags.json && flags.verbosity > 0 && !flags.dryRun;
    let lastDraw = 0;
    let problems = 0;
    const r = await restore(repo, state, flags.target, {
      paths: selected.filter((p) => p !== ''),
      ...(wanted ? { wanted } : {}),
      overwrite: flags.overwrite ?? 'never',
      delete: flags.delete ?? false,
      dryRun: flags.dryRun ?? false,
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
    if (flags.dryRun || flags.verbosity > 1) {
      const verb = { new: 'write', same: 'unchanged', replace: 'replace', keep: 'keep' } as const;
      for (const p of r.plan.paths) {
        const a = actionOf(r.plan, p);
        if (a === 'same' && flags.verbosity <= 1) continue;
        print(flags, { action: verb[a], ...jsonPath(p) }, `${verb[a].padEnd(9)} ${displayPath(p)}`);
      }
      for (const p of r.deleted) print(flags, { action: 'delete', ...jsonPath(p) }, `${'delete'.padEnd(9)} ${displayPath(p)}`);
    }
    // Files the target has with other content, and the overwrite mode keeps: never silently.
    const silentDefault = flags.overwrite === undefined && r.kept.length > 0;
    if (r.kept.length > 0 && !flags.dryRun) {
      for (const p of r.kept.slice(0, 20)) process.stderr.write(`phoenix: kept: ${displayPath(p)} (the target has other content there)\n`);
      if (r.kept.length > 20) process.stderr.write(`phoenix: kept: … and ${r.kept.length - 20} more\n`);
    }
    const done = flags.dryRun ? 'would restore' : 'restored';
    const summary = `${done} commit ${seq}${used ? ` (${showTime(used.timeMs)}${at !== undefined && used.segment !== undefined ? ', the newest kept instant at or before --at: the history there was thinned' : ''})` : ''} to ${flags.target}: ${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks, ${mib(r.bytes)}; ${r.unchanged} already there, ${r.replaced} replaced, ${r.kept.length} kept, ${r.deleted.length} deleted`;
    const counts = {
      files: r.files,
      dirs: r.dirs,
      symlinks: r.symlinks,
      bytes: r.bytes,
      skipped: r.skipped,
      reads: r.reads,
      unchanged: r.unchanged,
      replaced: r.replaced,
    };
    if (flags.json || flags.verbosity > 0)
      print(
        flags,
        {
          seq,
          time: used ? iso(used.timeMs) : null,
          ...counts,
          kept: r.kept.length,
          deleted: r.deleted.length,
          dryRun: flags.dryRun ?? false,
        },
        summary,
      );
    if (silentDefault && !flags.dryRun) {
      printKeptHint(r.kept.length);
      return 1;
    }
    return problems > 0 ? 1 : 0;
  });
}

function printKeptHint(n: number): void {
  const e = new PhoenixError('PHX_EXISTS', `${n} entries in the target differ from the backup and were left as they are`, {
    hint: 'to replace them pass --overwrite always (or if-newer: only where the backup is newer); --dry-run shows what would change',
  });
  process.stderr.write(`phoenix: warning: ${e.message} [${e.code}]\n  hint: ${e.hint}\n`);
}

/** --include / --exclude (gitignore syntax): which entries a restore writes. */
function selection(include: string[], exclude: string[]): ((p: RawPath, isDir: boolean) => boolean) | undefined {
  if (include.length === 0 && exclude.length === 0) return undefined;
  const inc = include.length > 0 ? ignore().add(include) : undefined;
  const exc = exclude.length > 0 ? ignore().add(exclude) : undefined;
  const test = (m: ReturnType<typeof ignore>, p: RawPath, isDir: boolean): boolean =>
    m.ignores(isDir ? `${displayPath(p)}/` : displayPath(p));
  const below = (m: ReturnType<typeof ignore>, p: RawPath): boolean => {
    for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) if (test(m, p.slice(0, i), true)) return true;
    return false;
  };
  return (p, isDir) => {
    if (exc && (test(exc, p, isDir) || below(exc, p))) return false;
    if (!inc) return true;
    // Directories on the way to an included entry are created by restore (without their metadata).
    return test(inc, p, isDir) || below(inc, p);
  };
}
