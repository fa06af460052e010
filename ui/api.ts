/** The dashboard's calls to its server: JSON in and out, the custom header on every state-changing request. */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

export async function get<T>(path: string, params: Record<string, string | number | undefined> = {}): Promise<T> {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const res = await fetch(`${path}${q.size > 0 ? `?${q}` : ''}`, { credentials: 'same-origin' });
  return answer<T>(res);
}

export async function post<T>(path: string, body: unknown): Promise<T> {
  const res = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-Phoenix-Request': '1' },
    body: JSON.stringify(body),
  });
  return answer<T>(res);
}

async function answer<T>(res: Response): Promise<T> {
  const body = (await res.json().catch(() => ({}))) as { error?: { message: string; hint?: string } };
  if (!res.ok) throw new ApiError(res.status, body.error?.message ?? `${res.status} ${res.statusText}`, body.error?.hint);
  return body as T;
}

/** A path as the API names it: UTF-8, or its exact bytes when it is not UTF-8. */
export interface PathRef {
  path: string;
  pathBase64?: string;
}

export function pathParams(p: PathRef, key = 'path'): Record<string, string> {
  return p.pathBase64 !== undefined ? { [`${key}Base64`]: p.pathBase64 } : { [key]: p.path === '.' ? '' : p.path };
}

export function href(path: string, params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  return `${path}?${q}`;
}

export interface Entry extends PathRef {
  name: string;
  nameBase64?: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtime: string;
  target?: string;
}

export interface Commit {
  seq: number;
  time: string;
  thinned?: boolean;
}

export const fmtBytes = (n: number): string =>
  n < 1024
    ? `${n} B`
    : n < 1024 ** 2
      ? `${(n / 1024).toFixed(1)} KiB`
      : n < 1024 ** 3
        ? `${(n / 1024 ** 2).toFixed(1)} MiB`
        : `${(n / 1024 ** 3).toFixed(2)} GiB`;

export const fmtTime = (iso: string | null | undefined): string => {
  if (!iso) return '–';
  const d = new Date(iso);
  const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
};
