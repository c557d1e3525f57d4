// Standing areas sold by capacity: never oversold under a stampede of
// separate connections that really commit, atomic with seats, and served by
// holds, expiry, legs, retries, cancel, the seat map and the event log.
import type pg from 'pg';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { areaCountMismatches, doubleBookedSeats } from '../bench/invariants.js';
import { defaultBookingLimits } from '../src/config.js';
import type { components } from '../src/generated/api.js';
import { TicketKeys } from '../src/ticket-codes.js';
import {
  admin,
  bookingCounts,
  createShow,
  customer,
  door,
  owner,
  testApp,
  testPool,
  theatre,
  type Booking,
  type CreatedBooking,
  type NewShow,
  type SeatMap,
  withClients,
} from './support.js';

const pool = testPool(20);
const app = await testApp(pool);

function concert(capacity: number, overrides: Partial<NewShow> = {}): NewShow {
  return theatre({
    categories: [
      { code: 'standard', price: 2500 },
      { code: 'premium', price: 5000 },
      { code: 'standing', price: 2000 },
    ],
    areas: [{ name: 'Floor', category: 'standing', capacity }],
    ...overrides,
  });
}

/** A trip of two legs, a small saloon and a standing deck area. */
function ferry(area: { name: string; capacity: number }): NewShow {
  return {
    kind: 'trip',
    name: 'Ferry',
    venue: 'Harbour',
    currency: 'EUR',
    stops: [
      { name: 'Calais', departsAt: '2099-05-01T08:00:00Z' },
      { name: 'Dover', departsAt: '2099-05-01T09:30:00Z' },
      { name: 'London', departsAt: '2099-05-01T11:30:00Z' },
    ],
    categories: [
      { code: 'standard', price: 1000 },
      { code: 'deck', price: 300 },
    ],
    sections: [{ name: 'Saloon', rows: [{ label: 'A', seats: 2, category: 'standard' }] }],
    areas: [{ ...area, category: 'deck' }],
  };
}

function book(body: Record<string, unknown>) {
  return request(app).post('/api/bookings').send({ customer: customer(), ...body });
}

async function areaRoom(showId: string, query: Record<string, string> = {}) {
  const map: SeatMap = (await request(app).get(`/api/shows/${showId}/seats`).query(query).expect(200)).body;
  return map.areas?.find((area) => area.name === 'Floor');
}


async function bookInSql(client: pg.Client | pg.Pool, body: Record<string, unknown>): Promise<Booking> {
  const { rows } = await client.query<{ result: { booking: Booking } }>('select app.create_booking($1) as result', [
    { customer: customer(), ...body },
  ]);
  const booking = rows[0]?.result.booking;
  if (!booking) throw new Error('no booking returned');
  return booking;
}

async function activeUnits(showId: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    `select count(*)::int as n from app.booking_seats bs join app.seats s on s.id = bs.seat_id
     where bs.show_id = $1 and bs.active and s.standing`,
    [showId],
  );
  return rows[0]?.n ?? -1;
}

