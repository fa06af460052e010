import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
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

type Sdk = typeof import('@aws-sdk/client-s3');

export interface S3Options {
  bucket: string;
  /** Key prefix inside the bucket, without leading or trailing '/'. */
  prefix: string;
  /** Custom endpoint (MinIO, Ceph, Swift, R2, GCS …); AWS when absent. */
  endpoint?: string;
  region?: string;
  pathStyle?: boolean;
  /** Objects above this size are uploaded in parts. */
  multipartThreshold?: number;
  partSize?: number;
  /** Explicit credentials; the SDK's default chain (environment, profile, role) when absent. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** How the location is written in messages: `gs` for Google Cloud Storage's S3-compatible API. */
  scheme?: 's3' | 'gs';
}

/**
 * An S3-compatible object store through AWS SDK v3. Credentials come from the SDK's standard
 * chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles …); endpoint
 * and region from the URL or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS_REGION.
 */
export class S3Backend implements Backend {
  readonly location: string;
  // If-None-Match: * is sent for create-only puts, but not every S3-compatible server honours
  // it, so Phoenix does not claim it (and does not rely on it for correctness).
  readonly capabilities = { createOnly: false };
  readonly #config: S3ClientConfig;
  #client: S3Client | undefined;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #threshold: number;
  readonly #partSize: number;
  #conditionalPuts = true;
  readonly #gcs: boolean;

