// A show's seat events: a Server-Sent Events stream fed by the process's
// one listener, or the history as JSON pages. A stream holds a bounded
// amount for its client: one that does not take its events is dropped, and
// streams are capped per client address and per process.
import { Router, type Request } from 'express';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import type { StreamLimits } from './config.js';
import type { components, operations } from './generated/api.js';
import { callJson, callJsonAt, statement } from './db.js';
import { ProblemError, showNotFound } from './problem.js';
import { readPosition, type ReadRouting } from './replica.js';
import type { SeatEvent, SeatEventHub } from './seat-events.js';

type SeatEventPage = components['schemas']['SeatEventPage'];
type EventsPath = operations['getShowEvents']['parameters']['path'];
type EventsQuery = NonNullable<operations['getShowEvents']['parameters']['query']>;

// Both answer the show's newest sequenced position with what they read, so
// a position beyond it is refused without a second round trip; no row: no show.
const history = statement(
  'show_event_history',
  `select json_build_object(
     'newest', (select coalesce(max(e.position), 0) from app.seat_events e where e.show_id = s.id),
     'items', app.show_events(s.id, $2, $3, $4)) as result, ${readPosition} as position
   from app.shows s where s.id = $1`,
);
const newestPosition = statement(
  'show_newest_event',
  `select to_json((select coalesce(max(e.position), 0) from app.seat_events e where e.show_id = s.id)) as result
   from app.shows s where s.id = $1`,
);

/** Seconds a refused stream is told to wait: long enough for a stream to end. */
const RETRY_AFTER = { 'Retry-After': '10' };

export interface StreamOptions extends StreamLimits {
  /** How often an idle stream gets a keep-alive comment. */
  heartbeatMs: number;
}

// Rendered once per page, however many streams it goes to.
const rendered = new WeakMap<readonly SeatEvent[], string>();

function messages(events: readonly SeatEvent[]): string {
  let text = rendered.get(events);
  if (text === undefined) {
    text = events.map((event) => `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`).join('');
    rendered.set(events, text);
  }
  return text;
}

/**
 * A position past the show's newest event: a stream would wait for it in
 * silence forever. Named as the contract validator names the parameter.
 */
function beyondNewest(name: string, newest: number): ProblemError {
  const reason = `is beyond the newest event of this show (${newest})`;
  return new ProblemError('validation-failed', `${name}: ${reason}`, { errors: [{ name, reason }] });
}

/** Takes a stream slot for a client address, or refuses; returns its release. */
function streamSlots({ maxPerClient, maxTotal }: StreamLimits): (client: string) => () => void {
  const perClient = new Map<string, number>();
  let total = 0;
  return (client) => {
    const mine = perClient.get(client) ?? 0;
    if (maxPerClient > 0 && mine >= maxPerClient) {
      throw new ProblemError('too-many-streams', `At most ${maxPerClient} event streams from one client; end one first`, {}, RETRY_AFTER);
    }
    if (maxTotal > 0 && total >= maxTotal) {
      throw new ProblemError('service-unavailable', 'The service has all the event streams it serves open; retry shortly', {}, RETRY_AFTER);
    }
    perClient.set(client, mine + 1);
    total += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      total -= 1;
      const left = (perClient.get(client) ?? 1) - 1;
      if (left > 0) perClient.set(client, left);
      else perClient.delete(client);
    };
  };
}

/** Where dropped streams are counted and logged. */
export interface StreamReports {
  dropped: Counter;
  logger: Logger;
}

export function showEventRoutes(
  /** The primary's read pool: a stream's start, next to the hub that feeds it. */
  pool: pg.Pool,
  /** History, on the primary's read pool or the replica. */
  reads: ReadRouting,
  hub: SeatEventHub,
  options: StreamOptions,
  { dropped, logger }: StreamReports,
  isAdmin: (req: { get(name: string): string | undefined }) => boolean,
  /** Which client a request is, as the rate limits count it. */
  clientOf: (req: Request<EventsPath, unknown, unknown, EventsQuery>) => string,
): Router {
  const router = Router();
  const takeSlot = streamSlots(options);

  router.get('/api/shows/:showId/events', async (req: Request<EventsPath, unknown, unknown, EventsQuery>, res) => {
    const { showId } = req.params;
    if (req.accepts(['application/json', 'text/event-stream']) !== 'text/event-stream') {
      const { after = 0, limit = 100 } = req.query;
      // The admin's history names each event's booking; the public one never does.
      const values = [showId, after, limit, isAdmin(req)];
      const { result: found, position } = await reads.run(
        reads.needed(req),
        (on) => callJsonAt<{ newest: number; items: SeatEvent[] }>(on, history, values),
        (answer) => answer.position,
        // `after` is a position: the client has seen events up to it, which a lagging replica may lack.
        (answer) => (!answer.result ? 'not-found' : after > answer.result.newest ? 'stale-answer' : false),
      );
      if (!found) throw showNotFound(showId);
      reads.send(res, position);
      if (after > found.newest) throw beyondNewest('query.after', found.newest);
      const { items } = found;
      const last = items.at(-1);
      const page: SeatEventPage = items.length === limit && last ? { items, nextAfter: last.id } : { items };
      res.json(page);
      return;
    }

    // Refused before any work, and before the stream starts.
    const release = takeSlot(clientOf(req));
    let after: number;
    try {
      const newest = await callJson<number>(pool, newestPosition, [showId]);
      if (newest === null) throw showNotFound(showId);
      // The contract admits only digits.
      const lastEventId = req.get('Last-Event-ID');
      after = lastEventId === undefined ? newest : Number(lastEventId);
      if (after > newest) throw beyondNewest('headers.last-event-id', newest);
    } catch (error) {
      release();
      throw error;
    }

    res.status(200).set({
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    res.write('retry: 2000\n\n');

    let closed = false;
    let waiting: ((taken: boolean) => void) | undefined;
    const wake = () => {
      const resolve = waiting;
      waiting = undefined;
      resolve?.(!closed);
    };
    const heartbeat = setInterval(() => write(': keep-alive\n\n'), options.heartbeatMs);
    heartbeat.unref();
    let unsubscribe = () => {};
    const close = (drop = false) => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      unsubscribe();
      stopListening();
      release();
      wake();
      // A dropped client's unsent data, in the process and in the kernel, is thrown away at once.
      if (drop) res.socket?.resetAndDestroy();
      else res.end();
    };
    // What the client has not taken of earlier writes: past the bound it is
    // not keeping up, and holding more for it would grow without end.
    const write = (text: string): boolean => {
      if (closed) return false;
      const unsent = res.writableLength;
      if (unsent > options.maxBufferBytes) {
        dropped.inc();
        // The process's logger, not the request's: that one carries the client's address.
        logger.info(
          { requestId: String(req.id), showId, unsentBytes: unsent, maxBufferBytes: options.maxBufferBytes },
          'event stream dropped: its client is not taking its events',
        );
        close(true);
        return false;
      }
      return res.write(text);
    };
    const drained = () =>
      new Promise<boolean>((resolve) => {
        if (closed) {
          resolve(false);
          return;
        }
        waiting = resolve;
        res.once('drain', wake);
      });
    const stopListening = hub.onClose(() => close());
    req.on('close', () => close());
    try {
      unsubscribe = await hub.subscribe(showId, after, { send: (events) => write(messages(events)), drained });
      if (closed) unsubscribe();
    } catch (error) {
      req.log.error({ err: error }, 'seat event stream failed');
      close();
    }
  });

  return router;
}
