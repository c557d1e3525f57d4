// Concurrent seat map requests share one query without ever hiding a write
// the client made before asking, and the map goes out gzipped once per query.
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { makeApp } from '../src/app.js';
import { createPool } from '../src/db.js';
import { SeatEventHub } from '../src/seat-events.js';
import { SeatMaps } from '../src/seat-maps.js';
import { SingleFlight } from '../src/single-flight.js';
import { ADMIN_TOKEN, METRICS_TOKEN, customer, postJson, serve, testPool, theatre, type NewShow, type SeatMap, type ShowDetail } from './support.js';

const pool = testPool();
const readPool = createPool({ connectionString: inject('databaseUrl'), max: 4, applicationName: 'seat-map-sharing-reads' });
afterAll(() => readPool.end());
const logger = pino({ level: 'silent' });
const events = new SeatEventHub(pool, logger, { sequenceIntervalMs: 50 });
await events.start();
afterAll(() => events.stop());
const seatMaps = new SeatMaps(readPool);
const app = makeApp({ pool, readPool, seatMaps, logger, validateResponses: true, events, adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN });
const server = serve(app);

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** GET on a connection of its own, with the body exactly as it came (never decompressed). */
function get(path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: server.port, path, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

function mapOf(reply: Reply): SeatMap {
  const json = reply.headers['content-encoding'] === 'gzip' ? gunzipSync(reply.body) : reply.body;
  return JSON.parse(json.toString());
}

async function createShow(show: NewShow): Promise<ShowDetail> {
  const response = await fetch(`http://127.0.0.1:${server.port}/api/shows`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(show),
  });
  expect(response.status).toBe(201);
  return (await response.json()) as ShowDetail;
}

/** A show of `rows` rows of 500 seats: big enough that its map takes a while to read. */
function arena(rows: number): NewShow {
  return theatre({
    categories: [{ code: 'standard', price: 2500 }],
    sections: [{ name: 'Floor', rows: Array.from({ length: rows }, (_, i) => ({ label: `R${i + 1}`, seats: 500, category: 'standard' })) }],
  });
}

async function book(showId: string, label: string): Promise<void> {
  const response = await postJson(server.port, '/api/bookings', { showId, seatLabels: [label], customer: customer() });
  expect(response.status).toBe(201);
}

describe('sharing a read among concurrent callers', () => {
  it('never hands a caller a query that started before it arrived: a read blocked mid-flight does not hide a booking made before the next caller asked', async () => {
    const show = await createShow(theatre());
    const flight = new SingleFlight<number>();
    // The read counts the show's booked seats, then waits on a lock the test
    // holds: its snapshot is taken when it starts, so it cannot see what
    // commits while it waits.
    const gateKey = 1_000_000 + Math.floor(Math.random() * 1_000_000);
    const gate = new pg.Client({ connectionString: inject('databaseUrl') });
    await gate.connect();
    try {
      await gate.query('select pg_advisory_lock($1)', [gateKey]);
      const bookedSeats = async () => {
        const { rows } = await pool.query<{ n: number }>(
          'select (select count(*)::int from app.booking_seats where show_id = $1 and active) as n, pg_advisory_xact_lock_shared($2)::text',
          [show.id, gateKey],
        );
        return rows[0]?.n ?? -1;
      };
      const first = flight.run('booked', bookedSeats);
      for (let i = 0; i < 200; i++) {
        const { rows } = await gate.query<{ n: number }>(
          `select count(*)::int as n from pg_locks where locktype = 'advisory' and classid = 0 and objid = $1 and not granted`,
          [gateKey],
        );
        if (rows[0]?.n === 1) break;
        await sleep(10);
      }
      await book(show.id, 'Stalls-A-1');
      // Both ask after the booking committed, while the first read is still in flight.
      const second = flight.run('booked', bookedSeats);
      const third = flight.run('booked', bookedSeats);
      await gate.query('select pg_advisory_unlock($1)', [gateKey]);

      expect(await first).toBe(0);
      expect(await second).toBe(1);
      expect(await third).toBe(1);
      // The two late callers shared one query: at most two per key, one running and one queued.
      expect(flight.runs).toBe(2);
      expect(flight.waits).toBe(2);
    } finally {
      await gate.end();
    }
  });

  it('gives every caller that shared a failed query its error, and runs afresh afterwards', async () => {
    const flight = new SingleFlight<number>();
    const value = (n: number) => async () => (await pool.query<{ n: number }>('select $1::int as n, pg_sleep(0.05)::text', [n])).rows[0]?.n ?? -1;
    const divideByZero = async () => (await pool.query<{ n: number }>('select 1 / 0 as n')).rows[0]?.n ?? -1;

    const running = flight.run('k', value(1));
    const queued = flight.run('k', divideByZero);
    const sharer = flight.run('k', value(3));
    expect(await running).toBe(1);
    await expect(queued).rejects.toMatchObject({ code: '22012' });
    await expect(sharer).rejects.toMatchObject({ code: '22012' });
    expect(flight.runs).toBe(2);
    expect(await flight.run('k', value(4))).toBe(4);
    expect(flight.runs).toBe(3);
  });
});