describe('a standing area in a layout', () => {
  it('is created with the show, beside its sections, and listed with its capacity', async () => {
    const show = await createShow(app, concert(300));
    expect(show.areas).toEqual([{ name: 'Floor', category: 'standing', capacity: 300 }]);
    expect(show.seatCount).toBe(10);
    expect(show.sections.map((section) => section.name)).toEqual(['Stalls']);
    expect(await areaRoom(show.id)).toEqual({ name: 'Floor', category: 'standing', price: 2000, capacity: 300, available: 300, held: 0, booked: 0 });
    const map: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).body;
    expect(map.counts.total).toBe(10);
    expect(map.seats).toHaveLength(10);
  });

  it('may be the whole layout of a standing concert, with no seats', async () => {
    const { sections: _sections, ...standingOnly } = concert(40);
    const show = await createShow(app, standingOnly);
    expect(show).toMatchObject({ seatCount: 0, sections: [], areas: [{ name: 'Floor', capacity: 40 }] });
    await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 4 }] }).expect(201);
    const map: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).body;
    expect(map).toMatchObject({ counts: { total: 0 }, seats: [], areas: [{ name: 'Floor', available: 36, booked: 4 }] });
    const { areas: _areas, ...nothing } = standingOnly;
    const empty = await request(app).post('/api/shows').set(admin).send(nothing).expect(422);
    expect(empty.body).toMatchObject({ type: '/problems/invalid-layout', field: 'sections' });
  });

  it('is refused when it shares a section name, names no category of the show, or is defined twice', async () => {
    for (const areas of [
      [{ name: 'Stalls', category: 'standing', capacity: 5 }],
      [{ name: 'Floor', category: 'vip', capacity: 5 }],
      [{ name: 'Floor', category: 'standing', capacity: 5 }, { name: 'Floor', category: 'standing', capacity: 5 }],
    ]) {
      const response = await request(app).post('/api/shows').set(admin).send(concert(5, { areas })).expect(422);
      expect(response.body).toMatchObject({ type: '/problems/invalid-layout', field: 'areas' });
    }
    await request(app).post('/api/shows').set(admin).send(concert(0)).expect(400);
  });
});

describe('a booking of an area', () => {
  it('is priced per admission, is read back with its secret and listed for the admin', async () => {
    const show = await createShow(app, concert(50));
    const created: CreatedBooking = (await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 3 }] }).expect(201)).body;
    expect(created).toMatchObject({ status: 'confirmed', seats: [], totalPrice: 6000, areas: [{ name: 'Floor', category: 'standing', quantity: 3, price: 6000 }] });
    const read = (await request(app).get(`/api/bookings/${created.id}`).set(owner(created)).expect(200)).body;
    expect(read.areas).toEqual(created.areas);
    const listed = (await request(app).get(`/api/shows/${show.id}/bookings`).set(admin).expect(200)).body;
    expect(listed.items.map((item: Booking) => item.areas)).toEqual([created.areas]);
    expect(await areaRoom(show.id)).toMatchObject({ available: 47, booked: 3, held: 0 });
  });

  it('refuses bad quantities, an area named twice, an unknown area and too many admissions, writing nothing', async () => {
    const show = await createShow(app, concert(50));
    for (const areas of [[{ name: 'Floor', quantity: 0 }], [{ name: 'Floor', quantity: -1 }], [{ name: 'Floor' }], []]) {
      const response = await book({ showId: show.id, areas }).expect(400);
      expect(response.body.type).toBe('/problems/validation-failed');
    }
    await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 1 }, { name: 'Floor', quantity: 2 }] }).expect(400);
    const unknown = await book({ showId: show.id, areas: [{ name: 'Terrace', quantity: 1 }] }).expect(422);
    expect(unknown.body).toMatchObject({ type: '/problems/unknown-area', unknownAreas: ['Terrace'] });
    // Admissions count with seats against the per-booking limit.
    const many = await book({ showId: show.id, seatLabels: ['Stalls-A-1'], areas: [{ name: 'Floor', quantity: 10 }] }).expect(400);
    expect(many.body).toMatchObject({ type: '/problems/too-many-seats', maxSeats: 10 });
    expect(await bookingCounts(pool, show.id)).toEqual({});
  });

  it('goes with seats by id, by label or best available, and with at most one of them', async () => {
    const show = await createShow(app, concert(50));
    const floor = [{ name: 'Floor', quantity: 1 }];
    const picked = await book({ showId: show.id, quantity: 1, areas: floor }).expect(201);
    expect(picked.body).toMatchObject({ seats: [{ section: 'Stalls' }], areas: [{ name: 'Floor', quantity: 1 }] });
    await book({ showId: show.id, seatIds: [picked.body.seats[0].id + 1], areas: floor }).expect(201);
    for (const body of [{ seatLabels: ['Stalls-B-1'], quantity: 1, areas: floor }, { seatLabels: ['Stalls-B-1'], seatIds: [1] }, {}]) {
      const response = await book({ showId: show.id, ...body }).expect(400);
      expect(response.body.type).toBe('/problems/validation-failed');
    }
    expect(await bookingCounts(pool, show.id)).toEqual({ confirmed: 2 });
  });

  it('answers area-full with the failed booking when fewer are left than asked', async () => {
    const show = await createShow(app, concert(4));
    await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 3 }] }).expect(201);
    const refused = await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 2 }] }).expect(409);
    expect(refused.body).toMatchObject({
      type: '/problems/area-full',
      unavailableAreas: ['Floor'],
      booking: { status: 'failed', failureReason: 'area-full', areas: [{ name: 'Floor', quantity: 2 }], totalPrice: 0 },
    });
    await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 1 }] }).expect(201);
    expect(await areaRoom(show.id)).toMatchObject({ available: 0, booked: 4 });
  });
});

