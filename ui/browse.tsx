/** Moving through time: browse any second, what changed, a file's versions, recently deleted, and restore. */
import { useEffect, useState } from 'preact/hooks';
import { ApiError, fmtBytes, fmtTime, get, href, pathParams, post, type Commit, type Entry, type PathRef } from './api.js';
import type { Navigate, Route } from './main.js';

const refOf = (route: Route): PathRef =>
  route.pathBase64 ? { path: route.path ?? '', pathBase64: route.pathBase64 } : { path: route.path ?? '' };

function useLoad<T>(load: () => Promise<T>, deps: unknown[]): [T | undefined, string | undefined, () => void] {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    setError(undefined);
    load().then(
      (v) => live && setValue(v),
      (e: Error) => live && (setError(e instanceof ApiError && e.hint ? `${e.message} (${e.hint})` : e.message), setValue(undefined)),
    );
    return () => {
      live = false;
    };
  }, [...deps, n]);
  return [value, error, () => setN(n + 1)];
}

/** The equivalent command, to copy. */
function Command({ text }: { text: string | null | undefined }) {
  if (!text) return null;
  return (
    <div class="command">
      <span>CLI equivalent:</span> <code>{text}</code>
    </div>
  );
}

function Crumbs({ path, onGo }: { path: string; onGo: (p: string) => void }) {
  const parts = path === '' || path === '.' ? [] : path.split('/');
  return (
    <div class="crumbs" id="crumbs">
      <a href="#" onClick={(e) => (e.preventDefault(), onGo(''))}>
        (root)
      </a>
      {parts.map((p, i) => (
        <span>
          {' / '}
          <a href="#" onClick={(e) => (e.preventDefault(), onGo(parts.slice(0, i + 1).join('/')))}>
            {p}
          </a>
        </span>
      ))}
    </div>
  );
}

interface Listing {
  seq: number;
  time: string;
  entries: Entry[];
  command: string;
}

