/**
 * The live feed behind the dashboard's timeline: changes as they are seen, commits, rescans,
 * overflows and outages, numbered, the last few thousand kept so that an event stream that
 * reconnects (Server-Sent Events' Last-Event-ID) gets what it missed.
 */

import type { ServerResponse } from 'node:http';

export interface FeedEvent {
  id: number;
  type: 'change' | 'commit' | 'rescan' | 'outage' | 'recovered' | 'guard';
  timeMs: number;
  source: string;
  [k: string]: unknown;
}

const KEPT = 5000;

export class Hub {
  readonly #ring: FeedEvent[] = [];
  readonly #clients = new Set<ServerResponse>();
  #next = 1;
  /** Changes are sent to streams at most this often, in one message (a burst of 20,000 is not 20,000 writes). */
  readonly #batch: FeedEvent[] = [];
  #timer: NodeJS.Timeout | undefined;

  get clients(): number {
    return this.#clients.size;
  }

  publish(e: Omit<FeedEvent, 'id'>): void {
    const ev = { ...e, id: this.#next++ } as FeedEvent;
    this.#ring.push(ev);
    if (this.#ring.length > KEPT * 1.25) this.#ring.splice(0, this.#ring.length - KEPT);
    if (this.#clients.size === 0) return;
    this.#batch.push(ev);
    this.#timer ??= setTimeout(() => this.#flush(), 100);
  }

  /** Events after `afterId`, or undefined when some of them are no longer kept. */
  since(afterId: number): FeedEvent[] | undefined {
    const first = this.#ring[0];
    if (first !== undefined && afterId < first.id - 1) return undefined;
    return this.#ring.filter((e) => e.id > afterId);
  }

  recent(n: number): FeedEvent[] {
    return this.#ring.slice(-n);
  }

  /** Serves one event stream: what was missed since Last-Event-ID, then everything new. */
  attach(res: ServerResponse, lastEventId: string | undefined, extra: () => unknown): void {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
    res.write('retry: 1000\n\n');
    const after = lastEventId !== undefined && /^\d+$/.test(lastEventId) ? Number(lastEventId) : undefined;
    if (after !== undefined) {
      const missed = this.since(after);
      if (missed === undefined) res.write(`event: reset\ndata: {}\n\n`);
      else if (missed.length > 0) write(res, missed);
    }
    this.#clients.add(res);
    const tick = setInterval(() => res.write(`event: status\ndata: ${JSON.stringify(extra())}\n\n`), 1000);
    res.write(`event: status\ndata: ${JSON.stringify(extra())}\n\n`);
    res.on('close', () => {
      clearInterval(tick);
      this.#clients.delete(res);
    });
  }

  #flush(): void {
    this.#timer = undefined;
    const batch = this.#batch.splice(0);
    for (const c of this.#clients) write(c, batch);
  }

  close(): void {
    clearTimeout(this.#timer);
    for (const c of this.#clients) c.end();
    this.#clients.clear();
  }
}

/** One message per batch: its id is the last event's, so a reconnect resumes after it. */
function write(res: ServerResponse, events: FeedEvent[]): void {
  if (events.length === 0) return;
  res.write(`id: ${(events.at(-1) as FeedEvent).id}\nevent: feed\ndata: ${JSON.stringify(events)}\n\n`);
}
