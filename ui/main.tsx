/** The Phoenix dashboard: overview, timeline, browse any second, what changed, file history, recently deleted, restore. */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, type Commit, fmtTime } from './api.js';
import { Browse, Changes, Deleted, History } from './browse.js';
import { Overview, Timeline, type FeedEvent, type LiveOverview } from './live.js';

export type View = 'overview' | 'timeline' | 'browse' | 'changes' | 'history' | 'deleted';

/** What the URL says: the view and its parameters (the instant is `at`, so a link shows the same second). */
export type Route = Record<string, string> & { view: View };

function readRoute(): Route {
  const q = new URLSearchParams(location.search);
  const r: Record<string, string> = {};
  for (const [k, v] of q) r[k] = v;
  const view = (r.view ?? 'overview') as View;
  return { ...r, view };
}

export type Navigate = (r: Partial<Route>, replace?: boolean) => void;

interface Overview0 {
  repository: string;
  live: LiveOverview | null;
  sources: Array<{ name: string; commits: number; first: string | null; last: string | null }>;
}

function App() {
  const [route, setRoute] = useState<Route>(readRoute());
  const [info, setInfo] = useState<Overview0 | null>(null);
  const [live, setLive] = useState<LiveOverview | null>(null);
  const [feed, setFeed] = useState<FeedEvent[]>([]);
  const [connected, setConnected] = useState(false);

  useEffect(() => {
    const on = (): void => setRoute(readRoute());
    addEventListener('popstate', on);
    get<Overview0>('/api/overview').then((o) => {
      setInfo(o);
      setLive(o.live);
    });
    return () => removeEventListener('popstate', on);
  }, []);

  // The live feed: status every second, events in batches; EventSource resumes with Last-Event-ID after a reconnect.
  useEffect(() => {
    if (info === null || info.live === null) return;
    const es = new EventSource('/api/events');
    es.addEventListener('open', () => setConnected(true));
    es.addEventListener('error', () => setConnected(false));
    es.addEventListener('status', (e) => setLive(JSON.parse((e as MessageEvent<string>).data) as LiveOverview));
    es.addEventListener('feed', (e) => {
      const batch = JSON.parse((e as MessageEvent<string>).data) as FeedEvent[];
      setFeed((f) => [...f, ...batch].slice(-2000));
    });
    es.addEventListener('reset', () => setFeed([]));
    return () => es.close();
  }, [info]);

  const navigate: Navigate = (r, replace = false) => {
    const next = { ...route, ...r } as Route;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(next)) if (v !== undefined && v !== '' && !(k === 'view' && v === 'overview')) q.set(k, v);
    const url = `/${q.size > 0 ? `?${q}` : ''}`;
    if (replace) history.replaceState(null, '', url);
    else history.pushState(null, '', url);
    setRoute(readRoute());
  };

  if (info === null) return <p class="loading">Loading…</p>;
  const sources = info.sources.map((s) => s.name);
  const source = route.source ?? sources[0] ?? '';
  const views: Array<[View, string]> = [
    ['overview', 'Overview'],
    ['timeline', 'Timeline'],
    ['browse', 'Browse'],
    ['changes', 'What changed'],
    ['deleted', 'Recently deleted'],
  ];
  return (
    <div class="app">
      <header>
        <span class="brand">Phoenix</span>
        <nav>
          {views.map(([v, label]) => (
            <a
              href={`/?view=${v}`}
              id={`nav-${v}`}
              class={route.view === v ? 'active' : ''}
              onClick={(e) => {
                e.preventDefault();
                navigate({ view: v });
              }}
            >
              {label}
            </a>
          ))}
        </nav>
        {sources.length > 1 && (
          <select
            id="source"
            value={source}
            onChange={(e) => navigate({ source: (e.target as HTMLSelectElement).value, path: '', pathBase64: '' })}
          >
            {sources.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        )}
        <span class={`conn ${info.live === null ? 'offline' : connected ? 'on' : 'off'}`} title={info.repository}>
          {info.live === null ? 'repository only (phoenix serve)' : connected ? 'live' : 'reconnecting…'}
        </span>
      </header>
      <main>
        {source === '' ? (
          <p>Nothing is backed up in {info.repository} yet.</p>
        ) : route.view === 'overview' ? (
          <Overview live={live} sources={info.sources} navigate={navigate} />
        ) : route.view === 'timeline' ? (
          <Timeline feed={feed} source={source} route={route} navigate={navigate} />
        ) : route.view === 'browse' ? (
          <Browse source={source} route={route} navigate={navigate} live={live !== null} />
        ) : route.view === 'changes' ? (
          <Changes source={source} route={route} navigate={navigate} />
        ) : route.view === 'history' ? (
          <History source={source} route={route} navigate={navigate} />
        ) : (
          <Deleted source={source} route={route} navigate={navigate} live={live !== null} />
        )}
      </main>
      <footer>
        {info.repository} · {live ? `updated ${fmtTime(live.time)}` : ''}
      </footer>
    </div>
  );
}

export type { Commit };
render(<App />, document.getElementById('app') as HTMLElement);
