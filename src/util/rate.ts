import { PhoenixError } from '../errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
};

export const RATE_EXAMPLES = '2MiB/s, 500KiB/s, 10MB/s, or a number of KiB/s as restic takes it (2048)';

/**
 * A transfer rate in bytes per second: a number and a unit (`2MiB/s`, `500KiB/s`, `10MB/s`,
 * `1.5M`; `/s` optional; KiB, MiB, GiB are powers of 1024, kB, MB, GB of 1000, K, M, G
 * as in restic 1024), or a plain number of KiB/s (restic's `--limit-upload 2048`). `0`: no
 * limit. Undefined when it does not parse.
 */
export function parseRate(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:\/\s*s)?\s*$/i.exec(text);
  if (m === null) return undefined;
  const n = Number(m[1]);
  const unit = (m[2] ?? '').toLowerCase();
  // A bare number is KiB/s, as restic reads it; "B" says bytes.
  const factor = unit === '' ? 1024 : UNITS[unit];
  if (factor === undefined) return undefined;
  return Math.round(n * factor);
}

/** parseRate, or a usage error naming where the rate came from. */
export function rateOption(text: string | undefined, where: string): number | undefined {
  if (text === undefined) return undefined;
  const r = parseRate(String(text));
  if (r === undefined) {
    throw new PhoenixError('PHX_USAGE', `${where}: ${JSON.stringify(text)} is not a rate`, { hint: `expected ${RATE_EXAMPLES}` });
  }
  return r === 0 ? undefined : r;
}

export function formatRate(bytesPerSec: number): string {
  return bytesPerSec >= 1024 ** 2 ? `${(bytesPerSec / 1024 ** 2).toFixed(2)} MiB/s` : `${(bytesPerSec / 1024).toFixed(1)} KiB/s`;
}
