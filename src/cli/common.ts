import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { openBackend, urlWarning, type OpenOptions } from '../backend/open.js';
import { resolveSettings, type Settings, type SettingsFlags } from '../config/settings.js';
import { errnoCode, PhoenixError } from '../errors.js';
import { Repository, type RepoConfig } from '../repo/index.js';
import { parseTime } from '../util/duration.js';

/** Options every repository command takes. */
export interface RepoFlags extends SettingsFlags {
  source?: string;
  json?: boolean;
}

/** The password: PHOENIX_PASSWORD, then the password file (flag, variable, config file), then a prompt on a terminal. */
export async function password(settings: Pick<Settings, 'passwordFile'>): Promise<string | undefined> {
  const given = givenPassword(settings);
  if (given !== undefined) return given;
  if (!process.stdin.isTTY) return undefined;
  return prompt('repository password: ');
}

function givenPassword(settings: Pick<Settings, 'passwordFile'>): string | undefined {
  if (process.env.PHOENIX_PASSWORD !== undefined) return process.env.PHOENIX_PASSWORD;
  const file = settings.passwordFile;
  if (file === undefined) return undefined;
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new PhoenixError('PHX_USAGE', `cannot read the password file ${file}: ${errnoCode(err) ?? (err as Error).message}`, {
      hint: 'check the path given with --password-file, PHOENIX_PASSWORD_FILE or password-file: in the configuration',
    });
  }
}

const SHORT_PASSWORD = 10;

/**
 * The password of a new repository: given, or asked for twice on a terminal (again after a
 * mismatch). Undefined when there is neither (the caller decides: generate one, or refuse).
 */
export async function newPassword(settings: Pick<Settings, 'passwordFile'>): Promise<string | undefined> {
  const given = givenPassword(settings);
  if (given !== undefined) return given;
  if (!process.stdin.isTTY) return undefined;
  return askNewPassword(
    'Choose the password of the new repository. Without it the backup cannot be read: keep it safe.',
    'new repository password: ',
  );
}

/**
 * A new password from `file` (`--new-password-file`), or asked for twice on a terminal.
 * Undefined when there is neither.
 */
export async function newPasswordFrom(file: string | undefined, intro: string): Promise<string | undefined> {
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new PhoenixError('PHX_USAGE', `cannot read the new password file ${file}: ${errnoCode(err) ?? (err as Error).message}`, {
        hint: 'check the path given with --new-password-file',
      });
    }
    if (text === '') throw new PhoenixError('PHX_USAGE', `the new password file ${file} is empty`, { hint: 'write the password into it' });
    return text;
  }
  if (!process.stdin.isTTY) return undefined;
  return askNewPassword(intro, 'new password: ');
}

async function askNewPassword(intro: string, label: string): Promise<string> {
  process.stderr.write(`${intro}\n`);
  for (let attempt = 1; ; attempt++) {
    const first = await prompt(label);
    if (first === '') {
      process.stderr.write('the password is empty; try again\n');
    } else if ((await prompt('the same again: ')) === first) {
      if (first.length < SHORT_PASSWORD) {
        process.stderr.write(
          `phoenix: warning: the password has only ${first.length} characters: whoever gets a copy of the repository can try passwords offline; ${SHORT_PASSWORD} or more are better\n`,
        );
      }
      process.stderr.write(
        'The password is not stored anywhere. To run Phoenix unattended (a systemd service, cron), put it in a file\n' +
          'only you can read (chmod 600) and set PHOENIX_PASSWORD_FILE or password-file: in the configuration.\n',
      );
      return first;
    } else {
      process.stderr.write('the passwords do not match; try again\n');
    }
    if (attempt === 3) throw new PhoenixError('PHX_USAGE', 'no password was chosen (three attempts)', { hint: 'run the command again' });
  }
}

async function prompt(question: string): Promise<string> {
  // The terminal is in raw mode (no echo) once the interface exists: only then ask.
  const muted = new Writable({ write: (_c, _e, cb) => cb() });
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  process.stderr.write(question);
  const answer = await new Promise<string>((resolve) => rl.question('', resolve));
  rl.close();
  process.stderr.write('\n');
  return answer;
}

/**
 * Opens the repository the settings name. `pw`: a password already known (the one just chosen
 * for a new repository), so nobody is asked twice.
 */
export async function openRepo(
  settings: Settings,
  opts: { whileDeriving?: (config: RepoConfig) => void; password?: string; backend?: OpenOptions } = {},
): Promise<Repository> {
  warnAboutUrl(settings.repository);
  const backend = openBackend(settings.repository, {
    ...opts.backend,
    limits: { upload: settings.limitUpload, download: settings.limitDownload },
  });
  try {
    return await Repository.open(
      backend,
      () => (opts.password !== undefined ? Promise.resolve(opts.password) : password(settings)),
      opts.whileDeriving,
    );
  } catch (err) {
    await backend.close();
    if (err instanceof PhoenixError && err.code === 'PHX_REPO_NOT_INITIALISED' && settings.repositoryIsDefault) {
      throw new PhoenixError(
        'PHX_REPO_NOT_INITIALISED',
        `no repository is configured, and there is none at the default location ${settings.repository}`,
        {
          hint: 'phoenix watch DIR creates one there; or name yours with --repo URL, PHOENIX_REPOSITORY or repository: in ~/.config/phoenix/phoenix.yaml',
        },
      );
    }
    throw err;
  }
}

export function warnAboutUrl(url: string): void {
  const w = urlWarning(url);
  if (w !== undefined) process.stderr.write(`phoenix: warning: ${w}\n`);
}

/** Resolves the settings, opens the repository they name, runs `fn` with it, and closes it. */
export async function withRepo<T>(flags: RepoFlags, fn: (repo: Repository) => Promise<T>): Promise<T> {
  const repo = await openRepo(await resolveSettings(flags));
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

/** --at, read before the repository is opened (a usage error is said at once). */
export const atOf = (flags: { at?: string | undefined }): number | undefined => (flags.at === undefined ? undefined : parseTime(flags.at));

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
  if (sources.length === 0)
    throw new PhoenixError('PHX_NOT_IN_REPO', 'the repository holds no backup yet', {
      hint: 'run phoenix backup DIR or phoenix watch DIR first',
    });
  throw new PhoenixError('PHX_USAGE', `the repository holds ${sources.length} sources; say which with --source`, {
    hint: `its sources: ${sources.map((s) => JSON.stringify(s)).join(', ')} (phoenix sources lists them)`,
  });
}

export function print(flags: { json?: boolean }, json: unknown, text: string): void {
  process.stdout.write(flags.json ? `${JSON.stringify(json)}\n` : `${text}\n`);
}

/**
 * A time for people: on a terminal the local time with its offset (`2026-11-23 11:15:30.250
 * +01:00`), otherwise ISO 8601 in UTC like JSON, for scripts that read text.
 */
export function showTime(ms: number, tty = process.stdout.isTTY === true): string {
  if (!tty) return new Date(ms).toISOString();
  const d = new Date(ms);
  const off = -d.getTimezoneOffset();
  const p = (n: number, w = 2): string => String(Math.abs(n)).padStart(w, '0');
  const zone = `${off >= 0 ? '+' : '-'}${p(Math.trunc(off / 60))}:${p(off % 60)}`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)} ${zone}`;
}

export const iso = (ms: number): string => new Date(ms).toISOString();
