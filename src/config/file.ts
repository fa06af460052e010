/**
 * The YAML configuration file (README: Configuration). Loaded only when a file is there:
 * zod and yaml cost a one-shot command tens of milliseconds.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { PhoenixError } from '../errors.js';
import { DURATION_EXAMPLES, parseDuration } from '../util/duration.js';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

const DURATION_HINT = `expected a duration such as ${DURATION_EXAMPLES} (or a number of milliseconds)`;
const duration = z.union([z.number().int().nonnegative(), z.string()], { error: DURATION_HINT }).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `${DURATION_HINT}, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return ms;
});

/** A retention policy: its text (checked by parsePolicy when the daemon starts), or the text with a minimum age. */
const retention = z.union([z.string().min(1), z.strictObject({ policy: z.string().min(1), 'min-age': z.string().min(1).optional() })]);

const sourceSchema = z.strictObject({
  path: z.string().min(1),
  name: z.string().min(1).optional(),
  exclude: z.array(z.string()).default([]),
  'one-file-system': z.boolean().default(false),
  retention: retention.optional(),
});

const guardSchema = z.union([
  z.literal(false),
  z.strictObject({
    files: z.number().int().positive().optional(),
    fraction: z.number().positive().max(1).optional(),
    window: duration.optional(),
  }),
]);

export const configSchema = z.strictObject({
  repository: z.string().min(1).optional(),
  'password-file': z.string().min(1).optional(),
  state: z.string().min(1).optional(),
  'log-level': z.enum(LOG_LEVELS).optional(),
  /** Bandwidth limits (checked by rateOption when the settings are resolved: the message names the key). */
  'limit-upload': z
    .union([z.string().min(1), z.number().nonnegative()])
    .transform(String)
    .optional(),
  'limit-download': z
    .union([z.string().min(1), z.number().nonnegative()])
    .transform(String)
    .optional(),
  settle: z.strictObject({ closed: duration.optional(), open: duration.optional(), 'max-delay': duration.optional() }).default({}),
  'reconcile-every': duration.default(3_600_000),
  'shutdown-timeout': duration.default(30_000),
  /** How often each writer renews its lease and looks for prune's deletion plans. */
  'lease-renew': duration.default(60_000),
  /** How long a writer's lease lasts without a renewal (another writer may take over after it). */
  'lease-ttl': duration.default(300_000),
  /** The mass-change guard (false: off). */
  guard: guardSchema.optional(),
  /** Retention run by the daemon: forget of its sources and prune of the repository, this often (0: never). */
  maintenance: z
    .strictObject({
      'compact-every': duration.optional(),
      'compact-after': duration.optional(),
      'forget-every': duration.optional(),
      'prune-every': duration.optional(),
      'min-pack-age': duration.optional(),
    })
    .default({}),
  /** The dashboard (and /metrics): where it listens ("off": nowhere), and whether beyond loopback. */
  ui: z
    .strictObject({
      listen: z.union([z.string(), z.literal(false)]).optional(),
      public: z.boolean().default(false),
      /** More Host names the dashboard answers to (a reverse proxy's name). */
      hosts: z.array(z.string().min(1)).default([]),
      /** Exposure above this colours the RPO gauge red. */
      'rpo-target': duration.optional(),
    })
    .default({ public: false, hosts: [] }),
  /** The read-only WebDAV server of the past. */
  webdav: z.strictObject({ listen: z.union([z.string(), z.literal(false)]).optional() }).default({}),
  /** /metrics without a token, on a listener of its own (loopback unless ui.public). */
  metrics: z.strictObject({ listen: z.union([z.string(), z.literal(false)]).optional() }).default({}),
  sources: z.array(sourceSchema).default([]),
});

export type ConfigFile = z.output<typeof configSchema>;

/** Reads and validates `path`; an error names the key, the bad value and what is expected. */
export function readConfigFile(path: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PhoenixError('PHX_CONFIG', `cannot read the configuration file ${path}: ${(err as Error).message}`, {
      hint: 'check the path given with --config',
    });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line}, column ${err.linePos[0].col}` : '';
    throw new PhoenixError('PHX_CONFIG', `${path} is not valid YAML${where}: ${(err as Error).message.split('\n')[0]}`, {
      hint: 'fix the YAML syntax',
    });
  }
  const r = configSchema.safeParse(doc);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => {
    const key =
      i.path.length > 0
        ? i.path
            .map((k) => (typeof k === 'number' ? `[${k}]` : `.${String(k)}`))
            .join('')
            .replace(/^\./, '')
        : '(top level)';
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
