import { join, resolve } from 'node:path';
import { backup, planBackup, startScan } from '../archiver/backup.js';
import { listAll } from '../backend/backend.js';
import { openBackend } from '../backend/open.js';
import { resolveSettings, type Settings } from '../config/settings.js';
import { PhoenixError } from '../errors.js';
import { displayPath, type RawPath } from '../model/path.js';
import { checkRepository, type RepoConfig, Repository } from '../repo/index.js';
import { StateDb } from '../state/db.js';
import { writeLastCheck } from '../state/last-check.js';
import { iso, newPassword, warnAboutUrl, withRepo, openRepo, pickSource, print, showTime, type RepoFlags } from './common.js';
import { jsonPath, type Verbosity } from './output.js';
import { mib } from './format.js';
import { DEFAULT_MIN_AGE, DEFAULT_POLICY } from '../retention/policy.js';

export async function initCommand(flags: RepoFlags & { insecureNoEncryption?: boolean }): Promise<void> {
  const settings = await resolveSettings(flags);
  warnAboutUrl(settings.repository);
  const backend = openBackend(settings.repository);
  try {
    const pw = flags.insecureNoEncryption ? undefined : await newPassword(settings);
    if (!flags.insecureNoEncryption && pw === undefined) {
      throw new PhoenixError('PHX_NO_PASSWORD', 'a new repository needs a password, and none was given', {
        hint: 'set PHOENIX_PASSWORD or PHOENIX_PASSWORD_FILE, or run on a terminal to choose one (or --insecure-no-encryption)',
      });
    }
    const repo = await Repository.init(backend, {
      ...(pw !== undefined ? { password: pw } : {}),
      insecureNoEncryption: flags.insecureNoEncryption ?? false,
    });
    await repo.setPolicy(undefined, DEFAULT_POLICY, DEFAULT_MIN_AGE);
    print(
      flags,
      {
        id: repo.config.id,
        location: backend.location,
        encryption: repo.config.encryption,
        retention: { policy: DEFAULT_POLICY, minAge: DEFAULT_MIN_AGE },
      },
      `created repository ${repo.config.id} at ${backend.location} (encryption: ${repo.config.encryption})\nretention: ${DEFAULT_POLICY} (minimum age ${DEFAULT_MIN_AGE}): phoenix forget applies it, phoenix policy set changes it`,
    );
  } finally {
    await backend.close();
  }
}

export interface BackupFlags extends RepoFlags, Verbosity {
  exclude: string[];
  oneFileSystem?: boolean;
  dryRun?: boolean;
}

export async function backupCommand(source: string, flags: BackupFlags): Promise<number> {
  const dir = resolve(source);
  const start = performance.now();
  const filter = { exclude: flags.exclude, oneFileSystem: flags.oneFileSystem ?? false };
  // The scan runs while the password's key is derived (about 0.1 s of scrypt).
  const scan = startScan(dir, filter); // its error is reported by backup()
  const name = flags.source ?? dir;
  const settings = await resolveSettings(flags);
  // The cache is opened while the key is derived, too.
  let db: StateDb | undefined;
  let repo: Repository;
  try {
    repo = await openRepo(settings, {
      whileDeriving: (config) => {
        db = openState(settings, config);
      },
    });
  } catch (err) {
    db?.close();
    throw err;
  }
  db ??= openState(settings, repo.config);
  const onProblem = (p: RawPath, m: string): boolean => process.stderr.write(`phoenix: warning: ${displayPath(p)}: ${m}\n`);
  try {
    if (flags.dryRun) {
      const plan = await planBackup(repo, db, dir, name, { ...filter, scan, onProblem });
      for (const c of plan.changes) {
        print(
          flags,
          { ...jsonPath(c.path), change: c.change, kind: c.kind, size: c.size },
          `${c.change.padEnd(8)} ${c.kind.padEnd(7)} ${displayPath(c.path)}`,
        );
      }
      const bytes = plan.changes.reduce((n, c) => n + c.size, 0);
      if (!flags.json && flags.verbosity > 0)
        process.stderr.write(`dry run: ${plan.changes.length} entries would be committed, ${mib(bytes)} read (nothing was written)\n`);
      return plan.problems > 0 ? 1 : 0;
    }
    const r = await backup(repo, db, dir, name, { ...filter, scan, onProblem });
    const secs = (performance.now() - start) / 1000;
    const s = r.stats;
    const json = {
      source: name,
      seq: r.commit?.seq ?? null,
      time: r.commit ? iso(r.commit.timeMs) : null,
      ...s,
      problems: r.problems,
      seconds: secs,
    };
    const text = r.commit
      ? `commit ${r.commit.seq} of ${JSON.stringify(name)}: ${s.files} files, ${s.dirs} dirs changed, ${s.deleted} deleted, ${mib(s.bytesUploaded)} uploaded in ${secs.toFixed(2)} s`
      : `no changes in ${JSON.stringify(name)} since the last commit (${secs.toFixed(2)} s)`;
    if (flags.json || flags.verbosity > 0) print(flags, json, text);
    if (r.problems > 0 && !flags.json)
      process.stderr.write(`phoenix: ${r.problems} entries could not be read (named above): they keep their last backed-up version\n`);
    return r.problems > 0 ? 1 : 0;
  } finally {
    db.close();
    await repo.close();
  }
}

