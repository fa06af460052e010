/** The live views: the RPO gauge and health of each source, and the timeline of changes. */
import { useEffect, useState } from 'preact/hooks';
import { fmtBytes, fmtTime, get, type Commit } from './api.js';
import type { Navigate, Route } from './main.js';

export interface LiveSource {
  name: string;
  path: string;
  state: string;
  protectedThrough: string;
  exposedMs: number;
  why: string[];
  exposure: Array<[number, number]>;
  lastCommit: { seq: number; time: string } | null;
  backlog: { total: number; done: number; secondsLeft: number | null } | null;
  pipeline: {
    seen: number;
    pending: number;
    committing: number;
    durable: number;
    commits: number;
    rates: { seen: number; committed: number; readBytes: number; uploadedBytes: number };
    bytesRead: number;
    bytesUploaded: number;
  };
  health: {
    watches: number;
    unwatched: number;
    overflows: number;
    lastOverflow: string | null;
    rescans: Record<string, number>;
    failing: { since: string; error: string; retryAt: string; attempts: number } | null;
  };
}

export interface LiveOverview {
  time: string;
  repository: string;
  rpoTargetMs: number;
  leaseHolder: string;
  lastCheck: { time: string; ok: boolean } | null;
  eventLoopLagMs: number;
  store: { lastSuccess: string | null; lastFailure: { time: string; op: string } | null };
  watches: { used: number; limit: number | null };
  errors: Array<{ time: string; path: string | null; message: string; code?: string; hint?: string }>;
  sources: LiveSource[];
}

export interface FeedEvent {
  id: number;
  type: 'change' | 'commit' | 'rescan' | 'outage' | 'recovered' | 'guard';
  timeMs: number;
  source: string;
  change?: string;
  kind?: string;
  path?: string;
  pathBase64?: string;
  from?: string;
  seq?: number;
  changes?: number;
  reason?: string;
  error?: string;
}

const secs = (ms: number): string => (ms < 10_000 ? (ms / 1000).toFixed(2) : (ms / 1000).toFixed(0));

function level(ms: number, target: number, failing: boolean): 'ok' | 'warn' | 'bad' {
  if (failing || ms > 10 * target) return 'bad';
  return ms > target ? 'warn' : 'ok';
}

/** The last hour's exposure: one bar per 5 s, the target as a line. */
function ExposureChart({ points, target }: { points: Array<[number, number]>; target: number }) {
  const w = 360;
  const h = 60;
  const now = Date.now();
  const max = Math.max(target * 2, ...points.map((p) => p[1]));
  const x = (t: number): number => w - ((now - t) / 3_600_000) * w;
  const y = (ms: number): number => h - (ms / max) * h;
  return (
    <svg class="chart" viewBox={`0 0 ${w} ${h}`} width={w} height={h} role="img" aria-label="exposure over the last hour">
      {points.map(([t, ms]) => (
        <rect x={x(t) - 0.5} y={y(ms)} width={1.5} height={h - y(ms)} class={level(ms, target, false)} />
      ))}
      <line x1={0} x2={w} y1={y(target)} y2={y(target)} class="target" />
    </svg>
  );
}

