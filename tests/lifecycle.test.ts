import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { startSweeper } from '../src/sweeper.js';
import { admin, createShow, customer, testApp, testPool, type Booking, type SeatMap } from './support.js';

const pool = testPool();
const app = await testApp(pool);

function book(showId: string, seatLabels: string[], extra: object = {}) {
  return request(app).post('/api/bookings').send({ showId, seatLabels, customer: customer(), ...extra });
}

async function statusOf(showId: string, label: string): Promise<string | undefined> {
  const map: SeatMap = (await request(app).get(`/api/shows/${showId}/seats`).expect(200)).body;
  return map.seats.find((seat) => seat.label === label)?.status;
}

async function storedStatus(bookingId: string): Promise<string | undefined> {
  const { rows } = await pool.query<{ status: string }>('select status::text from app.bookings where id = $1', [bookingId]);
  return rows[0]?.status;
}

type State = 'pending' | 'confirmed' | 'cancelled' | 'failed' | 'expired';

/** A booking of seat Stalls-A-1 of a new show, brought to the given state. */
async function bookingIn(state: State): Promise<{ showId: string; id: string }> {
  const show = await createShow(app);
  const label = 'Stalls-A-1';
  switch (state) {
    case 'pending':
      return { showId: show.id, id: (await book(show.id, [label], { hold: true }).expect(201)).body.id };
    case 'confirmed':
      return { showId: show.id, id: (await book(show.id, [label]).expect(201)).body.id };
    case 'cancelled': {
      const id = (await book(show.id, [label]).expect(201)).body.id;
      await request(app).post(`/api/bookings/${id}/cancel`).set(admin).expect(200);
      return { showId: show.id, id };
    }
    case 'failed':
      await book(show.id, [label]).expect(201);
      return { showId: show.id, id: (await book(show.id, [label]).expect(409)).body.booking.id };
    case 'expired': {
      const id = (await book(show.id, [label], { hold: true, holdSeconds: 1 }).expect(201)).body.id;
      await sleep(1100);
      return { showId: show.id, id };
    }
  }
}

describe('holds', () => {
  it('hold seats as pending until expiresAt, shown as held, for the default time', async () => {
    const show = await createShow(app);
    const response = await book(show.id, ['Stalls-A-1', 'Stalls-A-2'], { hold: true }).expect(201);
    const hold: Booking = response.body;
    expect(hold.status).toBe('pending');
    expect(hold.confirmedAt).toBeUndefined();
    const seconds = (Date.parse(hold.expiresAt ?? '') - Date.parse(hold.createdAt)) / 1000;
    expect(seconds).toBeGreaterThan(595);
    expect(seconds).toBeLessThan(605);
    expect(await statusOf(show.id, 'Stalls-A-1')).toBe('held');
    // Held seats are not for anyone else.
    const loser = await book(show.id, ['Stalls-A-2']).expect(409);
    expect(loser.body.unavailableSeats.map((seat: { label: string }) => seat.label)).toEqual(['Stalls-A-2']);
  });

  it('confirm with a payment reference, after which the seats are booked', async () => {
    const { showId, id } = await bookingIn('pending');
    const response = await request(app)
      .post(`/api/bookings/${id}/confirm`).set(admin)
      .send({ paymentReference: 'pay_123' })
      .expect(200);
    expect(response.body).toMatchObject({ id, status: 'confirmed', paymentReference: 'pay_123', totalPrice: 5000 });
    expect(response.body.confirmedAt).toEqual(expect.any(String));
    expect(await statusOf(showId, 'Stalls-A-1')).toBe('booked');
  });

  it('can be shorter than the default when the client asks', async () => {
    const show = await createShow(app);
    const hold: Booking = (await book(show.id, ['Stalls-B-1'], { hold: true, holdSeconds: 30 }).expect(201)).body;
    const seconds = (Date.parse(hold.expiresAt ?? '') - Date.parse(hold.createdAt)) / 1000;
    expect(seconds).toBeGreaterThan(28);
    expect(seconds).toBeLessThan(32);
  });

  it('lapse: the seat is bookable by someone else right after expiry, and the old hold cannot be confirmed', async () => {
    const show = await createShow(app);
    const hold: Booking = (await book(show.id, ['Stalls-B-2'], { hold: true, holdSeconds: 1 }).expect(201)).body;
    await book(show.id, ['Stalls-B-2']).expect(409);
    await sleep(1100);
    expect(await statusOf(show.id, 'Stalls-B-2')).toBe('available');
    expect((await request(app).get(`/api/bookings/${hold.id}`).set(admin).expect(200)).body.status).toBe('expired');

    const taker = await book(show.id, ['Stalls-B-2']).expect(201);
    expect(taker.body.status).toBe('confirmed');
    // The booker recorded the lapsed hold as expired under the seat lock.
    expect(await storedStatus(hold.id)).toBe('expired');
    const confirm = await request(app).post(`/api/bookings/${hold.id}/confirm`).set(admin).expect(409);
    expect(confirm.body).toMatchObject({ type: '/problems/invalid-transition', bookingStatus: 'expired' });
    expect(await statusOf(show.id, 'Stalls-B-2')).toBe('booked');
  });

  it('that lapse are recorded as expired by the sweep, freeing their seats', async () => {
    const { id } = await bookingIn('expired');
    expect(await storedStatus(id)).toBe('pending');
    const sweeper = startSweeper(pool, 100, pino({ level: 'silent' }));
    try {
      for (let i = 0; i < 50 && (await storedStatus(id)) === 'pending'; i++) await sleep(100);
    } finally {
      await sweeper.stop();
    }
    expect(await storedStatus(id)).toBe('expired');
    const { rows } = await pool.query('select 1 from app.booking_seats where booking_id = $1 and active', [id]);
    expect(rows).toHaveLength(0);
  });
});

