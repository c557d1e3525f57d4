import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { doubleBookedSeats } from '../bench/invariants.js';
import {
  admin,
  customer,
  serve,
  postJson,
  testApp,
  testPool,
  theatre,
  winners,
  type Booking,
  type NewShow,
  type SeatMap,
  type ShowDetail,
} from './support.js';

const pool = testPool(40);
const app = await testApp(pool);
const server = serve(app);

/** Coach A → B → C → D: three legs, two rows of four seats, 500 per leg. */
function coach(overrides: Partial<NewShow> = {}): NewShow {
  const { startsAt: _startsAt, ...show } = theatre({
    kind: 'trip',
    venue: 'Coach station',
    categories: [{ code: 'standard', price: 500 }],
    sections: [{ name: 'Deck', rows: [{ label: '1', seats: 4, category: 'standard' }, { label: '2', seats: 4, category: 'standard' }] }],
  });
  return {
    ...show,
    stops: [
      { name: 'A', departsAt: '2099-05-01T08:00:00Z' },
      { name: 'B', departsAt: '2099-05-01T09:00:00Z' },
      { name: 'C', departsAt: '2099-05-01T10:00:00Z' },
      { name: 'D', departsAt: '2099-05-01T11:00:00Z' },
    ],
    ...overrides,
  };
}

async function createTrip(overrides: Partial<NewShow> = {}): Promise<ShowDetail> {
  return (await request(app).post('/api/shows').set(admin).send(coach(overrides)).expect(201)).body;
}

function book(showId: string, seatLabels: string[], fromStop?: string, toStop?: string, extra: object = {}) {
  return request(app)
    .post('/api/bookings')
    .send({ showId, seatLabels, customer: customer(), ...(fromStop ? { fromStop } : {}), ...(toStop ? { toStop } : {}), ...extra });
}

async function statuses(showId: string, from?: string, to?: string): Promise<Record<string, string>> {
  const map: SeatMap = (await request(app).get(`/api/shows/${showId}/seats`).query({ ...(from ? { from } : {}), ...(to ? { to } : {}) }).expect(200)).body;
  return Object.fromEntries(map.seats.map((seat) => [seat.label, seat.status]));
}

