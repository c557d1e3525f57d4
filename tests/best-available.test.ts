import pg from 'pg';
import request from 'supertest';
import { describe, expect, inject, it } from 'vitest';
import {
  createShow,
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
} from './support.js';
import { BestAvailableRankings } from '../src/best-available.js';

const pool = testPool(40);
const app = await testApp(pool);
const server = serve(app);

function bestAvailable(showId: string, quantity: number, extra: object = {}) {
  return request(app).post('/api/bookings').send({ showId, quantity, customer: customer(), ...extra });
}

const labels = (booking: Booking) => booking.seats.map((seat) => seat.label);

/** Longest run of adjacent available seats in each row of a section. */
async function longestFreeRun(showId: string, section: string): Promise<number> {
  const map: SeatMap = (await request(app).get(`/api/shows/${showId}/seats`).expect(200)).body;
  let longest = 0;
  let run = 0;
  let row = '';
  for (const seat of map.seats.filter((s) => s.section === section)) {
    if (seat.row !== row) {
      row = seat.row;
      run = 0;
    }
    run = seat.status === 'available' ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return longest;
}

const arena = (sections: NewShow['sections'], categories: NewShow['categories'] = [{ code: 'standard', price: 2000 }]) =>
  theatre({ categories, sections });

describe('best available', () => {
  it('picks adjacent seats in the front row, centred', async () => {
    const show = await createShow(app, arena([{ name: 'Hall', rows: [{ label: 'A', seats: 10, category: 'standard' }, { label: 'B', seats: 10, category: 'standard' }] }]));
    expect(labels((await bestAvailable(show.id, 2).expect(201)).body)).toEqual(['Hall-A-5', 'Hall-A-6']);
    // Row A's edges are farther from the front-centre than the middle of row B.
    expect(labels((await bestAvailable(show.id, 4).expect(201)).body)).toEqual(['Hall-B-4', 'Hall-B-5', 'Hall-B-6', 'Hall-B-7']);
    // Any three of row A's runs of four would strand one seat; B-1..3 fills a run exactly.
    expect(labels((await bestAvailable(show.id, 3).expect(201)).body)).toEqual(['Hall-B-1', 'Hall-B-2', 'Hall-B-3']);
  });

  it('avoids leaving a single orphan seat where another choice exists', async () => {
    const show = await createShow(app, arena([{ name: 'Hall', rows: [{ label: 'A', seats: 5, category: 'standard' }, { label: 'B', seats: 8, category: 'standard' }] }]));
    // Four of row A's five would strand one seat; row B has room without that.
    expect(labels((await bestAvailable(show.id, 4).expect(201)).body)).toEqual(['Hall-B-3', 'Hall-B-4', 'Hall-B-5', 'Hall-B-6']);
  });

  it('keeps to a section, a category and a maximum price', async () => {
    const show = await createShow(
      app,
      arena(
        [
          { name: 'Stalls', rows: [{ label: 'A', seats: 6, category: 'premium' }, { label: 'B', seats: 6, category: 'standard' }] },
          { name: 'Circle', rows: [{ label: 'A', seats: 6, category: 'standard' }] },
        ],
        [{ code: 'standard', price: 2000 }, { code: 'premium', price: 6000 }],
      ),
    );
    const inCircle: Booking = (await bestAvailable(show.id, 2, { section: 'Circle' }).expect(201)).body;
    expect(inCircle.seats.every((seat) => seat.section === 'Circle')).toBe(true);
    const standard: Booking = (await bestAvailable(show.id, 2, { category: 'standard' }).expect(201)).body;
    expect(standard.seats.map((seat) => [seat.section, seat.row])).toEqual([['Stalls', 'B'], ['Stalls', 'B']]);
    const cheap: Booking = (await bestAvailable(show.id, 2, { maxPrice: 2000 }).expect(201)).body;
    expect(cheap.seats.every((seat) => seat.price <= 2000)).toBe(true);
    const premium: Booking = (await bestAvailable(show.id, 2).expect(201)).body;
    expect(premium.seats.map((seat) => seat.category)).toEqual(['premium', 'premium']);
  });

  it('never picks a seat that is not for sale', async () => {
    const show = await createShow(app, arena([{ name: 'Hall', rows: [{ label: 'A', seats: 4, category: 'standard', blocked: [2, 3] }] }]));
    const map: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).body;
    expect(map.counts).toMatchObject({ blocked: 2, available: 2 });
    await bestAvailable(show.id, 2).expect(409);
    expect(labels((await bestAvailable(show.id, 2, { allowSeparate: true }).expect(201)).body)).toEqual(['Hall-A-1', 'Hall-A-4']);
  });

  it('answers 409 with a failed booking when no block is left, and takes separate seats when allowed', async () => {
    const show = await createShow(app, arena([{ name: 'Hall', rows: [{ label: 'A', seats: 3, category: 'standard' }, { label: 'B', seats: 3, category: 'standard' }] }]));
    await bestAvailable(show.id, 2).expect(201);
    await bestAvailable(show.id, 2).expect(201);
    const failed = await bestAvailable(show.id, 2).expect(409);
    expect(failed.body).toMatchObject({
      type: '/problems/not-enough-seats',
      booking: { status: 'failed', failureReason: 'not-enough-seats', seats: [] },
    });
    expect(failed.body.detail).toBe('No 2 adjacent seats are available');
    const apart: Booking = (await bestAvailable(show.id, 2, { allowSeparate: true }).expect(201)).body;
    expect(apart.seats).toHaveLength(2);
    expect(new Set(apart.seats.map((seat) => seat.row)).size).toBe(2);
    const none = await bestAvailable(show.id, 1, { allowSeparate: true }).expect(409);
    expect(none.body.detail).toBe('Fewer than 1 seats are available');
  });

  it('can hold the seats it picks', async () => {
    const show = await createShow(app);
    const hold: Booking = (await bestAvailable(show.id, 3, { hold: true }).expect(201)).body;
    expect(hold.status).toBe('pending');
    expect(hold.seats).toHaveLength(3);
  });

  it('takes the seats of a lapsed hold', async () => {
    const show = await createShow(app, arena([{ name: 'Hall', rows: [{ label: 'A', seats: 2, category: 'standard' }] }]));
    await bestAvailable(show.id, 2, { hold: true, holdSeconds: 1 }).expect(201);
    await bestAvailable(show.id, 2).expect(409);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(labels((await bestAvailable(show.id, 2).expect(201)).body)).toEqual(['Hall-A-1', 'Hall-A-2']);
  });
});

