import { createRequire } from 'node:module';
import { PhoenixError } from './errors.js';

/** The raw native binding (native/*.cc). Only src/watcher/inotify.ts, src/scanner/, src/repo/chunker.ts, src/repo/crypto.ts and src/backend/local.ts use it. */
export interface NativeInotify {
  addWatch(path: Buffer, mask: number): number;
  rmWatch(wd: number): number;
  pause(): void;
  resume(): void;
  stats(): { events: number; batches: number; overflows: number; reads: number; pendingBytes: number };
  close(): void;
}

export interface NativeBinding {
  Inotify: new (onBatch: (events: Buffer, negErrno: number) => void) => NativeInotify;
  scanDir(path: Buffer): Promise<Buffer>;
  gearCut(
    data: Uint8Array,
    start: number,
    end: number,
    min: number,
    avg: number,
    max: number,
    maskS: number,
    maskL: number,
    eof: boolean,
    gear: Uint32Array,
  ): number;
  dropCache(fd: number): number;
  /** The address of `view`'s first byte modulo 4096. */
  pageOffset(view: Uint8Array): number;
  /** out = nonce ‖ AES-256-GCM of the parts ‖ tag; returns its length. */
  gcmSeal(key: Uint8Array, nonce: Uint8Array, parts: readonly Uint8Array[], out: Uint8Array): number;
  /** The plaintext of nonce ‖ ciphertext ‖ tag into `out`; its length, or -1 when the tag does not match. */
  gcmOpen(key: Uint8Array, sealed: Uint8Array, out: Uint8Array): number;
  hmacSha256(key: Uint8Array, data: Uint8Array, out: Uint8Array): void;
}

let binding: NativeBinding | undefined;

export function native(): NativeBinding {
  if (binding === undefined) {
    const require = createRequire(import.meta.url);
    try {
      // dist/src/native.js → <package>/build/Release
      binding = require('../../build/Release/phoenix_native.node') as NativeBinding;
    } catch (cause) {
      throw new PhoenixError('PHX_NATIVE', 'the native inotify addon is not built', {
        hint: 'run `npm ci` (or `npm run install`) in the Phoenix directory; it needs make, g++ and python3',
        cause,
      });
    }
  }
  return binding;
}
