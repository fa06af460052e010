import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { openBackend } from '../backend/open.js';
import { PhoenixError } from '../errors.js';
import { Repository, type RepoConfig } from '../repo/repository.js';
import { StateDb } from '../state/db.js';

/** Options every repository command takes. */
export interface RepoFlags {
  repo?: string;
  passwordFile?: string;
  source?: string;
  json?: boolean;
  state?: string;
}

export function repoUrl(flags: RepoFlags): string {
  const url = flags.repo ?? process.env.PHOENIX_REPOSITORY;
  if (url === undefined || url === '') {
    throw new PhoenixError('PHX_USAGE', 'no repository given', { hint: 'pass --repo URL or set PHOENIX_REPOSITORY' });
  }
  return url;
}

/** The password: PHOENIX_PASSWORD, then --password-file / PHOENIX_PASSWORD_FILE, then a prompt on a terminal. */
export async function password(flags: RepoFlags, confirm = false): Promise<string | undefined> {
  if (process.env.PHOENIX_PASSWORD !== undefined) return process.env.PHOENIX_PASSWORD;
  const file = flags.passwordFile ?? process.env.PHOENIX_PASSWORD_FILE;
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new PhoenixError('PHX_USAGE', `cannot read the password file ${file}: ${(err as Error).message}`, { hint: 'check the path given with --password-file or PHOENIX_PASSWORD_FILE' });
    }
  }
  if (!process.stdin.isTTY) return undefined;
  const first = await prompt('repository password: ');
  if (confirm && (await prompt('again: ')) !== first) throw new PhoenixError('PHX_USAGE', 'the passwords do not match');
  return first;
}

async function prompt(question: string): Promise<string> {
  process.stderr.write(question);
  const muted = new Writable({ write: (_c, _e, cb) => cb() });
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  const answer = await new Promise<string>((resolve) => rl.question('', resolve));
  rl.close();
  process.stderr.write('\n');
  return answer;
}

export async function openRepo(flags: RepoFlags, whileDeriving?: (config: RepoConfig) => void): Promise<Repository> {
  return Repository.open(openBackend(repoUrl(flags)), () => password(flags), whileDeriving);
}

export function stateDir(flags: RepoFlags): string {
  if (flags.state !== undefined) return flags.state;
  const base = process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state');
  return join(base, 'phoenix');
}

export function openState(flags: RepoFlags, config: RepoConfig): StateDb {
  return new StateDb(join(stateDir(flags), `${config.id}.sqlite`));
}

/** The source to read: --source, or the only one the repository holds. */
export async function pickSource(repo: Repository, flags: RepoFlags): Promise<string> {
  const sources = await repo.sources();
  if (flags.source !== undefined) {
    if (!sources.includes(flags.source)) {
      throw new PhoenixError('PHX_NOT_IN_REPO', `the repository has no source ${JSON.stringify(flags.source)}`, {
        hint: sources.length > 0 ? `its sources: ${sources.map((s) => JSON.stringify(s)).join(', ')}` : 'back something up first',
      });
    }
    return flags.source;
  }
  if (sources.length === 1) return sources[0] as string;
  if (sources.length === 0) throw new PhoenixError('PHX_NOT_IN_REPO', 'the repository holds no backup yet', { hint: 'run phoenix backup first' });
  throw new PhoenixError('PHX_USAGE', `the repository holds ${sources.length} sources; say which with --source`, {
    hint: `its sources: ${sources.map((s) => JSON.stringify(s)).join(', ')}`,
  });
}

/**
 * TIME as ISO 8601 (`2026-11-23T10:00:00.123Z`, a date, or a local time) or relative to now
 * (`90s`, `10m`, `2h`, `3d`, `1w` ago). Returns milliseconds since the epoch.
 */
export function parseTime(s: string, now = Date.now()): number {
  const rel = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$/.exec(s.trim());
  if (rel) {
    const unit = { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[rel[2] as 's' | 'm' | 'h' | 'd' | 'w'];
    return now - Number(rel[1]) * unit;
  }
  const t = Date.parse(s);
  if (Number.isNaN(t)) {
    throw new PhoenixError('PHX_USAGE', `cannot read the time ${JSON.stringify(s)}`, {
      hint: 'use ISO 8601 (2026-11-23T10:15:30.250Z, 2026-11-23) or a time ago (30s, 10m, 2h, 3d, 1w)',
    });
  }
  return t;
}

export function print(flags: RepoFlags, json: unknown, text: string): void {
  process.stdout.write(flags.json ? `${JSON.stringify(json)}\n` : `${text}\n`);
}