export function Browse({ source, route, navigate, live }: { source: string; route: Route; navigate: Navigate; live: boolean }) {
  const dir = refOf(route);
  const [commits] = useLoad(() => get<{ commits: Commit[] }>('/api/commits', { source }).then((r) => r.commits), [source]);
  const [listing, error] = useLoad(
    () => get<Listing>('/api/ls', { source, at: route.at, ...pathParams(dir) }),
    [source, route.at, dir.path, dir.pathBase64],
  );
  const [file, setFile] = useState<Entry | undefined>(undefined);
  const [selected, setSelected] = useState<Entry[]>([]);
  const [restoring, setRestoring] = useState<Entry[] | undefined>(undefined);
  useEffect(() => setFile(undefined), [source, dir.path, dir.pathBase64]);
  const list = commits ?? [];
  const atMs = route.at ? Date.parse(route.at) : Infinity;
  let index = list.length - 1;
  while (index > 0 && Date.parse((list[index] as Commit).time) > atMs) index--;
  const goCommit = (i: number): void => {
    const c = list[Math.max(0, Math.min(list.length - 1, i))];
    if (c) navigate({ at: c.time }, true);
  };
  // Previous / next change under this folder: [ and ].
  const step = async (direction: 'prev' | 'next'): Promise<void> => {
    const r = await get<{ time: string | null }>('/api/touching', { source, at: list[index]?.time, direction, ...pathParams(dir) });
    if (r.time !== null) navigate({ at: r.time }, true);
  };
  useEffect(() => {
    const onKey = (e: KeyboardEvent): void => {
      if ((e.target as HTMLElement).tagName === 'INPUT') return;
      if (e.key === '[') void step('prev');
      if (e.key === ']') void step('next');
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  });
  const open = (e: Entry): void => {
    if (e.type === 'dir') navigate({ path: e.path, pathBase64: e.pathBase64 ?? '' });
    else setFile(e);
  };
  const current = list[index];
  return (
    <section>
      <h2>Browse</h2>
      <div class="slider">
        <button id="prev-change" title="the previous change under this folder ([)" onClick={() => void step('prev')}>
          ◀ change
        </button>
        <input
          type="range"
          id="time-slider"
          min={0}
          max={Math.max(0, list.length - 1)}
          value={index}
          onInput={(e) => goCommit(Number((e.target as HTMLInputElement).value))}
        />
        <button id="next-change" title="the next change under this folder (])" onClick={() => void step('next')}>
          change ▶
        </button>
        <span id="browse-at">
          {current ? `commit ${current.seq}, ${fmtTime(current.time)}` : '…'}
          {route.at ? '' : ' (latest)'}
        </span>
        {route.at && (
          <button id="latest" onClick={() => navigate({ at: '' }, true)}>
            latest
          </button>
        )}
      </div>
      <Crumbs path={dir.path === '.' ? '' : dir.path} onGo={(p) => navigate({ path: p, pathBase64: '' })} />
      {error && <p class="error">{error}</p>}
      {listing && (
        <>
          <table class="listing" id="listing">
            <thead>
              <tr>
                <th></th>
                <th>name</th>
                <th>size</th>
                <th>modified</th>
                <th></th>
              </tr>
            </thead>
            <tbody>
              {listing.entries.map((e) => (
                <tr class={e.type}>
                  <td>
                    <input
                      type="checkbox"
                      checked={selected.some((s) => s.path === e.path && s.pathBase64 === e.pathBase64)}
                      onChange={(ev) =>
                        setSelected(
                          (ev.target as HTMLInputElement).checked
                            ? [...selected, e]
                            : selected.filter((s) => !(s.path === e.path && s.pathBase64 === e.pathBase64)),
                        )
                      }
                    />
                  </td>
                  <td>
                    <a href="#" class="entry" onClick={(ev) => (ev.preventDefault(), open(e))}>
                      {e.name}
                      {e.type === 'dir' ? '/' : e.type === 'symlink' ? ` → ${e.target ?? ''}` : ''}
                    </a>
                  </td>
                  <td>{e.type === 'file' ? fmtBytes(e.size) : ''}</td>
                  <td>{fmtTime(e.mtime)}</td>
                  <td>
                    {e.type === 'file' && (
                      <a class="download" href={href('/api/file', { source, seq: listing.seq, ...pathParams(e) })} download>
                        download
                      </a>
                    )}
                    {e.type === 'dir' && (
                      <a class="download" href={href('/api/tar', { source, seq: listing.seq, ...pathParams(e) })} download>
                        tar
                      </a>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {listing.entries.length === 0 && <p class="empty">This folder is empty at this instant.</p>}
          <div class="actions">
            <button id="restore-selected" disabled={selected.length === 0} onClick={() => setRestoring(selected)}>
              Restore {selected.length || ''} selected…
            </button>
            <a class="button" href={href('/api/tar', { source, seq: listing.seq, ...pathParams(dir) })} download>
              Download this folder (tar)
            </a>
            <a class="button" href="#" onClick={(e) => (e.preventDefault(), navigate({ view: 'changes', to: listing.time }))}>
              What changed here…
            </a>
          </div>
          <Command text={listing.command} />
          {file && <FilePanel source={source} seq={listing.seq} entry={file} navigate={navigate} />}
          {restoring && (
            <RestoreDialog source={source} at={listing.time} paths={restoring} live={live} onClose={() => setRestoring(undefined)} />
          )}
        </>
      )}
    </section>
  );
}

function FilePanel({ source, seq, entry, navigate }: { source: string; seq: number; entry: Entry; navigate: Navigate }) {
  const [preview] = useLoad(
    () => get<{ text?: string; binary?: boolean; truncated?: boolean }>('/api/preview', { source, seq, ...pathParams(entry) }),
    [source, seq, entry.path, entry.pathBase64],
  );
  return (
    <div class="file-panel" id="file-panel">
      <h3>{entry.path}</h3>
      <p>
        {fmtBytes(entry.size)}, modified {fmtTime(entry.mtime)}, mode {entry.mode.toString(8)} ·{' '}
        <a
          id="open-history"
          href="#"
          onClick={(e) => (e.preventDefault(), navigate({ view: 'history', path: entry.path, pathBase64: entry.pathBase64 ?? '' }))}
        >
          every version
        </a>{' '}
        ·{' '}
        <a href={href('/api/file', { source, seq, ...pathParams(entry) })} download>
          download
        </a>
      </p>
      {preview?.binary ? <p class="empty">binary content</p> : <pre id="preview">{preview?.text ?? ''}</pre>}
      {preview?.truncated && <p class="empty">(the first 64 KiB)</p>}
    </div>
  );
}

interface RestoreResult {
  preview: boolean;
  files: number;
  dirs: number;
  bytes: number;
  unchanged: number;
  replaced: PathRef[];
  kept: PathRef[];
  besides: Array<{ kept: string; as: string }>;
  undo?: { at: string; paths: PathRef[] };
  command: string;
  target: string;
}

export function RestoreDialog({
  source,
  at,
  paths,
  live,
  onClose,
  onDone,
}: {
  source: string;
  at: string;
  paths: PathRef[];
  live: boolean;
  onClose: () => void;
  onDone?: () => void;
}) {
  const [inPlace, setInPlace] = useState(live);
  const [target, setTarget] = useState('/tmp/phoenix-restore');
  const [mode, setMode] = useState<'keep-both' | 'overwrite' | 'skip'>('keep-both');
  const [result, setResult] = useState<RestoreResult | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [undone, setUndone] = useState<string | undefined>(undefined);
  const run = async (preview: boolean): Promise<void> => {
    setError(undefined);
    try {
      const r = await post<RestoreResult>('/api/restore', { source, at, paths, inPlace, ...(inPlace ? {} : { target }), mode, preview });
      setResult(r);
      if (!preview) onDone?.();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  const undo = async (): Promise<void> => {
    if (!result?.undo) return;
    const r = await post<{ restored: PathRef[]; removed: PathRef[] }>('/api/undo', {
      source,
      at: result.undo.at,
      paths: result.undo.paths,
    });
    setUndone(`undone: ${r.restored.length} put back, ${r.removed.length} removed`);
  };
  return (
    <div class="dialog" id="restore-dialog">
      <h3>
        Restore {paths.length} {paths.length === 1 ? 'entry' : 'entries'} as of {fmtTime(at)}
      </h3>
      <ul>
        {paths.slice(0, 10).map((p) => (
          <li>{p.path}</li>
        ))}
      </ul>
      {live && (
        <label>
          <input type="radio" name="where" checked={inPlace} onChange={() => setInPlace(true)} id="restore-in-place" /> in place (the daemon
          backs the restore up too, so it can be undone)
        </label>
      )}
      <label>
        <input type="radio" name="where" checked={!inPlace} onChange={() => setInPlace(false)} id="restore-to-folder" /> to a new folder:{' '}
        <input id="restore-target" value={target} onInput={(e) => setTarget((e.target as HTMLInputElement).value)} disabled={inPlace} />
      </label>
      <label>
        where something else is there now:{' '}
        <select id="restore-mode" value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value as typeof mode)}>
          <option value="keep-both">keep both (the backed-up version goes beside it)</option>
          <option value="overwrite">overwrite</option>
          <option value="skip">skip</option>
        </select>
      </label>
      <div class="actions">
        <button id="restore-preview" onClick={() => void run(true)}>
          Preview
        </button>
        <button id="restore-go" class="primary" onClick={() => void run(false)}>
          Restore
        </button>
        <button onClick={onClose}>Close</button>
      </div>
      {error && <p class="error">{error}</p>}
      {result && (
        <div class="result" id="restore-result">
          <p>
            {result.preview ? 'Would restore' : 'Restored'} {result.files} files, {result.dirs} folders ({fmtBytes(result.bytes)}) to{' '}
            {result.target}; {result.unchanged} already there.
          </p>
          {result.replaced.length > 0 && (
            <p>
              {mode === 'overwrite' ? 'Overwritten' : 'Different now'}: {result.replaced.map((p) => p.path).join(', ')}
            </p>
          )}
          {result.besides.length > 0 && <p>Kept both: {result.besides.map((b) => `${b.kept} → ${b.as}`).join(', ')}</p>}
          <Command text={result.command} />
          {result.undo && !undone && (
            <button id="undo-restore" onClick={() => void undo()}>
              Undo this restore
            </button>
          )}
          {undone && <p id="undo-result">{undone}</p>}
        </div>
      )}
    </div>
  );
}

interface HistoryEvent extends PathRef {
  seq: number;
  time: string;
  event: 'version' | 'deleted' | 'moved';
  size?: number;
  sizeChange?: number | null;
  from?: string;
  fromBase64?: string;
  restoreAt?: string | null;
}

interface TextDiff {
  same?: boolean;
  binary?: boolean;
  tooLarge?: boolean;
  hunks?: Array<{ oldStart: number; oldLines: number; newStart: number; newLines: number; lines: string[] }>;
}

export function History({ source, route, navigate }: { source: string; route: Route; navigate: Navigate }) {
  const p = refOf(route);
  const [h, error] = useLoad(
    () => get<{ events: HistoryEvent[]; command: string }>('/api/history', { source, ...pathParams(p) }),
    [source, p.path, p.pathBase64],
  );
  const [a, setA] = useState<HistoryEvent | undefined>(undefined);
  const [b, setB] = useState<HistoryEvent | undefined>(undefined);
  const [diff, setDiff] = useState<TextDiff | undefined>(undefined);
  const versions = (h?.events ?? []).filter((e) => e.event === 'version');
  useEffect(() => {
    setDiff(undefined);
    if (a === undefined || b === undefined) return;
    const [x, y] = a.seq <= b.seq ? [a, b] : [b, a];
    get<TextDiff>('/api/textdiff', { source, seqA: x.seq, seqB: y.seq, ...pathParams(x, 'a'), ...pathParams(y, 'b') }).then(setDiff);
  }, [a, b]);
  return (
    <section>
      <h2>Every version of {p.path}</h2>
      {error && <p class="error">{error}</p>}
      <table class="history" id="history">
        <thead>
          <tr>
            <th>A</th>
            <th>B</th>
            <th>commit</th>
            <th>time</th>
            <th>what</th>
            <th>size</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {(h?.events ?? []).map((e) => (
            <tr class={e.event}>
              <td>{e.event === 'version' && <input type="radio" name="a" class="pick-a" checked={a === e} onChange={() => setA(e)} />}</td>
              <td>{e.event === 'version' && <input type="radio" name="b" class="pick-b" checked={b === e} onChange={() => setB(e)} />}</td>
              <td>{e.seq}</td>
              <td>{fmtTime(e.time)}</td>
              <td>
                {e.event === 'moved' ? `moved from ${e.from} to ${e.path}` : e.event === 'deleted' ? 'deleted' : 'version'}
                {e.event === 'version' && e.path !== p.path ? ` (as ${e.path})` : ''}
              </td>
              <td>
                {e.size !== undefined ? fmtBytes(e.size) : ''}
                {e.sizeChange ? ` (${e.sizeChange > 0 ? '+' : ''}${e.sizeChange} B)` : ''}
              </td>
              <td>
                {e.event === 'version' && (
                  <a class="download-version" href={href('/api/file', { source, seq: e.seq, ...pathParams(e) })} download>
                    download
                  </a>
                )}
                {e.event === 'version' && (
                  <a
                    href="#"
                    onClick={(ev) => (
                      ev.preventDefault(),
                      navigate({ view: 'browse', at: e.time, path: parentPath(e.path), pathBase64: '' })
                    )}
                  >
                    {' '}
                    browse then
                  </a>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Command text={h?.command} />
      {versions.length > 1 && !diff && <p class="empty">Pick two versions (A and B) to compare them.</p>}
      {diff && (
        <div class="diff" id="diff">
          {diff.tooLarge ? (
            <p>Too large to compare here.</p>
          ) : diff.binary ? (
            <p>Binary content: {diff.same ? 'the same' : 'different'}.</p>
          ) : diff.same ? (
            <p>The same content.</p>
          ) : (
            (diff.hunks ?? []).map((hk) => (
              <pre class="hunk">
                <span class="at">{`@@ -${hk.oldStart},${hk.oldLines} +${hk.newStart},${hk.newLines} @@`}</span>
                {hk.lines.map((l) => (
                  <span class={l[0] === '+' ? 'add' : l[0] === '-' ? 'del' : 'ctx'}>{`${l}\n`}</span>
                ))}
              </pre>
            ))
          )}
        </div>
      )}
    </section>
  );
}

const parentPath = (p: string): string => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');

const toLocalInput = (iso: string): string => {
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
};

export function Changes({ source, route, navigate }: { source: string; route: Route; navigate: Navigate }) {
  const to = route.to ?? new Date().toISOString();
  const from = route.from ?? new Date(Date.parse(to) - 3_600_000).toISOString();
  const p = refOf(route);
  const [d, error] = useLoad(
    () =>
      get<{ changes: Array<PathRef & { change: string; type: string; from?: string; modified?: boolean }>; command: string }>('/api/diff', {
        source,
        from,
        to,
        ...pathParams(p),
      }),
    [source, from, to, p.path, p.pathBase64],
  );
  return (
    <section>
      <h2>What changed</h2>
      <div class="filters">
        from{' '}
        <input
          type="datetime-local"
          step="1"
          id="changes-from"
          value={toLocalInput(from)}
          onChange={(e) => navigate({ from: new Date((e.target as HTMLInputElement).value).toISOString() }, true)}
        />
        to{' '}
        <input
          type="datetime-local"
          step="1"
          id="changes-to"
          value={toLocalInput(to)}
          onChange={(e) => navigate({ to: new Date((e.target as HTMLInputElement).value).toISOString() }, true)}
        />
        in <code>{p.path || '(the whole source)'}</code>
      </div>
      {error && <p class="error">{error}</p>}
      <table id="changes">
        <tbody>
          {(d?.changes ?? []).map((c) => (
            <tr class={c.change}>
              <td>{c.change}</td>
              <td>
                <a
                  href="#"
                  onClick={(e) => (e.preventDefault(), navigate({ view: 'history', path: c.path, pathBase64: c.pathBase64 ?? '' }))}
                >
                  {c.path}
                  {c.type === 'dir' ? '/' : ''}
                </a>
                {c.change === 'moved' ? ` (from ${c.from}${c.modified ? ', modified' : ''})` : ''}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {d && d.changes.length === 0 && <p class="empty">Nothing changed there in that time.</p>}
      <Command text={d?.command} />
    </section>
  );
}

const PERIODS: Array<[string, number]> = [
  ['the last hour', 3_600_000],
  ['the last day', 86_400_000],
  ['the last week', 7 * 86_400_000],
  ['the last 30 days', 30 * 86_400_000],
];

export function Deleted({ source, route, navigate, live }: { source: string; route: Route; navigate: Navigate; live: boolean }) {
  const period = Number(route.period ?? 86_400_000);
  const [d, error, reload] = useLoad(
    () =>
      get<{ deleted: Array<PathRef & { type: string; size: number; entries: number; time: string; restoreAt: string }> }>('/api/deleted', {
        source,
        from: new Date(Date.now() - period).toISOString(),
      }),
    [source, period],
  );
  const [restoring, setRestoring] = useState<{ at: string; path: PathRef } | undefined>(undefined);
  return (
    <section>
      <h2>Recently deleted</h2>
      <select
        id="deleted-period"
        value={String(period)}
        onChange={(e) => navigate({ period: (e.target as HTMLSelectElement).value }, true)}
      >
        {PERIODS.map(([label, ms]) => (
          <option value={String(ms)}>{label}</option>
        ))}
      </select>
      {error && <p class="error">{error}</p>}
      <table id="deleted">
        <tbody>
          {(d?.deleted ?? []).map((x) => (
            <tr>
              <td>{fmtTime(x.time)}</td>
              <td>
                {x.path}
                {x.type === 'dir' ? `/ (${x.entries} entries)` : ''}
              </td>
              <td>{x.type === 'file' ? fmtBytes(x.size) : ''}</td>
              <td>
                <button class="restore-deleted" onClick={() => setRestoring({ at: x.restoreAt, path: x })}>
                  restore
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {d && d.deleted.length === 0 && <p class="empty">Nothing was deleted in that time.</p>}
      {restoring && (
        <RestoreDialog
          source={source}
          at={restoring.at}
          paths={[restoring.path]}
          live={live}
          onClose={() => setRestoring(undefined)}
          onDone={reload}
        />
      )}
    </section>
  );
}