describe('a stampede on one area', () => {
  it('sells exactly its capacity of 100 to 1,000 concurrent requests on 100 separate connections', async () => {
    const show = await createShow(app, concert(100));
    const results = await withClients(100, async (client) => {
      const mine: Booking[] = [];
      for (let i = 0; i < 10; i += 1) mine.push(await bookInSql(client, { showId: show.id, areas: [{ name: 'Floor', quantity: 1 }] }));
      return mine;
    });
    const all = results.flat();
    expect(all).toHaveLength(1000);
    expect(all.filter((b) => b.status === 'confirmed')).toHaveLength(100);
    expect(all.filter((b) => b.status === 'failed').every((b) => b.failureReason === 'area-full')).toBe(true);
    expect(await bookingCounts(pool, show.id)).toEqual({ confirmed: 100, failed: 900 });
    expect(await activeUnits(show.id)).toBe(100);
    expect(await doubleBookedSeats(pool, show.id)).toEqual([]);
    expect(await areaCountMismatches(pool, show.id)).toEqual([]);
    expect(await areaRoom(show.id)).toMatchObject({ capacity: 100, available: 0, booked: 100 });
  });

  it('never sells more than the capacity to orders of different sizes at once', async () => {
    const show = await createShow(app, concert(30));
    const all = await withClients(60, (client, i) => bookInSql(client, { showId: show.id, areas: [{ name: 'Floor', quantity: 1 + (i % 3) }] }));
    const sold = all.filter((b) => b.status === 'confirmed').reduce((sum, b) => sum + (b.areas?.[0]?.quantity ?? 0), 0);
    expect(sold).toBeLessThanOrEqual(30);
    // Only orders larger than what was left may fail.
    expect(sold).toBeGreaterThanOrEqual(28);
    expect(await activeUnits(show.id)).toBe(sold);
    expect(await doubleBookedSeats(pool, show.id)).toEqual([]);
    expect(await areaCountMismatches(pool, show.id)).toEqual([]);
  });
});

