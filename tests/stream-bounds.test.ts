// Event streams hold a bounded amount per client: a client that does not
// read is dropped, a long replay goes at the reader's pace, streams are
// capped per client address and per process, and a position beyond the
// show's newest event is refused instead of waiting in silence.
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { makeApp } from '../src/app.js';
import { defaultBookingLimits, defaultStreamLimits, readConfig } from '../src/config.js';
import { SeatEventHub } from '../src/seat-events.js';
import { admin, ADMIN_TOKEN, METRICS_TOKEN, scraper, createShow, customer, serve, testPool, theatre, type Booking } from './support.js';

const pool = testPool(20);
// Kept, to read what a dropped stream logs.
const logLines: string[] = [];
const logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });
const hub = new SeatEventHub(pool, logger, { sequenceIntervalMs: 50 });
await hub.start();
afterAll(() => hub.stop());

function appWith(streams: { maxBufferBytes?: number; maxPerClient?: number; maxTotal?: number }, clientAddressHeader?: string) {
  return makeApp({
    clientAddressHeader,
    pool,
    logger,
    validateResponses: true,
    events: hub,
    adminToken: ADMIN_TOKEN,
    metricsToken: METRICS_TOKEN,
    bookingLimits: { ...defaultBookingLimits, maxSeatsPerBooking: 100 },
    streams,
  });
}

// Small bounds, so a client that does not read passes them quickly.
const app = appWith({ maxBufferBytes: 64 * 1024 });
const server = serve(app);
const capped = appWith({ maxPerClient: 2, maxTotal: 3 });
const cappedServer = serve(capped);
// Behind an edge that names each client in a header, from one socket address.
const edged = appWith({ maxPerClient: 1 }, 'x-client-ip');
const edgedServer = serve(edged);

/** A show of one row of 100 seats, all booked at once: one event of 100 seats. */
async function showWithOneBigEvent(): Promise<{ showId: string; eventId: number }> {
  const show = await createShow(app, theatre({ sections: [{ name: 'Stalls', rows: [{ label: 'A', seats: 100, category: 'standard' }] }] }));
  const seatLabels = Array.from({ length: 100 }, (_, i) => `Stalls-A-${i + 1}`);
  const booking: Booking = (await request(app).post('/api/bookings').send({ showId: show.id, seatLabels, customer: customer() }).expect(201)).body;
  const eventId = await waitForEvents(show.id, 1);
  expect(booking.status).toBe('confirmed');
  return { showId: show.id, eventId };
}

/** Appends `count` copies of the show's first event, as many bookings would, in one statement. */
async function appendEvents(showId: string, count: number): Promise<void> {
  await pool.query(
    `insert into app.seat_events (show_id, booking_id, type, seat_ids, legs)
     select e.show_id, e.booking_id, e.type, e.seat_ids, e.legs
     from (select * from app.seat_events where show_id = $1 order by id limit 1) e, generate_series(1, $2)`,
    [showId, count],
  );
}

/** Waits until the show has `count` sequenced events; returns the newest position. */
async function waitForEvents(showId: string, count: number): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const { rows } = await pool.query<{ n: number; newest: string | null }>(
      'select count(position)::int as n, max(position) as newest from app.seat_events where show_id = $1',
      [showId],
    );
    if ((rows[0]?.n ?? 0) >= count) return Number(rows[0]?.newest);
    await sleep(25);
  }
  throw new Error(`the show never had ${count} sequenced events`);
}

async function sequencedIds(showId: string): Promise<number[]> {
  const { rows } = await pool.query<{ position: string }>(
    'select position from app.seat_events where show_id = $1 and position is not null order by position',
    [showId],
  );
  return rows.map((row) => Number(row.position));
}

interface StreamOptions {
  port?: number;
  lastEventId?: string;
  /** A loopback address to connect from: another client address. */
  localAddress?: string;
  /** The client's address as an edge in front would name it. */
  clientIp?: string;
  /** Read nothing for this long after the stream opens. */
  pauseMs?: number;
}

