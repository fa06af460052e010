import { createHash, createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { AgentAuthMethod, Client, ConnectConfig, PublicKeyAuthMethod, SFTPWrapper, Stats } from 'ssh2';
import {
  BackendError,
  bodyBytes,
  checkRange,
  exists,
  notFound,
  type Backend,
  type Body,
  type ByteRange,
  type ObjectInfo,
  checkKey,
  listByDirectory,
  tmpName,
} from './backend.js';

/** One SFTP read or write request (OpenSSH's packet limit is 256 KiB). */
const IO_SLICE = 255 * 1024;
/** Requests in flight for one object: SFTP is request/response, so one at a time would wait a round trip per slice. */
const IO_DEPTH = 16;

/** SSH_FX_* status codes (SFTP v3). */
const FX = { NO_SUCH_FILE: 2, PERMISSION_DENIED: 3, FAILURE: 4 } as const;

export interface SftpOptions {
  host: string;
  port: number;
  user: string;
  /** Where the repository is on the server: absolute, or relative to the login directory. */
  path: string;
  /** A private key file (`?key=`, --sftp-key, PHOENIX_SFTP_KEY); else the agent, then ~/.ssh/id_*. */
  keyFile?: string;
  /** known_hosts files to check the host key against (default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts). */
  knownHosts?: string[];
  /** A host key accepted explicitly by its SHA-256 fingerprint (`?host-key=SHA256:…`), as an alternative to known_hosts. */
  hostKey?: string;
}

/**
 * A directory on an SSH server, through SFTP (ssh2). A put writes `.tmp-RAND` beside the
 * object, fsyncs it (fsync@openssh.com, where offered), and renames it over the object
 * (posix-rename@openssh.com: SFTPv3's own rename refuses to replace). A create-only put links
 * the temporary file to the object's name instead (hardlink@openssh.com), which fails
 * atomically when the name exists: `capabilities.createOnly` is true once a server that
 * offers it is connected, false before and on servers without it.
 */
export class SftpBackend implements Backend {
  readonly location: string;
  readonly #opts: SftpOptions;
  readonly #root: string;
  #conn: Promise<{ client: Client; sftp: SFTPWrapper }> | undefined;
  #hardlinks = false;
  readonly #dirs = new Set<string>();

  constructor(opts: SftpOptions) {
    this.#opts = opts;
    this.#root = opts.path.replace(/\/+$/, '') || (opts.path.startsWith('/') ? '/' : '.');
    const port = opts.port === 22 ? '' : `:${opts.port}`;
    const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    const path = opts.path.startsWith('/') ? opts.path : `/~/${opts.path}`;
    this.location = `sftp://${opts.user}@${host}${port}${path}`.replace(/\/$/, '');
  }

  get capabilities(): { createOnly: boolean } {
    return { createOnly: this.#hardlinks };
  }

  #path(key: string): string {
    checkKey(this.location, key);
    return `${this.#root}/${key}`;
  }

  // ---- connection --------------------------------------------------------------------------

  #sftp(): Promise<SFTPWrapper> {
    this.#conn ??= this.#connect().catch((err: unknown) => {
      this.#conn = undefined;
      throw err;
    });
    return this.#conn.then((c) => c.sftp);
  }

  async #connect(): Promise<{ client: Client; sftp: SFTPWrapper }> {
    const mod = await import('ssh2');
    const { Client, utils } = (mod as unknown as { default?: typeof mod }).default ?? mod;
    const o = this.#opts;
    const hostCheck = new HostKeyCheck(o.host, o.port, o.knownHosts ?? defaultKnownHosts(), o.hostKey);
    const auth: Array<AgentAuthMethod | PublicKeyAuthMethod> = [];
    const tried: string[] = [];
    const keyFiles = o.keyFile !== undefined ? [o.keyFile] : defaultKeyFiles();
    if (o.keyFile === undefined && process.env.SSH_AUTH_SOCK) {
      auth.push({ type: 'agent', username: o.user, agent: process.env.SSH_AUTH_SOCK });
      tried.push('the SSH agent');
    }
    for (const file of keyFiles) {
      let text: Buffer;
      try {
        text = readFileSync(file);
      } catch (err) {
        if (o.keyFile !== undefined) {
          throw new BackendError('PHX_BACKEND', `${this.location}: cannot read the SSH key ${file}: ${(err as Error).message}`, {
            hint: 'check the path given with ?key=, --sftp-key or PHOENIX_SFTP_KEY',
          });
        }
        continue;
      }
      const parsed = utils.parseKey(text);
      if (parsed instanceof Error) {
        if (/encrypted|passphrase/i.test(parsed.message)) {
          if (o.keyFile !== undefined || auth.length === 0) {
            tried.push(`${file} (protected by a passphrase: load it into ssh-agent with ssh-add ${file})`);
          }
          continue;
        }
        if (o.keyFile !== undefined) {
          throw new BackendError('PHX_BACKEND', `${this.location}: ${file} is not a private key Phoenix can read: ${parsed.message}`, {
            hint: 'give an OpenSSH private key (ssh-keygen -t ed25519 writes one)',
          });
        }
        continue;
      }
      auth.push({ type: 'publickey', username: o.user, key: parsed });
      tried.push(file);
    }
    if (auth.length === 0) {
      throw new BackendError(
        'PHX_BACKEND',
        `${this.location}: no SSH key to log in with${tried.length > 0 ? `: ${tried.join(', ')}` : ''}`,
        {
          hint: 'start ssh-agent and ssh-add your key, or name a key with ?key=FILE, --sftp-key FILE or PHOENIX_SFTP_KEY',
        },
      );
    }
    const client = new Client();
    const config: ConnectConfig = {
      host: o.host,
      port: o.port,
      username: o.user,
      readyTimeout: 20_000,
      keepaliveInterval: 15_000,
      keepaliveCountMax: 3,
      hostVerifier: (key: Buffer) => hostCheck.verify(key),
      authHandler: auth,
    };
    const sftp = await new Promise<SFTPWrapper>((resolve, reject) => {
      const fail = (err: Error & { level?: string; code?: string }): void => {
        client.end();
        reject(this.#connectError(err, hostCheck, tried));
      };
      client.once('error', fail);
      client.once('ready', () => {
        client.sftp((err, s) => {
          if (err) return fail(err);
          client.removeListener('error', fail);
          resolve(s);
        });
      });
      client.connect(config);
    });
    // A dropped connection is made again by the next operation (the retry wrapper retries).
    const reset = (): void => {
      this.#conn = undefined;
    };
    client.on('error', reset);
    client.on('close', reset);
    sftp.on('close', reset);
    const ext = (sftp as unknown as { _extensions: Record<string, string> })._extensions;
    this.#hardlinks = ext['hardlink@openssh.com'] !== undefined && ext['posix-rename@openssh.com'] !== undefined;
    return { client, sftp };
  }

  #connectError(err: Error & { level?: string; code?: string }, hostCheck: HostKeyCheck, tried: string[]): BackendError {
    const at = `${this.#opts.host}:${this.#opts.port}`;
    if (hostCheck.failure !== undefined) return hostCheck.failure;
    if (err.level === 'client-authentication') {
      return new BackendError(
        'PHX_BACKEND',
        `${this.location}: the server refused to log ${this.#opts.user} in (tried ${tried.join(', ')})`,
        {
          hint: `add your public key to ~${this.#opts.user}/.ssh/authorized_keys on ${this.#opts.host} (ssh-copy-id), or check the user name in the URL`,
          cause: err,
        },
      );
    }
    if (err.code === 'ECONNREFUSED') {
      return new BackendError('PHX_BACKEND', `${this.location}: ${at} refused the connection`, {
        transient: true,
        hint: 'is the SSH server running, and is the port right (sftp://HOST:PORT/PATH)?',
        cause: err,
      });
    }
    if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') {
      return new BackendError('PHX_BACKEND', `${this.location}: cannot resolve the host name ${this.#opts.host}`, {
        transient: err.code === 'EAI_AGAIN',
        hint: 'check the host name in the URL and the network',
        cause: err,
      });
    }
    return new BackendError('PHX_BACKEND', `${this.location}: cannot connect: ${err.message}`, { transient: true, cause: err });
  }

  // ---- operations ------------------------------------------------------------------------

  async put(key: string, body: Body, opts: { createOnly?: boolean } = {}): Promise<void> {
    const path = this.#path(key);
    const dir = path.slice(0, path.lastIndexOf('/'));
    const tmp = tmpName(dir);
    const data = bodyBytes(body);
    const sftp = await this.#sftp();
    try {
      await this.#mkdirs(sftp, dir);
      const handle = await call<Buffer>((cb) => sftp.open(tmp, 'w', { mode: 0o600 }, cb));
      try {
        await slices(data.length, async (off, len) => {
          await call((cb) => sftp.write(handle, Buffer.from(data.buffer, data.byteOffset, data.byteLength), off, len, off, cb));
        });
        if (hasExt(sftp, 'fsync@openssh.com')) await call((cb) => sftp.ext_openssh_fsync(handle, cb));
      } finally {
        await call((cb) => sftp.close(handle, cb)).catch(() => {});
      }
      if (opts.createOnly === true && this.#hardlinks) {
        try {
          await call((cb) => sftp.ext_openssh_hardlink(tmp, path, cb));
        } finally {
          await call((cb) => sftp.unlink(tmp, cb)).catch(() => {});
        }
      } else if (opts.createOnly === true) {
        // Without links the server cannot refuse an existing name atomically: best effort.
        if (await this.#statOrUndefined(sftp, path)) throw exists(this.location, key);
        await call((cb) => sftp.rename(tmp, path, cb));
      } else if (hasExt(sftp, 'posix-rename@openssh.com')) {
        await call((cb) => sftp.ext_openssh_rename(tmp, path, cb));
      } else {
        await call((cb) => sftp.rename(tmp, path, cb)).catch(async () => {
          // SFTPv3's rename refuses to replace: remove the old object first (not atomic).
          await call((cb) => sftp.unlink(path, cb)).catch(() => {});
          await call((cb) => sftp.rename(tmp, path, cb));
        });
      }
    } catch (err) {
      await call((cb) => sftp.unlink(tmp, cb)).catch(() => {});
      if (err instanceof BackendError) throw err;
      if (opts.createOnly === true && this.#hardlinks && statusCode(err) === FX.FAILURE && (await this.#statOrUndefined(sftp, path))) {
        throw exists(this.location, key);
      }
      throw await this.#error(err, key, 'put', sftp, data.length);
    }
  }

  async #mkdirs(sftp: SFTPWrapper, dir: string): Promise<void> {
    if (this.#dirs.has(dir)) return;
    const parts = dir.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (d === '' || d === '.' || this.#dirs.has(d)) continue;
      try {
        await call((cb) => sftp.mkdir(d, { mode: 0o700 }, cb));
      } catch (err) {
        // It exists already (OpenSSH says FAILURE); anything else shows at the write.
        const st = await this.#statOrUndefined(sftp, d);
        if (st === undefined || !st.isDirectory()) throw err;
      }
      this.#dirs.add(d);
    }
  }

  async #statOrUndefined(sftp: SFTPWrapper, path: string): Promise<Stats | undefined> {
    try {
      return await call<Stats>((cb) => sftp.stat(path, cb));
    } catch (err) {
      if (statusCode(err) === FX.NO_SUCH_FILE) return undefined;
      throw err;
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    const path = this.#path(key);
    const sftp = await this.#sftp();
    let handle: Buffer;
    try {
      handle = await call<Buffer>((cb) => sftp.open(path, 'r', cb));
    } catch (err) {
      throw await this.#error(err, key, 'get', sftp);
    }
    try {
      const { size } = await call<Stats>((cb) => sftp.fstat(handle, cb));
      checkRange(this.location, key, size, range);
      const from = range?.offset ?? 0;
      const length = range?.length ?? size;
      const out = Buffer.allocUnsafe(length);
      await slices(length, async (off, len) => {
        // A read may return less than asked: go on from where it stopped.
        for (let done = 0; done < len;) {
          const n = await call<number>((cb) => sftp.read(handle, out, off + done, len - done, from + off + done, cb));
          if (n === 0)
            throw new BackendError('PHX_BACKEND', `${this.location}: ${key} became shorter while it was read`, { key, transient: true });
          done += n;
        }
      });
      return out;
    } catch (err) {
      if (err instanceof BackendError) throw err;
      throw await this.#error(err, key, 'get', sftp);
    } finally {
      await call((cb) => sftp.close(handle, cb)).catch(() => {});
    }
  }

  async stat(key: string): Promise<ObjectInfo> {
    const sftp = await this.#sftp();
    try {
      const st = await call<Stats>((cb) => sftp.stat(this.#path(key), cb));
      return { key, size: st.size, mtimeMs: st.mtime * 1000 };
    } catch (err) {
      if (err instanceof BackendError) throw err;
      throw await this.#error(err, key, 'stat', sftp);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const sftp = await this.#sftp();
    yield* listByDirectory(prefix, async (rel) => {
      let entries;
      try {
        entries = await readdirAll(sftp, rel === '' ? this.#root : `${this.#root}/${rel}`);
      } catch (err) {
        if (statusCode(err) === FX.NO_SUCH_FILE) return undefined;
        throw await this.#error(err, prefix, 'list', sftp);
      }
      return entries.map((e) => ({
        name: e.filename,
        dir: (e.attrs.mode & 0o170000) === 0o040000,
        info: { size: e.attrs.size, mtimeMs: e.attrs.mtime * 1000 },
      }));
    });
  }

  async delete(key: string): Promise<void> {
    const sftp = await this.#sftp();
    try {
      await call((cb) => sftp.unlink(this.#path(key), cb));
    } catch (err) {
      if (err instanceof BackendError) throw err;
      if (statusCode(err) !== FX.NO_SUCH_FILE) throw await this.#error(err, key, 'delete', sftp);
    }
  }

  async close(): Promise<void> {
    const conn = this.#conn;
    this.#conn = undefined;
    if (conn !== undefined) (await conn.catch(() => undefined))?.client.end();
  }

  async #error(err: unknown, key: string, op: string, sftp: SFTPWrapper, writing?: number): Promise<BackendError> {
    if (err instanceof BackendError) return err;
    const code = statusCode(err);
    const message = (err as Error).message;
    if (code === FX.NO_SUCH_FILE) return notFound(this.location, key);
    if (code === FX.PERMISSION_DENIED) {
      return new BackendError('PHX_BACKEND', `${this.location}: permission denied (${op} ${key})`, {
        key,
        hint: `the user ${this.#opts.user} needs to be able to write ${this.#root} on ${this.#opts.host}: check its owner and mode`,
        cause: err,
      });
    }
    if (writing !== undefined && code === FX.FAILURE && hasExt(sftp, 'statvfs@openssh.com')) {
      // OpenSSH reports a full disk as a plain FAILURE: ask the file system.
      const vfs = await call<{ f_bavail: number; f_frsize: number; f_bsize: number }>((cb) =>
        sftp.ext_openssh_statvfs(this.#root, cb),
      ).catch(() => undefined);
      if (vfs !== undefined && vfs.f_bavail * (vfs.f_frsize || vfs.f_bsize) < writing + 1024 * 1024) {
        return new BackendError('PHX_BACKEND', `${this.location}: the server's disk is full (${op} ${key}: ${writing} bytes)`, {
          key,
          hint: `free space on ${this.#opts.host} under ${this.#root} (phoenix forget and prune remove what the policy does not keep)`,
          cause: err,
        });
      }
    }
    // No SFTP status: the connection failed under the request. Worth another try.
    const transient = code === undefined || code === FX.FAILURE;
    return new BackendError('PHX_BACKEND', `${this.location}: ${op} ${key} failed: ${message}`, { key, transient, cause: err });
  }
}

// ---- host keys ---------------------------------------------------------------------------------

/**
 * The server's host key checked as OpenSSH checks it: a matching line of known_hosts (plain
 * or hashed names, `[host]:port`, wildcards and negations; `@revoked` refuses), or the
 * fingerprint given explicitly. An unknown key and a changed key are refused, each with its
 * own message; nothing is ever added to known_hosts.
 */
class HostKeyCheck {
  failure: BackendError | undefined;

  constructor(
    readonly host: string,
    readonly port: number,
    readonly files: string[],
    readonly pinned: string | undefined,
  ) {}

  verify(key: Buffer): boolean {
    const fingerprint = `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
    const type = key.subarray(4, 4 + key.readUInt32BE(0)).toString();
    const name = this.port === 22 ? this.host : `[${this.host}]:${this.port}`;
    const where = `sftp://${this.host}${this.port === 22 ? '' : `:${this.port}`}`;
    if (this.pinned !== undefined) {
      if (this.pinned === fingerprint) return true;
      this.failure = new BackendError(
        'PHX_BACKEND',
        `${where}: the server's host key ${fingerprint} is not the one the URL accepts (${this.pinned})`,
        {
          hint: 'someone may be intercepting the connection; if the server was really reinstalled, verify its new key and change ?host-key=',
        },
      );
      return false;
    }
    const b64 = key.toString('base64');
    let known = false;
    for (const line of this.#lines()) {
      if (!this.#matches(line.hosts)) continue;
      if (line.marker === '@revoked' && line.key === b64) {
        this.failure = new BackendError(
          'PHX_BACKEND',
          `${where}: the server's host key ${fingerprint} is marked @revoked in ${line.file}`,
          {
            hint: 'the key was revoked on purpose: do not connect until the server has a new key',
          },
        );
        return false;
      }
      if (line.marker !== undefined) continue; // @cert-authority: certificates are not supported
      known = true;
      if (line.key === b64) return true;
    }
    const scan = `ssh-keyscan${this.port === 22 ? '' : ` -p ${this.port}`} ${this.host}`;
    this.failure = known
      ? new BackendError(
          'PHX_BACKEND',
          `${where}: THE HOST KEY HAS CHANGED: the server offers ${type} ${fingerprint}, which does not match ${this.files.join(' or ')}`,
          {
            hint: `someone may be intercepting the connection (man in the middle), or the server was reinstalled. Verify the new fingerprint with its administrator; then remove the old line with ssh-keygen -R '${name}' and add the new one (${scan} >> ~/.ssh/known_hosts)`,
          },
        )
      : new BackendError('PHX_BACKEND', `${where}: the server's host key is unknown: ${type} ${fingerprint}`, {
          hint: `if that fingerprint is your server's (ask its administrator, or compare with ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on it), accept it with ${scan} >> ~/.ssh/known_hosts, or add ?host-key=${fingerprint} to the URL`,
        });
    return false;
  }

  *#lines(): Iterable<{ file: string; marker: string | undefined; hosts: string; key: string }> {
    for (const file of this.files) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        continue;
      }
      for (const raw of text.split('\n')) {
        const fields = raw.trim().split(/\s+/);
        if (fields[0] === undefined || fields[0] === '' || fields[0].startsWith('#')) continue;
        const marker = fields[0].startsWith('@') ? fields.shift() : undefined;
        const [hosts, , key] = fields;
        if (hosts !== undefined && key !== undefined) yield { file, marker, hosts, key };
      }
    }
  }

  #matches(hosts: string): boolean {
    const names = [this.port === 22 ? this.host : `[${this.host}]:${this.port}`];
    if (hosts.startsWith('|1|')) {
      const [, , salt, hash] = hosts.split('|');
      if (salt === undefined || hash === undefined) return false;
      return names.some((n) => createHmac('sha1', Buffer.from(salt, 'base64')).update(n).digest('base64') === hash);
    }
    let match = false;
    for (const pattern of hosts.split(',')) {
      const negated = pattern.startsWith('!');
      const re = new RegExp(
        `^${(negated ? pattern.slice(1) : pattern)
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replace(/\*/g, '.*')
          .replace(/\?/g, '.')}$`,
        'i',
      );
      if (names.some((n) => re.test(n))) {
        if (negated) return false;
        match = true;
      }
    }
    return match;
  }
}

function defaultKnownHosts(): string[] {
  return [join(homedir(), '.ssh', 'known_hosts'), '/etc/ssh/ssh_known_hosts'];
}

function defaultKeyFiles(): string[] {
  return ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((n) => join(homedir(), '.ssh', n)).filter((f) => existsSync(f));
}

// ---- helpers -------------------------------------------------------------------------------

function call<T = void>(fn: (cb: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value as T))));
}

/** Runs `fn` over [0, length) in IO_SLICE pieces, IO_DEPTH at a time. */
async function slices(length: number, fn: (off: number, len: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < length) {
      const off = next;
      next = Math.min(length, next + IO_SLICE);
      await fn(off, next - off);
    }
  };
  await Promise.all(Array.from({ length: Math.min(IO_DEPTH, Math.ceil(length / IO_SLICE)) }, worker));
}

async function readdirAll(sftp: SFTPWrapper, dir: string): Promise<Array<{ filename: string; attrs: Stats }>> {
  return call((cb) => sftp.readdir(dir, cb as never));
}

function statusCode(err: unknown): number | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'number' ? c : undefined;
}

function hasExt(sftp: SFTPWrapper, name: string): boolean {
  return (sftp as unknown as { _extensions: Record<string, string> })._extensions[name] !== undefined;
}