describe('an order of seats and standing admissions', () => {
  it('books nothing when a seat is taken, and nothing when the area is full', async () => {
    const show = await createShow(app, concert(2));
    await book({ showId: show.id, seatLabels: ['Stalls-A-1'] }).expect(201);
    const seatTaken = await book({ showId: show.id, seatLabels: ['Stalls-A-1', 'Stalls-A-2'], areas: [{ name: 'Floor', quantity: 2 }] }).expect(409);
    expect(seatTaken.body.booking).toMatchObject({ status: 'failed', failureReason: 'seats-unavailable' });
    expect(await areaRoom(show.id)).toMatchObject({ available: 2 });
    const areaFull = await book({ showId: show.id, seatLabels: ['Stalls-A-2'], areas: [{ name: 'Floor', quantity: 3 }] }).expect(409);
    expect(areaFull.body.booking).toMatchObject({ status: 'failed', failureReason: 'area-full' });
    const map: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).body;
    expect(map.seats.find((seat) => seat.label === 'Stalls-A-2')?.status).toBe('available');
    const both = await book({ showId: show.id, seatLabels: ['Stalls-A-2'], areas: [{ name: 'Floor', quantity: 2 }] }).expect(201);
    expect(both.body).toMatchObject({ totalPrice: 5000 + 4000, seats: [{ label: 'Stalls-A-2' }], areas: [{ name: 'Floor', quantity: 2 }] });
  });

  it('is all or nothing when raced on separate connections, with best available seats too', async () => {
    const show = await createShow(app, concert(12));
    const labels = ['Stalls-B-1', 'Stalls-B-2', 'Stalls-B-3', 'Stalls-B-4', 'Stalls-B-5', 'Stalls-B-6'];
    const all = await withClients(40, (client, i) =>
      bookInSql(client, {
        showId: show.id,
        ...(i % 4 === 3 ? { quantity: 1, section: 'Stalls' } : { seatLabels: [labels[i % labels.length]] }),
        areas: [{ name: 'Floor', quantity: 1 + (i % 2) }],
      }),
    );
    const won = all.filter((b) => b.status === 'confirmed');
    expect(won.length).toBeGreaterThan(0);
    for (const b of won) {
      expect(b.seats).toHaveLength(1);
      expect(b.areas?.[0]?.quantity).toBeGreaterThan(0);
    }
    const admitted = won.reduce((sum, b) => sum + (b.areas?.[0]?.quantity ?? 0), 0);
    expect(admitted).toBeLessThanOrEqual(12);
    expect(await activeUnits(show.id)).toBe(admitted);
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from app.booking_seats bs join app.seats s on s.id = bs.seat_id
       where bs.show_id = $1 and bs.active and not s.standing`,
      [show.id],
    );
    expect(rows[0]?.n).toBe(won.length);
    // A failed booking holds nothing.
    const { rows: failedRows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from app.booking_seats bs join app.bookings b on b.id = bs.booking_id
       where b.show_id = $1 and b.status = 'failed'`,
      [show.id],
    );
    expect(failedRows[0]?.n).toBe(0);
    expect(await doubleBookedSeats(pool, show.id)).toEqual([]);
    expect(await areaCountMismatches(pool, show.id)).toEqual([]);
  });
});

describe('holds of an area', () => {
  it('show as held, and free their room the instant they expire, before any sweep', async () => {
    const show = await createShow(app, concert(3));
    const held: CreatedBooking = (await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 3 }], hold: true, holdSeconds: 1 }).expect(201)).body;
    expect(held.status).toBe('pending');
    expect(await areaRoom(show.id)).toMatchObject({ available: 0, held: 3 });
    await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 1 }] }).expect(409);
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    expect(await areaRoom(show.id)).toMatchObject({ available: 3, held: 0 });
    const next = await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 3 }] }).expect(201);
    expect(next.body.status).toBe('confirmed');
    // The booker that took the lapsed hold's units recorded it as expired.
    expect((await request(app).get(`/api/bookings/${held.id}`).set(owner(held)).expect(200)).body.status).toBe('expired');
    expect(await bookingCounts(pool, show.id)).toMatchObject({ expired: 1, confirmed: 1 });
  });

  it('confirm to booked, and cancel frees the room at once', async () => {
    const show = await createShow(app, concert(2));
    const held: CreatedBooking = (await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 2 }], hold: true }).expect(201)).body;
    await request(app).post(`/api/bookings/${held.id}/confirm`).set(owner(held)).send({}).expect(200);
    expect(await areaRoom(show.id)).toMatchObject({ available: 0, booked: 2, held: 0 });
    await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 1 }] }).expect(409);
    const cancelled = await request(app).post(`/api/bookings/${held.id}/cancel`).set(owner(held)).send({ reason: 'Cannot come' }).expect(200);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', areas: [{ name: 'Floor', quantity: 2 }] });
    expect(await areaRoom(show.id)).toMatchObject({ available: 2, booked: 0 });
    await book({ showId: show.id, areas: [{ name: 'Floor', quantity: 2 }] }).expect(201);
  });

  const limits = { ...defaultBookingLimits, holds: { seatsPerClient: 0, seatsPerEmail: 3, holdsPerClient: 0 } };
  const limitedApp = testApp(pool, { bookingLimits: limits });

  it('count admissions against the hold limits like seats', async () => {
    const limited = await limitedApp;
    const show = await createShow(limited, concert(20));
    const who = customer();
    await request(limited).post('/api/bookings').send({ showId: show.id, areas: [{ name: 'Floor', quantity: 2 }], hold: true, customer: who }).expect(201);
    const refused = await request(limited)
      .post('/api/bookings')
      .send({ showId: show.id, seatLabels: ['Stalls-A-1'], areas: [{ name: 'Floor', quantity: 1 }], hold: true, customer: who })
      .expect(409);
    expect(refused.body).toMatchObject({ type: '/problems/hold-limit-reached', limitScope: 'seats-per-email', limit: 3, held: 2 });
  });
});