/** An event stream client that reads (after an optional pause); ids of the events it received. */
function openStream(showId: string, options: StreamOptions = {}) {
  const ids: number[] = [];
  let ended = false;
  let response: http.IncomingMessage | undefined;
  let body = '';
  const opened = new Promise<{ status: number; headers: http.IncomingHttpHeaders; body?: unknown }>((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port: options.port ?? server.port,
        localAddress: options.localAddress,
        path: `/api/shows/${showId}/events`,
        agent: false,
        headers: {
          accept: 'text/event-stream',
          ...(options.lastEventId === undefined ? {} : { 'last-event-id': options.lastEventId }),
          ...(options.clientIp === undefined ? {} : { 'x-client-ip': options.clientIp }),
        },
      },
      (res) => {
        response = res;
        res.setEncoding('utf8');
        res.on('close', () => (ended = true));
        if (res.statusCode !== 200) {
          res.on('data', (chunk: string) => (body += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(body) }));
          return;
        }
        let buffer = '';
        res.on('data', (chunk: string) => {
          buffer += chunk;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const id = /^id: (\d+)$/m.exec(buffer.slice(0, end));
            if (id) ids.push(Number(id[1]));
            buffer = buffer.slice(end + 2);
          }
        });
        res.once('data', () => {
          if (options.pauseMs) {
            res.pause();
            setTimeout(() => res.resume(), options.pauseMs);
          }
          resolve({ status: 200, headers: res.headers });
        });
      },
    );
    req.on('error', reject);
  });
  return {
    opened,
    ids,
    ended: () => ended,
    async waitFor(count: number, timeoutMs = 5_000): Promise<number[]> {
      const deadline = Date.now() + timeoutMs;
      while (ids.length < count && !ended && Date.now() < deadline) await sleep(10);
      return ids;
    },
    close: () => response?.destroy(),
  };
}

/** A client that sends the request, sees the stream open, and then never reads again. */
async function neverReadingStream(showId: string): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {});
  socket.write(`GET /api/shows/${showId}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`);
  const head = await new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString())));
  socket.pause();
  expect(head).toMatch(/^HTTP\/1\.1 200 /);
  return { socket, closed };
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await sleep(10);
  expect(condition()).toBe(true);
}

async function droppedStreams(): Promise<number> {
  const metrics = await request(app).get('/metrics').set(scraper).expect(200);
  return Number(/^seat_event_streams_dropped_total (\d+)$/m.exec(metrics.text)?.[1]);
}

describe('a client that does not read', () => {
  it('is disconnected once its unsent events pass the bound, while a reading client receives everything', async () => {
    const { showId } = await showWithOneBigEvent();
    const droppedBefore = await droppedStreams();
    const reader = openStream(showId);
    await reader.opened;
    const slow = await neverReadingStream(showId);
    expect(hub.subscriberCount).toBe(2);

    // 100 events of 100 seats (about 400 KB) at a time, each taken by the
    // reader before the next; the kernel's buffers hold a few MB for the
    // client that does not read, then the service's own bound is reached.
    let appended = 0;
    for (let batch = 0; batch < 40 && hub.subscriberCount === 2; batch++) {
      await appendEvents(showId, 100);
      appended += 100;
      expect(await reader.waitFor(appended)).toHaveLength(appended);
    }
    expect(hub.subscriberCount).toBe(1);
    expect(await droppedStreams()).toBe(droppedBefore + 1);
    // Logged at info with the show, and nothing of the client's.
    const logged = logLines.filter((line) => line.includes('event stream dropped'));
    expect(logged).toHaveLength(1);
    expect(JSON.parse(logged[0] ?? '{}')).toMatchObject({ level: 30, showId, maxBufferBytes: 65_536 });
    expect(logged[0]).not.toMatch(/127\.0\.0\.1|remoteAddress|headers/);
    // Dropped before 16 MB were sent its way: the bound, not the end of the test, ended it.
    expect(appended).toBeLessThan(4_000);

    // The service ended its connection: reading now finds the end, not more events.
    slow.socket.resume();
    await expect(Promise.race([slow.closed.then(() => 'closed'), sleep(3_000).then(() => 'open')])).resolves.toBe('closed');

    // The reader got every event, in order, and is still connected.
    await appendEvents(showId, 10);
    const ids = await reader.waitFor(appended + 10);
    expect(ids).toEqual((await sequencedIds(showId)).slice(1));
    expect(reader.ended()).toBe(false);
    reader.close();
  });
});

