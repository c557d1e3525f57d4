// Reads from a real hot standby (Debian's PostgreSQL 15, made by
// pg_basebackup -R from a primary of its own): served there when it is
// current, from the primary when a client's position is ahead of it, when it
// lags past the bound, and when it is gone; never an answer older than one
// the client already had.
import { spawn } from 'node:child_process';
import path from 'node:path';
import type express from 'express';
import type pg from 'pg';
import { pino } from 'pino';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeApp } from '../src/app.js';
import { readConfig } from '../src/config.js';
import { createPool } from '../src/db.js';
import { runMigrations } from '../src/migrate.js';
import { parseLsn, ReplicaMonitor } from '../src/replica.js';
import { SeatEventHub } from '../src/seat-events.js';
import { admin, ADMIN_TOKEN, customer, METRICS_TOKEN, scraper, theatre, unlimitedHolds, type CreatedBooking, type SeatMap, type ShowDetail } from './support.js';
import { freePort } from './harness/pgbouncer.js';
import { PG15, standbyToolsInstalled, startReplicatedPair, type ReplicatedPair } from './standby.js';

const installed = standbyToolsInstalled();
if (!installed) {
  process.stderr.write(`tests/replica.test.ts: SKIPPED, ${PG15}/pg_basebackup (or initdb, pg_ctl) is missing: apt-get install postgresql-15\n`);
}

const TOKEN = 'consistency-token';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, done: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(25);
  }
}