describe('an area on a trip', () => {
  const trip = ferry({ name: 'Deck', capacity: 2 });

  it('is sold per leg: full on one leg, free on the next', async () => {
    const show = await createShow(app, trip);
    const first = await book({ showId: show.id, areas: [{ name: 'Deck', quantity: 2 }], fromStop: 'Calais', toStop: 'Dover' }).expect(201);
    expect(first.body.areas).toEqual([{ name: 'Deck', category: 'deck', quantity: 2, price: 600 }]);
    await book({ showId: show.id, areas: [{ name: 'Deck', quantity: 1 }], fromStop: 'Calais', toStop: 'London' }).expect(409);
    const deck = async (from: string, to: string) =>
      ((await request(app).get(`/api/shows/${show.id}/seats`).query({ from, to }).expect(200)).body as SeatMap).areas?.[0];
    expect(await deck('Calais', 'Dover')).toMatchObject({ available: 0, booked: 2 });
    expect(await deck('Dover', 'London')).toMatchObject({ available: 2, booked: 0 });
    const second = await book({ showId: show.id, areas: [{ name: 'Deck', quantity: 2 }], fromStop: 'Dover', toStop: 'London' }).expect(201);
    expect(second.body.areas[0].price).toBe(600);
    expect(await deck('Calais', 'London')).toMatchObject({ available: 0, booked: 2 });
    expect(await doubleBookedSeats(pool, show.id)).toEqual([]);
    expect(await areaCountMismatches(pool, show.id)).toEqual([]);
  });
});

