import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { admin, createShow, testApp, testPool, theatre, type NewShow, type SeatMap } from './support.js';

const pool = testPool();
const app = await testApp(pool);

async function showCount(name: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from app.shows where name = $1', [name]);
  return rows[0]?.n ?? -1;
}

describe('creating a show', () => {
  it('creates the show with every seat of its layout, labelled and priced by category', async () => {
    const spec = theatre();
    const response = await request(app).post('/api/shows').set(admin).send(spec).expect(201);
    const show = response.body;
    expect(response.headers.location).toBe(`/api/shows/${show.id}`);
    expect(show).toMatchObject({ kind: 'show', name: spec.name, venue: 'The Globe', currency: 'EUR', seatCount: 10 });
    expect(show.sections).toEqual([
      {
        name: 'Stalls',
        rows: [
          { label: 'A', category: 'premium', seats: 4 },
          { label: 'B', category: 'standard', seats: 6 },
        ],
      },
    ]);

    const seats: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).body;
    expect(seats.counts).toEqual({ total: 10, available: 10, held: 0, booked: 0, blocked: 0 });
    expect(seats.seats.map((seat) => seat.label)).toEqual([
      'Stalls-A-1', 'Stalls-A-2', 'Stalls-A-3', 'Stalls-A-4',
      'Stalls-B-1', 'Stalls-B-2', 'Stalls-B-3', 'Stalls-B-4', 'Stalls-B-5', 'Stalls-B-6',
    ]);
    expect(seats.seats[0]).toMatchObject({ section: 'Stalls', row: 'A', number: 1, category: 'premium', price: 5000, status: 'available' });
    expect(seats.seats[9]).toMatchObject({ row: 'B', number: 6, category: 'standard', price: 2500 });
  });

  it('reads a show back by id', async () => {
    const show = await createShow(app);
    const response = await request(app).get(`/api/shows/${show.id}`).expect(200);
    expect(response.body).toEqual(show);
  });

  const invalid: Array<[string, (spec: NewShow) => object, number, string]> = [
    ['an unknown field', (s) => ({ ...s, colour: 'red' }), 400, '/problems/validation-failed'],
    ['a missing venue', ({ venue: _venue, ...s }) => s, 400, '/problems/validation-failed'],
    ['a wrong type', (s) => ({ ...s, startsAt: 12 }), 400, '/problems/validation-failed'],
    ['a bad date', (s) => ({ ...s, startsAt: 'next tuesday' }), 400, '/problems/validation-failed'],
    ['no sections', (s) => ({ ...s, sections: [] }), 400, '/problems/validation-failed'],
    ['a negative price', (s) => ({ ...s, categories: [{ code: 'standard', price: -1 }] }), 400, '/problems/validation-failed'],
    ['a lower-case currency', (s) => ({ ...s, currency: 'eur' }), 400, '/problems/validation-failed'],
    ['an unknown kind', (s) => ({ ...s, kind: 'circus' }), 400, '/problems/validation-failed'],
    [
      'a row in an undefined category',
      (s) => ({ ...s, sections: [{ name: 'Stalls', rows: [{ label: 'A', seats: 2, category: 'vip' }] }] }),
      422,
      '/problems/invalid-layout',
    ],
    [
      'a row defined twice',
      (s) => ({
        ...s,
        sections: [{ name: 'Stalls', rows: [{ label: 'A', seats: 2, category: 'standard' }, { label: 'A', seats: 3, category: 'standard' }] }],
      }),
      422,
      '/problems/invalid-layout',
    ],
    [
      'a section defined twice',
      (s) => ({
        ...s,
        sections: [
          { name: 'Stalls', rows: [{ label: 'A', seats: 2, category: 'standard' }] },
          { name: 'Stalls', rows: [{ label: 'B', seats: 2, category: 'standard' }] },
        ],
      }),
      422,
      '/problems/invalid-layout',
    ],
    [
      'a category defined twice',
      (s) => ({ ...s, categories: [{ code: 'standard', price: 1 }, { code: 'standard', price: 2 }, { code: 'premium', price: 3 }] }),
      422,
      '/problems/invalid-layout',
    ],
    [
      'more than 100000 seats',
      (s) => ({
        ...s,
        sections: Array.from({ length: 2 }, (_, i) => ({
          name: `S${i}`,
          rows: Array.from({ length: 101 }, (_, r) => ({ label: `R${r}`, seats: 500, category: 'standard' })),
        })),
      }),
      422,
      '/problems/invalid-layout',
    ],
  ];

  it.each(invalid)('rejects %s with a problem and writes nothing', async (_what, change, status, type) => {
    const spec = theatre();
    const response = await request(app).post('/api/shows').set(admin).send(change(spec)).expect(status);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({ type, status, instance: '/api/shows' });
    expect(response.body.detail).toEqual(expect.any(String));
    expect(await showCount(spec.name)).toBe(0);
  });

  it('lists each invalid field of a request that breaks the contract', async () => {
    const response = await request(app)
      .post('/api/shows').set(admin)
      .send({ ...theatre(), currency: 'euros', name: '' })
      .expect(400);
    const names = response.body.errors.map((error: { name: string }) => error.name);
    expect(names).toEqual(expect.arrayContaining(['body.currency', 'body.name']));
  });
});

