import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { PhoenixError } from '../errors.js';
import type { ConfigFile } from './file.js';
import { rateOption } from '../util/rate.js';

/**
 * Where every command finds its repository, password, state directory and configuration:
 * the one resolver of `watch`, `status` and the one-shot commands. In order: the flag, the
 * environment variable, the configuration file (--config, $PHOENIX_CONFIG, or
 * ~/.config/phoenix/phoenix.yaml when it exists), the default.
 */
export interface SettingsFlags {
  repo?: string | undefined;
  passwordFile?: string | undefined;
  state?: string | undefined;
  config?: string | undefined;
  logLevel?: string | undefined;
  limitUpload?: string | undefined;
  limitDownload?: string | undefined;
}

export interface Settings {
  /** The repository URL. */
  repository: string;
  /** Nothing named a repository: this is the default location (`watch` creates it there). */
  repositoryIsDefault: boolean;
  passwordFile: string | undefined;
  stateDir: string;
  logLevel: string;
  /** Bandwidth limits in bytes per second (--limit-upload / --limit-download, or limit-upload: / limit-download: in the file). */
  limitUpload: number | undefined;
  limitDownload: number | undefined;
  /** The configuration file that was read, and what it holds. */
  configPath: string | undefined;
  file: ConfigFile | undefined;
  /** A path as written in the file: `~` expanded, relative to the file's directory. */
  fromFile(p: string): string;
}

export async function resolveSettings(flags: SettingsFlags, env: NodeJS.ProcessEnv = process.env): Promise<Settings> {
  const given = flags.config ?? nonEmpty(env, 'PHOENIX_CONFIG');
  const configPath = given ?? (existsSync(defaultConfigFile(env)) ? defaultConfigFile(env) : undefined);
  const file = configPath === undefined ? undefined : (await import('./file.js')).readConfigFile(expandHome(configPath));
  const base = configPath === undefined ? process.cwd() : dirname(resolve(expandHome(configPath)));
  const fromFile = (p: string): string => resolve(base, expandHome(p));

  const envRepo = env.PHOENIX_REPOSITORY;
  if (flags.repo === '' || envRepo === '') {
    throw new PhoenixError('PHX_USAGE', `${flags.repo === '' ? '--repo' : 'PHOENIX_REPOSITORY'} is empty`, {
      hint: 'name a repository (a directory or s3://bucket/prefix), or leave it unset for the default one',
    });
  }
  // A URL with a scheme is kept as it is; a relative path in the file is relative to the file.
  const fileRepo =
    file?.repository === undefined || /^[a-z][a-z0-9+.-]*:/i.test(file.repository) ? file?.repository : fromFile(file.repository);
  const named = flags.repo ?? envRepo ?? fileRepo;
  const repository = named === undefined ? defaultRepository(env) : expandUrl(named);
  const filePw = file?.['password-file'] === undefined ? undefined : fromFile(file['password-file']);
  let passwordFile = flags.passwordFile ?? nonEmpty(env, 'PHOENIX_PASSWORD_FILE') ?? filePw;
  // The password generated with the default repository goes with it.
  if (passwordFile === undefined && named === undefined && env.PHOENIX_PASSWORD === undefined && existsSync(defaultPasswordFile(env))) {
    passwordFile = defaultPasswordFile(env);
  }
  return {
    repository,
    repositoryIsDefault: named === undefined,
    passwordFile: passwordFile === undefined ? undefined : expandHome(passwordFile),
    stateDir: expandHome(flags.state ?? (file?.state === undefined ? defaultStateDir(env) : fromFile(file.state))),
    logLevel: flags.logLevel ?? nonEmpty(env, 'PHOENIX_LOG_LEVEL') ?? file?.['log-level'] ?? 'info',
    limitUpload:
      flags.limitUpload !== undefined
        ? rateOption(flags.limitUpload, '--limit-upload')
        : rateOption(file?.['limit-upload'], `${configPath}: limit-upload`),
    limitDownload:
      flags.limitDownload !== undefined
        ? rateOption(flags.limitDownload, '--limit-download')
        : rateOption(file?.['limit-download'], `${configPath}: limit-download`),
    configPath,
    file,
    fromFile,
  };
}

function nonEmpty(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** `~` and `~/…` are the home directory, wherever a path comes from (flag, variable or file). */
export function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? join(homedir(), p.slice(1)) : p;
}

/** A repository URL: a local path gets `~` expanded; URLs with a scheme are left alone. */
function expandUrl(url: string): string {
  return url.startsWith('~') ? expandHome(url) : url;
}

const xdg = (env: NodeJS.ProcessEnv, name: string, fallback: string[]): string => nonEmpty(env, name) ?? join(homedir(), ...fallback);

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(xdg(env, 'XDG_STATE_HOME', ['.local', 'state']), 'phoenix');
}

/** Where a new user's repository goes when none is configured. */
export function defaultRepository(env: NodeJS.ProcessEnv = process.env): string {
  return join(xdg(env, 'XDG_DATA_HOME', ['.local', 'share']), 'phoenix', 'repository');
}

/** The password file created with the default repository. */
export function defaultPasswordFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(xdg(env, 'XDG_CONFIG_HOME', ['.config']), 'phoenix', 'password');
}

export function defaultConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(xdg(env, 'XDG_CONFIG_HOME', ['.config']), 'phoenix', 'phoenix.yaml');
}
