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
  | 'PHX_IO' // an unexpected file system error
  | 'PHX_NOT_FOUND' // a backend object does not exist
  | 'PHX_EXISTS' // a create-only put found the object already there
  | 'PHX_BACKEND' // the storage failed (see BackendError.transient)
  | 'PHX_BAD_URL' // a repository URL Phoenix cannot use
  | 'PHX_REPO_NOT_INITIALISED' // no config object at the repository URL
  | 'PHX_REPO_EXISTS' // init on a repository that already has a config
  | 'PHX_WRONG_PASSWORD' // the password does not open any key of the repository
  | 'PHX_NO_PASSWORD' // encryption needs a password and none was given
  | 'PHX_CORRUPT' // an object failed authentication or its checksum, or does not parse
  | 'PHX_LOCKED' // another writer holds the source's lease
  | 'PHX_NOT_IN_REPO' // a path or source is not in the repository
  | 'PHX_CONFIG' // the configuration file is missing, unreadable or invalid
  | 'PHX_NOT_RUNNING'; // phoenix status found no daemon

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
