// Live seat events: ONE listening connection per process, fanned out to
// every subscriber of a show. Events are read by position (commit order),
// so a notification is only a cue to read: a missed one loses nothing.
import type pg from 'pg';
import { Client } from 'pg';
import type { Logger } from 'pino';
import type { components } from './generated/api.js';
import { callJson, statement } from './db.js';
import { defaultIntervals } from './config.js';

export type SeatEvent = components['schemas']['SeatEvent'];

const showEvents = statement('show_events', 'select app.show_events($1, $2, $3) as result');
const lastPosition = statement(
  'last_event_position',
  'select coalesce(max(position), 0)::int as result from app.seat_events where show_id = $1',
);
const sequenceEvents = statement('sequence_events', 'select app.sequence_events() as result');

const PAGE = 500;

/** Where a subscriber's events go: an event stream, which may take them slowly. */
export interface SeatEventSink {
  /** Sends events in order; false when the client has not taken all it was sent yet. */
  send(events: readonly SeatEvent[]): boolean;
  /** Resolves true once the client has taken what it was sent, false when it is gone. */
  drained(): Promise<boolean>;
}

interface Subscriber {
  lastSent: number;
  /** False while catching up from the database; the feed skips it meanwhile. */
  live: boolean;
  sink: SeatEventSink;
}

interface ShowFeed {
  tail: number;
  subscribers: Set<Subscriber>;
  reading: boolean;
  again: boolean;
}

export interface SeatEventHubOptions {
  /** How often committed events are given their positions. */
  sequenceIntervalMs: number;
  /**
   * A direct connection for LISTEN; absent: the pool's. LISTEN belongs to a
   * session, and a transaction-mode pooler gives the session to others
   * between transactions, so notifications would never arrive.
   */
  listenUrl?: string;
}

