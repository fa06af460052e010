import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { PhoenixError } from '../errors.js';
import { DEFAULT_SETTLE, type SettleTimes } from './pending.js';
import type { SourceConfig } from './source.js';

/** `250ms`, `20s`, `5m`, `1h`, `2d`, or a number of milliseconds. */
const DURATION_HINT = 'expected a duration such as 20ms, 5s, 10m, 1h (or a number of milliseconds)';
const duration = z.union([z.number().int().nonnegative(), z.string()], { error: DURATION_HINT }).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `${DURATION_HINT}, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd']);
});

const sourceSchema = z.strictObject({
  path: z.string().min(1),
  name: z.string().min(1).optional(),
  exclude: z.array(z.string()).default([]),
  'one-file-system': z.boolean().default(false),
});

export const configSchema = z.strictObject({
  repository: z.string().min(1).optional(),
  'password-file': z.string().min(1).optional(),
  state: z.string().min(1).optional(),
  'log-level': z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  settle: z
    .strictObject({ closed: duration.optional(), open: duration.optional(), 'max-delay': duration.optional() })
    .default({}),
  'reconcile-every': duration.default(3_600_000),
  'shutdown-timeout': duration.default(30_000),
  sources: z.array(sourceSchema).default([]),
});

/** Everything `phoenix watch` runs with, after the file, the flags and the defaults. */
export interface WatchConfig {
  repository: string | undefined;
  passwordFile: string | undefined;
  stateDir: string;
  logLevel: string;
  settle: SettleTimes;
  reconcileMs: number;
  shutdownTimeoutMs: number;
  sources: SourceConfig[];
}

export interface WatchFlags {
  config?: string;
  repo?: string;
  passwordFile?: string;
  state?: string;
  exclude: string[];
  oneFileSystem?: boolean;
  logLevel?: string;
  source?: string;
}

/**
 * Reads the YAML file (if any), validates it, and lays the flags over it: a SOURCE on the
 * command line replaces the file's sources; --exclude adds to every source's exclusions.
 */
export function loadWatchConfig(sourceArg: string | undefined, flags: WatchFlags): WatchConfig {
  const file = flags.config === undefined ? configSchema.parse({}) : readConfigFile(flags.config);
  const base = flags.config === undefined ? process.cwd() : dirname(resolve(flags.config));
  const here = (p: string): string => resolve(base, expandHome(p));
  let sources: SourceConfig[] = file.sources.map((s) => ({
    name: s.name ?? here(s.path),
    path: here(s.path),
    exclude: [...s.exclude, ...flags.exclude],
    oneFileSystem: s['one-file-system'] || flags.oneFileSystem === true,
  }));
  if (sourceArg !== undefined) {
    const path = resolve(sourceArg);
    sources = [{ name: flags.source ?? path, path, exclude: flags.exclude, oneFileSystem: flags.oneFileSystem === true }];
  }
  if (sources.length === 0) {
    throw new PhoenixError('PHX_USAGE', 'nothing to watch', { hint: 'give a SOURCE directory, or a --config file with a sources: list' });
  }
  const names = new Set<string>();
  for (const s of sources) {
    if (names.has(s.name)) throw new PhoenixError('PHX_CONFIG', `two sources are named ${JSON.stringify(s.name)}`, { hint: 'give each source its own name:' });
    names.add(s.name);
  }
  // Relative paths in the file are relative to the file; on the command line, to the working directory.
  const fileRepo = file.repository === undefined || /^[a-z][a-z0-9+.-]*:/i.test(file.repository) ? file.repository : here(file.repository);
  const repo = flags.repo ?? process.env.PHOENIX_REPOSITORY ?? fileRepo;
  const passwordFile = flags.passwordFile ?? process.env.PHOENIX_PASSWORD_FILE ?? (file['password-file'] === undefined ? undefined : here(file['password-file']));
  return {
    repository: repo === '' ? undefined : repo,
    passwordFile,
    stateDir: flags.state ?? (file.state === undefined ? defaultStateDir() : here(file.state)),
    logLevel: flags.logLevel ?? process.env.PHOENIX_LOG_LEVEL ?? file['log-level'],
    settle: {
      closedMs: file.settle.closed ?? DEFAULT_SETTLE.closedMs,
      openMs: file.settle.open ?? DEFAULT_SETTLE.openMs,
      maxDelayMs: file.settle['max-delay'] ?? DEFAULT_SETTLE.maxDelayMs,
    },
    reconcileMs: file['reconcile-every'],
    shutdownTimeoutMs: file['shutdown-timeout'],
    sources,
  };
}

function readConfigFile(path: string): z.output<typeof configSchema> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PhoenixError('PHX_CONFIG', `cannot read the configuration file ${path}: ${(err as Error).message}`, { hint: 'check the path given with --config' });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line}, column ${err.linePos[0].col}` : '';
    throw new PhoenixError('PHX_CONFIG', `${path} is not valid YAML${where}: ${(err as Error).message.split('\n')[0]}`, { hint: 'fix the YAML syntax' });
  }
  const r = configSchema.safeParse(doc);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => {
    const key = i.path.length > 0 ? i.path.map((k) => (typeof k === 'number' ? `[${k}]` : `.${String(k)}`)).join('').replace(/^\./, '') : '(top level)';
    const value = valueAt(doc, i.path);
    return `${key}: ${i.message}${value === undefined ? '' : ` (found ${JSON.stringify(value)})`}`;
  });
  throw new PhoenixError('PHX_CONFIG', `${path} is not a valid configuration:\n  ${lines.join('\n  ')}`, {
    hint: 'README.md (Configuration) lists every key with an example',
  });
}

function valueAt(doc: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = doc;
  for (const k of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return typeof v === 'object' ? undefined : v;
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? join(homedir(), p.slice(1)) : p;
}

export function defaultStateDir(): string {
  return join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'phoenix');
}

/** Where a new user's repository goes when none is configured. */
export function defaultRepository(): string {
  return join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'phoenix', 'repository');
}

/** The password file created with the default repository. */
export function defaultPasswordFile(): string {
  return join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'phoenix', 'password');
}
