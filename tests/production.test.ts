import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import request from 'supertest';
import { describe, expect, inject, it } from 'vitest';
import { createPool } from '../src/db.js';
import { admin, createShow, customer, scraper, testApp, testPool, theatre } from './support.js';

const pool = testPool();
const app = await testApp(pool, { corsOrigins: ['https://tickets.example.com'], rateLimit: { max: 3, windowMs: 60_000 } });

describe('admin operations', () => {
  it('need the admin bearer token: 401 without one, 403 with a wrong one', async () => {
    const missing = await request(app).post('/api/shows').send(theatre()).expect(401);
    expect(missing.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(missing.headers['www-authenticate']).toBe('Bearer realm="admin"');
    expect(missing.body.type).toBe('/problems/unauthorized');
    const wrong = await request(app).post('/api/shows').set('Authorization', 'Bearer not-the-token-at-all').send(theatre()).expect(403);
    expect(wrong.body.type).toBe('/problems/forbidden');
    await request(app).post('/api/shows').set('Authorization', 'Basic abc').send(theatre()).expect(401);
    await request(app).post('/api/shows').set(admin).send(theatre()).expect(201);
  });

  it('list a show\'s bookings to the admin only, oldest first, by status and page', async () => {
    const show = await createShow(app);
    const made: string[] = [];
    for (const label of ['Stalls-A-1', 'Stalls-A-2', 'Stalls-A-3']) {
      // Booked in SQL: this file's rate limit belongs to the 429 test.
      const { rows } = await pool.query<{ r: { booking: { id: string } } }>('select app.create_booking($1) as r', [
        { showId: show.id, seatLabels: [label], customer: customer() },
      ]);
      made.push(rows[0]?.r.booking.id ?? '');
    }
    await request(app).get(`/api/shows/${show.id}/bookings`).expect(401);
    await request(app).get(`/api/shows/${show.id}/bookings`).set('Authorization', 'Bearer not-the-token-at-all').expect(403);
    const first = await request(app).get(`/api/shows/${show.id}/bookings?limit=2`).set(admin).expect(200);
    const second = await request(app).get(`/api/shows/${show.id}/bookings`).query({ limit: 2, cursor: first.body.nextCursor }).set(admin).expect(200);
    expect([...first.body.items, ...second.body.items].map((b: { id: string }) => b.id)).toEqual(made);
    expect(second.body.nextCursor).toBeUndefined();
    const failed = await request(app).get(`/api/shows/${show.id}/bookings?status=failed`).set(admin).expect(200);
    expect(failed.body.items).toEqual([]);
    await request(app).get('/api/shows/00000000-0000-4000-8000-000000000000/bookings').set(admin).expect(404);
    await request(app).get(`/api/shows/${show.id}/bookings?cursor=bm9wZQ`).set(admin).expect(400);
  });

  it('check the token before reading the body', async () => {
    const response = await request(app).post('/api/shows').set('Content-Type', 'application/json').send('{not json').expect(401);
    expect(response.body.type).toBe('/problems/unauthorized');
  });

  it('leave the public operations open', async () => {
    const show = await createShow(app);
    await request(app).get(`/api/shows/${show.id}`).expect(200);
    await request(app).get(`/api/shows/${show.id}/seats`).expect(200);
  });
});

describe('security headers and CORS', () => {
  it('sends helmet headers on API responses', async () => {
    const response = await request(app).get('/api/shows?limit=1').expect(200);
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.headers['content-security-policy']).toContain("default-src 'self'");
    expect(response.headers['strict-transport-security']).toBeDefined();
    expect(response.headers['x-powered-by']).toBeUndefined();
  });

  it('allows only the configured origins', async () => {
    const allowed = await request(app).get('/api/shows?limit=1').set('Origin', 'https://tickets.example.com').expect(200);
    expect(allowed.headers['access-control-allow-origin']).toBe('https://tickets.example.com');
    expect(allowed.headers['access-control-expose-headers']).toContain('ETag');
    const other = await request(app).get('/api/shows?limit=1').set('Origin', 'https://evil.example.net').expect(200);
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const preflight = await request(app)
      .options('/api/bookings')
      .set('Origin', 'https://tickets.example.com')
      .set('Access-Control-Request-Method', 'POST')
      .set('Access-Control-Request-Headers', 'content-type, idempotency-key');
    expect(preflight.status).toBe(204);
    expect(preflight.headers['access-control-allow-methods']).toContain('POST');
  });
});

