import { PhoenixError } from '../errors.js';

/**
 * The one duration grammar of the command line and the configuration file: a number and a
 * unit, `ms`, `s`, `m` or `min` (minutes), `h`, `d`, `w`; several may follow each other
 * (`1h30m`). `m` is always minutes: months are not a duration (their length varies).
 */
const UNITS: Record<string, number> = { ms: 1, s: 1e3, m: 6e4, min: 6e4, h: 36e5, d: 864e5, w: 6048e5 };
const PART = /(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d|w)/gy;

export const DURATION_EXAMPLES = '20ms, 5s, 10m (or 10min), 1h30m, 2d, 1w';

/** Milliseconds, or undefined when `s` is not a duration. */
export function parseDuration(s: string): number | undefined {
  const text = s.trim();
  if (text === '') return undefined;
  PART.lastIndex = 0;
  let ms = 0;
  while (PART.lastIndex < text.length) {
    const m = PART.exec(text);
    if (!m) return undefined;
    ms += Number(m[1]) * (UNITS[m[2] as string] as number);
    while (text[PART.lastIndex] === ' ') PART.lastIndex++;
  }
  return Math.round(ms);
}

/**
 * TIME as ISO 8601 (`2026-11-23T10:00:00.123Z`, a date, or a local time) or as a duration ago
 * (`90s`, `10m`, `2h`, `3d`, `1w`). Milliseconds since the epoch.
 */
export function parseTime(s: string, now = Date.now()): number {
  const ago = parseDuration(s);
  if (ago !== undefined) return now - ago;
  const t = Date.parse(s);
  if (Number.isNaN(t)) {
    throw new PhoenixError('PHX_USAGE', `cannot read the time ${JSON.stringify(s)}`, {
      hint: `use ISO 8601 (2026-11-23T10:15:30.250Z, 2026-11-23, "2026-11-23 10:15") or a time ago (${DURATION_EXAMPLES})`,
    });
  }
  return t;
}