describe('a large area', () => {
  /**
   * What seven claims of one admission read, as the server counts them:
   * pages, and rows of booking_seats fetched in the transaction (pages
   * undercount a read of many bookings in a row, whose neighbours share a
   * page). Each sorted; each claim is given back. The first call of the
   * transaction plans the function's statements, so it is left out.
   */
  async function claimReads(showId: string): Promise<{ pages: number[]; rows: number[] }> {
    const [reads] = await withClients(1, async (client) => {
      await client.query('begin');
      try {
        const fetched = async () =>
          Number(
            (await client.query<{ n: string }>(`select pg_stat_get_xact_tuples_fetched('app.booking_seats'::regclass) as n`))
              .rows[0]?.n,
          );
        const pages: number[] = [];
        const rows: number[] = [];
        for (let i = 0; i < 8; i += 1) {
          const before = await fetched();
          const { rows: explained } = await client.query<{ 'QUERY PLAN': [{ Plan: { 'Shared Hit Blocks': number; 'Shared Read Blocks': number } }] }>(
            `explain (analyze, buffers, format json) select app.claim_area_units($1, 'Floor', 1, int4range(0, 1))`,
            [showId],
          );
          const plan = explained[0]?.['QUERY PLAN'][0].Plan;
          if (i > 0 && plan) {
            pages.push(plan['Shared Hit Blocks'] + plan['Shared Read Blocks']);
            rows.push((await fetched()) - before);
          }
        }
        return { pages: pages.sort((a, b) => a - b), rows: rows.sort((a, b) => a - b) };
      } finally {
        await client.query('rollback');
      }
    });
    expect(reads?.pages).toHaveLength(7);
    return reads ?? { pages: [], rows: [] };
  }

  /** Books `orders` orders of ten admissions on each of `connections` separate connections. */
  async function fill(showId: string, connections: number, orders: number, legs: Record<string, string> = {}): Promise<Booking[]> {
    const results = await withClients(connections, async (client) => {
      const mine: Booking[] = [];
      for (let i = 0; i < orders; i += 1) mine.push(await bookInSql(client, { showId, areas: [{ name: 'Floor', quantity: 10 }], ...legs }));
      return mine;
    });
    return results.flat();
  }

  it('sells exactly its capacity of 2,000 to orders of ten on 20 separate connections', async () => {
    const show = await createShow(app, concert(2000));
    const all = await fill(show.id, 20, 11);
    expect(all.filter((b) => b.status === 'confirmed')).toHaveLength(200);
    expect(all.filter((b) => b.status === 'failed').every((b) => b.failureReason === 'area-full')).toBe(true);
    expect(await activeUnits(show.id)).toBe(2000);
    expect(await doubleBookedSeats(pool, show.id)).toEqual([]);
    expect(await areaCountMismatches(pool, show.id)).toEqual([]);
    expect(await areaRoom(show.id)).toMatchObject({ capacity: 2000, available: 0, booked: 2000 });
    expect((await bookInSql(pool, { showId: show.id, areas: [{ name: 'Floor', quantity: 1 }] })).failureReason).toBe('area-full');
    // Full, it answers from its ledger of taken units, once the sweep (each
    // second in the service) has folded the rows of the sale: counting its
    // 2,000 bookings read about 300 pages.
    await pool.query('select app.sweep()');
    const { pages } = await claimReads(show.id);
    expect(pages[3]).toBeLessThan(40);
  });

  it('finds room for an admission in a few pages while half full, not in a read of all its bookings', async () => {
    const show = await createShow(app, concert(5000));
    expect((await fill(show.id, 25, 10)).every((b) => b.status === 'confirmed')).toBe(true);
    // Counting every booking of the half-full area alone read about 800
    // pages.
    const { pages } = await claimReads(show.id);
    expect(pages[3]).toBeLessThan(250);
  });

  it('finds the last free units of a nearly full area without reading all its bookings', async () => {
    const show = await createShow(app, concert(40000));
    expect((await fill(show.id, 20, 198)).every((b) => b.status === 'confirmed')).toBe(true);
    // 400 units left, and the sweep has folded the sale's ledger rows.
    await pool.query('select app.sweep()');
    // Reading every booking of the area to find them read 39,856 rows a
    // claim; the looks at 128 units read 256.
    const { rows } = await claimReads(show.id);
    expect(rows[3]).toBeLessThan(2000);
    // The last ones too, and then it is full.
    const rest = await fill(show.id, 4, 10);
    expect(rest.every((b) => b.status === 'confirmed')).toBe(true);
    expect(await activeUnits(show.id)).toBe(40000);
    expect((await bookInSql(pool, { showId: show.id, areas: [{ name: 'Floor', quantity: 1 }] })).failureReason).toBe('area-full');
    expect(await doubleBookedSeats(pool, show.id)).toEqual([]);
    expect(await areaCountMismatches(pool, show.id)).toEqual([]);
  });

  it('lists the first free units from any unit on, and all of them when fewer are asked than there are', async () => {
    const show = await createShow(app, concert(1200));
    await fill(show.id, 4, 25);
    const { rows } = await pool.query<{ first: string; last: string }>(
      `select first_unit_id as first, last_unit_id as last from app.areas where show_id = $1`,
      [show.id],
    );
    const first = Number(rows[0]?.first);
    const last = Number(rows[0]?.last);
    const free = async (start: number, want: number) =>
      (
        await pool.query<{ units: string[] | null }>(
          `select app.free_units($1, $2, int4range(0, 1), clock_timestamp(), $3, $4) as units`,
          [first, last, start, want],
        )
      ).rows[0]?.units?.map(Number) ?? [];
    const { rows: taken } = await pool.query<{ id: string }>(
      `select seat_id as id from app.booking_seats where show_id = $1 and active`,
      [show.id],
    );
    const takenIds = new Set(taken.map((r) => Number(r.id)));
    const all = Array.from({ length: last - first + 1 }, (_, i) => first + i).filter((u) => !takenIds.has(u));
    expect(all).toHaveLength(200);
    expect(await free(first, 10_000)).toEqual(all);
    for (const start of [first, first + 1, first + 517, last - 1, last]) {
      const expected = [...all.filter((u) => u >= start), ...all.filter((u) => u < start)].slice(0, 7).sort((a, b) => a - b);
      expect(await free(start, 7)).toEqual(expected);
    }
  });

  it('is full while holds fill it, and sells their units the instant they lapse', async () => {
    const show = await createShow(app, concert(1100));
    const held = await withClients(10, async (client) => {
      const mine: Booking[] = [];
      for (let i = 0; i < 11; i += 1) {
        mine.push(await bookInSql(client, { showId: show.id, areas: [{ name: 'Floor', quantity: 10 }], hold: true, holdSeconds: 5 }));
      }
      return mine;
    });
    expect(held.flat().every((b) => b.status === 'pending')).toBe(true);
    // Five seconds leave a loaded machine time to take all 110 holds first.
    expect((await bookInSql(pool, { showId: show.id, areas: [{ name: 'Floor', quantity: 1 }] })).failureReason).toBe('area-full');
    const lapse = Math.max(...held.flat().map((b) => Date.parse(b.expiresAt ?? '')));
    await new Promise((resolve) => setTimeout(resolve, lapse - Date.now() + 200));
    const after = await fill(show.id, 10, 2);
    expect(after.every((b) => b.status === 'confirmed')).toBe(true);
    // A booker that took a lapsed hold's units recorded that hold as
    // expired, which freed all ten of its units: the 200 units sold were
    // in at least 20 expired holds, and only the holds still pending keep
    // theirs.
    const counts = await bookingCounts(pool, show.id);
    expect(counts.confirmed).toBe(20);
    expect(counts.expired).toBeGreaterThanOrEqual(20);
    expect((counts.pending ?? 0) + (counts.expired ?? 0)).toBe(110);
    expect(await activeUnits(show.id)).toBe(200 + 10 * (counts.pending ?? 0));
    expect(await doubleBookedSeats(pool, show.id)).toEqual([]);
    expect(await areaCountMismatches(pool, show.id)).toEqual([]);
  });

  it('on a trip, is full on a leg whose every unit is taken and has room on the next', async () => {
    const show = await createShow(app, ferry({ name: 'Floor', capacity: 1100 }));
    const firstLeg = await fill(show.id, 10, 11, { fromStop: 'Calais', toStop: 'Dover' });
    expect(firstLeg.every((b) => b.status === 'confirmed')).toBe(true);
    const across = await bookInSql(pool, { showId: show.id, areas: [{ name: 'Floor', quantity: 1 }], fromStop: 'Calais', toStop: 'London' });
    expect(across.failureReason).toBe('area-full');
    const secondLeg = await fill(show.id, 10, 11, { fromStop: 'Dover', toStop: 'London' });
    expect(secondLeg.every((b) => b.status === 'confirmed')).toBe(true);
    expect(await activeUnits(show.id)).toBe(2200);
    expect(await doubleBookedSeats(pool, show.id)).toEqual([]);
    expect(await areaCountMismatches(pool, show.id)).toEqual([]);
  });
});