describe('rate limiting of booking creation', () => {
  it('answers 429 with Retry-After past the limit, and writes nothing', async () => {
    const show = await createShow(app);
    const statuses = [];
    for (let i = 0; i < 3; i++) {
      statuses.push((await request(app).post('/api/bookings').send({ showId: show.id, quantity: 1, customer: customer() })).status);
    }
    expect(statuses).toEqual([201, 201, 201]);
    const who = customer();
    const limited = await request(app).post('/api/bookings').send({ showId: show.id, quantity: 1, customer: who }).expect(429);
    expect(limited.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.body.type).toBe('/problems/rate-limited');
    const { rows } = await pool.query('select 1 from app.bookings where customer_email = $1', [who.email]);
    expect(rows).toHaveLength(0);
    // Reads are not limited.
    await request(app).get(`/api/shows/${show.id}/seats`).expect(200);
  });
});

describe('operations', () => {
  it('reports health, and readiness as up or down without saying more', async () => {
    await request(app).get('/health').expect(200, { status: 'ok' });
    await request(app).get('/ready').expect(200, { status: 'ready' });
  });

  it('stays ready on a database a later release has migrated, as during a deploy or after a rollback', async () => {
    const later = '999999.sql';
    await pool.query(
      `insert into graphile_migrate.migrations (hash, previous_hash, filename)
       select 'sha1:later', m.hash, $1 from graphile_migrate.migrations m order by m.filename desc limit 1`,
      [later],
    );
    try {
      await request(app).get('/ready').expect(200, { status: 'ready' });
    } finally {
      await pool.query('delete from graphile_migrate.migrations where filename = $1', [later]);
    }
  });

  it('serves Prometheus metrics to the scrape token only: latency per route, booking outcomes, the pool', async () => {
    const show = await createShow(app);
    await request(app).get(`/api/shows/${show.id}/seats`).expect(200);
    const missing = await request(app).get('/metrics').expect(401);
    expect(missing.headers['www-authenticate']).toBe('Bearer realm="metrics"');
    // Least privilege both ways: the admin token does not scrape.
    await request(app).get('/metrics').set(admin).expect(403);
    const metrics = await request(app).get('/metrics').set(scraper).expect(200);
    expect(metrics.headers['content-type']).toMatch(/^text\/plain/);
    expect(metrics.text).toMatch(/http_request_duration_seconds_bucket\{[^}]*route="\/api\/shows\/\{showId\}\/seats"/);
    expect(metrics.text).toMatch(/bookings_total\{outcome="confirmed"\} \d+/);
    expect(metrics.text).toMatch(/db_pool_connections\{state="total"\} \d+/);
    expect(metrics.text).toContain('seat_event_subscribers');
    expect(metrics.text).toContain('process_resident_memory_bytes');
  });

  it('serves the contract and the docs', async () => {
    const spec = await request(app).get('/openapi.yaml').expect(200);
    expect(spec.headers['content-type']).toMatch(/^application\/yaml/);
    expect(spec.text).toContain('operationId: createBooking');
    const docs = await request(app).get('/docs').expect(200);
    expect(docs.headers['content-type']).toMatch(/^text\/html/);
    expect(docs.text).toContain('Ticket Booking API');
    expect(docs.headers['content-security-policy']).toContain("script-src 'self' 'unsafe-inline'");
  });
});

describe('database timeouts', () => {
  it('are set on every pooled connection', async () => {
    const client = await pool.connect();
    try {
      const settings = await client.query(
        `select current_setting('statement_timeout') as s, current_setting('lock_timeout') as l, current_setting('idle_in_transaction_session_timeout') as i`,
      );
      expect(settings.rows[0]).toEqual({ s: '5s', l: '2s', i: '10s' });
    } finally {
      client.release();
    }
  });

  it('turn a booking stuck behind another transaction\'s seat lock into a quick 503', async () => {
    const show = await createShow(app);
    const shortPool = createPool({ connectionString: inject('databaseUrl'), max: 2, timeouts: { lockTimeoutMs: 300 } });
    const shortApp = await testApp(shortPool);
    const blocker = new pg.Client({ connectionString: inject('databaseUrl') });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query(`select 1 from app.seats where show_id = $1 and label = 'Stalls-A-1' for update`, [show.id]);
      const started = Date.now();
      const response = await request(shortApp).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-1'], customer: customer() }).expect(503);
      // Ended by the 300 ms lock timeout, not by the 5 s statement timeout
      // nor by the blocker: the margin is for a busy shared machine.
      expect(Date.now() - started).toBeLessThan(4_000);
      expect(response.headers['retry-after']).toBe('1');
      expect(response.body.type).toBe('/problems/service-unavailable');
    } finally {
      await blocker.query('rollback');
      await blocker.end();
      await sleep(10);
      await shortPool.end();
    }
  });
});
