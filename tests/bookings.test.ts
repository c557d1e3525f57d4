import request from 'supertest';
import { describe, expect, it } from 'vitest';
import {
  admin,
  bookingCounts,
  createShow,
  customer,
  testApp,
  testPool,
  theatre,
  owner,
  type Booking,
  type CreatedBooking,
  type SeatMap,
} from './support.js';

const pool = testPool();
const app = await testApp(pool);

async function seatStatuses(showId: string): Promise<Record<string, string>> {
  const map: SeatMap = (await request(app).get(`/api/shows/${showId}/seats`).expect(200)).body;
  return Object.fromEntries(map.seats.map((seat) => [seat.label, seat.status]));
}

async function bookingsByEmail(email: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from app.bookings where customer_email = $1', [email]);
  return rows[0]?.n ?? -1;
}

describe('booking seats', () => {
  it('confirms a booking of free seats by label, with its seats and total price', async () => {
    const show = await createShow(app);
    const who = customer();
    const response = await request(app)
      .post('/api/bookings')
      .send({ showId: show.id, seatLabels: ['Stalls-A-1', 'Stalls-B-1'], customer: who })
      .expect(201);
    const booking: CreatedBooking = response.body;
    expect(response.headers.location).toBe(`/api/bookings/${booking.id}`);
    expect(booking).toMatchObject({ showId: show.id, status: 'confirmed', customer: who, totalPrice: 7500, currency: 'EUR' });
    expect(booking.seats.map((seat) => [seat.label, seat.price])).toEqual([
      ['Stalls-A-1', 5000],
      ['Stalls-B-1', 2500],
    ]);
    expect(booking.confirmedAt).toEqual(expect.any(String));
    // A time-ordered UUID (version 7): new bookings append to the index.
    expect(booking.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);

    // The secret comes once, with the new booking; reading it back needs it.
    const { secret, ...stored } = booking;
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const read = await request(app).get(`/api/bookings/${booking.id}`).set(owner(booking)).expect(200);
    expect(read.body).toEqual(stored);
    const statuses = await seatStatuses(show.id);
    expect(statuses['Stalls-A-1']).toBe('booked');
    expect(statuses['Stalls-B-1']).toBe('booked');
    expect(statuses['Stalls-A-2']).toBe('available');
  });

  it('books seats by id', async () => {
    const show = await createShow(app);
    const map: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).body;
    const ids = map.seats.slice(2, 4).map((seat) => seat.id);
    const response = await request(app).post('/api/bookings').send({ showId: show.id, seatIds: ids, customer: customer() }).expect(201);
    expect(response.body.seats.map((seat: { id: number }) => seat.id)).toEqual(ids);
  });

  it('answers 409 for a taken seat and keeps the loser as a failed booking naming the seat', async () => {
    const show = await createShow(app);
    await request(app).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-2'], customer: customer() }).expect(201);
    const loser = customer('Alan Turing');
    const response = await request(app)
      .post('/api/bookings')
      .send({ showId: show.id, seatLabels: ['Stalls-A-2'], customer: loser })
      .expect(409);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({
      type: '/problems/seat-unavailable',
      status: 409,
      unavailableSeats: [{ label: 'Stalls-A-2' }],
      booking: { status: 'failed', customer: loser, totalPrice: 0 },
    });
    const failed = await request(app).get(`/api/bookings/${response.body.booking.id}`).set(admin).expect(200);
    expect(failed.body).toMatchObject({ status: 'failed', unavailableSeats: [{ label: 'Stalls-A-2' }] });
  });

  it('books none of the seats of a request when one of them is taken', async () => {
    const show = await createShow(app);
    await request(app).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-B-3'], customer: customer() }).expect(201);
    const response = await request(app)
      .post('/api/bookings')
      .send({ showId: show.id, seatLabels: ['Stalls-B-2', 'Stalls-B-3', 'Stalls-B-4'], customer: customer() })
      .expect(409);
    expect(response.body.unavailableSeats.map((seat: { label: string }) => seat.label)).toEqual(['Stalls-B-3']);
    const statuses = await seatStatuses(show.id);
    expect([statuses['Stalls-B-2'], statuses['Stalls-B-3'], statuses['Stalls-B-4']]).toEqual(['available', 'booked', 'available']);
    const { rows } = await pool.query('select 1 from app.booking_seats where booking_id = $1 and active', [response.body.booking.id]);
    expect(rows).toHaveLength(0);
  });

  it('reads a booking that does not exist as a 404 problem', async () => {
    const response = await request(app).get('/api/bookings/7b1e3c9a-0000-4000-8000-000000000000').set(admin).expect(404);
    expect(response.body.type).toBe('/problems/booking-not-found');
  });

  it('echoes a caller-supplied request id and makes one otherwise', async () => {
    const given = await request(app).get('/api/bookings/not-a-uuid').set(admin).set('X-Request-Id', 'trace-123').expect(400);
    expect(given.headers['x-request-id']).toBe('trace-123');
    expect(given.body.requestId).toBe('trace-123');
    const made = await request(app).get('/api/bookings/not-a-uuid').set(admin).expect(400);
    expect(made.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('a malformed booking request gets a clear 4xx and writes nothing', () => {
  const cases: Array<[string, (showId: string, who: { name: string; email: string }) => { body: string; type?: string }, number, string]> = [
    ['malformed JSON', (showId) => ({ body: `{"showId": "${showId}", "seatLabels": [` }), 400, '/problems/malformed-json'],
    ['an unknown field', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1'], customer: who, vip: true }) }), 400, '/problems/validation-failed'],
    ['a wrong type', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: 'Stalls-A-1', customer: who }) }), 400, '/problems/validation-failed'],
    ['an empty seat list', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: [], customer: who }) }), 400, '/problems/validation-failed'],
    ['the same seat twice', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1', 'Stalls-A-1'], customer: who }) }), 400, '/problems/validation-failed'],
    ['seats both by id and by label', (showId, who) => ({ body: JSON.stringify({ showId, seatIds: [1], seatLabels: ['Stalls-A-1'], customer: who }) }), 400, '/problems/validation-failed'],
    ['no seats at all', (showId, who) => ({ body: JSON.stringify({ showId, customer: who }) }), 400, '/problems/validation-failed'],
    ['more than 10 seats', (showId, who) => ({ body: JSON.stringify({ showId, seatIds: Array.from({ length: 11 }, (_, i) => i + 1), customer: who }) }), 400, '/problems/too-many-seats'],
    ['more than 100 seats, the contract\'s limit', (showId, who) => ({ body: JSON.stringify({ showId, seatIds: Array.from({ length: 101 }, (_, i) => i + 1), customer: who }) }), 400, '/problems/validation-failed'],
    ['a best-available filter without a quantity', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1'], section: 'Stalls', customer: who }) }), 400, '/problems/validation-failed'],
    ['a hold longer than the service allows', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1'], hold: true, holdSeconds: 7200, customer: who }) }), 400, '/problems/validation-failed'],
    ['holdSeconds without a hold', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1'], holdSeconds: 60, customer: who }) }), 400, '/problems/validation-failed'],
    ['an invalid email', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1'], customer: { ...who, email: 'not-an-email' } }) }), 400, '/problems/validation-failed'],
    ['a NUL byte in the customer name', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1'], customer: { ...who, name: 'Ada\u0000' } }) }), 400, '/problems/validation-failed'],
    ['a seat id beyond any integer', (showId, who) => ({ body: `{"showId": "${showId}", "seatIds": [99999999999999999999], "customer": ${JSON.stringify(who)}}` }), 400, '/problems/validation-failed'],
    ['a non-UUID show id', (_showId, who) => ({ body: JSON.stringify({ showId: 'show-1', seatLabels: ['Stalls-A-1'], customer: who }) }), 400, '/problems/validation-failed'],
    ['a show that does not exist', (_showId, who) => ({ body: JSON.stringify({ showId: '00000000-0000-4000-8000-000000000001', seatLabels: ['Stalls-A-1'], customer: who }) }), 404, '/problems/show-not-found'],
    ['a seat that is not in the show', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1', 'Stalls-Z-9'], customer: who }) }), 422, '/problems/unknown-seat'],
    ['a body over the size limit', (showId, who) => ({ body: JSON.stringify({ showId, seatLabels: ['Stalls-A-1'], customer: { ...who, name: 'x'.repeat(300_000) } }) }), 413, '/problems/payload-too-large'],
    ['a body that is not JSON', (showId) => ({ body: `showId=${showId}`, type: 'application/x-www-form-urlencoded' }), 415, '/problems/unsupported-media-type'],
  ];

  it.each(cases)('%s', async (_what, make, status, type) => {
    const show = await createShow(app);
    const who = customer();
    const { body, type: contentType = 'application/json' } = make(show.id, who);
    const response = await request(app).post('/api/bookings').set('Content-Type', contentType).send(body).expect(status);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({ type, status, title: expect.any(String), detail: expect.any(String), instance: '/api/bookings' });
    expect(JSON.stringify(response.body)).not.toMatch(/at .*\.(ts|js):\d+/);
    expect(await bookingCounts(pool, show.id)).toEqual({});
    expect(await bookingsByEmail(who.email)).toBe(0);
    expect(await seatStatuses(show.id)).not.toContain('booked');
  });

  it('names the seats that are not in the show', async () => {
    const show = await createShow(app);
    const response = await request(app)
      .post('/api/bookings')
      .send({ showId: show.id, seatLabels: ['Stalls-A-1', 'Stalls-Z-9', 'Balcony-A-1'], customer: customer() })
      .expect(422);
    expect(response.body.unknownSeats).toEqual(['Balcony-A-1', 'Stalls-Z-9']);
  });

  it('treats a seat id of another show as not in the show', async () => {
    const [mine, other] = [await createShow(app), await createShow(app, theatre())];
    const otherMap: SeatMap = (await request(app).get(`/api/shows/${other.id}/seats`).expect(200)).body;
    const foreignId = otherMap.seats[0]?.id;
    const response = await request(app)
      .post('/api/bookings')
      .send({ showId: mine.id, seatIds: [foreignId], customer: customer() })
      .expect(422);
    expect(response.body.unknownSeats).toEqual([foreignId]);
    expect(await bookingCounts(pool, other.id)).toEqual({});
  });
});
