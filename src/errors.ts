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
  | 'PHX_PAST_END' // a ranged read reaches past the end of the object (a truncated object)
  | 'PHX_BAD_URL' // a repository URL Phoenix cannot use
  | 'PHX_REPO_NOT_INITIALISED' // no config object at the repository URL
  | 'PHX_REPO_EXISTS' // init on a repository that already has a config
  | 'PHX_WRONG_PASSWORD' // the password does not open any key of the repository
  | 'PHX_NO_PASSWORD' // encryption needs a password and none was given
  | 'PHX_CORRUPT' // an object failed authentication or its checksum, or does not parse
  | 'PHX_LOCKED' // another writer holds the source's lease
  | 'PHX_PRUNED' // prune ran while a writer's lease had run out: the commit is made again
  | 'PHX_NOT_IN_REPO' // a path or source is not in the repository
  | 'PHX_CONFIG' // the configuration file is missing, unreadable or invalid
  | 'PHX_NOT_RUNNING' // phoenix status found no daemon
  | 'PHX_LISTEN' // the dashboard or WebDAV server cannot listen on its address
  | 'PHX_INTERNAL'; // an unexpected exception: a bug (the stack goes to the log, not to the user)

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

/** The message of anything thrown. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const ERRNO_HINTS: Record<string, string> = {
  EACCES: 'check the permissions of that path (or run as a user who may access it)',
  EPERM: 'the operation is not permitted there: check the permissions and the file system',
  ENOSPC: 'the disk is full: free some space and run it again',
  EDQUOT: 'the disk quota is used up: free some space and run it again',
  EROFS: 'that file system is mounted read-only',
  ENOENT: 'check that the path exists',
  ENOTDIR: 'a part of that path is a file, not a directory',
  EISDIR: 'that path is a directory',
  EMFILE: 'too many open files: raise the limit (ulimit -n)',
};

/** What a user can do about a system error (by its errno name), when Phoenix knows. */
export function errnoHint(code: string): string | undefined {
  return ERRNO_HINTS[code];
}

/**
 * Any error as a PhoenixError: PhoenixErrors as they are, system errors (errno) as PHX_IO with
 * a hint for their errno, anything else as PHX_INTERNAL (a bug: its stack stays in `cause`).
 */
export function asPhoenixError(err: unknown): PhoenixError {
  if (err instanceof PhoenixError) return err;
  const code = errnoCode(err);
  if (code !== undefined && /^E[A-Z0-9]+$/.test(code)) {
    return new PhoenixError('PHX_IO', messageOf(err), { hint: ERRNO_HINTS[code] ?? `the system said ${code}`, cause: err });
  }
  return new PhoenixError('PHX_INTERNAL', `internal error: ${messageOf(err)}`, {
    hint: 'this is a bug in Phoenix: please report it with what you ran (PHOENIX_DEBUG=1 prints the stack trace)',
    cause: err,
  });
}
