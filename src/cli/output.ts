import { PhoenixError } from '../errors.js';

/** Prints an error (or warning) for people on stderr: the message, then how to fix it. */
export function printError(err: unknown, label = 'error'): void {
  if (err instanceof PhoenixError) {
    process.stderr.write(`phoenix: ${label}: ${err.message} [${err.code}]\n`);
    if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
    return;
  }
  const e = err as Error;
  process.stderr.write(`phoenix: ${label}: ${e?.stack ?? String(err)}\n`);
}
