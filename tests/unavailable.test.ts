// With the database out of reach, requests answer a 503 problem at once.
import { pino } from 'pino';
import request from 'supertest';
import { expect, it } from 'vitest';
import { makeApp } from '../src/app.js';
import { createPool } from '../src/db.js';
import { freePort } from '../src/embedded-postgres.js';
import { SeatEventHub } from '../src/seat-events.js';

const pool = createPool({ connectionString: `postgres://nobody:nothing@127.0.0.1:${await freePort()}/none`, max: 2 });
const logger = pino({ level: 'silent' });
const app = makeApp({ pool, logger, validateResponses: true, events: new SeatEventHub(pool, logger), adminToken: 'unused-admin-token-0123', metricsToken: 'unused-metrics-token-0123' });

it('answers 503 with Retry-After when the database cannot be reached', async () => {
  const response = await request(app).get('/api/shows').expect(503);
  expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(response.headers['retry-after']).toBe('1');
  expect(response.body).toMatchObject({ type: '/problems/service-unavailable', status: 503 });
});

it('still rejects a malformed request with a 400 before touching the database', async () => {
  const response = await request(app).post('/api/bookings').send({ showId: 'x' }).expect(400);
  expect(response.body.type).toBe('/problems/validation-failed');
});

it('is not ready while the database cannot be reached, and tells the public no more', async () => {
  const response = await request(app).get('/ready').expect(503);
  expect(response.body).toEqual({ status: 'unavailable' });
  expect(response.headers['retry-after']).toBe('5');
  await request(app).get('/health').expect(200, { status: 'ok' });
});