/** `phoenix log`: the commits of one source, or of every source when the repository holds several. */
export async function logCommand(flags: RepoFlags): Promise<void> {
  return withRepo(flags, async (repo) => {
    const all = await repo.sources();
    const sources = flags.source !== undefined || all.length === 1 ? [await pickSource(repo, flags)] : all;
    if (sources.length === 0) {
      if (!flags.json) process.stderr.write('the repository is empty: no commit yet\n');
      return;
    }
    for (const source of sources) {
      const infos = await repo.commitList(source);
      const pins = await repo.pins(source);
      for (const [i, info] of infos.entries()) {
        const c = await repo.readCommit(info);
        // Pinned: a pin falls while this commit is current.
        const next = infos[i + 1]?.timeMs ?? Infinity;
        const pin = pins.find((p) => p.atMs >= c.timeMs && p.atMs < next);
        const count = (op: string): number => c.changes.filter((x) => x.op === op).length;
        const [puts, deletes, moves] = [count('put'), count('delete'), count('move')];
        print(
          flags,
          {
            source,
            seq: c.seq,
            time: iso(c.timeMs),
            puts,
            deletes,
            moves,
            packs: c.packs.length,
            bytesUploaded: c.stats.bytesUploaded,
            bytesTotal: c.stats.bytesTotal,
            pinned: pin !== undefined,
            ...(pin !== undefined ? { note: pin.note, pinnedAt: iso(pin.atMs) } : {}),
            ...(info.segment !== undefined ? { thinned: true } : {}),
          },
          `${sources.length > 1 ? `${source}  ` : ''}${String(c.seq).padStart(6)}  ${showTime(c.timeMs)}  ${puts} put, ${deletes} deleted, ${moves} moved, ${mib(c.stats.bytesUploaded)} uploaded${pin !== undefined ? `  [pinned${pin.note !== '' ? `: ${pin.note}` : ''}]` : ''}`,
        );
      }
    }
  });
}

/** `phoenix sources`: what the repository holds, a line per source (restic's snapshots, grouped). */
export async function sourcesCommand(flags: RepoFlags): Promise<void> {
  return withRepo(flags, async (repo) => {
    const names = await repo.sources();
    if (names.length === 0 && !flags.json) process.stderr.write('the repository is empty: no source has been backed up yet\n');
    for (const name of names) {
      const infos = await repo.commitList(name);
      const last = infos.at(-1);
      if (last === undefined) continue; // its journal is empty (being written for the first time)
      const commit = await repo.readCommit(last);
      const { state } = await repo.loadState(name, last.seq);
      let files = 0;
      let bytes = 0;
      for (const r of state.values()) {
        if (r.type !== 'file') continue;
        files++;
        bytes += r.size;
      }
      print(
        flags,
        {
          name,
          path: commit.root ?? null,
          host: commit.host ?? null,
          commits: infos.length,
          lastCommit: { seq: last.seq, time: iso(last.timeMs) },
          entries: state.size,
          files,
          bytes,
        },
        `${name}\n  path ${commit.root ?? '(not recorded)'} on ${commit.host ?? '(host not recorded)'}; ${infos.length} commits, the last ${last.seq} at ${showTime(last.timeMs)}; ${files} files, ${mib(bytes)}`,
      );
    }
  });
}

