import { PhoenixError } from '../errors.js';
import { DURATION_EXAMPLES, parseDuration } from '../util/duration.js';

/**
 * Retention policies: which instants of a source's history are kept.
 *
 * A policy is a list of tiers `INTERVAL:DURATION` (`all:24h hourly:7d daily:90d weekly:2y
 * monthly:forever`). A tier keeps the state as of each boundary of its interval (what
 * `restore --at BOUNDARY` returns: the last commit at or before it) within DURATION of the
 * source's latest commit; `all` keeps every commit. Everything is counted back from the latest
 * commit, never from the clock: a source that stopped keeps its last history, and a host with
 * a wrong clock cannot age anything out. Calendar boundaries (hour, day, ISO week starting on
 * Monday, month, year) are local time, so a day is a day across a DST change; a duration
 * interval (`10s`, `5min`) has its boundaries at multiples of it since the epoch.
 */

export type Unit = 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';
const UNITS: Record<Unit, number> = { hourly: 36e5, daily: 864e5, weekly: 6048e5, monthly: 30 * 864e5, yearly: 365 * 864e5 };

export type Interval = { kind: 'all' } | { kind: 'calendar'; unit: Unit } | { kind: 'every'; ms: number };

export interface Tier {
  /** As written: `hourly:7d`. */
  text: string;
  interval: Interval;
  /** How far back from the latest commit the tier reaches; Infinity for `forever`. */
  keepMs: number;
}

export interface Policy {
  tiers: Tier[];
  /** Every commit younger than this (before the latest one) is kept whatever the tiers say. */
  minAgeMs: number;
}

export const DEFAULT_POLICY = 'all:24h hourly:7d daily:90d weekly:2y monthly:forever';
export const DEFAULT_MIN_AGE = '1h';
const YEAR_MS = 365.25 * 864e5;

const usage = (message: string, hint: string): PhoenixError => new PhoenixError('PHX_USAGE', message, { hint });

/** A duration for retention: the CLI's grammar, plus `y` (365.25 days), or `forever` where allowed. */
export function parseRetentionDuration(text: string, forever: boolean): number | undefined {
  const t = text.trim();
  if (forever && t === 'forever') return Infinity;
  const years = /^(\d+(?:\.\d+)?)\s*y$/.exec(t);
  if (years) return Number(years[1]) * YEAR_MS;
  const ms = parseDuration(t);
  return ms === undefined || ms <= 0 ? undefined : ms;
}

function intervalMs(i: Interval): number {
  return i.kind === 'all' ? 0 : i.kind === 'every' ? i.ms : UNITS[i.unit];
}

/** Reads and validates a policy; errors name the tier and what was expected. */
export function parsePolicy(text: string, minAge: string = DEFAULT_MIN_AGE): Policy {
  const words = text.trim().split(/\s+/).filter(Boolean);
  const example = `for example "${DEFAULT_POLICY}"`;
  if (words.length === 0) throw usage('the retention policy is empty', `give at least one tier INTERVAL:DURATION, ${example}`);
  const tiers: Tier[] = [];
  for (const word of words) {
    const colon = word.indexOf(':');
    if (colon < 0) throw usage(`the retention tier ${JSON.stringify(word)} has no ':'`, `write tiers as INTERVAL:DURATION, ${example}`);
    const [name, dur] = [word.slice(0, colon), word.slice(colon + 1)];
    let interval: Interval;
    if (name === 'all') interval = { kind: 'all' };
    else if (name in UNITS) interval = { kind: 'calendar', unit: name as Unit };
    else {
      const ms = parseDuration(name);
      if (ms === undefined || ms < 1000) {
        throw usage(
          `the retention tier ${JSON.stringify(word)}: ${JSON.stringify(name)} is not an interval`,
          `INTERVAL is all, hourly, daily, weekly, monthly, yearly, or a duration of at least 1s (${DURATION_EXAMPLES})`,
        );
      }
      interval = { kind: 'every', ms };
    }
    const keepMs = parseRetentionDuration(dur, true);
    if (keepMs === undefined) {
      throw usage(
        `the retention tier ${JSON.stringify(word)}: ${JSON.stringify(dur)} is not a duration`,
        `DURATION is a duration (${DURATION_EXAMPLES}, 2y) or forever`,
      );
    }
    if (keepMs < intervalMs(interval)) {
      throw usage(
        `the retention tier ${JSON.stringify(word)} keeps less than one ${name} instant`,
        `give it a duration at least as long as its interval (${example})`,
      );
    }
    const prev = tiers.at(-1);
    if (prev !== undefined) {
      if (intervalMs(interval) <= intervalMs(prev.interval)) {
        throw usage(
          `the retention tier ${JSON.stringify(word)} comes after ${JSON.stringify(prev.text)} but its interval is not longer`,
          `order the tiers from the finest interval to the coarsest, ${example}`,
        );
      }
      if (keepMs <= prev.keepMs) {
        throw usage(
          `the retention tier ${JSON.stringify(word)} does not reach further back than ${JSON.stringify(prev.text)}`,
          `each tier's duration must be longer than the one before (only the last may be forever), ${example}`,
        );
      }
    }
    tiers.push({ text: word, interval, keepMs });
  }
  const minAgeMs = parseRetentionDuration(minAge, false) ?? (minAge.trim() === '0' ? 0 : undefined);
  if (minAgeMs === undefined)
    throw usage(`the minimum age ${JSON.stringify(minAge)} is not a duration`, `for example 1h (${DURATION_EXAMPLES})`);
  return { tiers, minAgeMs };
}