describe('a trip', () => {
  it('is created with its stops, starting at its first departure', async () => {
    const trip = await createTrip();
    expect(trip).toMatchObject({ kind: 'trip', startsAt: '2099-05-01T08:00:00+00:00', seatCount: 8 });
    expect(trip.stops?.map((stop) => stop.name)).toEqual(['A', 'B', 'C', 'D']);
    const read: ShowDetail = (await request(app).get(`/api/shows/${trip.id}`).expect(200)).body;
    expect(read.stops).toEqual(trip.stops);
  });

  it('sells a seat from A to B and again from B to D', async () => {
    const trip = await createTrip();
    const first: Booking = (await book(trip.id, ['Deck-1-1'], 'A', 'B').expect(201)).body;
    const second: Booking = (await book(trip.id, ['Deck-1-1'], 'B', 'D').expect(201)).body;
    expect(first).toMatchObject({ fromStop: 'A', toStop: 'B', totalPrice: 500 });
    expect(second).toMatchObject({ fromStop: 'B', toStop: 'D', totalPrice: 1000 });
    expect(await doubleBookedSeats(pool, trip.id)).toEqual([]);
  });

  it('refuses a booking whose legs overlap another on the same seat', async () => {
    const trip = await createTrip();
    await book(trip.id, ['Deck-1-2'], 'A', 'C').expect(201);
    const overlap = await book(trip.id, ['Deck-1-2'], 'B', 'D').expect(409);
    expect(overlap.body.unavailableSeats.map((seat: { label: string }) => seat.label)).toEqual(['Deck-1-2']);
    await book(trip.id, ['Deck-1-2']).expect(409);
    await book(trip.id, ['Deck-1-2'], 'C', 'D').expect(201);
  });

  it('books the whole trip when no stops are named', async () => {
    const trip = await createTrip();
    const whole: Booking = (await book(trip.id, ['Deck-2-1']).expect(201)).body;
    expect(whole).toMatchObject({ fromStop: 'A', toStop: 'D', totalPrice: 1500 });
    await book(trip.id, ['Deck-2-1'], 'C', 'D').expect(409);
    const fromB: Booking = (await book(trip.id, ['Deck-2-2'], 'B').expect(201)).body;
    expect(fromB).toMatchObject({ fromStop: 'B', toStop: 'D' });
  });

  it('answers availability per leg range after bookings, cancellations and expiries', async () => {
    const trip = await createTrip();
    await book(trip.id, ['Deck-1-1'], 'A', 'B').expect(201);
    const cancelled: Booking = (await book(trip.id, ['Deck-1-2'], 'C', 'D').expect(201)).body;
    await book(trip.id, ['Deck-1-3'], 'B', 'C', { hold: true, holdSeconds: 1 }).expect(201);
    await book(trip.id, ['Deck-1-4'], 'A', 'D', { hold: true }).expect(201);

    const ab = await statuses(trip.id, 'A', 'B');
    expect([ab['Deck-1-1'], ab['Deck-1-2'], ab['Deck-1-3'], ab['Deck-1-4']]).toEqual(['booked', 'available', 'available', 'held']);
    const bc = await statuses(trip.id, 'B', 'C');
    expect([bc['Deck-1-1'], bc['Deck-1-2'], bc['Deck-1-3'], bc['Deck-1-4']]).toEqual(['available', 'available', 'held', 'held']);
    const whole = await statuses(trip.id);
    expect([whole['Deck-1-1'], whole['Deck-1-2'], whole['Deck-1-3'], whole['Deck-1-4']]).toEqual(['booked', 'booked', 'held', 'held']);

    await request(app).post(`/api/bookings/${cancelled.id}/cancel`).set(admin).expect(200);
    await sleep(1100);
    const cd = await statuses(trip.id, 'C', 'D');
    expect([cd['Deck-1-1'], cd['Deck-1-2'], cd['Deck-1-3'], cd['Deck-1-4']]).toEqual(['available', 'available', 'available', 'held']);
    const bcLater = await statuses(trip.id, 'B', 'C');
    expect(bcLater['Deck-1-3']).toBe('available');
    const map: SeatMap = (await request(app).get(`/api/shows/${trip.id}/seats?from=B&to=D`).expect(200)).body;
    expect(map).toMatchObject({ fromStop: 'B', toStop: 'D' });
    expect(map.counts).toMatchObject({ total: 8, held: 1, booked: 0, available: 7 });
  });

  it('holds, confirms and cancels per leg range', async () => {
    const trip = await createTrip();
    const hold: Booking = (await book(trip.id, ['Deck-2-3'], 'A', 'B', { hold: true }).expect(201)).body;
    await book(trip.id, ['Deck-2-3'], 'B', 'C').expect(201);
    await request(app).post(`/api/bookings/${hold.id}/confirm`).set(admin).expect(200);
    await book(trip.id, ['Deck-2-3'], 'A', 'B').expect(409);
    await request(app).post(`/api/bookings/${hold.id}/cancel`).set(admin).expect(200);
    await book(trip.id, ['Deck-2-3'], 'A', 'B').expect(201);
  });

  it('picks the best seats free over the whole requested range', async () => {
    const trip = await createTrip({ sections: [{ name: 'Deck', rows: [{ label: '1', seats: 2, category: 'standard' }] }] });
    await book(trip.id, ['Deck-1-1'], 'A', 'B').expect(201);
    await book(trip.id, ['Deck-1-2'], 'C', 'D').expect(201);
    // Both seats are free from B to C, together.
    const pair: Booking = (await request(app).post('/api/bookings').send({ showId: trip.id, quantity: 2, fromStop: 'B', toStop: 'C', customer: customer() }).expect(201)).body;
    expect(pair.seats.map((seat) => seat.label)).toEqual(['Deck-1-1', 'Deck-1-2']);
    await request(app).post('/api/bookings').send({ showId: trip.id, quantity: 1, fromStop: 'A', toStop: 'C', customer: customer() }).expect(409);
  });
});

describe('concurrent bookings of one seat on a trip', () => {
  it('50 bookings of overlapping legs give exactly one winner', async () => {
    const trip = await createTrip();
    const ranges: Array<[string, string]> = [['A', 'C'], ['B', 'D'], ['A', 'D'], ['B', 'C'], ['A', 'B'], ['C', 'D']];
    // Only ranges that include leg B–C, so every two of them overlap.
    const overlapping = ranges.filter(([from, to]) => from <= 'B' && to >= 'C');
    const responses = await Promise.all(
      Array.from({ length: 50 }, (_, i) => {
        const [fromStop, toStop] = overlapping[i % overlapping.length] ?? ['A', 'D'];
        return postJson(server.port, '/api/bookings', { showId: trip.id, seatLabels: ['Deck-1-1'], fromStop, toStop, customer: customer() });
      }),
    );
    expect(responses.filter((r) => r.status === 201)).toHaveLength(1);
    expect(responses.filter((r) => r.status === 409)).toHaveLength(49);
    expect(await winners(pool, trip.id, responses)).toHaveLength(1);
  });

  it('bookings of legs that do not overlap all win, concurrently', async () => {
    const trip = await createTrip();
    const legs: Array<[string, string]> = [['A', 'B'], ['B', 'C'], ['C', 'D']];
    const responses = await Promise.all(
      Array.from({ length: 24 }, (_, i) => {
        const [fromStop, toStop] = legs[i % 3] ?? ['A', 'B'];
        const seat = `Deck-${1 + Math.floor(i / 12)}-${1 + (Math.floor(i / 3) % 4)}`;
        return postJson(server.port, '/api/bookings', { showId: trip.id, seatLabels: [seat], fromStop, toStop, customer: customer() });
      }),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(24).fill(201));
    expect(await doubleBookedSeats(pool, trip.id)).toEqual([]);
    expect((await statuses(trip.id, 'A', 'B'))['Deck-2-4']).toBe('booked');
  });

  it('the exclusion constraint refuses overlapping legs written around the function, and allows adjacent ones', async () => {
    const trip = await createTrip();
    const booking: Booking = (await book(trip.id, ['Deck-2-4'], 'A', 'C').expect(201)).body;
    const seatId = booking.seats[0]?.id;
    const client = await pool.connect();
    try {
      await client.query('begin');
      const { rows } = await client.query<{ id: string }>(
        `insert into app.bookings (show_id, status, legs, customer_name, customer_email) values ($1, 'confirmed', int4range(0, 3), 'Bug', 'bug@example.com') returning id`,
        [trip.id],
      );
      const insert = (legs: string) =>
        client.query(`insert into app.booking_seats (booking_id, seat_id, show_id, legs, price, active) values ($1, $2, $3, $4::int4range, 0, true)`, [
          rows[0]?.id,
          seatId,
          trip.id,
          legs,
        ]);
      await client.query('savepoint adjacent');
      await insert('[2,3)');
      await client.query('rollback to savepoint adjacent');
      await expect(insert('[1,3)')).rejects.toMatchObject({ code: '23P01' });
    } finally {
      await client.query('rollback');
      client.release();
    }
  });
});

