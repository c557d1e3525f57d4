// What a stranger can do with what the public API gives out: booking ids,
// seat events, holds and show dates. Each test is an outsider's attempt.
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { readFileSync } from 'node:fs';
import { apiSpecPath } from '../src/app.js';
import { defaultBookingLimits } from '../src/config.js';
import { decodeCursor } from '../src/cursor.js';
import { admin, createShow, customer, owner, testApp, testPool, theatre, type CreatedBooking } from './support.js';

const pool = testPool(30);
const app = await testApp(pool);

function book(body: Record<string, unknown>, headers: Record<string, string> = {}) {
  return request(app).post('/api/bookings').set(headers).send({ customer: customer(), ...body });
}

async function storedBooking(id: string) {
  const { rows } = await pool.query<{ status: string; cancelled_at: Date | null; payment_reference: string | null }>(
    'select status::text, cancelled_at, payment_reference from app.bookings where id = $1',
    [id],
  );
  return rows[0];
}

describe('a booking id alone', () => {
  it('reads, confirms and cancels nothing; the secret does, and so does the admin', async () => {
    const show = await createShow(app);
    const hold: CreatedBooking = (await book({ showId: show.id, seatLabels: ['Stalls-A-1'], hold: true }).expect(201)).body;
    const before = await storedBooking(hold.id);
    const missing = '7b1e3c9a-0000-4000-8000-000000000001';
    const other: CreatedBooking = (await book({ showId: show.id, seatLabels: ['Stalls-B-6'] }).expect(201)).body;

    for (const [method, path] of [
      ['get', ''],
      ['post', '/confirm'],
      ['post', '/cancel'],
    ] as const) {
      const anonymous = await request(app)[method](`/api/bookings/${hold.id}${path}`).expect(401);
      expect(anonymous.headers['www-authenticate']).toBe('Bearer realm="booking"');
      // A wrong secret is answered exactly as a booking that does not exist.
      const wrong = await request(app)[method](`/api/bookings/${hold.id}${path}`).set('Authorization', 'Bearer not-the-secret').expect(404);
      const absent = await request(app)[method](`/api/bookings/${missing}${path}`).set('Authorization', 'Bearer not-the-secret').expect(404);
      expect(wrong.body.type).toBe('/problems/booking-not-found');
      expect(Object.keys(wrong.body).sort()).toEqual(Object.keys(absent.body).sort());
      expect(JSON.stringify(wrong.body)).not.toContain(hold.customer.email);
      // Another booking's secret is a wrong secret too.
      await request(app)[method](`/api/bookings/${hold.id}${path}`).set(owner(other)).expect(404);
    }
    expect(await storedBooking(hold.id)).toEqual(before);

    const read = await request(app).get(`/api/bookings/${hold.id}`).set(owner(hold)).expect(200);
    expect(read.body).toMatchObject({ id: hold.id, status: 'pending', customer: hold.customer });
    expect(read.body).not.toHaveProperty('secret');
    await request(app).post(`/api/bookings/${hold.id}/confirm`).set(owner(hold)).send({ paymentReference: 'pay-1' }).expect(200);
    await request(app).get(`/api/bookings/${hold.id}`).set(admin).expect(200);
    await request(app).post(`/api/bookings/${hold.id}/cancel`).set(admin).expect(200);
    expect((await storedBooking(hold.id))?.status).toBe('cancelled');
  });

  it('stores only a hash of the secret, and a replay with the same key answers the same secret', async () => {
    const show = await createShow(app);
    const key = `replay-${crypto.randomUUID()}`;
    const body = { showId: show.id, seatLabels: ['Stalls-A-2'], customer: customer() };
    const first: CreatedBooking = (await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(201)).body;
    const again = await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.secret).toBe(first.secret);
    await request(app).get(`/api/bookings/${first.id}`).set(owner(again.body)).expect(200);

    const { rows } = await pool.query<{ secret_hash: Buffer; row: string; replay: string }>(
      `select b.secret_hash, b::text as row, coalesce(k.response::text, '') as replay
       from app.bookings b, app.idempotency_keys k where b.id = $1 and k.key = $2`,
      [first.id, key],
    );
    expect(rows[0]?.secret_hash.equals(createHash('sha256').update(first.secret).digest())).toBe(true);
    expect(rows[0]?.row).not.toContain(first.secret);
    expect(rows[0]?.replay).not.toContain(first.secret);
    // Without a key, every booking gets a secret of its own.
    const a: CreatedBooking = (await book({ showId: show.id, seatLabels: ['Stalls-A-3'] }).expect(201)).body;
    const b: CreatedBooking = (await book({ showId: show.id, seatLabels: ['Stalls-A-4'] }).expect(201)).body;
    expect(a.secret).not.toBe(b.secret);
  });

  it('is not in the public seat events; the admin history names it', async () => {
    const show = await createShow(app);
    const booking: CreatedBooking = (await book({ showId: show.id, seatLabels: ['Stalls-B-1'] }).expect(201)).body;
    await sleep(300);
    const publicPage = await request(app).get(`/api/shows/${show.id}/events`).expect(200);
    expect(publicPage.body.items).toHaveLength(1);
    expect(JSON.stringify(publicPage.body)).not.toContain(booking.id);
    expect(JSON.stringify(publicPage.body)).not.toContain(booking.customer.email);
    const adminPage = await request(app).get(`/api/shows/${show.id}/events`).set(admin).expect(200);
    expect(adminPage.body.items[0]).toMatchObject({ type: 'booked', bookingId: booking.id });
  });
});

