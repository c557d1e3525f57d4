// The outsider's check: forty concurrent readers of a 50,000-seat map while
// customers book. Bookings keep answering, never waiting for a connection;
// every reader gets the whole map; the database reads it a few times, not
// forty. Memory is measured and printed, not asserted.
import http from 'node:http';
import { createGunzip } from 'node:zlib';
import { pino } from 'pino';
import { afterAll, expect, inject, it } from 'vitest';
import { makeApp } from '../src/app.js';
import { createPool } from '../src/db.js';
import { SeatEventHub } from '../src/seat-events.js';
import { SeatMaps } from '../src/seat-maps.js';
import { ADMIN_TOKEN, METRICS_TOKEN, customer, postJson, serve, theatre, type ShowDetail } from './support.js';

const BOOKING_POOL = 6;
const pool = createPool({ connectionString: inject('databaseUrl'), max: BOOKING_POOL, applicationName: 'seat-map-load' });
const readPool = createPool({ connectionString: inject('databaseUrl'), max: 2, applicationName: 'seat-map-load-reads' });
afterAll(() => Promise.all([pool.end(), readPool.end()]));
const logger = pino({ level: 'silent' });
// The sequencer borrows a booking connection each run: slowly here, so the
// bookings' own use of the pool is what the peak below measures.
const events = new SeatEventHub(pool, logger, { sequenceIntervalMs: 1_000 });
await events.start();
afterAll(() => events.stop());
const seatMaps = new SeatMaps(readPool);
// As in production: no response validation, which would parse every map.
const app = makeApp({ pool, readPool, seatMaps, logger, validateResponses: false, events, adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN });
const server = serve(app);

// Connections of the bookings' pool in use, at its busiest. A booking waits
// for a connection only when all of them are in use.
let bookingPoolPeak = 0;
pool.on('acquire', () => {
  bookingPoolPeak = Math.max(bookingPoolPeak, pool.totalCount - pool.idleCount);
});

const STATUSES = ['available', 'held', 'booked', 'blocked'] as const;
type Counts = Record<(typeof STATUSES)[number] | 'total', number>;

interface Scanned {
  status: number;
  gzip: boolean;
  counts: Counts | undefined;
  /** Seats listed, by status, counted as the body streamed past. */
  listed: Record<(typeof STATUSES)[number], number>;
  complete: boolean;
}

/**
 * Reads a seat map as it streams in, without holding it: forty copies of a
 * 6 MB body in this process would swamp the service's own memory figures.
 */
function scanMap(path: string, gzip: boolean): Promise<Scanned> {
  const patterns = STATUSES.map((status) => [status, `"status":"${status}"`] as const);
  const keep = Math.max(...patterns.map(([, p]) => p.length)) - 1;
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: '127.0.0.1', port: server.port, path, agent: false, headers: gzip ? { 'accept-encoding': 'gzip' } : {} },
      (res) => {
        const encoded = res.headers['content-encoding'] === 'gzip';
        const stream = encoded ? res.pipe(createGunzip()) : res;
        stream.setEncoding('latin1');
        const listed = { available: 0, held: 0, booked: 0, blocked: 0 };
        let head = '';
        let tail = '';
        stream.on('data', (chunk: string) => {
          if (head.length < 1_000) head += chunk.slice(0, 1_000);
          const text = tail + chunk;
          for (const [status, pattern] of patterns) {
            for (let at = text.indexOf(pattern); at >= 0; at = text.indexOf(pattern, at + 1)) listed[status] += 1;
          }
          tail = text.slice(-keep);
        });
        stream.on('end', () => {
          const counts = /"counts":(\{[^}]*\})/.exec(head)?.[1];
          resolve({
            status: res.statusCode ?? 0,
            gzip: encoded,
            counts: counts === undefined ? undefined : JSON.parse(counts),
            listed,
            complete: tail.endsWith(']}'),
          });
        });
        stream.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

function megabytes(bytes: number): number {
  return Math.round(bytes / 1024 / 1024);
}

