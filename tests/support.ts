// What every test file needs: a pool on the test database, the app with
// response validation on, unique shows, and plain HTTP over new connections.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type express from 'express';
import pg from 'pg';
import { pino } from 'pino';
import request from 'supertest';
import { afterAll, beforeAll, expect, inject } from 'vitest';
import { makeApp } from '../src/app.js';
import { defaultBookingLimits } from '../src/config.js';
import { createPool } from '../src/db.js';
import { SeatEventHub } from '../src/seat-events.js';

import type { components } from '../src/generated/api.js';

export type NewShow = components['schemas']['NewShow'];
export type ShowDetail = components['schemas']['ShowDetail'];
export type Booking = components['schemas']['Booking'];
export type CreatedBooking = components['schemas']['CreatedBooking'];

/** The Authorization header of a booking's own routes. */
export function owner(booking: { secret: string }): { Authorization: string } {
  return { Authorization: `Bearer ${booking.secret}` };
}
export type SeatMap = components['schemas']['SeatMap'];

/** `n` clients, each on its own connection, all released at once. */
export async function withClients<T>(n: number, work: (client: pg.Client, i: number) => Promise<T>): Promise<T[]> {
  const clients = Array.from({ length: n }, () => new pg.Client({ connectionString: inject('databaseUrl') }));
  await Promise.all(clients.map((client) => client.connect()));
  try {
    return await Promise.all(clients.map((client, i) => work(client, i)));
  } finally {
    await Promise.all(clients.map((client) => client.end()));
  }
}

/** A pool on the test database, ended when the file's tests are done. */
export function testPool(max = 10): pg.Pool {
  const pool = createPool({
    connectionString: inject('databaseUrl'),
    max,
    applicationName: 'booking-tests',
    transactionPooler: inject('throughPgBouncer'),
    // A new connection can take seconds on a busy shared machine; the
    // service's quick 503 for an unreachable database has tests of its own.
    timeouts: { connectTimeoutMs: 10_000 },
  });
  afterAll(() => pool.end());
  return pool;
}

export const ADMIN_TOKEN = 'test-admin-token-0123456789';
/** The Authorization header for admin operations. */
export const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
export const DOOR_TOKEN = 'test-door-token-0123456789';
/** The Authorization header for scanning tickets at the door. */
export const door = { Authorization: `Bearer ${DOOR_TOKEN}` };
export const METRICS_TOKEN = 'test-metrics-token-0123456789';
/** The Authorization header for scraping /metrics. */
export const scraper = { Authorization: `Bearer ${METRICS_TOKEN}` };

type AppOptions = Partial<
  Pick<Parameters<typeof makeApp>[0], 'heartbeatMs' | 'rateLimit' | 'corsOrigins' | 'bookingLimits' | 'trustProxy' | 'clientAddressHeader' | 'ticketKeys'>
>;

/** The service's booking limits without the hold limits, which the tests that prove them set. */
export const unlimitedHolds = { ...defaultBookingLimits, holds: { seatsPerClient: 0, seatsPerEmail: 0, holdsPerClient: 0 } };

/** The app with response validation on, and its event hub running until the file's tests end. */
export async function testApp(pool: pg.Pool, options: AppOptions = {}): Promise<express.Express> {
  const logger = pino({ level: 'silent' });
  const events = new SeatEventHub(pool, logger, { sequenceIntervalMs: 50, listenUrl: inject('directUrl') });
  await events.start();
  afterAll(() => events.stop());
  return makeApp({
    pool,
    logger,
    validateResponses: true,
    events,
    adminToken: ADMIN_TOKEN,
    metricsToken: METRICS_TOKEN,
    doorToken: DOOR_TOKEN,
    bookingLimits: unlimitedHolds,
    ...options,
  });
}

let counter = 0;
/** A distinct name per call, so tests can run in any order and in parallel. */
export function unique(prefix: string): string {
  counter += 1;
  return `${prefix} ${process.pid}-${Date.now().toString(36)}-${counter}`;
}

export function theatre(overrides: Partial<NewShow> = {}): NewShow {
  return {
    kind: 'show',
    name: unique('Hamlet'),
    venue: 'The Globe',
    startsAt: '2099-03-01T19:30:00Z',
    currency: 'EUR',
    categories: [
      { code: 'standard', price: 2500 },
      { code: 'premium', price: 5000 },
    ],
    sections: [
      {
        name: 'Stalls',
        rows: [
          { label: 'A', seats: 4, category: 'premium' },
          { label: 'B', seats: 6, category: 'standard' },
        ],
      },
    ],
    ...overrides,
  };
}