export class SeatEventHub {
  private listener: Client | undefined;
  private readonly feeds = new Map<string, ShowFeed>();
  private sequencer: NodeJS.Timeout | undefined;
  private sequencing: Promise<void> = Promise.resolve();
  private stopped = false;
  private reconnectDelay = 100;
  private readonly onStop = new Set<() => void>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly logger: Logger,
    private readonly options: SeatEventHubOptions = { sequenceIntervalMs: defaultIntervals.sequenceIntervalMs },
  ) {}

  async start(): Promise<void> {
    await this.listen();
    this.sequencer = setInterval(() => {
      this.sequencing = callJson(this.pool, sequenceEvents, []).then(
        () => undefined,
        (error: unknown) => this.logger.warn({ err: error }, 'sequencing seat events failed'),
      );
    }, this.options.sequenceIntervalMs);
    this.sequencer.unref();
  }

  /** Number of subscribers, for metrics and tests. */
  get subscriberCount(): number {
    let n = 0;
    for (const feed of this.feeds.values()) n += feed.subscribers.size;
    return n;
  }

  /**
   * Sends a show's events after position `after` to `sink`: first those
   * already sequenced, a page at a time at the pace the client takes them,
   * then the live feed, with no gap and no duplicate at the seam. Returns the
   * unsubscribe function.
   */
  async subscribe(showId: string, after: number, sink: SeatEventSink): Promise<() => void> {
    let feed = this.feeds.get(showId);
    if (!feed) {
      // Marked as reading until its tail is known; a cue that arrives
      // meanwhile sets `again`, and the read happens right after.
      const created: ShowFeed = { tail: 0, subscribers: new Set(), reading: true, again: false };
      this.feeds.set(showId, created);
      try {
        created.tail = (await callJson<number>(this.pool, lastPosition, [showId])) ?? 0;
      } finally {
        created.reading = false;
      }
      if (created.again) void this.read(showId);
      feed = created;
    }
    const subscriber: Subscriber = { lastSent: after, live: false, sink };
    feed.subscribers.add(subscriber);
    let subscribed = true;
    const unsubscribe = () => {
      subscribed = false;
      const current = this.feeds.get(showId);
      current?.subscribers.delete(subscriber);
      if (current && current.subscribers.size === 0) this.feeds.delete(showId);
    };
    try {
      // The feed has delivered everything up to its tail, and the database
      // holds all of it: read from there until the subscriber reaches the
      // tail, then it is live. Nothing waits in memory for a slow client:
      // the next page is read only once it has taken the last.
      while (subscribed && subscriber.lastSent < feed.tail) {
        const page = (await callJson<SeatEvent[]>(this.pool, showEvents, [showId, subscriber.lastSent, PAGE])) ?? [];
        const last = page.at(-1);
        if (!last || !subscribed) break;
        subscriber.lastSent = last.id;
        if (!sink.send(page) && !(await sink.drained())) break;
      }
      subscriber.live = true;
    } catch (error) {
      unsubscribe();
      throw error;
    }
    return unsubscribe;
  }

  /** Runs `close` when the hub stops (to end open streams). */
  onClose(close: () => void): () => void {
    this.onStop.add(close);
    return () => this.onStop.delete(close);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sequencer);
    for (const close of this.onStop) close();
    this.onStop.clear();
    this.feeds.clear();
    await this.sequencing;
    const listener = this.listener;
    this.listener = undefined;
    await listener?.end().catch(() => {});
  }

  private deliver(subscriber: Subscriber, page: readonly SeatEvent[]): void {
    if (!subscriber.live) return;
    // Usually the whole page: the same array for every subscriber.
    const fresh = (page[0]?.id ?? 0) > subscriber.lastSent ? page : page.filter((event) => event.id > subscriber.lastSent);
    const last = fresh.at(-1);
    if (!last) return;
    subscriber.lastSent = last.id;
    subscriber.sink.send(fresh);
  }

  private async listen(): Promise<void> {
    const connectionString = this.options.listenUrl ?? this.pool.options.connectionString;
    const client = new Client({ connectionString, application_name: `ticket-booking-listener ${process.pid}` });
    client.on('notification', (message) => {
      const showId = message.payload?.split(' ')[0];
      if (showId && this.feeds.has(showId)) void this.read(showId);
    });
    client.on('error', (error) => this.logger.warn({ err: error }, 'seat event listener failed'));
    client.on('end', () => {
      if (this.listener === client) this.reconnect();
    });
    await client.connect();
    await client.query('listen seat_events');
    this.listener = client;
    this.reconnectDelay = 100;
    // Anything sequenced while no one was listening is read now.
    for (const showId of this.feeds.keys()) void this.read(showId);
  }

  private reconnect(): void {
    this.listener = undefined;
    if (this.stopped) return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(delay * 2, 5_000);
    setTimeout(() => {
      if (this.stopped) return;
      this.listen().catch((error: unknown) => {
        this.logger.warn({ err: error }, 'seat event listener could not reconnect');
        this.reconnect();
      });
    }, delay).unref();
  }

  /** Reads a show's new events once for all its subscribers. */
  private async read(showId: string): Promise<void> {
    const feed = this.feeds.get(showId);
    if (!feed) return;
    if (feed.reading) {
      feed.again = true;
      return;
    }
    feed.reading = true;
    try {
      do {
        feed.again = false;
        const page = (await callJson<SeatEvent[]>(this.pool, showEvents, [showId, feed.tail, PAGE])) ?? [];
        const last = page.at(-1);
        if (last) {
          feed.tail = Math.max(feed.tail, last.id);
          for (const subscriber of feed.subscribers) this.deliver(subscriber, page);
        }
        if (page.length === PAGE) feed.again = true;
      } while (feed.again && this.feeds.get(showId) === feed);
    } catch (error) {
      this.logger.warn({ err: error, showId }, 'reading seat events failed');
    } finally {
      feed.reading = false;
    }
  }
}