export function Overview({
  live,
  sources,
  navigate,
}: {
  live: LiveOverview | null;
  sources: Array<{ name: string; commits: number; first: string | null; last: string | null }>;
  navigate: Navigate;
}) {
  if (live === null) {
    return (
      <section>
        <h2>Sources</h2>
        <table>
          <thead>
            <tr>
              <th>source</th>
              <th>commits</th>
              <th>first</th>
              <th>last</th>
            </tr>
          </thead>
          <tbody>
            {sources.map((s) => (
              <tr>
                <td>
                  <a href="#" onClick={(e) => (e.preventDefault(), navigate({ view: 'browse', source: s.name }))}>
                    {s.name}
                  </a>
                </td>
                <td>{s.commits}</td>
                <td>{fmtTime(s.first)}</td>
                <td>{fmtTime(s.last)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    );
  }
  const limit = live.watches.limit;
  return (
    <div>
      {live.sources.map((s) => {
        const lv = level(s.exposedMs, live.rpoTargetMs, s.health.failing !== null);
        const p = s.pipeline;
        return (
          <section class="source" data-source={s.name}>
            <h2>
              {s.name} <span class={`state ${s.state}`}>{s.state}</span>
            </h2>
            <div class={`gauge ${lv}`} id="rpo-gauge">
              protected through <strong id="protected-through">{fmtTime(s.protectedThrough)}</strong> —{' '}
              <strong id="exposed">{secs(s.exposedMs)} s</strong> exposed
              <span class="last-commit" id="last-commit">
                {s.lastCommit ? `last commit ${s.lastCommit.seq} at ${fmtTime(s.lastCommit.time)}` : 'no commit yet'}
              </span>
            </div>
            {s.why.length > 0 && (
              <ul class="why">
                {s.why.map((w) => (
                  <li>{w}</li>
                ))}
              </ul>
            )}
            {s.backlog && (
              <div class="backlog" id="backlog">
                <progress max={s.backlog.total} value={s.backlog.done} /> backlog: {s.backlog.done} of {s.backlog.total} changes committed
                {s.backlog.secondsLeft !== null ? `, about ${s.backlog.secondsLeft} s left` : ''}
              </div>
            )}
            <ExposureChart points={s.exposure} target={live.rpoTargetMs} />
            <div class="pipeline">
              <span>
                seen {p.seen} ({p.rates.seen.toFixed(1)}/s)
              </span>{' '}
              → <span>pending {p.pending}</span> → <span>committing {p.committing}</span> →{' '}
              <span>
                durable {p.durable} ({p.rates.committed.toFixed(1)}/s)
              </span>
              <span class="bytes">
                read {fmtBytes(p.bytesRead)} ({fmtBytes(p.rates.readBytes)}/s), uploaded {fmtBytes(p.bytesUploaded)} (
                {fmtBytes(p.rates.uploadedBytes)}/s), {p.commits} commits
              </span>
            </div>
            <table class="health">
              <tbody>
                <tr>
                  <th>watches</th>
                  <td>
                    {s.health.watches} of {limit ?? '?'} (all sources {live.watches.used})
                    {limit !== null && live.watches.used > 0.8 * limit && (
                      <code class="hint"> sudo sysctl fs.inotify.max_user_watches={Math.max(limit * 2, 524288)}</code>
                    )}
                  </td>
                </tr>
                <tr>
                  <th>unwatched directories</th>
                  <td>{s.health.unwatched}</td>
                </tr>
                <tr>
                  <th>overflows</th>
                  <td>
                    {s.health.overflows}
                    {s.health.lastOverflow ? `, the last at ${fmtTime(s.health.lastOverflow)}` : ''}
                  </td>
                </tr>
                <tr>
                  <th>rescans</th>
                  <td>
                    {Object.entries(s.health.rescans)
                      .map(([k, v]) => `${k} ${v}`)
                      .join(', ')}
                  </td>
                </tr>
                <tr>
                  <th>store</th>
                  <td>
                    last success {fmtTime(live.store.lastSuccess)}
                    {live.store.lastFailure ? `; last failure ${fmtTime(live.store.lastFailure.time)} (${live.store.lastFailure.op})` : ''}
                  </td>
                </tr>
                <tr>
                  <th>lease holder</th>
                  <td>{live.leaseHolder}</td>
                </tr>
                <tr>
                  <th>last check</th>
                  <td>
                    {live.lastCheck
                      ? `${fmtTime(live.lastCheck.time)}: ${live.lastCheck.ok ? 'no errors' : 'ERRORS FOUND'}`
                      : 'none on record from this host (phoenix check)'}
                  </td>
                </tr>
              </tbody>
            </table>
          </section>
        );
      })}
      {live.errors.length > 0 && (
        <section>
          <h2>Problems</h2>
          <table class="errors">
            <thead>
              <tr>
                <th>time</th>
                <th>path</th>
                <th>code</th>
                <th>what</th>
              </tr>
            </thead>
            <tbody>
              {[...live.errors].reverse().map((e) => (
                <tr>
                  <td>{fmtTime(e.time)}</td>
                  <td>{e.path ?? '–'}</td>
                  <td>{e.code ?? ''}</td>
                  <td>
                    {e.message}
                    {e.hint ? <div class="hint">{e.hint}</div> : null}
                    {e.path !== null && <div class="retry">retried automatically at its next change</div>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
    </div>
  );
}

const ZOOMS: Array<[string, number]> = [
  ['day', 86_400_000],
  ['hour', 3_600_000],
  ['minute', 60_000],
  ['second', 1000],
];

/** Commits over a window (a day to a second), as bars: click to zoom in on a bar. */
function DensityStrip({ source, navigate }: { source: string; navigate: Navigate }) {
  const [zoom, setZoom] = useState(0);
  const [end, setEnd] = useState(Date.now());
  const [commits, setCommits] = useState<Commit[]>([]);
  const span = (ZOOMS[zoom] as [string, number])[1];
  useEffect(() => {
    get<{ commits: Commit[] }>('/api/commits', { source, from: new Date(end - span).toISOString(), to: new Date(end).toISOString() }).then(
      (r) => setCommits(r.commits),
    );
  }, [source, zoom, end]);
  const bins = 60;
  const counts = new Array<number>(bins).fill(0);
  for (const c of commits) {
    const i = Math.floor(((Date.parse(c.time) - (end - span)) / span) * bins);
    if (i >= 0 && i < bins) counts[i] = (counts[i] ?? 0) + 1;
  }
  const max = Math.max(1, ...counts);
  return (
    <div class="density">
      <div class="zoom">
        {ZOOMS.map(([name], i) => (
          <button class={i === zoom ? 'active' : ''} onClick={() => setZoom(i)}>
            {name}
          </button>
        ))}
        <button onClick={() => setEnd(Date.now())}>now</button>
        <span>
          {commits.length} commits from {fmtTime(new Date(end - span).toISOString())} to {fmtTime(new Date(end).toISOString())}
        </span>
      </div>
      <svg viewBox={`0 0 ${bins * 6} 40`} width={bins * 6} height={40} role="img" aria-label="commit density">
        {counts.map((n, i) => (
          <rect
            x={i * 6}
            y={40 - (n / max) * 40}
            width={5}
            height={(n / max) * 40}
            class="bar"
            onClick={() => {
              const binEnd = end - span + ((i + 1) * span) / bins;
              if (zoom < ZOOMS.length - 1) {
                setEnd(binEnd + (ZOOMS[zoom + 1] as [string, number])[1] / 2);
                setZoom(zoom + 1);
              } else navigate({ view: 'browse', at: new Date(binEnd).toISOString() });
            }}
          >
            <title>{n} commits</title>
          </rect>
        ))}
      </svg>
    </div>
  );
}

export function Timeline({ feed, source, route, navigate }: { feed: FeedEvent[]; source: string; route: Route; navigate: Navigate }) {
  const filter = route.filter ?? '';
  const kind = route.kind ?? '';
  const shown = feed
    .filter((e) => e.source === source)
    .filter(
      (e) =>
        kind === '' ||
        (kind === 'markers' ? e.type !== 'change' && e.type !== 'commit' : e.type === 'change' ? e.change === kind : e.type === kind),
    )
    .filter((e) => filter === '' || (e.path ?? '').includes(filter))
    .slice(-500)
    .reverse();
  return (
    <section>
      <h2>Timeline</h2>
      <DensityStrip source={source} navigate={navigate} />
      <div class="filters">
        <input
          id="timeline-filter"
          placeholder="path contains…"
          value={filter}
          onInput={(e) => navigate({ filter: (e.target as HTMLInputElement).value }, true)}
        />
        <select id="timeline-kind" value={kind} onChange={(e) => navigate({ kind: (e.target as HTMLSelectElement).value }, true)}>
          <option value="">everything</option>
          {['created', 'modified', 'attributes', 'removed', 'moved', 'commit', 'markers'].map((k) => (
            <option value={k}>{k === 'markers' ? 'overflows, rescans, outages' : k}</option>
          ))}
        </select>
      </div>
      <table class="timeline" id="timeline">
        <tbody>
          {shown.map((e) => (
            <tr class={`ev ${e.type}`}>
              <td>{fmtTime(new Date(e.timeMs).toISOString())}</td>
              <td>{e.type === 'change' ? e.change : e.type}</td>
              <td>
                {e.type === 'change' ? (
                  <a
                    href="#"
                    onClick={(ev) => {
                      ev.preventDefault();
                      navigate({ view: 'history', path: e.path ?? '', pathBase64: e.pathBase64 ?? '' });
                    }}
                  >
                    {e.path}
                  </a>
                ) : e.type === 'commit' ? (
                  `commit ${e.seq}: ${e.changes} changes`
                ) : e.type === 'rescan' ? (
                  `rescan of ${e.path === '.' ? 'the whole source' : e.path} (${e.reason})`
                ) : e.type === 'outage' ? (
                  `store unreachable: ${e.error}`
                ) : (
                  'the store is back'
                )}
                {e.from !== undefined ? ` (from ${e.from})` : ''}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {shown.length === 0 && <p class="empty">No changes since this page was opened.</p>}
    </section>
  );
}