describe('a retried booking of an area', () => {
  it('with the same Idempotency-Key answers the original and takes no more room', async () => {
    const show = await createShow(app, concert(10));
    const body = { showId: show.id, areas: [{ name: 'Floor', quantity: 4 }], customer: customer() };
    const key = crypto.randomUUID();
    const first = await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(201);
    const again = await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toEqual(first.body);
    expect(await activeUnits(show.id)).toBe(4);
    expect(await areaRoom(show.id)).toMatchObject({ available: 6 });
  });
});

describe('the event log of an area', () => {
  it('counts admissions per area, public without booking ids, the admin history with them', async () => {
    const show = await createShow(app, concert(10));
    const held: CreatedBooking = (await book({ showId: show.id, seatLabels: ['Stalls-A-1'], areas: [{ name: 'Floor', quantity: 3 }], hold: true }).expect(201)).body;
    await request(app).post(`/api/bookings/${held.id}/cancel`).set(owner(held)).send({}).expect(200);
    let items: Array<Record<string, unknown>> = [];
    for (let tries = 0; tries < 50 && items.length < 2; tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      items = (await request(app).get(`/api/shows/${show.id}/events`).expect(200)).body.items;
    }
    expect(items.map((item) => [item.type, item.areas, (item.seats as Array<{ label: string }>).map((seat) => seat.label)])).toEqual([
      ['held', [{ name: 'Floor', quantity: 3 }], ['Stalls-A-1']],
      ['released', [{ name: 'Floor', quantity: 3 }], ['Stalls-A-1']],
    ]);
    for (const item of items) expect(item).not.toHaveProperty('bookingId');
    const history = (await request(app).get(`/api/shows/${show.id}/events`).set(admin).expect(200)).body.items;
    expect(history[0]).toMatchObject({ bookingId: held.id, areas: [{ name: 'Floor', quantity: 3 }] });
  });
});

