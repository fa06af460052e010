import { asPhoenixError } from '../errors.js';
import { displayPath, rawToBuffer, utf8Of, type RawPath } from '../model/path.js';

/** -q (0), the default (1), -v (2), -vv (3). */
export interface Verbosity {
  verbosity: number;
}

/**
 * Prints an error (or warning) for people on stderr: the message and its code, then how to
 * fix it. Never a stack trace: an unexpected exception is PHX_INTERNAL, and its stack is
 * printed only with PHOENIX_DEBUG=1.
 */
export function printError(err: unknown, label = 'error'): void {
  const e = asPhoenixError(err);
  process.stderr.write(`phoenix: ${label}: ${e.message} [${e.code}]\n`);
  if (e.hint) process.stderr.write(`  hint: ${e.hint}\n`);
  if (process.env.PHOENIX_DEBUG && e.cause instanceof Error) process.stderr.write(`${e.cause.stack ?? ''}\n`);
}

/** `path` as UTF-8 ('.' for the root) and, when its bytes are not UTF-8, `pathBase64` with the exact bytes. */
export function jsonPath(p: RawPath, key = 'path'): Record<string, string> {
  const s = utf8Of(p);
  const o: Record<string, string> = { [key]: p === '' ? '.' : (s ?? displayPath(p)) };
  if (s === undefined) o[`${key}Base64`] = rawToBuffer(p).toString('base64');
  return o;
}
