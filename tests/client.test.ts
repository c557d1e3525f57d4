// The typed client against the running app: the contract's types end to end.
import { expect, it } from 'vitest';
import { bookingSecret, createBookingClient } from '../src/client.js';
import { ADMIN_TOKEN, customer, serve, testApp, testPool, theatre } from './support.js';

const pool = testPool(4);
const app = await testApp(pool);
const server = serve(app);

it('creates a show, holds seats, confirms them and reads the seat map through the typed client', async () => {
  const api = createBookingClient(`http://127.0.0.1:${server.port}`, { adminToken: ADMIN_TOKEN });
  const created = await api.POST('/api/shows', { body: theatre() });
  expect(created.response.status).toBe(201);
  const showId = created.data?.id ?? '';

  const hold = await api.POST('/api/bookings', {
    body: { showId, quantity: 2, hold: true, customer: customer() },
    params: { header: { 'Idempotency-Key': `client-${showId}` } },
  });
  expect(hold.data?.status).toBe('pending');
  const bookingId = hold.data?.id ?? '';

  const confirmed = await api.POST('/api/bookings/{bookingId}/confirm', {
    params: { path: { bookingId } },
    headers: bookingSecret(hold.data?.secret ?? ''),
    body: { paymentReference: 'pay-1' },
  });
  expect(confirmed.data?.status).toBe('confirmed');

  const seats = await api.GET('/api/shows/{showId}/seats', { params: { path: { showId }, query: { status: 'booked' } } });
  expect(seats.data?.seats.map((seat) => seat.label).sort()).toEqual(confirmed.data?.seats.map((seat) => seat.label).sort());

  const again = await api.POST('/api/bookings', {
    body: { showId, seatIds: confirmed.data?.seats.map((seat) => seat.id) ?? [], customer: customer() },
  });
  expect(again.response.status).toBe(409);
  expect(again.error).toMatchObject({ type: '/problems/seat-unavailable', booking: { status: 'failed' } });
});

it('gets a problem, not an exception, for an admin operation without the token', async () => {
  const anonymous = createBookingClient(`http://127.0.0.1:${server.port}`);
  const denied = await anonymous.POST('/api/shows', { body: theatre() });
  expect(denied.response.status).toBe(401);
  expect(denied.error).toMatchObject({ type: '/problems/unauthorized' });
});
