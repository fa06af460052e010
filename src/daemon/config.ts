import { resolve } from 'node:path';
import { resolveSettings, type Settings } from '../config/settings.js';
import { PhoenixError } from '../errors.js';
import { DEFAULT_SETTLE, type SettleTimes } from './pending.js';
import { parsePolicy, DEFAULT_MIN_AGE } from '../retention/policy.js';
import { DEFAULT_GUARD } from './guard.js';
import type { SourceConfig } from './source.js';
import { webConfig, type WebConfig, type WebFlags } from '../web/config.js';

/** A source's retention: from the file, checked now (an error names the key). */
function retentionOf(r: string | { policy: string; 'min-age'?: string | undefined }, key: string): { policy: string; minAge: string } {
  const policy = typeof r === 'string' ? r : r.policy;
  const minAge = typeof r === 'string' ? DEFAULT_MIN_AGE : (r['min-age'] ?? DEFAULT_MIN_AGE);
  try {
    parsePolicy(policy, minAge);
  } catch (err) {
    const e = err as PhoenixError;
    throw new PhoenixError('PHX_CONFIG', `${key}: ${e.message}`, e.hint !== undefined ? { hint: e.hint } : {});
  }
  return { policy, minAge };
}

/** Everything `phoenix watch` runs with, after the file, the flags and the defaults. */
export interface WatchConfig {
  /** The repository, password, state directory and log level, as every command resolves them. */
  settings: Settings;
  settle: SettleTimes;
  reconcileMs: number;
  shutdownTimeoutMs: number;
  leaseRenewMs: number;
  leaseTtlMs: number;
  maintenance: { compactMs: number; compactAfterMs: number; forgetMs: number; pruneMs: number; minPackAgeMs: number };
  /** The dashboard, WebDAV and metrics listeners. */
  web: WebConfig;
  sources: SourceConfig[];
}

export interface WatchFlags extends WebFlags {
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
 * The settings every command resolves, plus what only the daemon needs: a SOURCE on the
 * command line replaces the file's sources; --exclude adds to every source's exclusions.
 */
export async function loadWatchConfig(sourceArg: string | undefined, flags: WatchFlags): Promise<WatchConfig> {
  const settings = await resolveSettings(flags);
  const file = settings.file;
  const g = file?.guard;
  const guard =
    g === false
      ? null
      : {
          ...DEFAULT_GUARD,
          ...(g?.files !== undefined ? { files: g.files } : {}),
          ...(g?.fraction !== undefined ? { fraction: g.fraction } : {}),
          ...(g?.window !== undefined ? { windowMs: g.window } : {}),
        };
  let sources: SourceConfig[] = (file?.sources ?? []).map((s, i) => {
    const sc: SourceConfig = {
      name: s.name ?? settings.fromFile(s.path),
      path: settings.fromFile(s.path),
      exclude: [...s.exclude, ...flags.exclude],
      oneFileSystem: s['one-file-system'] || flags.oneFileSystem === true,
      guard,
    };
    if (s.retention !== undefined) sc.retention = retentionOf(s.retention, `sources[${i}].retention`);
    return sc;
  });
  if (sourceArg !== undefined) {
    const path = resolve(sourceArg);
    sources = [{ name: flags.source ?? path, path, exclude: flags.exclude, oneFileSystem: flags.oneFileSystem === true, guard }];
  }
  if (sources.length === 0) {
    throw new PhoenixError('PHX_USAGE', 'nothing to watch', { hint: 'give a SOURCE directory, or a --config file with a sources: list' });
  }
  const names = new Set<string>();
  for (const s of sources) {
    if (names.has(s.name))
      throw new PhoenixError('PHX_CONFIG', `two sources are named ${JSON.stringify(s.name)}`, { hint: 'give each source its own name:' });
    names.add(s.name);
  }
  const renew = file?.['lease-renew'] ?? 60_000;
  const ttl = file?.['lease-ttl'] ?? 300_000;
  if (2 * renew > ttl) {
    throw new PhoenixError('PHX_CONFIG', `lease-renew (${renew} ms) must be at most half of lease-ttl (${ttl} ms)`, {
      hint: 'a lease must be renewed well before it runs out: shorten lease-renew or lengthen lease-ttl',
    });
  }
  return {
    settings,
    settle: {
      closedMs: file?.settle.closed ?? DEFAULT_SETTLE.closedMs,
      openMs: file?.settle.open ?? DEFAULT_SETTLE.openMs,
      maxDelayMs: file?.settle['max-delay'] ?? DEFAULT_SETTLE.maxDelayMs,
    },
    reconcileMs: file?.['reconcile-every'] ?? 3_600_000,
    web: webConfig(file, flags),
    shutdownTimeoutMs: file?.['shutdown-timeout'] ?? 30_000,
    maintenance: {
      compactMs: file?.maintenance['compact-every'] ?? 3_600_000,
      compactAfterMs: file?.maintenance['compact-after'] ?? 600_000,
      forgetMs: file?.maintenance['forget-every'] ?? 86_400_000,
      pruneMs: file?.maintenance['prune-every'] ?? 86_400_000,
      minPackAgeMs: file?.maintenance['min-pack-age'] ?? 86_400_000,
    },
    leaseTtlMs: Math.max(file?.['lease-ttl'] ?? 300_000, 1000),
    leaseRenewMs: Math.min(Math.max(file?.['lease-renew'] ?? 60_000, 100), 120_000),
    sources,
  };
}