it('searches the front rows first yet always picks what ranking every block would pick', async () => {
  // Two sections of 40 rows, filled at random, front rows more than back ones.
  const rows = Array.from({ length: 40 }, (_, i) => ({ label: `R${i + 1}`, seats: 12, category: 'standard' }));
  const show = await createShow(app, arena([{ name: 'Front', rows }, { name: 'Back', rows }]));
  let state = 7;
  const random = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let round = 0; round < 4; round++) {
    const labels: string[] = [];
    for (const section of ['Front', 'Back']) {
      for (let r = 1; r <= 40; r++) {
        for (let n = 1; n <= 12; n++) if (random() < 0.25 + (round * 0.2 * (40 - r)) / 40) labels.push(`${section}-R${r}-${n}`);
      }
    }
    for (let i = 0; i < labels.length; i += 10) {
      await pool.query('select app.create_booking($1, null, 100)', [{ showId: show.id, seatLabels: labels.slice(i, i + 10), customer: customer() }]);
    }
    for (const quantity of [2, 3, 4]) {
      for (const section of [null, 'Back']) {
        const { rows: picked } = await pool.query<{ windowed: string[] | null; full: string[] | null }>(
          `select (select b.seat_ids from app.best_blocks($1, $2, $3, null, null, int4range(0, 1)) b limit 1)::text[] as windowed,
                  (select b.seat_ids from app.seat_blocks($1, $2, $3, null, null, int4range(0, 1), clock_timestamp(), null) b limit 1)::text[] as full`,
          [show.id, quantity, section],
        );
        expect(picked[0]?.windowed).toEqual(picked[0]?.full);
      }
    }
  }
});