/** `phoenix stats`: sizes, counts and deduplication, per source and for the repository. */
export async function statsCommand(flags: RepoFlags): Promise<void> {
  return withRepo(flags, async (repo) => {
    const names = flags.source !== undefined ? [await pickSource(repo, flags)] : await repo.sources();
    const allChunks = new Map<string, number>();
    let logical = 0;
    for (const name of names) {
      const { state, seq } = await repo.loadState(name);
      const chunks = new Map<string, number>();
      let files = 0;
      let dirs = 0;
      let bytes = 0;
      for (const r of state.values()) {
        if (r.type === 'dir') dirs++;
        if (r.type !== 'file') continue;
        files++;
        bytes += r.size;
        for (const c of r.chunks) chunks.set(c.id, c.length);
      }
      for (const [id, n] of chunks) allChunks.set(id, n);
      logical += bytes;
      const stored = sum(chunks.values());
      const ratio = stored > 0 ? bytes / stored : 1;
      print(
        flags,
        { source: name, seq, files, dirs, entries: state.size, bytes, chunks: chunks.size, chunkBytes: stored, dedupRatio: ratio },
        `${name} (commit ${seq}): ${files} files, ${dirs} dirs, ${mib(bytes)}; ${chunks.size} distinct chunks, ${mib(stored)} stored: ${ratio.toFixed(2)}× (deduplication and compression)`,
      );
    }
    const objects = async (prefix: string): Promise<{ count: number; bytes: number }> => {
      const list = await listAll(repo.backend, prefix);
      return { count: list.length, bytes: sum(list.map((o) => o.size)) };
    };
    const [packs, journal, checkpoints] = [await objects('data/'), await objects('journal/'), await objects('checkpoint/')];
    const unique = sum(allChunks.values());
    print(
      flags,
      {
        repository: repo.backend.location,
        sources: names.length,
        bytes: logical,
        chunkBytes: unique,
        dedupRatio: unique > 0 ? logical / unique : 1,
        packs,
        journal,
        checkpoints,
      },
      `repository ${repo.backend.location}: ${packs.count} packs, ${mib(packs.bytes)} (all versions); journal ${journal.count} objects, ${mib(journal.bytes)}; checkpoints ${checkpoints.count}, ${mib(checkpoints.bytes)}`,
    );
  });
}

const sum = (xs: Iterable<number>): number => {
  let n = 0;
  for (const x of xs) n += x;
  return n;
};

/** `phoenix check`: the work is checkRepository's; this prints what it found. */
export async function checkCommand(flags: RepoFlags & { readData?: boolean }): Promise<number> {
  return withRepo(flags, async (repo) => {
    const { errors, packs, chunkRefs, blobsRead, unreferenced } = await checkRepository(repo, { readData: flags.readData ?? false });
    const { stateDir } = await resolveSettings(flags);
    writeLastCheck(stateDir, repo.config.id, {
      timeMs: Date.now(),
      ok: errors.length === 0,
      readData: flags.readData ?? false,
      errors: errors.length,
    });
    for (const e of errors) process.stderr.write(`phoenix: error: ${e}\n`);
    const loose =
      unreferenced.packs > 0
        ? `; ${unreferenced.packs} packs (${mib(unreferenced.bytes)}) are named by no commit kept: left by an upload that was interrupted, a backup running now, or history that forget dropped. They are harmless; \`phoenix prune\` removes them`
        : '';
    print(
      flags,
      {
        ok: errors.length === 0,
        errors,
        packs,
        chunkRefs,
        blobsRead,
        unreferencedPacks: unreferenced.packs,
        unreferencedBytes: unreferenced.bytes,
      },
      errors.length === 0
        ? `no errors: ${packs} packs, ${chunkRefs} chunk references${flags.readData ? `, ${blobsRead} blobs read and verified` : ''}${loose}`
        : `${errors.length} errors found${loose}`,
    );
    return errors.length === 0 ? 0 : 1;
  });
}

function openState(settings: Settings, config: RepoConfig): StateDb {
  return new StateDb(join(settings.stateDir, `${config.id}.sqlite`));
}
