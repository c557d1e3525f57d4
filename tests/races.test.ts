// Concurrency is proven with separate connections that really commit: each
// HTTP request on its own socket, each SQL booking on its own connection.
import type pg from 'pg';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import {
  bookingCounts,
  createShow,
  customer,
  serve,
  postJson,
  sqlWinners,
  testApp,
  testPool,
  theatre,
  winners,
  type Booking,
  type BookingAnswer,
  withClients,
} from './support.js';

// As many pooled connections as a busy service would have.
const pool = testPool(40);
const app = await testApp(pool);
const server = serve(app);


async function bookInSql(client: pg.Client, showId: string, labels: string[]): Promise<Booking> {
  const who = customer();
  const { rows } = await client.query<{ result: { booking: Booking } }>('select app.create_booking($1) as result', [
    { showId, seatLabels: labels, customer: who },
  ]);
  const booking = rows[0]?.result.booking;
  if (!booking) throw new Error('no booking returned');
  return booking;
}

describe('a seat booked by many at once', () => {
  it('has exactly one winner among 100 concurrent HTTP requests, and 99 failed bookings', async () => {
    const show = await createShow(app);
    const responses = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        postJson<BookingAnswer['body']>(server.port, '/api/bookings', {
          showId: show.id,
          seatLabels: ['Stalls-A-1'],
          customer: customer(`Fan ${i}`),
        }),
      ),
    );
    const statuses = responses.map((response) => response.status).sort();
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(99);
    for (const loser of responses.filter((response) => response.status === 409)) {
      expect(loser.body.booking?.status).toBe('failed');
    }
    expect(await bookingCounts(pool, show.id)).toEqual({ confirmed: 1, failed: 99 });
    const { rows } = await pool.query(
      `select bs.booking_id from app.booking_seats bs join app.seats s on s.id = bs.seat_id
       where s.show_id = $1 and s.label = 'Stalls-A-1' and bs.active`,
      [show.id],
    );
    expect(rows).toHaveLength(1);
    expect(await winners(pool, show.id, responses)).toHaveLength(1);
  });

  it('has exactly one winner among 100 separate database connections calling the booking function', async () => {
    const show = await createShow(app);
    const bookings = await withClients(100, (client) => bookInSql(client, show.id, ['Stalls-B-6']));
    expect(bookings.filter((b) => b.status === 'confirmed')).toHaveLength(1);
    expect(bookings.filter((b) => b.status === 'failed')).toHaveLength(99);
    expect(await bookingCounts(pool, show.id)).toEqual({ confirmed: 1, failed: 99 });
    expect(await sqlWinners(pool, show.id, bookings)).toHaveLength(1);
  });
});

describe('overlapping seat sets', () => {
  it('finish without a deadlock when booked concurrently in opposite orders', async () => {
    const show = await createShow(app);
    const forward = ['Stalls-A-1', 'Stalls-A-2', 'Stalls-A-3', 'Stalls-A-4', 'Stalls-B-1'];
    const backward = [...forward].reverse();
    // Pairs that cross: each request names, in opposite order, seats another also wants.
    const requests = Array.from({ length: 60 }, (_, i) => {
      const order = i % 2 === 0 ? forward : backward;
      const start = i % 4;
      return order.slice(start, start + 2 + (i % 3));
    });
    const responses = await Promise.all(
      requests.map((seatLabels) => postJson<BookingAnswer['body']>(server.port, '/api/bookings', { showId: show.id, seatLabels, customer: customer() })),
    );
    // Every answer a 201 or a failed booking's seat-unavailable: a deadlock
    // (503) or a hit on the backstop constraint (a 409 without a booking) fails.
    const won = await winners(pool, show.id, responses);
    expect(won.length).toBeGreaterThan(0);
  });

  it('never deadlock in SQL either: every call ends confirmed or failed', async () => {
    const show = await createShow(app, theatre());
    const a = ['Stalls-B-1', 'Stalls-B-2', 'Stalls-B-3', 'Stalls-B-4', 'Stalls-B-5', 'Stalls-B-6'];
    const results = await withClients(40, (client, i) => bookInSql(client, show.id, i % 2 ? a : [...a].reverse()));
    expect(results.filter((b) => b.status === 'confirmed')).toHaveLength(1);
    expect(results.filter((b) => b.status === 'failed')).toHaveLength(39);
    expect(await sqlWinners(pool, show.id, results)).toHaveLength(1);
  });

  it('book none of the seats of a loser that overlaps a winner on one seat', async () => {
    const show = await createShow(app);
    const results = await withClients(20, (client, i) =>
      bookInSql(client, show.id, i % 2 ? ['Stalls-A-1', 'Stalls-A-2'] : ['Stalls-A-3', 'Stalls-A-2']),
    );
    const winners = results.filter((b) => b.status === 'confirmed');
    expect(winners).toHaveLength(1);
    const map = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).body;
    const booked = map.seats.filter((seat: { status: string }) => seat.status === 'booked').map((seat: { label: string }) => seat.label);
    expect(booked.sort()).toEqual(winners[0]?.seats.map((seat) => seat.label).sort());
    expect(booked).toHaveLength(2);
  });
});

describe('the backstop constraint', () => {
  it('refuses a second active booking of a seat even when written around the booking function', async () => {
    const show = await createShow(app);
    const booking = (await request(app).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-4'], customer: customer() }).expect(201)).body;
    const seatId = booking.seats[0].id;
    const client = await pool.connect();
    try {
      await client.query('begin');
      const { rows } = await client.query<{ id: string }>(
        `insert into app.bookings (show_id, status, customer_name, customer_email) values ($1, 'confirmed', 'Bug', 'bug@example.com') returning id`,
        [show.id],
      );
      await expect(
        client.query(
          `insert into app.booking_seats (booking_id, seat_id, show_id, legs, price, active) values ($1, $2, $3, int4range(0, 1), 0, true)`,
          [rows[0]?.id, seatId, show.id],
        ),
      ).rejects.toMatchObject({ code: '23P01' });
    } finally {
      await client.query('rollback');
      client.release();
    }
  });
});
