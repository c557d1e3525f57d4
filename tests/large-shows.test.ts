// Shows up to the documented maximum of 100,000 seats are created under the
// admin statement bound, not the one every request gets; a statement that
// runs out its time does not promise a retry that cannot succeed.
import { pino } from 'pino';
import request from 'supertest';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { makeApp } from '../src/app.js';
import { createPool } from '../src/db.js';
import { SeatEventHub } from '../src/seat-events.js';
import { ADMIN_TOKEN, METRICS_TOKEN, admin, theatre, type NewShow, type SeatMap } from './support.js';

// Every ordinary statement is cut off at 1 s, well below what creating
// 100,000 seats takes (about 2 s on an idle 2-core machine).
const pool = createPool({ connectionString: inject('databaseUrl'), max: 4, applicationName: 'large-shows', timeouts: { statementTimeoutMs: 1_000 } });
afterAll(() => pool.end());
// Reading the 13 MB map back is not what is bounded here: it gets the
// service's ordinary bound, which a loaded machine needs for it.
const readPool = createPool({ connectionString: inject('databaseUrl'), max: 2, applicationName: 'large-shows-reads' });
afterAll(() => readPool.end());
const logger = pino({ level: 'silent' });
const events = new SeatEventHub(pool, logger, { sequenceIntervalMs: 50 });
await events.start();
afterAll(() => events.stop());

function appWith(adminStatementTimeoutMs: number) {
  return makeApp({ pool, readPool, logger, validateResponses: true, events, adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN, adminStatementTimeoutMs });
}

/** The contract's largest rows: 200 rows of 500 seats. */
function stadium(): NewShow {
  return theatre({
    categories: [{ code: 'standard', price: 4000 }],
    sections: [{ name: 'Bowl', rows: Array.from({ length: 200 }, (_, i) => ({ label: `R${i + 1}`, seats: 500, category: 'standard' })) }],
  });
}

async function showCount(name: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from app.shows where name = $1', [name]);
  return rows[0]?.n ?? -1;
}

describe('the largest shows', () => {
  it('creates a show of 100,000 seats, the documented maximum, and serves its seat map', async () => {
    const app = appWith(60_000);
    const spec = stadium();
    const created = await request(app).post('/api/shows').set(admin).send(spec).expect(201);
    expect(created.body).toMatchObject({ name: spec.name, seatCount: 100_000 });

    const map = await request(app).get(`/api/shows/${created.body.id}/seats`).set('Accept-Encoding', 'gzip').expect(200);
    expect(map.headers['content-encoding']).toBe('gzip');
    const body: SeatMap = map.body;
    expect(body.counts).toEqual({ total: 100_000, available: 100_000, held: 0, booked: 0, blocked: 0 });
    expect(body.seats).toHaveLength(100_000);
    expect(body.seats.at(-1)).toMatchObject({ label: 'Bowl-R200-500', price: 4000, status: 'available' });
  });

  it('answers a show creation that runs out of time with a 503 that promises no retry, and writes nothing', async () => {
    const app = appWith(100);
    const spec = stadium();
    const response = await request(app).post('/api/shows').set(admin).send(spec).expect(503);
    expect(response.body).toMatchObject({ type: '/problems/service-unavailable', status: 503 });
    expect(response.headers['retry-after']).toBeUndefined();
    expect(await showCount(spec.name)).toBe(0);
    // The connection went back to the pool with the pool's own bound: every
    // connection the pool has (4 at most) says so.
    const clients = await Promise.all(Array.from({ length: 4 }, () => pool.connect()));
    try {
      for (const client of clients) {
        const { rows } = await client.query<{ s: string }>(`select current_setting('statement_timeout') as s`);
        expect(rows[0]?.s).toBe('1s');
      }
    } finally {
      for (const client of clients) client.release();
    }
  });
});
