import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { pino } from 'pino';
import request from 'supertest';
import { describe, expect, inject, it } from 'vitest';
import { startSweeper } from '../src/sweeper.js';
import { admin, createShow, customer, serve, postJson, testApp, testPool, type Booking } from './support.js';

const pool = testPool(30);
const app = await testApp(pool, { heartbeatMs: 1_000 });
const server = serve(app);

interface Message {
  id?: number;
  event?: string;
  data?: { id: number; type: string; bookingId?: string; seats: Array<{ label: string }> };
  comment?: string;
}

/** A Server-Sent Events client on a connection of its own. */
function subscribe(showId: string, lastEventId?: number) {
  const messages: Message[] = [];
  let buffer = '';
  let response: http.IncomingMessage | undefined;
  const ready = new Promise<number>((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port: server.port,
        path: `/api/shows/${showId}/events`,
        agent: false,
        headers: { accept: 'text/event-stream', ...(lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) }) },
      },
      (res) => {
        response = res;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const message: Message = {};
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) message.comment = line.slice(1).trim();
              else if (line.startsWith('id: ')) message.id = Number(line.slice(4));
              else if (line.startsWith('event: ')) message.event = line.slice(7);
              else if (line.startsWith('data: ')) message.data = JSON.parse(line.slice(6));
            }
            messages.push(message);
          }
        });
        // The stream is open once the retry hint arrives.
        res.once('data', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
  });
  const events = () => messages.filter((m) => m.event);
  return {
    ready,
    events,
    comments: () => messages.filter((m) => m.comment),
    async waitFor(count: number, timeoutMs = 3_000): Promise<Message[]> {
      const deadline = Date.now() + timeoutMs;
      while (events().length < count && Date.now() < deadline) await sleep(20);
      return events();
    },
    close: () => response?.destroy(),
  };
}

function book(showId: string, seatLabels: string[], extra: object = {}) {
  return request(app).post('/api/bookings').send({ showId, seatLabels, customer: customer(), ...extra });
}

async function historyOf(showId: string, after = 0, limit = 1000) {
  return (await request(app).get(`/api/shows/${showId}/events`).query({ after, limit }).expect(200)).body;
}

describe('the seat event stream', () => {
  // How soon is the benchmark's to measure (fan-out); on a shared machine a
  // test only asks that the booking arrives, pushed with nothing else happening.
  it('delivers a booking to a subscriber without anything else happening', async () => {
    const show = await createShow(app);
    const client = subscribe(show.id);
    expect(await client.ready).toBe(200);
    const booking: Booking = (await book(show.id, ['Stalls-A-1', 'Stalls-A-2']).expect(201)).body;
    const [event] = await client.waitFor(1, 10_000);
    expect(event).toMatchObject({ event: 'booked', data: { type: 'booked' } });
    // The public feed names seats, never bookings.
    expect(event?.data).not.toHaveProperty('bookingId');
    expect(event?.data?.seats.map((seat) => seat.label)).toEqual(['Stalls-A-1', 'Stalls-A-2']);
    expect(event?.id).toBe(event?.data?.id);
    client.close();
  });

  it('replays exactly the missed events after Last-Event-ID, then the live feed', async () => {
    const show = await createShow(app);
    const first = subscribe(show.id);
    await first.ready;
    await book(show.id, ['Stalls-A-1']).expect(201);
    const [seen] = await first.waitFor(1);
    first.close();

    const hold: Booking = (await book(show.id, ['Stalls-B-1'], { hold: true }).expect(201)).body;
    await request(app).post(`/api/bookings/${hold.id}/confirm`).set(admin).expect(200);
    await request(app).post(`/api/bookings/${hold.id}/cancel`).set(admin).expect(200);
    await sleep(200);

    const again = subscribe(show.id, seen?.id);
    await again.ready;
    const replayed = await again.waitFor(3);
    expect(replayed.map((m) => m.event)).toEqual(['held', 'booked', 'cancelled']);
    await book(show.id, ['Stalls-B-2']).expect(201);
    const all = await again.waitFor(4);
    expect(all.map((m) => m.event)).toEqual(['held', 'booked', 'cancelled', 'booked']);
    const ids = all.map((m) => m.id ?? 0);
    expect(ids.every((id, i) => i === 0 || id > (ids[i - 1] ?? 0))).toBe(true);
    expect(ids[0]).toBeGreaterThan(seen?.id ?? Infinity);
    await sleep(300);
    expect(again.events()).toHaveLength(4);
    again.close();
  });

  it('emits nothing for a booking that rolled back or failed', async () => {
    const show = await createShow(app);
    await book(show.id, ['Stalls-A-1']).expect(201);
    await book(show.id, ['Stalls-A-1']).expect(409);
    await book(show.id, ['Stalls-A-2', 'Stalls-Z-9']).expect(422);
    const client = new pg.Client({ connectionString: inject('databaseUrl') });
    await client.connect();
    try {
      await client.query('begin');
      await client.query('select app.create_booking($1)', [{ showId: show.id, seatLabels: ['Stalls-A-3'], customer: customer() }]);
      await client.query('rollback');
    } finally {
      await client.end();
    }
    await sleep(200);
    const history = await historyOf(show.id);
    expect(history.items.map((e: { type: string }) => e.type)).toEqual(['booked']);
  });

  it('shows expiries when they happen, not when someone next books', async () => {
    const show = await createShow(app);
    const client = subscribe(show.id);
    await client.ready;
    const sweeper = startSweeper(pool, 100, pino({ level: 'silent' }));
    try {
      await book(show.id, ['Stalls-A-3'], { hold: true, holdSeconds: 1 }).expect(201);
      const events = await client.waitFor(2, 4_000);
      expect(events.map((m) => m.event)).toEqual(['held', 'expired']);
    } finally {
      await sweeper.stop();
      client.close();
    }
  });

  it('keeps an idle stream alive with comments', async () => {
    const show = await createShow(app);
    const client = subscribe(show.id);
    await client.ready;
    await sleep(1_300);
    expect(client.comments().some((m) => m.comment === 'keep-alive')).toBe(true);
    client.close();
  });

  it('answers 404 for a show that does not exist', async () => {
    await request(app).get('/api/shows/00000000-0000-4000-8000-00000000beef/events').set('Accept', 'text/event-stream').expect(404);
    await request(app).get('/api/shows/00000000-0000-4000-8000-00000000beef/events').expect(404);
    const show = await createShow(app);
    await request(app).get(`/api/shows/${show.id}/events`).set('Accept', 'text/event-stream').set('Last-Event-ID', 'abc').expect(400);
  });

  it('serves 500 subscribers of one process from one database listener, each receiving every event', async () => {
    const show = await createShow(app);
    const clients = Array.from({ length: 500 }, () => subscribe(show.id));
    await Promise.all(clients.map((client) => client.ready));
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity where application_name = $1`,
      [`ticket-booking-listener ${process.pid}`],
    );
    expect(rows[0]?.n).toBe(1);
    const { rows: mine } = await pool.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity where application_name in ('booking-tests', $1)`,
      [`ticket-booking-listener ${process.pid}`],
    );
    expect(mine[0]?.n).toBeLessThan(100);
    await book(show.id, ['Stalls-B-6']).expect(201);
    const received = await Promise.all(clients.map((client) => client.waitFor(1, 5_000)));
    expect(received.filter((events) => events.length === 1 && events[0]?.event === 'booked')).toHaveLength(500);
    for (const client of clients) client.close();
  });

  it('delivers concurrent bookings in commit order with no gap', async () => {
    const show = await createShow(app);
    const client = subscribe(show.id);
    await client.ready;
    const labels = ['A-1', 'A-2', 'A-3', 'A-4', 'B-1', 'B-2', 'B-3', 'B-4', 'B-5', 'B-6'].map((l) => `Stalls-${l}`);
    const responses = await Promise.all(labels.map((label) => postJson(server.port, '/api/bookings', { showId: show.id, seatLabels: [label], customer: customer() })));
    expect(responses.map((r) => r.status)).toEqual(Array(10).fill(201));
    const events = await client.waitFor(10);
    expect(events).toHaveLength(10);
    const history = await historyOf(show.id);
    expect(events.map((m) => m.id)).toEqual(history.items.map((e: { id: number }) => e.id));
    client.close();
  });
});