export function formatPolicy(p: Policy): string {
  return p.tiers.map((t) => t.text).join(' ');
}

/** The last boundary of `i` at or before `t` (ms since the epoch). */
export function floorBoundary(i: Exclude<Interval, { kind: 'all' }>, t: number): number {
  if (i.kind === 'every') return Math.floor(t / i.ms) * i.ms;
  const d = new Date(t);
  switch (i.unit) {
    case 'hourly':
      d.setMinutes(0, 0, 0);
      break;
    case 'daily':
      d.setHours(0, 0, 0, 0);
      break;
    case 'weekly':
      d.setHours(0, 0, 0, 0);
      d.setDate(d.getDate() - ((d.getDay() + 6) % 7)); // ISO weeks start on Monday
      d.setHours(0, 0, 0, 0);
      break;
    case 'monthly':
      d.setDate(1);
      d.setHours(0, 0, 0, 0);
      break;
    case 'yearly':
      d.setMonth(0, 1);
      d.setHours(0, 0, 0, 0);
      break;
  }
  return d.getTime();
}

/** One instant of the history: a commit (or a step of a segment) and its time. */
export interface Instant {
  seq: number;
  timeMs: number;
}

/** Why an instant is kept: `latest`, `pin`, `min-age`, `all:24h`, or an interval tier with the boundary it is current at. */
export interface KeepReason {
  by: string;
  /** For interval tiers and pins: the instant (ms) whose state this commit is. */
  atMs?: number;
}

/**
 * Which instants `policy` keeps, with why. `instants` are oldest first. A commit is current at
 * every time from its own up to the next commit's (exclusive): an interval tier keeps it when a
 * boundary of its interval falls in that span and within the tier's reach. Pins keep the commit
 * current at the pinned time. The latest commit is always kept. Idempotent and monotone: kept
 * instants are the same whoever computes them, and one dropped is never needed again later.
 */
export function keptInstants(instants: readonly Instant[], policy: Policy, pins: readonly number[] = []): Map<number, KeepReason[]> {
  const kept = new Map<number, KeepReason[]>();
  const latest = instants.at(-1);
  if (latest === undefined) return kept;
  const add = (seq: number, r: KeepReason): void => {
    const list = kept.get(seq);
    if (list === undefined) kept.set(seq, [r]);
    else list.push(r);
  };
  const L = latest.timeMs;
  const sortedPins = [...pins].sort((a, b) => a - b);
  let pin = 0;
  for (let i = 0; i < instants.length; i++) {
    const c = instants[i] as Instant;
    const next = instants[i + 1];
    if (next === undefined) add(c.seq, { by: 'latest' });
    if (c.timeMs >= L - policy.minAgeMs && next !== undefined) add(c.seq, { by: 'min-age' });
    const end = next?.timeMs ?? Infinity; // c is current in [c.timeMs, end)
    while (pin < sortedPins.length && (sortedPins[pin] as number) < c.timeMs) pin++;
    for (let j = pin; j < sortedPins.length && (sortedPins[j] as number) < end; j++)
      add(c.seq, { by: 'pin', atMs: sortedPins[j] as number });
    for (const t of policy.tiers) {
      if (t.interval.kind === 'all') {
        if (c.timeMs >= L - t.keepMs) add(c.seq, { by: t.text });
        continue;
      }
      // The latest boundary while c is current (before the next commit, or up to the latest commit's time).
      const b = floorBoundary(t.interval, next === undefined ? L : end - 1);
      if (b >= c.timeMs && b >= L - t.keepMs) add(c.seq, { by: t.text, atMs: b });
    }
  }
  return kept;
}