it('keeps bookings answering while forty clients read a 50,000-seat map at once, each getting all of it', async () => {
  const created = await fetch(`http://127.0.0.1:${server.port}/api/shows`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(
      theatre({
        categories: [{ code: 'standard', price: 3000 }],
        sections: [{ name: 'Pitch', rows: Array.from({ length: 100 }, (_, i) => ({ label: `R${i + 1}`, seats: 500, category: 'standard' })) }],
      }),
    ),
  });
  expect(created.status).toBe(201);
  const show = (await created.json()) as ShowDetail;

  const baseline = process.memoryUsage();
  const peak = { rss: baseline.rss, heapUsed: baseline.heapUsed, arrayBuffers: baseline.arrayBuffers };
  const sampler = setInterval(() => {
    const now = process.memoryUsage();
    peak.rss = Math.max(peak.rss, now.rss);
    peak.heapUsed = Math.max(peak.heapUsed, now.heapUsed);
    peak.arrayBuffers = Math.max(peak.arrayBuffers, now.arrayBuffers);
  }, 10);
  const queriesBefore = seatMaps.stats.queries;
  bookingPoolPeak = 0;
  const started = Date.now();

  // Three different maps (whole, available only, booked only), half the
  // clients accepting gzip.
  const paths = ['', '?status=available', '?status=booked'].map((query) => `/api/shows/${show.id}/seats${query}`);
  let mapsDone = false;
  const maps = Promise.all(Array.from({ length: 40 }, (_, i) => scanMap(paths[i % 3] ?? '', i % 2 === 0))).finally(() => {
    mapsDone = true;
  });

  // Four customers at a time book one seat each until every reader is
  // served: with the sequencer, one connection short of the whole pool.
  const bookingStatuses: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (!mapsDone || next < 6) {
        const seat = next++;
        const label = `Pitch-R${Math.floor(seat / 500) + 1}-${(seat % 500) + 1}`;
        const response = await postJson(server.port, '/api/bookings', { showId: show.id, seatLabels: [label], customer: customer() });
        bookingStatuses.push(response.status);
      }
    }),
  );
  const scanned = await maps;
  const elapsed = Date.now() - started;
  clearInterval(sampler);
  const queries = seatMaps.stats.queries - queriesBefore;

  expect(bookingStatuses.length).toBeGreaterThanOrEqual(6);
  expect(bookingStatuses.every((status) => status === 201)).toBe(true);
  expect(bookingPoolPeak, 'every connection of the bookings pool was in use at once, so a booking could have waited').toBeLessThan(BOOKING_POOL);

  const booked = bookingStatuses.length;
  for (const [i, map] of scanned.entries()) {
    expect(map.status).toBe(200);
    expect(map.gzip).toBe(i % 2 === 0);
    expect(map.complete).toBe(true);
    const counts = map.counts;
    if (!counts) throw new Error(`map ${i} has no counts`);
    expect(counts.total).toBe(50_000);
    expect(counts.available + counts.held + counts.booked + counts.blocked).toBe(50_000);
    expect(counts.booked).toBeLessThanOrEqual(booked);
    if (i % 3 === 0) expect(map.listed).toEqual({ available: counts.available, held: counts.held, booked: counts.booked, blocked: counts.blocked });
    if (i % 3 === 1) expect(map.listed).toEqual({ available: counts.available, held: 0, booked: 0, blocked: 0 });
    if (i % 3 === 2) expect(map.listed).toEqual({ available: 0, held: 0, booked: counts.booked, blocked: 0 });
  }
  // Forty requests for three maps: a few queries per map, not one per request.
  expect(queries).toBeLessThanOrEqual(12);

  console.log(
    `40 seat map readers of 50,000 seats with ${booked} bookings meanwhile, in ${elapsed} ms: ${queries} map queries; ` +
      `booking pool peak ${bookingPoolPeak}/${BOOKING_POOL} connections; ` +
      `RSS ${megabytes(baseline.rss)} -> peak ${megabytes(peak.rss)} MB, heap used ${megabytes(baseline.heapUsed)} -> peak ${megabytes(peak.heapUsed)} MB, ` +
      `array buffers ${megabytes(baseline.arrayBuffers)} -> peak ${megabytes(peak.arrayBuffers)} MB (test process: service and clients)`,
  );
});