describe('the seat map under concurrent readers', () => {
  it('shows a booking to the client that made it, even while an older read of the same map is in flight', async () => {
    const show = await createShow(arena(100));
    const path = `/api/shows/${show.id}/seats?status=booked`;
    // The case needs the second request to arrive while the first one's
    // query runs; a fast machine may not get there every time.
    let exercised = 0;
    for (let attempt = 1; attempt <= 5 && exercised === 0; attempt++) {
      const label = `Floor-R1-${attempt}`;
      const before = seatMaps.stats;
      const older = get(path, { 'accept-encoding': 'gzip' });
      while (seatMaps.stats.queries === before.queries) await sleep(1);
      await book(show.id, label);
      const newer = await get(path, { 'accept-encoding': 'gzip' });
      const arrivedDuringOlder = seatMaps.stats.waits > before.waits;
      expect(newer.status).toBe(200);
      expect(mapOf(newer).seats.map((seat) => seat.label)).toContain(label);
      const olderMap = mapOf(await older);
      if (arrivedDuringOlder && !olderMap.seats.some((seat) => seat.label === label)) exercised += 1;
    }
    expect(exercised, 'no attempt asked while an older read was still in flight').toBeGreaterThan(0);
  });

  it('sends the same map gzipped to clients that accept gzip and plain to the others, from one query', async () => {
    const show = await createShow(arena(20));
    const before = seatMaps.stats.queries;
    const path = `/api/shows/${show.id}/seats`;
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, i) => get(path, i % 2 === 0 ? { 'accept-encoding': 'gzip, deflate, br' } : {})),
    );
    expect(seatMaps.stats.queries - before).toBeLessThanOrEqual(2);
    const plain = replies.filter((_, i) => i % 2 === 1);
    const gzipped = replies.filter((_, i) => i % 2 === 0);
    for (const reply of replies) {
      expect(reply.status).toBe(200);
      expect(reply.headers['content-type']).toMatch(/^application\/json/);
      expect(reply.headers.vary).toMatch(/Accept-Encoding/i);
      expect(reply.headers.etag).toBe(replies[0]?.headers.etag);
    }
    for (const reply of plain) expect(reply.headers['content-encoding']).toBeUndefined();
    for (const reply of gzipped) {
      expect(reply.headers['content-encoding']).toBe('gzip');
      // Compressed once: one gunzip gives the JSON itself.
      expect(reply.body.length).toBeLessThan((plain[0]?.body.length ?? 0) / 4);
      expect(gunzipSync(reply.body).equals(plain[0]?.body ?? Buffer.alloc(0))).toBe(true);
    }
    const map = mapOf(gzipped[0] ?? plain[0]!);
    expect(map.counts).toEqual({ total: 10_000, available: 10_000, held: 0, booked: 0, blocked: 0 });
    expect(map.seats).toHaveLength(10_000);
  });

  it('answers 304 to a gzip client whose copy is current, with the same ETag', async () => {
    const show = await createShow(theatre());
    const path = `/api/shows/${show.id}/seats`;
    const first = await get(path, { 'accept-encoding': 'gzip' });
    const etag = first.headers.etag ?? '';
    const again = await get(path, { 'accept-encoding': 'gzip', 'if-none-match': etag });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    expect(again.headers.etag).toBe(etag);
  });
});

describe('compression', () => {
  it('compresses other JSON responses for clients that accept it', async () => {
    const show = await createShow(arena(60));
    const zipped = await get(`/api/shows/${show.id}`, { 'accept-encoding': 'gzip' });
    expect(zipped.headers['content-encoding']).toBe('gzip');
    expect(JSON.parse(gunzipSync(zipped.body).toString())).toMatchObject({ id: show.id, seatCount: 30_000 });
    const plain = await get(`/api/shows/${show.id}`);
    expect(plain.headers['content-encoding']).toBeUndefined();
  });

  it('never compresses an event stream, so each event arrives when it happens', async () => {
    const show = await createShow(theatre());
    const received: string[] = [];
    let response: http.IncomingMessage | undefined;
    await new Promise<void>((resolve, reject) => {
      http
        .get(
          {
            host: '127.0.0.1',
            port: server.port,
            path: `/api/shows/${show.id}/events`,
            agent: false,
            headers: { accept: 'text/event-stream', 'accept-encoding': 'gzip, deflate, br' },
          },
          (res) => {
            response = res;
            res.setEncoding('latin1');
            res.on('data', (chunk: string) => received.push(chunk));
            res.once('data', () => resolve());
          },
        )
        .on('error', reject);
    });
    try {
      expect(response?.headers['content-encoding']).toBeUndefined();
      await book(show.id, 'Stalls-B-2');
      for (let i = 0; i < 100 && !received.join('').includes('Stalls-B-2'); i++) await sleep(20);
      expect(received.join('')).toMatch(/event: \w+\nid: \d+|id: \d+\nevent: \w+/);
      expect(received.join('')).toContain('Stalls-B-2');
    } finally {
      response?.destroy();
    }
  });
});
