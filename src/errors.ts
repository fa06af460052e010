/**
 * Every error Phoenix raises on purpose is a PhoenixError with a stable code, so callers
 * and the CLI react to the code, never to the message. Add codes; never rename them.
 */
export type ErrorCode =
  | 'PHX_USAGE' // bad command-line arguments (exit 2)
  | 'PHX_SOURCE_INVALID' // the source directory is missing or not a directory
  | 'PHX_SOURCE_GONE' // the watched root was removed, moved away or unmounted
  | 'PHX_WATCH_LIMIT' // inotify_add_watch failed with ENOSPC
  | 'PHX_INSTANCE_LIMIT' // inotify_init1 failed with EMFILE
  | 'PHX_NATIVE' // the native addon is missing or failed
  | 'PHX_IO'; // an unexpected file system error

export class PhoenixError extends Error {
  readonly code: ErrorCode;
  /** What the user can do about it, printed under the message. */
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PhoenixError';
    this.code = code;
    this.hint = options.hint;
  }
}

/** The errno name ('ENOENT', ...) of a Node or native error, or undefined. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}