describe('replay from Last-Event-ID', () => {
  it('sends thousands of missed events complete and in order at the pace of a client that pauses, then the live feed', async () => {
    const { showId, eventId } = await showWithOneBigEvent();
    await appendEvents(showId, 3_000);
    await waitForEvents(showId, 3_001);
    const droppedBefore = await droppedStreams();

    // About 12 MB to replay, far more than the kernel buffers and the 64 KiB
    // bound: sent all at once, the client would be dropped while it pauses.
    const client = openStream(showId, { lastEventId: String(eventId), pauseMs: 500 });
    expect((await client.opened).status).toBe(200);
    const replayed = await client.waitFor(3_000, 20_000);
    const expected = (await sequencedIds(showId)).slice(1);
    expect(replayed).toEqual(expected);
    expect(client.ended()).toBe(false);
    expect(await droppedStreams()).toBe(droppedBefore);

    await appendEvents(showId, 1);
    const all = await client.waitFor(3_001);
    expect(all).toEqual((await sequencedIds(showId)).slice(1));
    client.close();
  });
});

describe('the caps on streams', () => {
  const options = (localAddress: string) => ({ port: cappedServer.port, localAddress });

  it('refuses a client its third stream with a 429 problem, another client is served until the process cap, and a freed slot is taken again', async () => {
    const show = await createShow(capped);
    const first = openStream(show.id, options('127.0.0.1'));
    const second = openStream(show.id, options('127.0.0.1'));
    expect((await first.opened).status).toBe(200);
    expect((await second.opened).status).toBe(200);

    const third = await openStream(show.id, options('127.0.0.1')).opened;
    expect(third.status).toBe(429);
    expect(third.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(third.headers['retry-after']).toBe('10');
    expect(third.body).toMatchObject({ type: '/problems/too-many-streams', status: 429 });

    const other = openStream(show.id, options('127.0.0.2'));
    expect((await other.opened).status).toBe(200);
    const overProcess = await openStream(show.id, options('127.0.0.3')).opened;
    expect(overProcess.status).toBe(503);
    expect(overProcess.headers['retry-after']).toBe('10');
    expect(overProcess.body).toMatchObject({ type: '/problems/service-unavailable', status: 503 });

    first.close();
    await until(() => hub.subscriberCount === 2);
    const again = openStream(show.id, options('127.0.0.1'));
    expect((await again.opened).status).toBe(200);
    for (const stream of [second, other, again]) stream.close();
    await until(() => hub.subscriberCount === 0);
  });

  it('frees the slot of a stream refused for an unknown show or a bad Last-Event-ID', async () => {
    const missing = '00000000-0000-4000-8000-00000000beef';
    for (let i = 0; i < 4; i++) expect((await openStream(missing, options('127.0.0.4')).opened).status).toBe(404);
    const show = await createShow(capped);
    for (let i = 0; i < 4; i++) expect((await openStream(show.id, { ...options('127.0.0.4'), lastEventId: '999999' }).opened).status).toBe(400);
    const stream = openStream(show.id, options('127.0.0.4'));
    expect((await stream.opened).status).toBe(200);
    stream.close();
  });
});

describe('the per-client cap behind an edge', () => {
  it('counts the client the header names, as the rate limits do, not the proxy every stream comes from', async () => {
    const show = await createShow(edged);
    const first = openStream(show.id, { port: edgedServer.port, clientIp: '198.51.100.31' });
    expect((await first.opened).status).toBe(200);
    expect((await openStream(show.id, { port: edgedServer.port, clientIp: '198.51.100.31' }).opened).status).toBe(429);
    const other = openStream(show.id, { port: edgedServer.port, clientIp: '198.51.100.32' });
    expect((await other.opened).status).toBe(200);
    first.close();
    other.close();
    await until(() => hub.subscriberCount === 0);
  });
});

describe('a position beyond the newest event', () => {
  it('is a 400 naming headers.last-event-id, as the contract check names it; the newest itself opens the stream', async () => {
    const { showId, eventId } = await showWithOneBigEvent();
    const beyond = await openStream(showId, { lastEventId: String(eventId + 1) }).opened;
    expect(beyond.status).toBe(400);
    expect(beyond.body).toMatchObject({
      type: '/problems/validation-failed',
      errors: [{ name: 'headers.last-event-id', reason: `is beyond the newest event of this show (${eventId})` }],
    });
    // A show with no events yet: its newest is 0.
    const empty = await createShow(app);
    expect((await openStream(empty.id, { lastEventId: '1' }).opened).status).toBe(400);
    expect((await openStream(empty.id, { lastEventId: '999999999999999999' }).opened).status).toBe(400);

    const newest = openStream(showId, { lastEventId: String(eventId) });
    expect((await newest.opened).status).toBe(200);
    await appendEvents(showId, 1);
    const added = await waitForEvents(showId, 2);
    expect(await newest.waitFor(1)).toEqual([added]);
    newest.close();
  });

  it('is a 400 for a Last-Event-ID that is not a whole number, never a 500', async () => {
    const show = await createShow(app);
    for (const value of ['abc', '1.5', '-1', '1e3', '0x10', '12345678901234567890']) {
      const response = await openStream(show.id, { lastEventId: value }).opened;
      expect(response.status, value).toBe(400);
      expect(response.body, value).toMatchObject({ type: '/problems/validation-failed' });
    }
  });

  it('is a 400 naming query.after in the JSON history; the newest itself is an empty page', async () => {
    const { showId, eventId } = await showWithOneBigEvent();
    const beyond = await request(app).get(`/api/shows/${showId}/events`).query({ after: eventId + 1 }).expect(400);
    expect(beyond.body).toMatchObject({
      type: '/problems/validation-failed',
      errors: [{ name: 'query.after', reason: `is beyond the newest event of this show (${eventId})` }],
    });
    await request(app).get(`/api/shows/${showId}/events`).query({ after: '99999999999999999999' }).expect(400);
    const atNewest = await request(app).get(`/api/shows/${showId}/events`).query({ after: eventId }).expect(200);
    expect(atNewest.body).toEqual({ items: [] });
    const all = await request(app).get(`/api/shows/${showId}/events`).expect(200);
    expect(all.body.items.map((event: { id: number }) => event.id)).toEqual([eventId]);
  });
});

describe('the stream limits in the configuration', () => {
  it('default to the documented values, and a bad value stops the start naming its variable', () => {
    expect(readConfig({}).streams).toEqual({ maxBufferBytes: 262_144, maxPerClient: 10, maxTotal: 1_000 });
    expect(defaultStreamLimits).toEqual(readConfig({}).streams);
    expect(readConfig({ SSE_MAX_STREAMS_PER_CLIENT: '0', SSE_MAX_STREAMS: '0' }).streams).toMatchObject({ maxPerClient: 0, maxTotal: 0 });
    expect(() => readConfig({ SSE_MAX_BUFFER_BYTES: '1000' })).toThrow(/^SSE_MAX_BUFFER_BYTES must be between/);
    expect(() => readConfig({ SSE_MAX_STREAMS: 'many' })).toThrow(/^SSE_MAX_STREAMS must be a whole number/);
  });
});