describe('holds one client may keep', () => {
  const limits = { ...defaultBookingLimits, holds: { seatsPerClient: 6, seatsPerEmail: 4, holdsPerClient: 3 } };
  // Each test books from client addresses of its own, as a proxy names them.
  const limited = testApp(pool, { bookingLimits: limits, trustProxy: 1 });
  const from = (address: string) => ({ 'X-Forwarded-For': address });

  it('stop at the configured share of a show, even when the holds race', async () => {
    const limitedApp = await limited;
    const show = await createShow(limitedApp, theatre({ sections: [{ name: 'Floor', rows: [{ label: 'A', seats: 40, category: 'standard' }] }] }));
    // Twenty holds of one seat at once, from one client, with distinct emails.
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        request(limitedApp).post('/api/bookings').set(from('198.51.100.1')).send({ showId: show.id, quantity: 1, hold: true, customer: customer() }),
      ),
    );
    const held = answers.filter((answer) => answer.status === 201).length;
    // Three live holds per client: the fourth is refused, whatever the order.
    expect(held).toBe(3);
    for (const refused of answers.filter((answer) => answer.status !== 201)) {
      expect(refused.status).toBe(409);
      expect(refused.body).toMatchObject({ type: '/problems/hold-limit-reached', limitScope: 'holds-per-client', limit: 3 });
    }
    const { rows } = await pool.query<{ n: number }>(
      "select count(*)::int as n from app.bookings where show_id = $1 and status = 'pending'",
      [show.id],
    );
    expect(rows[0]?.n).toBe(3);
  });

  it('count seats per client and per email in one show, and free up when a hold ends', async () => {
    const limitedApp = await limited;
    const show = await createShow(limitedApp, theatre({ sections: [{ name: 'Floor', rows: [{ label: 'A', seats: 40, category: 'standard' }] }] }));
    const who = customer();
    const first: CreatedBooking = (
      await request(limitedApp).post('/api/bookings').set(from('198.51.100.2')).send({ showId: show.id, quantity: 3, hold: true, customer: who }).expect(201)
    ).body;
    // The same email, from another client address: four seats per email.
    const byEmail = await request(limitedApp)
      .post('/api/bookings')
      .set(from('198.51.100.3'))
      .send({ showId: show.id, quantity: 2, hold: true, customer: { ...who, email: who.email.toUpperCase() } })
      .expect(409);
    expect(byEmail.body).toMatchObject({ type: '/problems/hold-limit-reached', limitScope: 'seats-per-email', limit: 4, held: 3 });
    await request(limitedApp).post('/api/bookings').set(from('198.51.100.2')).send({ showId: show.id, quantity: 3, hold: true, customer: customer() }).expect(201);
    const byClient = await request(limitedApp)
      .post('/api/bookings')
      .set(from('198.51.100.2'))
      .send({ showId: show.id, quantity: 1, hold: true, customer: customer() })
      .expect(409);
    expect(byClient.body).toMatchObject({ limitScope: 'seats-per-client', limit: 6, held: 6 });
    // Buying outright is not holding, and a cancelled hold frees its share.
    await request(limitedApp).post('/api/bookings').set(from('198.51.100.2')).send({ showId: show.id, quantity: 2, customer: customer() }).expect(201);
    await request(limitedApp).post(`/api/bookings/${first.id}/cancel`).set(owner(first)).expect(200);
    await request(limitedApp).post('/api/bookings').set(from('198.51.100.2')).send({ showId: show.id, quantity: 3, hold: true, customer: customer() }).expect(201);
  });
});