it('ranks only a radius around the front-centre of wide rows yet picks what ranking every block would pick', async () => {
  // Rows far wider than the radius ranked, so its edge cuts through them:
  // filled densest at the front-centre, with holes and stray seats taken
  // far out, as a sale leaves them.
  const rows = Array.from({ length: 30 }, (_, i) => ({ label: `R${i + 1}`, seats: 60, category: 'standard' }));
  const show = await createShow(app, arena([{ name: 'Wide', rows }]));
  let state = 11;
  const random = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let round = 0; round < 4; round++) {
    const radius = 4 + round * 6;
    const labels: string[] = [];
    for (let r = 1; r <= 30; r++) {
      for (let n = 1; n <= 60; n++) {
        const distance = Math.hypot(r - 1, n - 1 - 59 / 2);
        if (random() < (distance < radius ? 0.85 : 0.04)) labels.push(`Wide-R${r}-${n}`);
      }
    }
    for (let i = 0; i < labels.length; i += 10) {
      // Seats booked in an earlier round fail the whole call: fine, the rest stay free.
      await pool.query('select app.create_booking($1, null, 100)', [{ showId: show.id, seatLabels: labels.slice(i, i + 10), customer: customer() }]);
    }
    for (const quantity of [2, 3, 4]) {
      const { rows: picked } = await pool.query<{ windowed: string[] | null; full: string[] | null }>(
        `select (select b.seat_ids from app.best_blocks($1, $2, 'Wide', null, null, int4range(0, 1)) b limit 1)::text[] as windowed,
                (select b.seat_ids from app.seat_blocks($1, $2, 'Wide', null, null, int4range(0, 1), clock_timestamp(), null) b limit 1)::text[] as full`,
        [show.id, quantity],
      );
      expect(picked[0]?.full).not.toBeNull();
      expect(picked[0]?.windowed).toEqual(picked[0]?.full);
    }
  }
});

describe('concurrent best-available requests for one section', () => {
  it('skip seats another transaction is locking and take the next best, without waiting', async () => {
    const show = await createShow(app, arena([{ name: 'Hall', rows: [{ label: 'A', seats: 10, category: 'standard' }] }]));
    const locker = new pg.Client({ connectionString: inject('databaseUrl') });
    await locker.connect();
    try {
      await locker.query('begin');
      // Another booker is mid-transaction on the best pair, A-5 and A-6.
      await locker.query(
        `select id from app.seats where show_id = $1 and label in ('Hall-A-5', 'Hall-A-6') order by id for no key update`,
        [show.id],
      );
      const answer = await Promise.race([
        bestAvailable(show.id, 2).then((response) => response),
        new Promise<'waited'>((resolve) => setTimeout(() => resolve('waited'), 5_000)),
      ]);
      expect(answer).not.toBe('waited');
      if (answer === 'waited') return;
      expect(answer.status).toBe(201);
      expect(labels(answer.body)).toEqual(['Hall-A-3', 'Hall-A-4']);
    } finally {
      await locker.query('rollback');
      await locker.end();
    }
  });


  it('50 requests for pairs never overlap and fill the section as far as blocks allow', async () => {
    const rows = Array.from({ length: 5 }, (_, i) => ({ label: String.fromCharCode(65 + i), seats: 10, category: 'standard' }));
    const show = await createShow(app, arena([{ name: 'Stalls', rows }, { name: 'Circle', rows: [{ label: 'A', seats: 10, category: 'standard' }] }]));
    const responses = await Promise.all(
      Array.from({ length: 50 }, () =>
        postJson<Booking & { booking?: Booking }>(server.port, '/api/bookings', { showId: show.id, quantity: 2, section: 'Stalls', customer: customer() }),
      ),
    );
    // Every loser a failed booking's not-enough-seats, and the database's live bookings the 201s.
    await winners(pool, show.id, responses, 'not-enough-seats');
    const won = responses.filter((r) => r.status === 201).map((r) => r.body);
    // 50 seats in rows of 10 hold 25 pairs; every pair packs without a gap.
    expect(won).toHaveLength(25);
    const seats = won.flatMap((booking) => booking.seats);
    expect(seats.every((seat) => seat.section === 'Stalls')).toBe(true);
    for (const booking of won) {
      const [a, b] = booking.seats;
      expect(a?.row).toBe(b?.row);
      expect(Math.abs((a?.number ?? 0) - (b?.number ?? 0))).toBe(1);
    }
    expect(new Set(seats.map((seat) => seat.id)).size).toBe(50);
    expect(await longestFreeRun(show.id, 'Stalls')).toBe(0);
  });

  it('50 requests for 2 to 4 seats leave no block that a loser could have had', async () => {
    const rows = Array.from({ length: 6 }, (_, i) => ({ label: String.fromCharCode(65 + i), seats: 12, category: 'standard' }));
    const show = await createShow(app, arena([{ name: 'Floor', rows }]));
    const quantities = Array.from({ length: 50 }, (_, i) => 2 + (i % 3));
    const responses = await Promise.all(
      quantities.map((quantity) =>
        postJson<Booking>(server.port, '/api/bookings', { showId: show.id, quantity, customer: customer() }),
      ),
    );
    await winners(pool, show.id, responses, 'not-enough-seats');
    const won = responses.filter((r) => r.status === 201).map((r) => r.body);
    const seats = won.flatMap((booking) => booking.seats.map((seat) => seat.id));
    expect(new Set(seats).size).toBe(seats.length);
    const smallestLoser = Math.min(...quantities.filter((_, i) => responses[i]?.status === 409));
    expect(await longestFreeRun(show.id, 'Floor')).toBeLessThan(smallestLoser);
  });
});

