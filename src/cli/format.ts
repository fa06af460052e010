import type { Change } from '../model/change.js';
import { displayPath, type RawPath } from '../model/path.js';
import { jsonPath } from './output.js';

/** The JSON line of one change: the contract of `phoenix events --json` (README). */
export function changeToJson(c: Change): Record<string, unknown> {
  const event = c.type === 'rescan' ? (c.reason === 'overflow' ? 'overflow' : 'rescan') : c.type;
  const out: Record<string, unknown> = { event };
  Object.assign(out, jsonPath(c.path));
  out.kind = c.kind;
  if (c.type === 'moved') Object.assign(out, jsonPath(c.from, 'from'));
  if (c.type === 'modified') out.closed = c.closed;
  if (c.type === 'rescan') out.reason = c.reason;
  return out;
}

/** One line for people, like inotifywait: `created    file     dir/name`. */
export function changeToText(c: Change): string {
  const event = c.type === 'rescan' ? (c.reason === 'overflow' ? 'overflow' : 'rescan') : c.type;
  const name = (p: RawPath): string => (p === '' ? '.' : JSON.stringify(displayPath(p)).slice(1, -1));
  let line = `${event.padEnd(10)} ${c.kind.padEnd(7)} ${name(c.path)}`;
  if (c.type === 'moved') line += ` (from ${name(c.from)})`;
  if (c.type === 'modified' && c.closed) line += ' (closed)';
  if (c.type === 'rescan') line += ` (${c.reason}: reconciling)`;
  return line;
}

/** Bytes as MiB with one decimal. */
export const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
