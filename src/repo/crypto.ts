import { createHash, randomBytes, randomFillSync, scrypt } from 'node:crypto';
import { PhoenixError } from '../errors.js';
import { native } from '../native.js';

export interface KdfParams {
  alg: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string; // base64
}

/**
 * The keys of an open repository. `encKey` seals objects with AES-256-GCM; `macKey` keys the
 * chunk ids (HMAC-SHA-256), so ids reveal nothing about content. Without encryption both are
 * absent, bodies are stored as they are, and ids are plain SHA-256.
 */
export class Keys {
  constructor(
    readonly encKey: Buffer | undefined,
    readonly macKey: Buffer | undefined,
  ) {}

  static none(): Keys {
    return new Keys(undefined, undefined);
  }

  static fromMaster(master: Buffer): Keys {
    return new Keys(master.subarray(0, 32), master.subarray(32, 64));
  }

  /** The keys as worker threads receive them (`fromShared` turns it back): the master key, or null. */
  toShared(): Uint8Array | null {
    return this.encKey && this.macKey ? Buffer.concat([this.encKey, this.macKey]) : null;
  }

  static fromShared(master: Uint8Array | null): Keys {
    return master === null ? Keys.none() : Keys.fromMaster(Buffer.from(master));
  }

  get encrypted(): boolean {
    return this.encKey !== undefined;
  }

  /** The chunk id of `data`: HMAC-SHA-256 under the MAC key, or SHA-256. */
  id(data: Uint8Array): Buffer {
    if (this.macKey === undefined) return createHash('sha256').update(data).digest();
    // Its own memory, not a slice of Node's shared pool: an id kept would keep 8 KiB alive.
    const out = Buffer.allocUnsafeSlow(32);
    native().hmacSha256(this.macKey, data, out);
    return out;
  }

  /** nonce (12) ‖ ciphertext ‖ tag (16); the plaintext itself when not encrypted. */
  seal(plain: Uint8Array): Buffer {
    return this.sealParts([plain]);
  }

  /** Seals the concatenation of `parts` without first copying them into one buffer. */
  sealParts(parts: readonly Uint8Array[]): Buffer {
    if (!this.encKey) return Buffer.concat(parts);
    return seal(this.encKey, parts);
  }

  /** Opens a sealed body; `what` names it in the error when it fails authentication. With `into`, the bytes may be a view of it. */
  open(sealed: Uint8Array, what: string, into?: Buffer): Buffer {
    if (this.encKey) return open(this.encKey, sealed, what, into);
    if (into === undefined || into.length < sealed.length) return Buffer.from(sealed);
    into.set(sealed);
    return into.subarray(0, sealed.length);
  }
}

/**
 * Random nonces, fetched from the CSPRNG 4096 at a time: one call per small blob cost about a
 * third of sealing it. Each nonce is used once (the pool is refilled, never reread).
 */
const NONCES = Buffer.alloc(12 * 4096);
let nonceAt = NONCES.length;

function nextNonce(): Buffer {
  if (nonceAt === NONCES.length) {
    randomFillSync(NONCES);
    nonceAt = 0;
  }
  // A view: seal() copies it into the sealed blob before the pool can be refilled.
  const n = NONCES.subarray(nonceAt, nonceAt + 12);
  nonceAt += 12;
  return n;
}

/**
 * Sealing, opening and chunk ids go through the native addon (native/crypto.cc), on the same
 * OpenSSL as node:crypto: Node's cipher and HMAC objects cost 3-6 µs a blob before the first
 * byte, which is most of the cost of a small file, and a 1 MiB blob ran at a third of the
 * cipher's speed through them.
 */
export function seal(key: Buffer, plain: Uint8Array | readonly Uint8Array[]): Buffer {
  const parts = plain instanceof Uint8Array ? [plain] : plain;
  const out = Buffer.allocUnsafe(12 + parts.reduce((n, p) => n + p.length, 0) + 16);
  native().gcmSeal(key, nextNonce(), parts, out);
  return out;
}

/** Opens a sealed body; the plain bytes go into `into` (its start, returned as a view) when it is large enough. */
export function open(key: Buffer, sealed: Uint8Array, what: string, into?: Buffer): Buffer {
  if (sealed.length < 28) throw corrupt(what, 'too short to be an encrypted object');
  const length = sealed.length - 28;
  // OpenSSL leaves output that partly overlaps its input undefined: `into` only when large enough and apart.
  const usable =
    into !== undefined &&
    into.length >= length &&
    (into.buffer !== sealed.buffer ||
      into.byteOffset >= sealed.byteOffset + sealed.length ||
      sealed.byteOffset >= into.byteOffset + length);
  const plain = usable ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  if (native().gcmOpen(key, sealed, plain) !== length) throw corrupt(what, 'it fails authentication (modified, truncated or damaged)');
  return plain;
}

export function corrupt(what: string, why: string, cause?: unknown): PhoenixError {
  return new PhoenixError('PHX_CORRUPT', `${what} is corrupted: ${why}`, {
    hint: 'run `phoenix check --read-data` to see the extent; restore from another copy of the repository if it is damaged',
    cause,
  });
}

export function deriveKey(password: string, kdf: KdfParams): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(
      password.normalize('NFC'),
      Buffer.from(kdf.salt, 'base64'),
      32,
      { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: 256 * kdf.N * kdf.r * 2 },
      (err, key) => (err ? reject(err) : resolve(key)),
    ),
  );
}

export function newKdf(N = 2 ** 15): KdfParams {
  return { alg: 'scrypt', N, r: 8, p: 1, salt: randomBytes(16).toString('base64') };
}