describe('bookers asking for best available at the same moment', () => {
  it('share one ranking, each taking the next block of it in order of arrival', async () => {
    const rows = Array.from({ length: 4 }, (_, i) => ({ label: String.fromCharCode(65 + i), seats: 10, category: 'standard' }));
    const show = await createShow(app, arena([{ name: 'Hall', rows }]));
    const rankings = new BestAvailableRankings(pool);
    const request = { showId: show.id, quantity: 3, customer: customer() };
    // The first asks alone; the nine arriving while it ranks share the next ranking.
    const places = await Promise.all(Array.from({ length: 10 }, () => rankings.place(request)));
    expect(rankings.runs).toBe(2);
    expect(places.slice(1).map((place) => place?.[0]?.join())).toEqual(places[1]?.slice(0, 9).map((block) => block.join()));
    // The blocks share no seat, and the first is what best_blocks ranks first.
    const blocks = places[1] ?? [];
    const seats = blocks.flat();
    expect(new Set(seats).size).toBe(seats.length);
    const { rows: best } = await pool.query<{ first: string[] }>(
      `select (select b.seat_ids from app.best_blocks($1, 3, null, null, null, int4range(0, 1)) b limit 1)::text[] as first`,
      [show.id],
    );
    expect(blocks[0]).toEqual(best[0]?.first);
    // Not best available, an unknown show or stop: nothing to share.
    expect(await rankings.place({ showId: show.id, seatLabels: ['Hall-A-1'], customer: customer() })).toBeUndefined();
    expect(await rankings.place({ ...request, showId: '00000000-0000-4000-8000-000000000000' })).toBeUndefined();
    expect(await rankings.place({ ...request, fromStop: 'Nowhere' })).toBeUndefined();
  });

  it('each get adjacent seats, none twice, the first of them the block a lone booker gets', async () => {
    const rows = Array.from({ length: 6 }, (_, i) => ({ label: String.fromCharCode(65 + i), seats: 12, category: 'standard' }));
    const layout = arena([{ name: 'Hall', rows }]);
    const [together, alone] = [await createShow(app, layout), await createShow(app, layout)];
    const answers = await Promise.all(
      Array.from({ length: 12 }, () => postJson<Booking>(server.port, '/api/bookings', { showId: together.id, quantity: 3, customer: customer() })),
    );
    await winners(pool, together.id, answers, 'not-enough-seats');
    const won = answers.filter((answer) => answer.status === 201).map((answer) => answer.body);
    // Rows of 12 hold at least three triples each, however they are placed: twelve bookers all get one.
    expect(won).toHaveLength(12);
    for (const booking of won) {
      expect(new Set(booking.seats.map((seat) => seat.row)).size).toBe(1);
      const numbers = booking.seats.map((seat) => seat.number);
      expect(Math.max(...numbers) - Math.min(...numbers)).toBe(2);
    }
    const taken = won.flatMap((booking) => labels(booking));
    expect(new Set(taken).size).toBe(36);
    expect(taken).toEqual(expect.arrayContaining(labels((await bestAvailable(alone.id, 3).expect(201)).body)));
  });
});