it('a trip created before trips had stops is listed with no stops, within the contract', async () => {
  // As the first version stored a trip: one leg, no stops.
  const trip = await createTrip({ stops: [{ name: 'A', departsAt: '2099-06-01T08:00:00Z' }, { name: 'B', departsAt: '2099-06-01T09:00:00Z' }] });
  await pool.query('delete from app.show_stops where show_id = $1', [trip.id]);
  const show = await request(app).get(`/api/shows/${trip.id}`).expect(200);
  expect(show.body.stops).toEqual([]);
  const listed = await request(app).get('/api/shows').query({ kind: 'trip', startsFrom: '2099-06-01T08:00:00Z', startsBefore: '2099-06-01T08:00:01Z' }).expect(200);
  expect(listed.body.items.find((item: { id: string }) => item.id === trip.id)?.stops).toEqual([]);
  await book(trip.id, ['Deck-1-1']).expect(201);
});

describe('bad stops get a 400 problem and write nothing', () => {
  async function tripCount(name: string): Promise<number> {
    const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from app.shows where name = $1', [name]);
    return rows[0]?.n ?? -1;
  }

  it.each([
    ['a trip with one stop', (t: NewShow) => ({ ...t, stops: t.stops?.slice(0, 1) }), '/problems/validation-failed'],
    ['a trip with no stops', ({ stops: _stops, ...t }: NewShow) => ({ ...t, startsAt: '2099-05-01T08:00:00Z' }), '/problems/invalid-stops'],
    ['a show with stops', (t: NewShow) => ({ ...t, kind: 'show' }), '/problems/invalid-stops'],
    ['a stop listed twice', (t: NewShow) => ({ ...t, stops: [...(t.stops ?? []), { name: 'B', departsAt: '2099-05-01T12:00:00Z' }] }), '/problems/invalid-stops'],
    ['stops out of order', (t: NewShow) => ({ ...t, stops: [...(t.stops ?? [])].reverse() }), '/problems/invalid-stops'],
    ['a startsAt other than the first departure', (t: NewShow) => ({ ...t, startsAt: '2099-04-30T08:00:00Z' }), '/problems/invalid-stops'],
    ['a show without startsAt', ({ stops: _stops, ...t }: NewShow) => ({ ...t, kind: 'show' }), '/problems/validation-failed'],
  ])('creating %s', async (_what, change, type) => {
    const spec = coach();
    const response = await request(app).post('/api/shows').set(admin).send(change(spec)).expect(400);
    expect(response.body.type).toBe(type);
    expect(await tripCount(spec.name)).toBe(0);
  });

  it.each([
    ['an unknown stop', 'A', 'Z'],
    ['from after to', 'C', 'A'],
    ['from equal to to', 'B', 'B'],
  ])('booking with %s', async (_what, fromStop, toStop) => {
    const trip = await createTrip();
    const who = customer();
    const response = await request(app)
      .post('/api/bookings')
      .send({ showId: trip.id, seatLabels: ['Deck-1-1'], fromStop, toStop, customer: who })
      .expect(400);
    expect(response.body.type).toBe('/problems/invalid-stops');
    const { rows } = await pool.query('select 1 from app.bookings where show_id = $1', [trip.id]);
    expect(rows).toHaveLength(0);
    await request(app).get(`/api/shows/${trip.id}/seats`).query({ from: fromStop, to: toStop }).expect(400);
  });

  it('names the unknown stop, and refuses stops for a show', async () => {
    const trip = await createTrip();
    const response = await request(app).get(`/api/shows/${trip.id}/seats?from=Paris`).expect(400);
    expect(response.body.unknownStops).toEqual(['Paris']);
    const show = (await request(app).post('/api/shows').set(admin).send(theatre()).expect(201)).body;
    await request(app).get(`/api/shows/${show.id}/seats?from=A&to=B`).expect(400);
    await request(app).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-1'], fromStop: 'A', customer: customer() }).expect(400);
  });
});
