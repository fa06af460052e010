import ignore, { type Ignore } from 'ignore';
import { displayPath, type RawPath } from './path.js';

export interface FilterOptions {
  /** Exclusions in .gitignore syntax, relative to the source root. */
  exclude?: readonly string[];
  /** Do not descend into directories on another file system than the root (restic's --one-file-system). */
  oneFileSystem?: boolean;
}

/** Decides which paths of a source are part of it. */
export class Filter {
  readonly #ignore: Ignore | undefined;
  readonly oneFileSystem: boolean;

  constructor(opts: FilterOptions = {}) {
    const patterns = (opts.exclude ?? []).filter((p) => p.trim() !== '');
    this.#ignore = patterns.length > 0 ? ignore().add(patterns) : undefined;
    this.oneFileSystem = opts.oneFileSystem ?? false;
  }

  /** True when `rel` (relative, non-empty) is excluded. */
  excludes(rel: RawPath, isDir: boolean): boolean {
    if (this.#ignore === undefined || rel === '') return false;
    const s = displayPath(rel);
    return this.#ignore.ignores(isDir ? `${s}/` : s);
  }
}
