import { readFileSync } from 'node:fs';
import { PhoenixError } from '../errors.js';
import { rawFromBuffer, rawFromUtf8, utf8Of, type RawPath } from '../model/path.js';

/**
 * Paths on the command line, as their exact bytes. Node decodes argv as UTF-8, so a name that
 * is not valid UTF-8 reaches `process.argv` with U+FFFD in place of its bytes; Linux keeps the
 * bytes in /proc/self/cmdline. Each such argument is looked up there by its decoded text.
 */
let fromCmdline: Map<string, RawPath | null> | undefined;

function cmdlineTable(): Map<string, RawPath | null> {
  const table = new Map<string, RawPath | null>();
  let bytes: Buffer;
  try {
    bytes = readFileSync('/proc/self/cmdline');
  } catch {
    return table;
  }
  for (let start = 0; start < bytes.length;) {
    let end = bytes.indexOf(0, start);
    if (end < 0) end = bytes.length;
    const arg = rawFromBuffer(bytes.subarray(start, end));
    if (utf8Of(arg) === undefined) {
      const text = bytes.subarray(start, end).toString('utf8');
      // Two arguments that decode alike cannot be told apart: null says so.
      table.set(text, table.has(text) && table.get(text) !== arg ? null : arg);
    }
    start = end + 1;
  }
  return table;
}

/** The raw bytes of command-line argument `s` (a path, a pattern). */
export function rawArg(s: string): RawPath {
  if (!s.includes('\ufffd')) return rawFromUtf8(s);
  fromCmdline ??= cmdlineTable();
  const raw = fromCmdline.get(s);
  if (raw === null) {
    throw new PhoenixError(
      'PHX_USAGE',
      `two arguments are the same text once decoded as UTF-8 (${JSON.stringify(s)}); their bytes cannot be told apart`,
      {
        hint: 'name such paths with --path-base64 (the pathBase64 of --json output)',
      },
    );
  }
  return raw ?? rawFromUtf8(s);
}

/** A path inside a source, from an argument or from --path-base64: no leading or trailing slashes. */
export function sourcePath(arg: string | undefined, base64?: string): RawPath {
  if (base64 !== undefined) {
    const buf = Buffer.from(base64, 'base64');
    if (buf.length === 0 && base64 !== '') throw new PhoenixError('PHX_USAGE', `--path-base64 ${JSON.stringify(base64)} is not base64`);
    return trimSlashes(rawFromBuffer(buf));
  }
  return arg === undefined ? '' : trimSlashes(rawArg(arg));
}

function trimSlashes(p: RawPath): RawPath {
  return p.replace(/^\/+|\/+$/g, '').replace(/^\.$/, '');
}