describe('tickets for standing admissions', () => {
  it('gives one ticket per admission, named by its area without a row, admitted once at the door and counted per area in the admin history', async () => {
    const ticketing = await testApp(pool, { ticketKeys: new TicketKeys(TicketKeys.generatePem()) });
    const show = await createShow(ticketing, concert(10));
    const booking: CreatedBooking = (
      await request(ticketing)
        .post('/api/bookings')
        .send({ showId: show.id, seatLabels: ['Stalls-A-1'], areas: [{ name: 'Floor', quantity: 2 }], customer: customer() })
        .expect(201)
    ).body;
    const list: components['schemas']['TicketList'] = (
      await request(ticketing).get(`/api/bookings/${booking.id}/tickets`).set(owner(booking)).expect(200)
    ).body;
    expect(list.tickets).toHaveLength(3);
    const standing = list.tickets.filter((ticket) => ticket.seat.section === 'Floor');
    expect(standing).toHaveLength(2);
    for (const ticket of standing) {
      expect(ticket.seat).not.toHaveProperty('row');
      expect(ticket.seat.label).toMatch(/^Floor-\d+$/);
      expect(ticket).toMatchObject({ status: 'valid', seat: { category: 'standing' } });
    }
    const path = `/api/shows/${show.id}/check-ins`;
    const scan = { code: standing[0]?.code, gate: 'North', scannedAt: new Date().toISOString() };
    const first = await request(ticketing).post(path).set(door).send(scan).expect(200);
    expect(first.body).toMatchObject({ outcome: 'admitted', seat: { label: standing[0]?.seat.label } });
    await request(ticketing).post(path).set(door).send({ ...scan, gate: 'South' }).expect(409);

    let history: Array<Record<string, unknown>> = [];
    for (let tries = 0; tries < 50 && !history.some((item) => item.type === 'admitted'); tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      history = (await request(ticketing).get(`/api/shows/${show.id}/events`).set(admin).expect(200)).body.items;
    }
    expect(history.find((item) => item.type === 'admitted')).toMatchObject({
      bookingId: booking.id,
      gate: 'North',
      seats: [],
      areas: [{ name: 'Floor', quantity: 1 }],
    });
    const feed: Array<Record<string, unknown>> = (await request(ticketing).get(`/api/shows/${show.id}/events`).expect(200)).body.items;
    expect(feed.map((item) => item.type)).toEqual(['booked']);
  });
});

describe('every standing area', () => {
  it('has a ledger of taken units that sums to its active bookings, after all of the above', async () => {
    expect(await areaCountMismatches(pool)).toEqual([]);
  });
});
