// A show's seat events: a Server-Sent Events stream fed by the process's
// one listener, or the history as JSON pages.
import { Router, type Request } from 'express';
import type pg from 'pg';
import type { components, operations } from './generated/api.js';
import { callJson, statement } from './db.js';
import type { SeatEvent, SeatEventHub } from './seat-events.js';
import { showNotFound } from './shows.js';

type SeatEventPage = components['schemas']['SeatEventPage'];
type EventsPath = operations['getShowEvents']['parameters']['path'];
type EventsQuery = NonNullable<operations['getShowEvents']['parameters']['query']>;

const history = statement(
  'show_event_history',
  'select case when exists (select 1 from app.shows where id = $1) then app.show_events($1, $2, $3, $4) end as result',
);
const showExists = statement('show_exists', 'select exists (select 1 from app.shows where id = $1) as result');

function message(event: SeatEvent): string {
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

export function showEventRoutes(pool: pg.Pool, hub: SeatEventHub, heartbeatMs: number, isAdmin: (req: { get(name: string): string | undefined }) => boolean): Router {
  const router = Router();

  router.get('/api/shows/:showId/events', async (req: Request<EventsPath, unknown, unknown, EventsQuery>, res) => {
    const { showId } = req.params;
    if (req.accepts(['application/json', 'text/event-stream']) !== 'text/event-stream') {
      const { after = 0, limit = 100 } = req.query;
      // The admin's history names each event's booking; the public one never does.
      const items = await callJson<SeatEvent[]>(pool, history, [showId, after, limit, isAdmin(req)]);
      if (!items) throw showNotFound(showId);
      const last = items.at(-1);
      const page: SeatEventPage = items.length === limit && last ? { items, nextAfter: last.id } : { items };
      res.json(page);
      return;
    }

    if (!(await callJson<boolean>(pool, showExists, [showId]))) throw showNotFound(showId);
    const lastEventId = req.get('Last-Event-ID');
    res.status(200).set({
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    res.write('retry: 2000\n\n');

    let closed = false;
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), heartbeatMs);
    heartbeat.unref();
    let unsubscribe = () => {};
    const close = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      unsubscribe();
      stopListening();
      res.end();
    };
    const stopListening = hub.onClose(close);
    req.on('close', close);
    try {
      unsubscribe = await hub.subscribe(showId, lastEventId === undefined ? undefined : Number(lastEventId), (event) => {
        if (!closed) res.write(message(event));
      });
      if (closed) unsubscribe();
    } catch (error) {
      req.log.error({ err: error }, 'seat event stream failed');
      close();
    }
  });

  return router;
}