describe('hold limits behind an edge that names the client in a header', () => {
  const limits = { ...defaultBookingLimits, holds: { seatsPerClient: 0, seatsPerEmail: 0, holdsPerClient: 2 } };
  const edged = testApp(pool, { bookingLimits: limits, clientAddressHeader: 'x-client-ip' });

  it('count the client the header names, as the rate limits do, not the proxy the socket comes from', async () => {
    const app = await edged;
    const show = await createShow(app);
    const hold = (address: string) =>
      request(app).post('/api/bookings').set('X-Client-IP', address).send({ showId: show.id, quantity: 1, hold: true, customer: customer() });
    await hold('198.51.100.21').expect(201);
    await hold('198.51.100.21').expect(201);
    expect((await hold('198.51.100.21').expect(409)).body).toMatchObject({ limitScope: 'holds-per-client', limit: 2 });
    // Another client behind the same proxy is not held back by the first.
    await hold('198.51.100.22').expect(201);
  });
});

describe('sales windows', () => {
  it('refuse a show in the past and one whose sales have not opened, and sell inside the window', async () => {
    const past = await createShow(app, theatre({ startsAt: '1971-01-01T19:30:00Z' }));
    expect(past.salesEndAt).toBe('1971-01-01T19:30:00+00:00');
    const closed = await book({ showId: past.id, seatLabels: ['Stalls-A-1'] }).expect(409);
    expect(closed.body).toMatchObject({ type: '/problems/sales-closed', salesEndAt: '1971-01-01T19:30:00+00:00' });

    const later = await createShow(app, theatre({ salesStartAt: '2099-01-01T10:00:00Z', startsAt: '2099-02-01T19:30:00Z' }));
    const notYet = await book({ showId: later.id, seatLabels: ['Stalls-A-1'] }).expect(409);
    expect(notYet.body).toMatchObject({ type: '/problems/sales-closed', salesStartAt: '2099-01-01T10:00:00+00:00' });

    const open = await createShow(app, theatre({ salesEndAt: '2099-01-01T00:00:00Z' }));
    await book({ showId: open.id, seatLabels: ['Stalls-A-1'] }).expect(201);
    const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from app.bookings where show_id = any($1)', [[past.id, later.id]]);
    expect(rows[0]?.n).toBe(0);
    const inverted = await request(app).post('/api/shows').set(admin).send(theatre({ salesStartAt: '2030-01-02T00:00:00Z', salesEndAt: '2030-01-01T00:00:00Z' })).expect(400);
    expect(inverted.body.errors[0].name).toBe('body.salesStartAt');
  });
});

