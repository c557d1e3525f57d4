// The logs of a realistic run, at trace level, hold no credential, booking
// secret, customer name or email: every line is read and searched.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import request from 'supertest';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { makeApp } from '../src/app.js';
import { loggerOptions } from '../src/logging.js';
import { SeatEventHub } from '../src/seat-events.js';
import { ADMIN_TOKEN, METRICS_TOKEN, admin, scraper, testPool, theatre, unique } from './support.js';

const pool = testPool();
const logged: string[] = [];
const logger = pino(loggerOptions('trace'), { write: (line: string) => void logged.push(line) });
const events = new SeatEventHub(pool, logger, { sequenceIntervalMs: 50 });
await events.start();
afterAll(() => events.stop());
const deps = { logger, validateResponses: true, events, adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN };
const app = makeApp({ pool, ...deps });

// A pool whose transactions may not write: a booking on it fails inside the
// database with an error no problem type maps, so the service answers 500.
const readOnlyPool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 2, options: '-c default_transaction_read_only=on' });
afterAll(() => readOnlyPool.end());
const failingApp = makeApp({ pool: readOnlyPool, ...deps });

/** What no log line may contain; add to it whatever else must stay out. */
const forbidden: string[] = [ADMIN_TOKEN, METRICS_TOKEN];

function person(role: string) {
  const tag = randomBytes(4).toString('hex');
  const who = { name: `Zebedee ${role} Quillfeather ${tag}`, email: `${role.toLowerCase()}.${tag}@private.example` };
  // The local part and the domain each on their own, as a log might split them.
  forbidden.push(who.name, who.email, `${role.toLowerCase()}.${tag}`);
  return who;
}

function secret(): string {
  const value = `bks_${randomBytes(18).toString('base64url')}`;
  forbidden.push(value);
  return value;
}

describe('the logs', () => {
  it('of a run at trace level hold no token, booking secret, customer name or email', async () => {
    const show = (await request(app).post('/api/shows').set(admin).send(theatre({ name: unique('Logged') })).expect(201)).body;

    const first = person('Winner');
    const booked = await request(app).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-1'], customer: first }).expect(201);
    const second = person('Loser');
    await request(app).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-1'], customer: second }).expect(409);

    // The booking's secret, in the answer and in the read that carries it.
    forbidden.push(booked.body.secret);
    await request(app).get(`/api/bookings/${booked.body.id}`).set('Authorization', `Bearer ${booked.body.secret}`).expect(200);
    await request(app).get(`/api/bookings/${booked.body.id}`).set('Authorization', `Bearer ${secret()}`).expect(404);
    await request(app).get('/api/bookings/00000000-0000-4000-8000-000000000000').set('Cookie', `session=${secret()}`).set('Authorization', `Bearer ${secret()}`).expect(404);

    // A validation failure on an email-like value, and a query string holding one.
    const invalid = person('Invalid');
    await request(app).post('/api/bookings').send({ showId: show.id, quantity: 1, customer: { name: invalid.name, email: `${invalid.email}@@` } }).expect(400);
    await request(app).get(`/api/shows?cursor=${encodeURIComponent(person('Query').email)}`).expect(400);
    // The validator's details name unknown properties and query parameters:
    // a client can make those an email too.
    const extra = person('Extra');
    const named = await request(app).post('/api/bookings').send({ showId: show.id, quantity: 1, customer: { ...person('Named'), [extra.email]: 1 } }).expect(400);
    expect(named.body.detail).toContain(extra.email);
    await request(app).get(`/api/shows?${encodeURIComponent(person('Param').email)}=1`).expect(400);

    // Malformed JSON: its problem detail quotes the text around the bad
    // token, so the response echoes part of the email; the log must not.
    const malformed = person('Mal');
    const echoed = await request(app).post('/api/bookings').set('Content-Type', 'application/json').send(`{"email": ${malformed.email}}`).expect(400);
    expect(echoed.body.type).toBe('/problems/malformed-json');
    const quoted = /"(.+?)"(?:\.\.\.)? is not valid JSON/.exec(echoed.body.detail)?.[1] ?? '';
    expect(quoted).toContain(malformed.email.slice(0, 8));
    forbidden.push(quoted);

    // Wrong credentials are logged no more than right ones.
    await request(app).post('/api/shows').set('Authorization', `Bearer ${secret()}`).send(theatre()).expect(403);
    await request(app).get('/metrics').set(scraper).expect(200);

    // The error path: a database failure answered 500, with a customer in the request.
    const failed = person('Failed');
    const broken = await request(failingApp).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-2'], customer: failed });
    expect(broken.status).toBe(500);

    const text = logged.join('');
    // The run was logged, at every level it reaches: no silent pass.
    expect(text).toContain('"level":20');
    expect(text).toContain('"level":50');
    expect(text).toContain('request rejected');
    expect(text).toContain('request failed');
    expect(text).toContain(`/api/bookings/${booked.body.id}`);
    expect(forbidden.length).toBeGreaterThan(15);
    for (const value of forbidden) expect(text, `the logs contain "${value}"`).not.toContain(value);
    // No header at all: a request line says id, method, path and status.
    expect(text).not.toMatch(/"headers"|"authorization"|"user-agent"/i);
  });

  it('censor a customer, credential or secret that code logs by mistake', () => {
    const who = person('Mistake');
    const token = secret();
    logger.info({ customer: who, booking: { customer: who, secret: token }, req: { headers: { authorization: `Bearer ${token}` } }, email: who.email }, 'oops');
    let line = logged.at(-1) ?? '';
    expect(line).toContain('oops');
    for (const value of [who.name, who.email, token]) expect(line).not.toContain(value);
    // At any depth, in arrays too; what is not censored stays as it was.
    const original = { orders: [{ lines: [{ booking: { holder: { customer: who } }, seat: 'A-1' }] }], note: { deep: { deeper: { deepest: { password: token } } } } };
    const copy = structuredClone(original);
    logger.warn(original, 'oops, deeper');
    expect(original, 'the logged object itself is not changed').toEqual(copy);
    line = logged.at(-1) ?? '';
    expect(line).toContain('oops, deeper');
    expect(line).toContain('"seat":"A-1"');
    expect(line).toContain('[redacted]');
    for (const value of [who.name, who.email, token]) expect(line).not.toContain(value);
  });

  it('are one line per request', async () => {
    const before = logged.length;
    await request(app).get('/api/shows?limit=1').expect(200);
    const lines = logged.slice(before);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? '{}')).toMatchObject({ msg: expect.stringMatching(/^GET \/api\/shows 200 \d+ ms$/), req: { method: 'GET', path: '/api/shows' }, res: { statusCode: 200 } });
  });
});