  constructor(opts: S3Options) {
    this.#bucket = opts.bucket;
    this.#prefix = opts.prefix === '' ? '' : `${opts.prefix.replace(/^\/+|\/+$/g, '')}/`;
    this.#gcs = opts.scheme === 'gs';
    this.location = `${opts.scheme ?? 's3'}://${opts.bucket}/${opts.prefix}`.replace(/\/$/, '');
    this.#threshold = opts.multipartThreshold ?? 64 * 2 ** 20;
    this.#partSize = Math.max(5 * 2 ** 20, opts.partSize ?? 16 * 2 ** 20);
    const endpoint = opts.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    const config: S3ClientConfig = {
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      forcePathStyle: opts.pathStyle ?? endpoint !== undefined,
      maxAttempts: 1, // retries are the RetryBackend's job, with one policy for every backend
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    };
    if (endpoint !== undefined) config.endpoint = endpoint;
    if (opts.credentials !== undefined) config.credentials = opts.credentials;
    // Off AWS there are no instance roles: with no credentials anywhere, say so at once instead
    // of after the SDK's chain has timed out on the instance metadata service.
    else if (endpoint !== undefined && !credentialsConfigured()) {
      config.credentials = () => Promise.reject(noCredentials(this.location, this.#gcs));
    }
    this.#config = config;
  }

  /** The SDK takes about 0.1 s to load: only a command that talks to S3 pays for it. */
  async #sdk(): Promise<{ client: S3Client; sdk: Sdk }> {
    // Phoenix says which Node versions it runs on; the SDK's own notice would print on every command.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const sdk = await import('@aws-sdk/client-s3');
    this.#client ??= new sdk.S3Client(this.#config);
    return { client: this.#client, sdk };
  }

  async put(key: string, body: Body, opts: { createOnly?: boolean } = {}): Promise<void> {
    const Key = this.#prefix + key;
    const data = bodyBytes(body);
    try {
      const { client, sdk } = await this.#sdk();
      if (data.length <= this.#threshold) {
        const conditional = opts.createOnly === true && this.#conditionalPuts;
        try {
          await client.send(
            new sdk.PutObjectCommand({ Bucket: this.#bucket, Key, Body: data, ...(conditional ? { IfNoneMatch: '*' } : {}) }),
          );
        } catch (err) {
          // Some servers (OpenStack Swift's s3api) answer 501 to If-None-Match: put without it.
          if (!conditional || statusOf(err) !== 501) throw err;
          this.#conditionalPuts = false;
          await client.send(new sdk.PutObjectCommand({ Bucket: this.#bucket, Key, Body: data }));
        }
        return;
      }
      await this.#multipart(client, sdk, Key, data);
    } catch (err) {
      if (statusOf(err) === 412) throw exists(this.location, key);
      throw this.#error(err, key, 'put');
    }
  }

  async #multipart(client: S3Client, sdk: Sdk, Key: string, data: Uint8Array): Promise<void> {
    const { UploadId } = await client.send(new sdk.CreateMultipartUploadCommand({ Bucket: this.#bucket, Key }));
    try {
      const parts: Array<{ ETag: string | undefined; PartNumber: number }> = [];
      for (let off = 0, n = 1; off < data.length; off += this.#partSize, n++) {
        const Body = data.subarray(off, Math.min(data.length, off + this.#partSize));
        const r = await client.send(new sdk.UploadPartCommand({ Bucket: this.#bucket, Key, UploadId, PartNumber: n, Body }));
        parts.push({ ETag: r.ETag, PartNumber: n });
      }
      await client.send(new sdk.CompleteMultipartUploadCommand({ Bucket: this.#bucket, Key, UploadId, MultipartUpload: { Parts: parts } }));
    } catch (err) {
      await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: this.#bucket, Key, UploadId })).catch(() => {});
      throw err;
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    if (range !== undefined && range.length === 0) {
      // HTTP cannot ask for zero bytes: check the bounds against the size instead.
      const { size } = await this.stat(key);
      checkRange(this.location, key, size, range);
      return Buffer.alloc(0);
    }
    if (range !== undefined) checkRange(this.location, key, Number.MAX_SAFE_INTEGER, range);
    try {
      const { client, sdk } = await this.#sdk();
      const r = await client.send(
        new sdk.GetObjectCommand({
          Bucket: this.#bucket,
          Key: this.#prefix + key,
          ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
        }),
      );
      let body = Buffer.from((await r.Body?.transformToByteArray()) ?? new Uint8Array());
      if (range !== undefined && body.length > range.length) {
        // The server sent more than asked: the whole object (Range ignored), or a longer range
        // (s3rver reads `bytes=0-0` as `bytes=0-`). Content-Range says where the body starts.
        const start = r.ContentRange === undefined ? 0 : Number(/^bytes (\d+)-/.exec(r.ContentRange)?.[1] ?? NaN);
        const from = range.offset - start;
        if (!(from >= 0) || from + range.length > body.length) throw pastEnd(this.location, key, range, start + body.length);
        body = body.subarray(from, from + range.length);
      }
      if (range !== undefined && body.length !== range.length) {
        // A range that starts inside the object but ends past it comes back short.
        throw pastEnd(this.location, key, range, range.offset + body.length);
      }
      return body;
    } catch (err) {
      if (err instanceof BackendError) throw err;
      if (statusOf(err) === 416 && range !== undefined) {
        const size = await this.stat(key).then((s) => s.size);
        throw pastEnd(this.location, key, range, size);
      }
      throw this.#error(err, key, 'get');
    }
  }

  async stat(key: string): Promise<ObjectInfo> {
    try {
      const { client, sdk } = await this.#sdk();
      const r = await client.send(new sdk.HeadObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
      const info: ObjectInfo = { key, size: r.ContentLength ?? 0 };
      if (r.LastModified !== undefined) info.mtimeMs = r.LastModified.getTime();
      return info;
    } catch (err) {
      throw this.#error(err, key, 'stat');
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let ContinuationToken: string | undefined;
    do {
      let r;
      try {
        const { client, sdk } = await this.#sdk();
        r = await client.send(new sdk.ListObjectsV2Command({ Bucket: this.#bucket, Prefix: this.#prefix + prefix, ContinuationToken }));
      } catch (err) {
        throw this.#error(err, prefix, 'list');
      }
      for (const o of r.Contents ?? []) {
        if (o.Key !== undefined) {
          const info: ObjectInfo = { key: o.Key.slice(this.#prefix.length), size: o.Size ?? 0 };
          if (o.LastModified !== undefined) info.mtimeMs = o.LastModified.getTime();
          yield info;
        }
      }
      ContinuationToken = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (ContinuationToken !== undefined);
  }

  async delete(key: string): Promise<void> {
    try {
      const { client, sdk } = await this.#sdk();
      await client.send(new sdk.DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
    } catch (err) {
      if (statusOf(err) !== 404) throw this.#error(err, key, 'delete');
    }
  }

  async close(): Promise<void> {
    this.#client?.destroy();
  }

  #error(err: unknown, key: string, op: string): BackendError {
    if (err instanceof BackendError) return err;
    const status = statusOf(err);
    const name = (err as { name?: string }).name ?? '';
    if (name === 'CredentialsProviderError') return noCredentials(this.location, this.#gcs, err);
    if (status === 404 && name === 'NoSuchBucket') {
      return new BackendError('PHX_BACKEND', `${this.location}: bucket ${this.#bucket} does not exist`, {
        key,
        hint: 'create the bucket first, or check the bucket name and the endpoint',
        cause: err,
      });
    }
    if (status === 404 || name === 'NoSuchKey' || name === 'NotFound') return notFound(this.location, key);
    if (status === 401 || status === 403) {
      return new BackendError('PHX_BACKEND', `${this.location}: the store refused the credentials (${op} ${key}: HTTP ${status} ${name})`, {
        key,
        hint: this.#gcs
          ? 'check GS_ACCESS_KEY_ID / GS_SECRET_ACCESS_KEY (an HMAC key of a service account with access to the bucket)'
          : 'check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket policy',
        cause: err,
      });
    }
    const sys = `${(err as { code?: string }).code ?? ''} ${(err as Error).message ?? ''}`;
    if (status === undefined && /ENOTFOUND|EAI_AGAIN/.test(sys)) {
      return new BackendError(
        'PHX_BACKEND',
        `${this.location}: cannot resolve the store's host name (${op} ${key}: ${(err as Error).message})`,
        {
          key,
          transient: true,
          hint: 'check the endpoint (?endpoint=URL, AWS_ENDPOINT_URL_S3), the bucket name (virtual-hosted style puts it in the host name) and the network',
          cause: err,
        },
      );
    }
    if (status === undefined && /ECONNREFUSED/.test(sys)) {
      return new BackendError(
        'PHX_BACKEND',
        `${this.location}: the store refused the connection (${op} ${key}: ${(err as Error).message})`,
        {
          key,
          transient: true,
          hint: "is the server running, and are the endpoint's host and port right?",
          cause: err,
        },
      );
    }
    // No HTTP status: the request never got an answer (refused, reset, timed out).
    const transient = status === undefined || status >= 500 || status === 429 || status === 408;
    const what = status === undefined ? (err as Error).message : `HTTP ${status} ${name}`;
    return new BackendError('PHX_BACKEND', `${this.location}: ${op} ${key} failed: ${what}`, { key, transient, cause: err });
  }
}

/** Where the SDK's default chain finds credentials besides instance roles: variables or the shared files. */
function credentialsConfigured(): boolean {
  const env = process.env;
  if (
    env.AWS_ACCESS_KEY_ID ||
    env.AWS_PROFILE ||
    env.AWS_WEB_IDENTITY_TOKEN_FILE ||
    env.AWS_CONTAINER_CREDENTIALS_FULL_URI ||
    env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
  ) {
    return true;
  }
  const aws = join(homedir(), '.aws');
  return existsSync(env.AWS_SHARED_CREDENTIALS_FILE ?? join(aws, 'credentials')) || existsSync(env.AWS_CONFIG_FILE ?? join(aws, 'config'));
}

function noCredentials(location: string, gcs: boolean, cause?: unknown): BackendError {
  return new BackendError('PHX_BACKEND', `${location}: no ${gcs ? 'Google Cloud Storage HMAC' : 'S3'} credentials were found`, {
    hint: gcs
      ? 'create an HMAC key (Cloud Storage → Settings → Interoperability) and set GS_ACCESS_KEY_ID and GS_SECRET_ACCESS_KEY'
      : 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE with ~/.aws/credentials)',
    cause,
  });
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}