describe('defects an outside acceptance run found', () => {
  it('the seat map ETag changes by the time a booking or cancel is answered', async () => {
    const show = await createShow(app);
    for (const label of ['Stalls-A-1', 'Stalls-A-2', 'Stalls-A-3']) {
      const etag = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).headers.etag ?? '';
      const booking: CreatedBooking = (await book({ showId: show.id, seatLabels: [label] }).expect(201)).body;
      const after = await request(app).get(`/api/shows/${show.id}/seats`).set('If-None-Match', etag).expect(200);
      expect(after.body.seats.find((seat: { label: string }) => seat.label === label).status).toBe('booked');
      const booked = after.headers.etag ?? '';
      await request(app).post(`/api/bookings/${booking.id}/cancel`).set(owner(booking)).expect(200);
      const freed = await request(app).get(`/api/shows/${show.id}/seats`).set('If-None-Match', booked).expect(200);
      expect(freed.body.seats.find((seat: { label: string }) => seat.label === label).status).toBe('available');
      expect(freed.headers.etag).not.toBe(etag);
    }
  });

  it('the admin listing files a lapsed hold under expired, not pending, before the sweep', async () => {
    const show = await createShow(app);
    const hold: CreatedBooking = (await book({ showId: show.id, seatLabels: ['Stalls-A-1'], hold: true, holdSeconds: 1 }).expect(201)).body;
    await sleep(1_100);
    const pending = await request(app).get(`/api/shows/${show.id}/bookings?status=pending`).set(admin).expect(200);
    expect(pending.body.items).toEqual([]);
    const expired = await request(app).get(`/api/shows/${show.id}/bookings?status=expired`).set(admin).expect(200);
    expect(expired.body.items.map((b: { id: string; status: string }) => [b.id, b.status])).toEqual([[hold.id, 'expired']]);
  });

  it('an instant past what RFC 3339 can carry is a 400 that writes nothing, and listings keep working', async () => {
    const name = `Far future ${crypto.randomUUID()}`;
    for (const startsAt of ['9999-12-31T23:30:00-05:00', '0001-01-01T00:00:00Z']) {
      const refused = await request(app).post('/api/shows').set(admin).send(theatre({ name, startsAt })).expect(400);
      expect(refused.body.errors[0].name).toBe('body.startsAt');
    }
    const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from app.shows where name = $1', [name]);
    expect(rows[0]?.n).toBe(0);
    await request(app).get('/api/shows?limit=100&startsFrom=9000-01-01T00:00:00Z').expect(200);
  });

  it('control and direction-override characters are refused in names', async () => {
    const show = await createShow(app);
    for (const name of ['Ada\u202eecalevoL', 'Ada\u0007', 'Ada\u2066x', '\u200f']) {
      await request(app).post('/api/shows').set(admin).send(theatre({ name })).expect(400);
      await book({ showId: show.id, seatLabels: ['Stalls-B-2'], customer: { name, email: 'ada@example.com' } }).expect(400);
    }
    // Letters of any script are names.
    await book({ showId: show.id, seatLabels: ['Stalls-B-2'], customer: { name: 'נעמי שמר', email: 'naomi@example.com' } }).expect(201);
  });

  it('control and direction-override characters are refused by the database too, should a caller skip the contract', async () => {
    const show = await createShow(app);
    const direct = (name: string, seat: string) =>
      pool.query<{ result: { booking: { status: string } } }>('select app.create_booking($1, null, 10) as result', [
        { showId: show.id, seatLabels: [seat], customer: { name, email: 'ada@example.com' } },
      ]);
    for (const name of ['Ada\u202eecalevoL', 'Ada\u0007', 'Ada\u2066x', '\u200f', 'Ada\ufeff']) {
      await expect(direct(name, 'Stalls-B-2')).rejects.toMatchObject({ code: '23514', constraint: 'bookings_printable' });
    }
    expect((await direct('נעמי שמר', 'Stalls-B-2')).rows[0]?.result.booking.status).toBe('confirmed');
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from app.bookings where show_id = $1 and customer_email = 'ada@example.com'`,
      [show.id],
    );
    expect(rows[0]?.n).toBe(1);
  });

  it('email addresses are checked as mail systems take them', async () => {
    const show = await createShow(app);
    for (const email of ['ada@localhost', 'ada..l@example.com', '.ada@example.com', 'ada@-example.com', 'ada@example..com', `${'a'.repeat(65)}@example.com`, 'ada lovelace@example.com']) {
      const refused = await book({ showId: show.id, seatLabels: ['Stalls-B-3'], customer: { name: 'Ada', email } }).expect(400);
      expect(refused.body.errors.map((e: { name: string }) => e.name)).toContain('body.customer.email');
    }
    await book({ showId: show.id, seatLabels: ['Stalls-B-3'], customer: { name: 'Ada', email: "ada.o'brien+tickets@mail.example.co.uk" } }).expect(201);
  });

  it("the contract's own example cursors are cursors the service accepts", () => {
    const text = readFileSync(apiSpecPath, 'utf8');
    const cursors = [...text.matchAll(/(?:nextCursor|example): (ey[A-Za-z0-9_-]+)/g)].map((match) => match[1] ?? '');
    expect(cursors.length).toBeGreaterThanOrEqual(2);
    for (const cursor of cursors) expect(() => decodeCursor(cursor)).not.toThrow();
    expect(YAML.parse(text)).toBeTruthy();
  });
});