describe('listing shows', () => {
  // Each test uses its own stretch of time, so shows from other tests never show up.
  async function showsIn(year: number, kinds: Array<'show' | 'trip'>) {
    const created = [];
    for (const [i, kind] of kinds.entries()) {
      const startsAt = `${year}-0${9 - i}-01T20:00:00Z`;
      const stops = [
        { name: 'Here', departsAt: startsAt },
        { name: 'There', departsAt: `${year}-0${9 - i}-01T22:00:00Z` },
      ];
      created.push(await createShow(app, theatre({ kind, startsAt, ...(kind === 'trip' ? { stops } : {}) })));
    }
    return created;
  }

  it('pages through shows soonest first with a cursor', async () => {
    const year = 2300 + Math.floor(Math.random() * 600);
    const created = await showsIn(year, ['show', 'show', 'show', 'show', 'show']);
    const range = { startsFrom: `${year}-01-01T00:00:00Z`, startsBefore: `${year + 1}-01-01T00:00:00Z` };
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const response = await request(app)
        .get('/api/shows')
        .query({ ...range, limit: 2, ...(cursor ? { cursor } : {}) })
        .expect(200);
      seen.push(...response.body.items.map((show: { id: string }) => show.id));
      cursor = response.body.nextCursor;
      pages += 1;
    } while (cursor);
    expect(pages).toBe(3);
    const soonestFirst = [...created].sort((a, b) => a.startsAt.localeCompare(b.startsAt)).map((show) => show.id);
    expect(seen).toEqual(soonestFirst);
  });

  it('filters by kind and by date range', async () => {
    const year = 2300 + Math.floor(Math.random() * 600);
    const [, trip] = await showsIn(year, ['show', 'trip', 'show']);
    const inYear = { startsFrom: `${year}-01-01T00:00:00Z`, startsBefore: `${year + 1}-01-01T00:00:00Z` };
    const trips = await request(app).get('/api/shows').query({ ...inYear, kind: 'trip' }).expect(200);
    expect(trips.body.items.map((show: { id: string }) => show.id)).toEqual([trip?.id]);
    const august = await request(app)
      .get('/api/shows')
      .query({ startsFrom: `${year}-08-01T00:00:00Z`, startsBefore: `${year}-09-01T00:00:00Z` })
      .expect(200);
    expect(august.body.items.map((show: { id: string }) => show.id)).toEqual([trip?.id]);
    expect(august.body.nextCursor).toBeUndefined();
  });

  it('takes date-times with unencoded colons, as curl sends them', async () => {
    const response = await request(app).get('/api/shows?startsFrom=2999-01-01T00:00:00Z&startsBefore=2999-01-02T00:00:00Z').expect(200);
    expect(response.body.items).toEqual([]);
  });

  it.each([
    ['a page size over 100', { limit: 101 }],
    ['a page size of 0', { limit: 0 }],
    ['a cursor that was never issued', { cursor: 'bm90LWEtY3Vyc29y' }],
    ['an unknown parameter', { sort: 'name' }],
    ['a malformed date', { startsFrom: 'yesterday' }],
  ])('rejects %s', async (_what, query) => {
    const response = await request(app).get('/api/shows').query(query).expect(400);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body.errors).toEqual(expect.any(Array));
  });
});

describe('the seat map', () => {
  it('answers 404 for a show that does not exist and 400 for an id that is not a UUID', async () => {
    const missing = await request(app).get('/api/shows/00000000-0000-4000-8000-000000000000/seats').expect(404);
    expect(missing.body.type).toBe('/problems/show-not-found');
    await request(app).get('/api/shows/00000000-0000-4000-8000-000000000000').expect(404);
    const malformed = await request(app).get('/api/shows/42/seats').expect(400);
    expect(malformed.body.type).toBe('/problems/validation-failed');
  });

  it('filters by status while counting the whole show', async () => {
    const show = await createShow(app);
    await request(app)
      .post('/api/bookings')
      .send({ showId: show.id, seatLabels: ['Stalls-B-2', 'Stalls-B-3'], customer: { name: 'Ada', email: 'ada@example.com' } })
      .expect(201);
    const booked: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats`).query({ status: 'booked' }).expect(200)).body;
    expect(booked.seats.map((seat) => seat.label)).toEqual(['Stalls-B-2', 'Stalls-B-3']);
    expect(booked.counts).toEqual({ total: 10, available: 8, held: 0, booked: 2, blocked: 0 });
    const available: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats?status=available`).expect(200)).body;
    expect(available.seats).toHaveLength(8);
    await request(app).get(`/api/shows/${show.id}/seats?status=sold`).expect(400);
  });
});