/** db_replica_reads_total by "served_by reason". */
async function routed(app: express.Express): Promise<Map<string, number>> {
  const { text } = await request(app).get('/metrics').set(scraper).expect(200);
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^db_replica_reads_total\{(.*)\} (\d+)$/.exec(line);
    if (!match?.[1]) continue;
    const labels = Object.fromEntries([...match[1].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    counts.set(`${labels.served_by} ${labels.reason}`, Number(match[2]));
  }
  return counts;
}

/** What one request did to the counts: the one "served_by reason" that rose. */
async function servedBy<T>(app: express.Express, act: () => Promise<T>): Promise<{ answer: T; route: string }> {
  const before = await routed(app);
  const answer = await act();
  const after = await routed(app);
  const rose = [...after].filter(([key, n]) => n > (before.get(key) ?? 0)).map(([key]) => key);
  expect(rose).toHaveLength(1);
  return { answer, route: rose[0] ?? '' };
}

async function gauge(app: express.Express, name: string): Promise<number | undefined> {
  const { text } = await request(app).get('/metrics').set(scraper).expect(200);
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

function statusOf(map: SeatMap, label: string): string | undefined {
  return map.seats.find((seat) => seat.label === label)?.status;
}

describe.skipIf(!installed)('a read replica', () => {
  let pair: ReplicatedPair;
  let pool: pg.Pool;
  let readPool: pg.Pool;
  const replicaPools: pg.Pool[] = [];
  let events: SeatEventHub;
  /** Bounded by a minute of lag: only positions send its reads to the primary. */
  let patient: { app: express.Express; monitor: ReplicaMonitor };
  /** Bounded by 300 ms of lag. */
  let strict: { app: express.Express; monitor: ReplicaMonitor };
  const logger = pino({ level: 'silent' });

  async function service(maxLagMs: number) {
    const replicaPool = createPool({ connectionString: pair.replicaUrl, max: 3, applicationName: 'replica-test-reads' });
    replicaPools.push(replicaPool);
    const monitor = new ReplicaMonitor(readPool, replicaPool, { maxLagMs, pollMs: 50 }, logger);
    await monitor.start();
    const app = makeApp({
      pool,
      readPool,
      replica: monitor,
      logger,
      validateResponses: true,
      events,
      adminToken: ADMIN_TOKEN,
      metricsToken: METRICS_TOKEN,
      bookingLimits: unlimitedHolds,
    });
    return { app, monitor };
  }

  beforeAll(async () => {
    pair = await startReplicatedPair();
    await runMigrations(pair.primaryUrl, () => {});
    pool = createPool({ connectionString: pair.primaryUrl, max: 4 });
    readPool = createPool({ connectionString: pair.primaryUrl, max: 3, applicationName: 'replica-test-primary-reads' });
    events = new SeatEventHub(pool, logger, { sequenceIntervalMs: 50, listenUrl: pair.primaryUrl });
    await events.start();
    patient = await service(60_000);
    strict = await service(300);
    await pair.caughtUp();
  });

  afterAll(async () => {
    await Promise.all([patient?.monitor.stop(), strict?.monitor.stop()]);
    await events?.stop();
    await Promise.all([pool?.end(), readPool?.end(), ...replicaPools.map((p) => p.end())]);
    await pair?.stop();
  });

  async function newShow(app: express.Express): Promise<{ show: ShowDetail; token: string }> {
    const response = await request(app).post('/api/shows').set(admin).send(theatre()).expect(201);
    return { show: response.body, token: response.get(TOKEN) ?? '' };
  }

  async function book(app: express.Express, showId: string, label: string): Promise<{ booking: CreatedBooking; token: string }> {
    const response = await request(app).post('/api/bookings').send({ showId, seatLabels: [label], customer: customer() }).expect(201);
    return { booking: response.body, token: response.get(TOKEN) ?? '' };
  }

  test('DATABASE_REPLICA_URL turns the replica on, with its lag bound and poll interval', () => {
    expect(readConfig({}).databaseReplica).toBeUndefined();
    expect(readConfig({ DATABASE_REPLICA_URL: 'postgres://replica:5432/booking' }).databaseReplica).toEqual({
      url: 'postgres://replica:5432/booking',
      maxLagMs: 1000,
      pollMs: 100,
    });
    expect(readConfig({ DATABASE_REPLICA_URL: 'postgres://r/b', DATABASE_REPLICA_MAX_LAG_MS: '250' }).databaseReplica?.maxLagMs).toBe(250);
    expect(() => readConfig({ DATABASE_REPLICA_URL: 'http://replica/booking' })).toThrow(/DATABASE_REPLICA_URL/);
    expect(() => readConfig({ DATABASE_REPLICA_URL: 'postgres://r/b', DATABASE_REPLICA_MAX_LAG_MS: 'soon' })).toThrow(/DATABASE_REPLICA_MAX_LAG_MS/);
  });

  test('seat maps, show listings, a show and event history are served by the replica when it is current', async () => {
    const { app, monitor } = patient;
    const { show, token } = await newShow(app);
    expect(parseLsn(token)).toBeDefined();
    await until('the replica has replayed the new show', () => (monitor.replayed ?? 0n) >= (parseLsn(token) ?? 0n));

    const seats = await servedBy(app, () => request(app).get(`/api/shows/${show.id}/seats`).set(TOKEN, token).expect(200));
    expect(seats.route).toBe('replica current');
    expect(seats.answer.body.counts.available).toBe(10);
    // The answer's position is the replica's replay position: at least the one asked for.
    expect(parseLsn(seats.answer.get(TOKEN))).toBeGreaterThanOrEqual(parseLsn(token) ?? 0n);

    const listing = await servedBy(app, () => request(app).get('/api/shows').query({ limit: 100 }).set(TOKEN, token).expect(200));
    expect(listing.route).toBe('replica current');
    const detail = await servedBy(app, () => request(app).get(`/api/shows/${show.id}`).set(TOKEN, token).expect(200));
    expect(detail.route).toBe('replica current');
    expect(detail.answer.body.id).toBe(show.id);
    const history = await servedBy(app, () => request(app).get(`/api/shows/${show.id}/events`).set(TOKEN, token).expect(200));
    expect(history.route).toBe('replica current');
    expect(history.answer.body.items).toEqual([]);

    // The replica's answer to the request itself is the answer: not asked again of the primary.
    const refused = await servedBy(app, () => request(app).get(`/api/shows/${show.id}/seats?from=A&to=B`).set(TOKEN, token).expect(400));
    expect(refused.route).toBe('replica current');
    expect(refused.answer.body.type).toBe('/problems/invalid-stops');
  });

  test('a token that is not a WAL position is a 400 problem', async () => {
    const { show } = await newShow(patient.app);
    const response = await request(patient.app).get(`/api/shows/${show.id}/seats`).set(TOKEN, 'latest').expect(400);
    expect(response.type).toBe('application/problem+json');
  });

  test('after each booking, the same client\'s next seat map shows it, from a replica that applies 300 ms behind', async () => {
    const { app, monitor } = patient;
    const { show } = await newShow(app);
    await pair.onReplica("alter system set recovery_min_apply_delay = '300ms'");
    await pair.onReplica('select pg_reload_conf()');
    try {
      const labels = ['Stalls-A-1', 'Stalls-A-2', 'Stalls-A-3', 'Stalls-A-4', 'Stalls-B-1', 'Stalls-B-2'];
      const atOnce: string[] = [];
      for (const label of labels) {
        const { token } = await book(app, show.id, label);
        const now = await servedBy(app, () => request(app).get(`/api/shows/${show.id}/seats`).set(TOKEN, token).expect(200));
        expect(statusOf(now.answer.body, label)).toBe('booked');
        atOnce.push(now.route);
        // Once the replica has applied the booking, it serves the map, with the booking.
        await until('the replica has applied the booking', () => (monitor.replayed ?? 0n) >= (parseLsn(token) ?? 0n));
        const later = await servedBy(app, () => request(app).get(`/api/shows/${show.id}/seats`).set(TOKEN, token).expect(200));
        expect(later.route).toBe('replica current');
        expect(statusOf(later.answer.body, label)).toBe('booked');
      }
      // Asked at once, the replica was (nearly always) still behind the booking: the primary answered.
      expect(atOnce).toContain('primary behind-position');
      expect(atOnce.every((route) => route === 'primary behind-position' || route === 'replica current')).toBe(true);
    } finally {
      await pair.onReplica('alter system reset recovery_min_apply_delay');
      await pair.onReplica('select pg_reload_conf()');
    }
  });

  test('with replay paused: positions go to the primary, lag shows in /metrics, and no client gets an older map', async () => {
    const { show } = await newShow(patient.app);
    await pair.caughtUp();
    await until('both services see a current replica', () =>
      [patient, strict].every(({ monitor }) => monitor.route(undefined).target === 'replica'),
    );
    await pair.onReplica('select pg_wal_replay_pause()');
    try {
      const { token } = await book(patient.app, show.id, 'Stalls-A-1');

      // The client that booked, with its position: the primary answers, with its booking.
      const mine = await servedBy(patient.app, () => request(patient.app).get(`/api/shows/${show.id}/seats`).set(TOKEN, token).expect(200));
      expect(mine.route).toBe('primary behind-position');
      expect(statusOf(mine.answer.body, 'Stalls-A-1')).toBe('booked');
      const etag = mine.answer.get('ETag') ?? '';

      // A client that only sends the ETag it has: never an older map (304, or the primary's newer one).
      const polled = await servedBy(patient.app, () => request(patient.app).get(`/api/shows/${show.id}/seats`).set('If-None-Match', etag));
      expect(polled.route).toBe('primary stale-answer');
      // 304 while the booking's event awaits its position; the newer map once the sequencer gave it one.
      if (polled.answer.status !== 304) {
        expect(polled.answer.status).toBe(200);
        expect(statusOf(polled.answer.body, 'Stalls-A-1')).toBe('booked');
      }
      // The position it was handed carries on: again from the primary.
      const next = await servedBy(patient.app, () =>
        request(patient.app).get(`/api/shows/${show.id}/seats`).set(TOKEN, mine.answer.get(TOKEN) ?? '').expect(200),
      );
      expect(next.route).toBe('primary behind-position');
      expect(statusOf(next.answer.body, 'Stalls-A-1')).toBe('booked');

      // A client with no position, within a minute's bound: the paused replica really serves it, without the booking.
      const stranger = await servedBy(patient.app, () => request(patient.app).get(`/api/shows/${show.id}/seats`).expect(200));
      expect(stranger.route).toBe('replica current');
      expect(statusOf(stranger.answer.body, 'Stalls-A-1')).toBe('available');

      // Event history after an event the replica lacks: the primary answers, not a 400.
      await until('the booking\'s event is sequenced', async () => {
        const { body } = await request(patient.app).get(`/api/shows/${show.id}/events`).set(TOKEN, token).expect(200);
        return body.items.length === 1;
      });
      const { body: page } = await request(patient.app).get(`/api/shows/${show.id}/events`).set(TOKEN, token).expect(200);
      const newest = page.items[0].id;
      const history = await servedBy(patient.app, () => request(patient.app).get(`/api/shows/${show.id}/events`).query({ after: newest }).expect(200));
      expect(history.route).toBe('primary stale-answer');
      expect(history.answer.body.items).toEqual([]);

      // Past the 300 ms bound, even a client with no position is served by the primary.
      await until('the strict service sees the replica lagging', () => strict.monitor.route(undefined).reason === 'lagging');
      const lagging = await servedBy(strict.app, () => request(strict.app).get(`/api/shows/${show.id}/seats`).expect(200));
      expect(lagging.route).toBe('primary lagging');
      expect(statusOf(lagging.answer.body, 'Stalls-A-1')).toBe('booked');
      expect(await gauge(strict.app, 'db_replica_lag_seconds')).toBeGreaterThan(0.3);
      expect(await gauge(strict.app, 'db_replica_lag_bytes')).toBeGreaterThan(0);
      expect(await gauge(strict.app, 'db_replica_up')).toBe(1);
      // A lagging replica never makes the service unready.
      await request(strict.app).get('/ready').expect(200);
    } finally {
      await pair.onReplica('select pg_wal_replay_resume()');
    }

    await pair.caughtUp();
    await until('the strict service sees the replica current again', () => strict.monitor.route(undefined).target === 'replica');
    const resumed = await servedBy(strict.app, () => request(strict.app).get(`/api/shows/${show.id}/seats`).expect(200));
    expect(resumed.route).toBe('replica current');
    expect(statusOf(resumed.answer.body, 'Stalls-A-1')).toBe('booked');
    expect(await gauge(strict.app, 'db_replica_lag_seconds')).toBeLessThanOrEqual(0.3);
  });

  test('a stopped replica: reads fall back to the primary, and return to the replica when it is back', async () => {
    const { app, monitor } = patient;
    const { show } = await newShow(app);
    await book(app, show.id, 'Stalls-B-6');
    await pair.caughtUp();
    await until('the replica is current', () => monitor.route(undefined).target === 'replica');
    await pair.stopReplica();
    try {
      // The first read may find the replica gone itself, or after a poll did.
      const first = await servedBy(app, () => request(app).get(`/api/shows/${show.id}/seats`).expect(200));
      expect(['primary failed', 'primary unreachable']).toContain(first.route);
      expect(statusOf(first.answer.body, 'Stalls-B-6')).toBe('booked');
      await until('a poll has found the replica gone', () => !monitor.reachable);
      const listing = await servedBy(app, () => request(app).get('/api/shows').expect(200));
      expect(listing.route).toBe('primary unreachable');
      expect(await gauge(app, 'db_replica_up')).toBe(0);
      await request(app).get('/ready').expect(200);
    } finally {
      await pair.startReplica();
    }
    await until('the replica is current again', () => monitor.route(undefined).target === 'replica');
    const back = await servedBy(app, () => request(app).get(`/api/shows/${show.id}/seats`).expect(200));
    expect(back.route).toBe('replica current');
    expect(statusOf(back.answer.body, 'Stalls-B-6')).toBe('booked');
  });

  test('the entry point with DATABASE_REPLICA_URL reads from the replica, and stops cleanly', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: path.resolve(import.meta.dirname, '..'),
      env: {
        ...process.env,
        DATABASE_URL: pair.primaryUrl,
        DATABASE_REPLICA_URL: pair.replicaUrl,
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        HOST: '127.0.0.1',
        PORT: String(port),
        ADMIN_TOKEN,
        METRICS_TOKEN,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const base = `http://127.0.0.1:${port}`;
      await until('the service listens', () => fetch(`${base}/ready`).then((r) => r.ok, () => false), 60_000);
      const created = await fetch(`${base}/api/shows`, { method: 'POST', headers: { ...admin, 'content-type': 'application/json' }, body: JSON.stringify(theatre()) });
      expect(created.status).toBe(201);
      const token = created.headers.get(TOKEN) ?? '';
      const { id } = (await created.json()) as ShowDetail;
      const replicaReads = async () => {
        const text = await (await fetch(`${base}/metrics`, { headers: scraper })).text();
        return Number(/^db_replica_reads_total\{served_by="replica",reason="current"\} (\d+)$/m.exec(text)?.[1] ?? 0);
      };
      await until('a seat map is served by the replica', async () => {
        const seats = await fetch(`${base}/api/shows/${id}/seats`, { headers: { [TOKEN]: token } });
        expect(seats.status).toBe(200);
        return (await replicaReads()) > 0;
      });
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited, stderr).toBe(0);
  });

  test('without a replica, answers carry no position and every read is the primary\'s', async () => {
    const app = makeApp({ pool, readPool, logger, validateResponses: true, events, adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN, bookingLimits: unlimitedHolds });
    const created = await request(app).post('/api/shows').set(admin).send(theatre()).expect(201);
    expect(created.get(TOKEN)).toBeUndefined();
    const booked = await request(app).post('/api/bookings').send({ showId: created.body.id, quantity: 1, customer: customer() }).expect(201);
    expect(booked.get(TOKEN)).toBeUndefined();
    const seats = await request(app).get(`/api/shows/${created.body.id}/seats`).expect(200);
    expect(seats.get(TOKEN)).toBeUndefined();
    expect(seats.body.counts.booked).toBe(1);
    expect(await gauge(app, 'db_replica_lag_seconds')).toBeUndefined();
  });
});