describe('the event history', () => {
  it('pages through every event of a show in order', async () => {
    const show = await createShow(app);
    const labels = ['A-1', 'A-2', 'A-3', 'A-4', 'B-1', 'B-2', 'B-3'].map((l) => `Stalls-${l}`);
    for (const label of labels) {
      const hold: Booking = (await book(show.id, [label], { hold: true }).expect(201)).body;
      await request(app).post(`/api/bookings/${hold.id}/confirm`).set(admin).expect(200);
    }
    await sleep(200);
    const all = await historyOf(show.id);
    expect(all.items).toHaveLength(14);
    expect(all.nextAfter).toBeUndefined();
    expect(all.items.map((e: { type: string }) => e.type)).toEqual(labels.flatMap(() => ['held', 'booked']));

    const paged: number[] = [];
    let after = 0;
    let pages = 0;
    for (;;) {
      const page = await historyOf(show.id, after, 5);
      paged.push(...page.items.map((e: { id: number }) => e.id));
      pages += 1;
      if (page.nextAfter === undefined) break;
      after = page.nextAfter;
    }
    expect(pages).toBe(3);
    expect(paged).toEqual(all.items.map((e: { id: number }) => e.id));
    expect(paged.every((id, i) => i === 0 || id > (paged[i - 1] ?? 0))).toBe(true);
  });
});

describe('polling the seat map', () => {
  it('answers 304 while nothing changed, and 200 with a new ETag once something did', async () => {
    const show = await createShow(app);
    const first = await request(app).get(`/api/shows/${show.id}/seats`).expect(200);
    const etag = first.headers.etag ?? '';
    expect(etag).toMatch(/^"[\d-]+"$/);
    const unchanged = await request(app).get(`/api/shows/${show.id}/seats`).set('If-None-Match', etag).expect(304);
    expect(unchanged.text).toBe('');
    expect(unchanged.headers.etag).toBe(etag);
    await request(app).get(`/api/shows/${show.id}/seats`).set('If-None-Match', `W/"0-0", ${etag}`).expect(304);

    await book(show.id, ['Stalls-A-4']).expect(201);
    let changed = await request(app).get(`/api/shows/${show.id}/seats`).set('If-None-Match', etag);
    for (let i = 0; i < 20 && changed.status === 304; i++) {
      await sleep(50);
      changed = await request(app).get(`/api/shows/${show.id}/seats`).set('If-None-Match', etag);
    }
    expect(changed.status).toBe(200);
    expect(changed.headers.etag).not.toBe(etag);
    expect(changed.body.counts.booked).toBe(1);
  });

  it('changes the ETag when a hold lapses, before the sweep records it', async () => {
    const show = await createShow(app);
    await book(show.id, ['Stalls-B-4'], { hold: true, holdSeconds: 1 }).expect(201);
    await sleep(150);
    const held = await request(app).get(`/api/shows/${show.id}/seats`).expect(200);
    expect(held.body.counts.held).toBe(1);
    await sleep(1_000);
    const lapsed = await request(app).get(`/api/shows/${show.id}/seats`).set('If-None-Match', held.headers.etag ?? '').expect(200);
    expect(lapsed.body.counts.held).toBe(0);
  });
});
