import type { ContainerClient, StoragePipelineOptions } from '@azure/storage-blob';
import {
  BackendError,
  bodyBytes,
  checkRange,
  exists,
  notFound,
  pastEnd,
  type Backend,
  type Body,
  type ByteRange,
  type ObjectInfo,
} from './backend.js';

export interface AzureOptions {
  container: string;
  /** Key prefix inside the container, without leading or trailing '/'. */
  prefix: string;
  /**
   * The blob service's URL (Azurite: `http://127.0.0.1:10000/devstoreaccount1`, a sovereign
   * cloud, a private endpoint). Default: from the connection string, or
   * `https://ACCOUNT.blob.AZURE_ENDPOINT_SUFFIX` (`core.windows.net`).
   */
  endpoint?: string;
  /** Objects above this size are uploaded as staged blocks. */
  singleShotLimit?: number;
  blockSize?: number;
  /** Explicit credentials; the AZURE_STORAGE_* variables when absent. */
  credentials?: AzureCredentials;
}

export type AzureCredentials = { connectionString: string } | { account: string; key: string } | { account: string; sasToken: string };

/**
 * Azure Blob Storage through @azure/storage-blob. Credentials the way Azure users keep them:
 * AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or
 * AZURE_STORAGE_SAS_TOKEN. Create-only puts send `If-None-Match: *`, which Azure enforces
 * atomically (for staged blocks too: the condition is on the commit of the block list).
 */
export class AzureBackend implements Backend {
  readonly location: string;
  readonly capabilities = { createOnly: true };
  readonly #opts: AzureOptions;
  readonly #prefix: string;
  readonly #singleShot: number;
  readonly #blockSize: number;
  #client: Promise<ContainerClient> | undefined;

  constructor(opts: AzureOptions) {
    this.#opts = opts;
    this.#prefix = opts.prefix === '' ? '' : `${opts.prefix.replace(/^\/+|\/+$/g, '')}/`;
    this.location = `azure://${opts.container}/${opts.prefix}`.replace(/\/$/, '');
    this.#singleShot = opts.singleShotLimit ?? 64 * 2 ** 20;
    this.#blockSize = opts.blockSize ?? 16 * 2 ** 20;
  }

