import http from 'node:http';
import pg from 'pg';
import request from 'supertest';
import { describe, expect, inject, it } from 'vitest';
import { admin, createShow, customer, serve, testApp, testPool, type Booking } from './support.js';

const pool = testPool(30);
const app = await testApp(pool);
const server = serve(app);

let keys = 0;
function newKey(): string {
  keys += 1;
  return `key-${process.pid}-${Date.now()}-${keys}`;
}

async function bookingsOf(email: string): Promise<string[]> {
  const { rows } = await pool.query<{ id: string }>('select id from app.bookings where customer_email = $1', [email]);
  return rows.map((row) => row.id);
}

/** POST on a connection of its own, with an Idempotency-Key. */
function postWithKey(path: string, key: string, body: unknown): Promise<{ status: number; replayed: boolean; body: { id?: string; booking?: Booking } }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: server.port,
        path,
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'idempotency-key': key },
      },
      (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, replayed: res.headers['idempotent-replayed'] === 'true', body: JSON.parse(text) }),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe('an Idempotency-Key', () => {
  it('makes a retry with the same body return the original booking and status without booking again', async () => {
    const show = await createShow(app);
    const key = newKey();
    const body = { showId: show.id, seatLabels: ['Stalls-A-1'], customer: customer() };
    const first = await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const retry = await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toEqual(first.body);
    expect(await bookingsOf(body.customer.email)).toEqual([first.body.id]);
  });

  it('replays a failed booking as the same 409', async () => {
    const show = await createShow(app);
    await request(app).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-2'], customer: customer() }).expect(201);
    const key = newKey();
    const body = { showId: show.id, seatLabels: ['Stalls-A-2'], customer: customer() };
    const first = await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(409);
    const retry = await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(409);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body.booking).toEqual(first.body.booking);
    expect(await bookingsOf(body.customer.email)).toHaveLength(1);
  });

  it('sent again with a different body is a 422 problem and writes nothing', async () => {
    const show = await createShow(app);
    const key = newKey();
    const who = customer();
    await request(app).post('/api/bookings').set('Idempotency-Key', key).send({ showId: show.id, seatLabels: ['Stalls-A-3'], customer: who }).expect(201);
    const other = customer();
    const response = await request(app)
      .post('/api/bookings')
      .set('Idempotency-Key', key)
      .send({ showId: show.id, seatLabels: ['Stalls-A-4'], customer: other })
      .expect(422);
    expect(response.body.type).toBe('/problems/idempotency-key-reused');
    expect(await bookingsOf(other.email)).toEqual([]);
  });

  it('is not spent by a request that failed validation, so the corrected request goes through', async () => {
    const show = await createShow(app);
    const key = newKey();
    const who = customer();
    await request(app).post('/api/bookings').set('Idempotency-Key', key).send({ showId: show.id, seatLabels: ['Stalls-Z-1'], customer: who }).expect(422);
    await request(app).post('/api/bookings').set('Idempotency-Key', key).send({ showId: show.id, seatLabels: ['Stalls-B-1'], customer: who }).expect(201);
  });

  it('makes confirm and cancel safe to retry, and cannot be reused for another operation', async () => {
    const show = await createShow(app);
    const createKey = newKey();
    const hold = (await request(app)
      .post('/api/bookings')
      .set('Idempotency-Key', createKey)
      .send({ showId: show.id, seatLabels: ['Stalls-B-2'], hold: true, customer: customer() })
      .expect(201)).body;
    await request(app).post(`/api/bookings/${hold.id}/confirm`).set(admin).set('Idempotency-Key', createKey).expect(422);

    const confirmKey = newKey();
    const confirmed = await request(app).post(`/api/bookings/${hold.id}/confirm`).set(admin).set('Idempotency-Key', confirmKey).send({ paymentReference: 'p1' }).expect(200);
    const again = await request(app).post(`/api/bookings/${hold.id}/confirm`).set(admin).set('Idempotency-Key', confirmKey).send({ paymentReference: 'p1' }).expect(200);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toEqual(confirmed.body);
    // Without the key, a second confirm is an illegal transition.
    await request(app).post(`/api/bookings/${hold.id}/confirm`).set(admin).expect(409);

    const cancelKey = newKey();
    await request(app).post(`/api/bookings/${hold.id}/cancel`).set(admin).set('Idempotency-Key', cancelKey).expect(200);
    const cancelAgain = await request(app).post(`/api/bookings/${hold.id}/cancel`).set(admin).set('Idempotency-Key', cancelKey).expect(200);
    expect(cancelAgain.body.status).toBe('cancelled');
    expect(cancelAgain.headers['idempotent-replayed']).toBe('true');
  });

  it('racing its original over separate connections still yields exactly one booking', async () => {
    const show = await createShow(app);
    const key = newKey();
    const body = { showId: show.id, seatLabels: ['Stalls-B-3', 'Stalls-B-4'], customer: customer() };
    const responses = await Promise.all(Array.from({ length: 20 }, () => postWithKey('/api/bookings', key, body)));
    expect(responses.map((r) => r.status)).toEqual(Array(20).fill(201));
    const ids = new Set(responses.map((r) => r.body.id));
    expect(ids.size).toBe(1);
    expect(responses.filter((r) => !r.replayed)).toHaveLength(1);
    expect(await bookingsOf(body.customer.email)).toEqual([...ids]);
  });

  it('racing in SQL on separate database connections yields one booking', async () => {
    const show = await createShow(app);
    const key = newKey();
    const request = { showId: show.id, seatLabels: ['Stalls-B-5'], customer: customer() };
    const clients = Array.from({ length: 20 }, () => new pg.Client({ connectionString: inject('databaseUrl') }));
    await Promise.all(clients.map((client) => client.connect()));
    try {
      const results = await Promise.all(
        clients.map((client) =>
          client.query<{ result: { booking: Booking; replayed: boolean } }>('select app.create_booking($1, $2) as result', [request, key]),
        ),
      );
      const outcomes = results.map((r) => r.rows[0]?.result);
      expect(new Set(outcomes.map((o) => o?.booking.id)).size).toBe(1);
      expect(outcomes.filter((o) => o?.replayed === false)).toHaveLength(1);
    } finally {
      await Promise.all(clients.map((client) => client.end()));
    }
    expect(await bookingsOf(request.customer.email)).toHaveLength(1);
  });

  it('is kept for 24 hours and then forgotten by the sweep', async () => {
    const show = await createShow(app);
    const key = newKey();
    const body = { showId: show.id, seatLabels: ['Stalls-B-6'], hold: true, holdSeconds: 1, customer: customer() };
    await request(app).post('/api/bookings').set('Idempotency-Key', key).send(body).expect(201);
    await pool.query(`update app.idempotency_keys set created_at = now() - interval '23 hours' where key = $1`, [key]);
    await pool.query('select app.sweep()');
    expect((await pool.query('select 1 from app.idempotency_keys where key = $1', [key])).rowCount).toBe(1);
    await pool.query(`update app.idempotency_keys set created_at = now() - interval '25 hours' where key = $1`, [key]);
    await pool.query('select app.sweep()');
    expect((await pool.query('select 1 from app.idempotency_keys where key = $1', [key])).rowCount).toBe(0);
  });
});
