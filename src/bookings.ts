// Bookings: book seats (one call of the booking core) and read a booking.
import { Router, type Request } from 'express';
import type pg from 'pg';
import type { components, operations } from './generated/api.js';
import { callJson, statement } from './db.js';
import { ProblemError } from './problem.js';

type Booking = components['schemas']['Booking'];
type NewBooking = components['schemas']['NewBooking'];
type BookingPath = operations['getBooking']['parameters']['path'];

const bookSeats = statement('book_seats', 'select app.book_seats($1, $2, $3, $4, $5) as result');
const getBooking = statement('get_booking', 'select app.get_booking($1) as result');

export function bookingRoutes(pool: pg.Pool): Router {
  const router = Router();

  router.post('/api/bookings', async (req: Request<object, unknown, NewBooking>, res) => {
    const { showId, seatIds, seatLabels, customer } = req.body;
    const booking = await callJson<Booking>(pool, bookSeats, [
      showId,
      seatIds ?? null,
      seatLabels ?? null,
      customer.name,
      customer.email,
    ]);
    if (!booking) throw new Error('book_seats returned nothing');
    if (booking.status === 'failed') {
      const unavailableSeats = booking.unavailableSeats ?? [];
      throw new ProblemError(
        'seat-unavailable',
        `Seats not available: ${unavailableSeats.map((seat) => seat.label).join(', ')}`,
        { unavailableSeats, booking },
      );
    }
    res.status(201).location(`/api/bookings/${booking.id}`).json(booking);
  });

  router.get('/api/bookings/:bookingId', async (req: Request<BookingPath>, res) => {
    const booking = await callJson<Booking>(pool, getBooking, [req.params.bookingId]);
    if (!booking) {
      throw new ProblemError('booking-not-found', `There is no booking ${req.params.bookingId}`);
    }
    res.json(booking);
  });

  return router;
}