  /** The SDK loads on first use: only a command that talks to Azure pays for it. */
  #container(): Promise<ContainerClient> {
    this.#client ??= (async () => {
      const sdk = await import('@azure/storage-blob');
      // Retries are the RetryBackend's job, with one policy for every backend.
      const pipeline: StoragePipelineOptions = { retryOptions: { maxTries: 1 } };
      const creds = this.#opts.credentials ?? credentialsFromEnv(this.location);
      let service;
      if ('connectionString' in creds) {
        let cs = creds.connectionString;
        if (this.#opts.endpoint !== undefined) cs = `${cs.replace(/;?BlobEndpoint=[^;]*/i, '')};BlobEndpoint=${this.#opts.endpoint}`;
        try {
          service = sdk.BlobServiceClient.fromConnectionString(cs, pipeline);
        } catch (err) {
          throw new BackendError(
            'PHX_BACKEND',
            `${this.location}: AZURE_STORAGE_CONNECTION_STRING cannot be used: ${(err as Error).message}`,
            {
              hint: 'copy it again from the portal (Storage account → Access keys), or use AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY',
            },
          );
        }
      } else {
        const url = this.#opts.endpoint ?? `https://${creds.account}.blob.${process.env.AZURE_ENDPOINT_SUFFIX ?? 'core.windows.net'}`;
        if ('key' in creds) {
          service = new sdk.BlobServiceClient(url, new sdk.StorageSharedKeyCredential(creds.account, creds.key), pipeline);
        } else {
          const sas = creds.sasToken.replace(/^\?/, '');
          service = new sdk.BlobServiceClient(`${url.replace(/\/$/, '')}?${sas}`, new sdk.AnonymousCredential(), pipeline);
        }
      }
      return service.getContainerClient(this.#opts.container);
    })();
    return this.#client;
  }

  async put(key: string, body: Body, opts: { createOnly?: boolean } = {}): Promise<void> {
    const data = bodyBytes(body);
    try {
      const blob = (await this.#container()).getBlockBlobClient(this.#prefix + key);
      await blob.uploadData(Buffer.from(data.buffer, data.byteOffset, data.byteLength), {
        maxSingleShotSize: this.#singleShot,
        blockSize: this.#blockSize,
        concurrency: 4,
        ...(opts.createOnly === true ? { conditions: { ifNoneMatch: '*' } } : {}),
      });
    } catch (err) {
      const e = err as { statusCode?: number; code?: string };
      if (opts.createOnly === true && (e.statusCode === 409 || e.statusCode === 412)) throw exists(this.location, key);
      throw this.#error(err, key, 'put');
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    if (range !== undefined && range.length === 0) {
      // Zero bytes cannot be asked for: check the bounds against the size instead.
      const { size } = await this.stat(key);
      checkRange(this.location, key, size, range);
      return Buffer.alloc(0);
    }
    if (range !== undefined) checkRange(this.location, key, Number.MAX_SAFE_INTEGER, range);
    try {
      const blob = (await this.#container()).getBlobClient(this.#prefix + key);
      const r = await blob.download(range?.offset ?? 0, range?.length);
      const chunks: Buffer[] = [];
      for await (const c of r.readableStreamBody as AsyncIterable<Buffer>) chunks.push(c);
      const data = Buffer.concat(chunks);
      if (range !== undefined && data.length !== range.length) throw pastEnd(this.location, key, range, range.offset + data.length);
      return data;
    } catch (err) {
      if (err instanceof BackendError) throw err;
      if ((err as { statusCode?: number }).statusCode === 416 && range !== undefined) {
        throw pastEnd(this.location, key, range, (await this.stat(key)).size);
      }
      throw this.#error(err, key, 'get');
    }
  }

  async stat(key: string): Promise<ObjectInfo> {
    try {
      const p = await (await this.#container()).getBlobClient(this.#prefix + key).getProperties();
      const info: ObjectInfo = { key, size: p.contentLength ?? 0 };
      if (p.lastModified !== undefined) info.mtimeMs = p.lastModified.getTime();
      return info;
    } catch (err) {
      throw this.#error(err, key, 'stat');
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let pages;
    try {
      pages = (await this.#container()).listBlobsFlat({ prefix: this.#prefix + prefix }).byPage({ maxPageSize: 1000 });
    } catch (err) {
      throw this.#error(err, prefix, 'list');
    }
    for (;;) {
      let page;
      try {
        page = await pages.next();
      } catch (err) {
        throw this.#error(err, prefix, 'list');
      }
      if (page.done === true) return;
      for (const b of page.value.segment.blobItems) {
        const info: ObjectInfo = { key: b.name.slice(this.#prefix.length), size: b.properties.contentLength ?? 0 };
        if (b.properties.lastModified !== undefined) info.mtimeMs = b.properties.lastModified.getTime();
        yield info;
      }
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await (await this.#container()).getBlobClient(this.#prefix + key).delete();
    } catch (err) {
      const e = err as { statusCode?: number; code?: string };
      if (e.statusCode === 404 && e.code !== 'ContainerNotFound') return;
      throw this.#error(err, key, 'delete');
    }
  }

  async close(): Promise<void> {
    // The SDK keeps no connections open that need closing (its agent is shared and unreffed).
  }

  #error(err: unknown, key: string, op: string): BackendError {
    if (err instanceof BackendError) return err;
    const e = err as { statusCode?: number; code?: string; message?: string };
    const status = e.statusCode;
    if (e.code === 'ContainerNotFound') {
      return new BackendError('PHX_BACKEND', `${this.location}: container ${this.#opts.container} does not exist`, {
        key,
        hint: `create it first (az storage container create --name ${this.#opts.container}), or check the container name and the account`,
        cause: err,
      });
    }
    if (status === 404) return notFound(this.location, key);
    if (status === 401 || status === 403) {
      return new BackendError(
        'PHX_BACKEND',
        `${this.location}: Azure refused the credentials (${op} ${key}: HTTP ${status} ${e.code ?? ''})`,
        {
          key,
          hint: 'check AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (its permissions and expiry: read, write, delete, list), or the connection string',
          cause: err,
        },
      );
    }
    if (/ENOTFOUND|EAI_AGAIN/.test(String(e.code) + String(e.message))) {
      return new BackendError('PHX_BACKEND', `${this.location}: cannot resolve the blob service's host name (${op} ${key}: ${e.message})`, {
        key,
        transient: true,
        hint: 'check the account name, the endpoint (?endpoint=URL) and the network',
        cause: err,
      });
    }
    // No HTTP status: the request never got an answer (refused, reset, timed out).
    const transient = status === undefined || status >= 500 || status === 429 || status === 408;
    const what = status === undefined ? (e.message ?? String(err)) : `HTTP ${status} ${e.code ?? ''}`.trim();
    return new BackendError('PHX_BACKEND', `${this.location}: ${op} ${key} failed: ${what}`, { key, transient, cause: err });
  }
}

function credentialsFromEnv(location: string): AzureCredentials {
  const env = process.env;
  if (env.AZURE_STORAGE_CONNECTION_STRING) return { connectionString: env.AZURE_STORAGE_CONNECTION_STRING };
  const account = env.AZURE_STORAGE_ACCOUNT;
  if (account && env.AZURE_STORAGE_KEY) return { account, key: env.AZURE_STORAGE_KEY };
  if (account && env.AZURE_STORAGE_SAS_TOKEN) return { account, sasToken: env.AZURE_STORAGE_SAS_TOKEN };
  throw new BackendError('PHX_BACKEND', `${location}: no Azure credentials were found`, {
    hint: 'set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN',
  });
}