describe('status transitions', () => {
  const transitions: Array<[State, 'confirm' | 'cancel', number, string]> = [
    ['pending', 'confirm', 200, 'confirmed'],
    ['pending', 'cancel', 200, 'cancelled'],
    ['confirmed', 'cancel', 200, 'cancelled'],
    ['confirmed', 'confirm', 409, 'confirmed'],
    ['cancelled', 'cancel', 409, 'cancelled'],
    ['cancelled', 'confirm', 409, 'cancelled'],
    ['failed', 'confirm', 409, 'failed'],
    ['failed', 'cancel', 409, 'failed'],
    ['expired', 'confirm', 409, 'expired'],
    ['expired', 'cancel', 409, 'expired'],
  ];

  it.each(transitions)('%s → %s answers %i (%s)', async (state, action, code, status) => {
    const { showId, id } = await bookingIn(state);
    const before = await storedStatus(id);
    const response = await request(app).post(`/api/bookings/${id}/${action}`).set(admin).expect(code);
    if (code === 200) {
      expect(response.body).toMatchObject({ id, status });
    } else {
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(response.body).toMatchObject({ type: '/problems/invalid-transition', status: 409, bookingStatus: status });
      expect(await storedStatus(id)).toBe(before);
    }
    if (status === 'cancelled' && code === 200) {
      expect(response.body.cancelledAt).toEqual(expect.any(String));
      expect(response.body.cancelReason).toEqual(expect.any(String));
      // Freed at once: someone else books the seat straight away.
      expect(await statusOf(showId, 'Stalls-A-1')).toBe('available');
      await book(showId, ['Stalls-A-1']).expect(201);
    }
  });

  it('record why a booking was cancelled', async () => {
    const { id } = await bookingIn('confirmed');
    const response = await request(app).post(`/api/bookings/${id}/cancel`).set(admin).send({ reason: 'Flight cancelled' }).expect(200);
    expect(response.body.cancelReason).toBe('Flight cancelled');
  });

  it('answer 404 for a booking that does not exist and 400 for a malformed body', async () => {
    await request(app).post('/api/bookings/00000000-0000-4000-8000-00000000abcd/confirm').set(admin).expect(404);
    await request(app).post('/api/bookings/00000000-0000-4000-8000-00000000abcd/cancel').set(admin).expect(404);
    const { id } = await bookingIn('pending');
    await request(app).post(`/api/bookings/${id}/confirm`).set(admin).send({ paymentRef: 'x' }).expect(400);
    await request(app).post(`/api/bookings/${id}/cancel`).set(admin).send({ reason: '' }).expect(400);
    expect(await storedStatus(id)).toBe('pending');
  });

  it('are enforced by the table itself, whoever writes it', async () => {
    const { id } = await bookingIn('cancelled');
    await expect(pool.query(`update app.bookings set status = 'confirmed' where id = $1`, [id])).rejects.toMatchObject({
      code: 'BKSTA',
    });
    const failed = await bookingIn('failed');
    await expect(pool.query(`update app.bookings set status = 'pending' where id = $1`, [failed.id])).rejects.toMatchObject({
      code: 'BKSTA',
    });
  });
});