export async function createShow(app: express.Express, show: NewShow = theatre()): Promise<ShowDetail> {
  const response = await request(app).post('/api/shows').set(admin).send(show).expect(201);
  return response.body;
}

export function customer(name = 'Ada Lovelace') {
  return { name, email: `${unique('c').replace(/\W/g, '')}@example.com` };
}

/**
 * The app listening on a loopback port while the file's tests run, for
 * requests on connections of their own; read `.port` inside a test.
 */
export function serve(app: express.Express): { readonly port: number } {
  let server: Awaited<ReturnType<typeof listen>> | undefined;
  beforeAll(async () => {
    server = await listen(app);
  });
  afterAll(() => server?.close());
  return {
    get port() {
      if (!server) throw new Error('the server is not listening yet');
      return server.port;
    },
  };
}

export async function listen(app: express.Express): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** POST JSON on a connection of its own (no keep-alive agent). */
export function postJson<T = Record<string, unknown>>(port: number, path: string, body: unknown): Promise<{ status: number; body: T }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

export async function bookingCounts(pool: pg.Pool, showId: string): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ status: string; n: number }>(
    'select status::text, count(*)::int as n from app.bookings where show_id = $1 group by status',
    [showId],
  );
  return Object.fromEntries(rows.map((row) => [row.status, row.n]));
}

/** What a booking's answer over HTTP carries: the booking (201) or a problem (409). */
export interface BookingAnswer {
  status: number;
  body: { id?: string; seats?: Array<{ id: number }>; type?: string; detail?: string; booking?: { status?: string } };
}

/**
 * The winners of concurrent bookings of one show, counted from the answers:
 * every answer is a 201 or a 409 of `loser` that carries the failed booking
 * (a hit on the backstop constraint carries none); no seat is in two 201s;
 * and the show's live bookings and their seats in the database are exactly
 * the 201s'. For bookings whose legs all overlap (every show's do).
 */
export async function winners(pool: pg.Pool, showId: string, answers: BookingAnswer[], loser = 'seat-unavailable'): Promise<BookingAnswer['body'][]> {
  const expected = (answer: BookingAnswer) =>
    answer.status === 201 || (answer.status === 409 && answer.body.type === `/problems/${loser}` && answer.body.booking?.status === 'failed');
  expect(answers.filter((answer) => !expected(answer)).map(({ status, body }) => ({ status, type: body.type, detail: body.detail }))).toEqual([]);
  const won = answers.filter((answer) => answer.status === 201).map((answer) => answer.body);
  const seats = won.flatMap((booking) => (booking.seats ?? []).map((seat) => String(seat.id)));
  expect(new Set(seats).size, 'no seat in two 201s').toBe(seats.length);
  const { rows } = await pool.query<{ id: string; seats: string[] }>(
    `select b.id, array(select bs.seat_id::text from app.booking_seats bs where bs.booking_id = b.id and bs.active) as seats
     from app.bookings b where b.show_id = $1 and b.status in ('confirmed', 'pending')`,
    [showId],
  );
  expect(rows.map((row) => row.id).sort(), "the database's live bookings are the 201s").toEqual(won.map((booking) => booking.id).sort());
  expect(rows.flatMap((row) => row.seats).sort(), 'their seats are the 201s').toEqual([...seats].sort());
  return won;
}

/**
 * The same count for bookings made by calling the booking function: each
 * answer confirmed or failed for `reason`, and the show's live bookings in
 * the database exactly the confirmed answers, with no seat in two of them.
 */
export async function sqlWinners(pool: pg.Pool, showId: string, bookings: Booking[], reason = 'seats-unavailable'): Promise<Booking[]> {
  // As the service would answer them; anything else is counted as a 500, which winners() refuses.
  const answers = bookings.map((booking): BookingAnswer => {
    if (booking.status === 'confirmed') return { status: 201, body: booking };
    if (booking.status === 'failed' && booking.failureReason === reason) return { status: 409, body: { type: '/problems/seat-unavailable', booking } };
    return { status: 500, body: { detail: `${booking.status} ${booking.failureReason ?? ''}` } };
  });
  await winners(pool, showId, answers);
  return bookings.filter((booking) => booking.status === 'confirmed');
}
