// Rate limits that mean what they say: the client is the one the forwarding
// chain names, not a proxy or whatever the client claims, and the limit is
// one limit for every instance, counted in PostgreSQL.
import { randomInt } from 'node:crypto';
import express from 'express';
import { pino } from 'pino';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { makeApp } from '../src/app.js';
import { clientAddress } from '../src/client-address.js';
import { createPool } from '../src/db.js';
import { freePort } from '../src/embedded-postgres.js';
import { SeatEventHub } from '../src/seat-events.js';
import { ADMIN_TOKEN, METRICS_TOKEN, createShow, customer, testApp, testPool } from './support.js';

const pool = testPool();

/** A client address of its own per call (TEST-NET-3), so runs and files never share a bucket. */
function address(): string {
  return `203.0.${randomInt(256)}.${randomInt(1, 255)}`;
}

// Render's chain: client → CDN → Render's proxy → the service. The proxy
// appends the CDN's address; the client may have sent anything before it.
const CDN = '198.51.100.10';

function whoAmI(trustProxy: number, header?: string): express.Express {
  const app = express();
  app.set('trust proxy', trustProxy);
  app.get('/', (req, res) => {
    res.json({ address: clientAddress(req, { header }) });
  });
  return app;
}

describe('the client address', () => {
  it('is the entry before the CDN when two hops are trusted, whatever the client put first', async () => {
    const client = address();
    const seen = await request(whoAmI(2)).get('/').set('X-Forwarded-For', `10.9.8.7, ${client}, ${CDN}`).expect(200);
    expect(seen.body.address).toBe(client);
  });

  it('is the CDN with one trusted hop: the mistake TRUST_PROXY=2 avoids on Render', async () => {
    const seen = await request(whoAmI(1)).get('/').set('X-Forwarded-For', `${address()}, ${CDN}`).expect(200);
    expect(seen.body.address).toBe(CDN);
  });

  it('comes from the configured edge header when it holds an address, and only then', async () => {
    const client = address();
    const behindEdge = whoAmI(2, 'cf-connecting-ip');
    expect((await request(behindEdge).get('/').set('CF-Connecting-IP', client).set('X-Forwarded-For', `${client}, ${CDN}`)).body.address).toBe(client);
    // Not an address: the forwarding chain decides.
    const other = address();
    expect((await request(behindEdge).get('/').set('CF-Connecting-IP', 'nonsense').set('X-Forwarded-For', `${other}, ${CDN}`)).body.address).toBe(other);
    // Not configured: the header is the client's own claim and is ignored.
    expect((await request(whoAmI(2)).get('/').set('CF-Connecting-IP', client).set('X-Forwarded-For', `${other}, ${CDN}`)).body.address).toBe(other);
  });
});

describe('the read limit', () => {
  it('gives two clients behind the same CDN a bucket each, which a spoofed entry cannot change', async () => {
    const app = await testApp(pool, { trustProxy: 2, rateLimit: { max: 0, windowMs: 60_000, reads: 2 } });
    const alice = address();
    const bob = address();
    const via = (client: string, spoofed = address()) => ({ 'X-Forwarded-For': `${spoofed}, ${client}, ${CDN}` });
    await request(app).get('/api/shows?limit=1').set(via(alice)).expect(200);
    await request(app).get('/api/shows?limit=1').set(via(alice)).expect(200);
    const limited = await request(app).get('/api/shows?limit=1').set(via(alice)).expect(429);
    expect(limited.body.type).toBe('/problems/rate-limited');
    expect(limited.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    // A new leftmost entry on every request is still Alice.
    await request(app).get('/api/shows?limit=1').set(via(alice, address())).expect(429);
    await request(app).get('/api/shows?limit=1').set(via(alice, bob)).expect(429);
    // Bob, behind the same CDN, has his own bucket.
    await request(app).get('/api/shows?limit=1').set(via(bob)).expect(200);
  });

  it('covers every read of shows: listings, a show, its seat map and its events', async () => {
    const app = await testApp(pool, { trustProxy: 1, rateLimit: { max: 0, windowMs: 60_000, reads: 3 } });
    const show = await createShow(app);
    const from = { 'X-Forwarded-For': address() };
    await request(app).get(`/api/shows/${show.id}`).set(from).expect(200);
    await request(app).get(`/api/shows/${show.id}/seats`).set(from).expect(200);
    await request(app).get('/api/shows').set(from).expect(200);
    await request(app).get(`/api/shows/${show.id}/seats`).set(from).expect(429);
    await request(app).get(`/api/shows/${show.id}/events`).set(from).expect(429);
    // Booking reads are not show reads.
    await request(app).get('/api/bookings/00000000-0000-4000-8000-000000000000').set(from).set('Authorization', 'Bearer not-a-secret').expect(404);
  });
});

describe('a limit shared by instances', () => {
  it('lets N requests through across two instances on one database, then refuses on either', async () => {
    const limits = { max: 3, windowMs: 60_000, reads: 4 };
    const one = await testApp(pool, { trustProxy: 1, rateLimit: limits });
    const two = await testApp(pool, { trustProxy: 1, rateLimit: limits });
    const from = { 'X-Forwarded-For': address() };
    const statuses = [];
    for (const app of [one, two, one, two]) statuses.push((await request(app).get('/api/shows?limit=1').set(from)).status);
    expect(statuses).toEqual([200, 200, 200, 200]);
    await request(one).get('/api/shows?limit=1').set(from).expect(429);
    await request(two).get('/api/shows?limit=1').set(from).expect(429);

    // Bookings too, in their own bucket: the reads above did not use it up.
    const show = await createShow(one);
    const booking = () => ({ showId: show.id, quantity: 1, customer: customer() });
    const booked = [];
    for (const app of [two, one, two]) booked.push((await request(app).post('/api/bookings').set(from).send(booking())).status);
    expect(booked).toEqual([201, 201, 201]);
    await request(one).post('/api/bookings').set(from).send(booking()).expect(429);
    await request(two).post('/api/bookings').set(from).send(booking()).expect(429);
  });
});

describe('a limiter that cannot count', () => {
  it('refuses with a 503 and Retry-After rather than letting the request through', async () => {
    const nowhere = createPool({ connectionString: `postgres://nobody:nothing@127.0.0.1:${await freePort()}/none`, max: 1 });
    try {
      const logger = pino({ level: 'silent' });
      const events = new SeatEventHub(nowhere, logger);
      const app = makeApp({ pool: nowhere, logger, validateResponses: true, events, adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN, rateLimit: { max: 5, windowMs: 60_000 } });
      // Let through, this request would be a 400 without touching the database.
      const refused = await request(app).post('/api/bookings').send({ showId: 'x' }).expect(503);
      expect(refused.body.type).toBe('/problems/service-unavailable');
      expect(refused.headers['retry-after']).toBe('1');
    } finally {
      await nowhere.end();
    }
  });
});
