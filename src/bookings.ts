// Bookings: book seats (one call of the booking core), read, confirm and
// cancel a booking. Each handler is one database call.
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type pg from 'pg';
import type { Counter } from 'prom-client';
import type { BookingLimits } from './config.js';
import { bookingCredential } from './admin.js';
import { BestAvailableRankings } from './best-available.js';
import { clientAddress } from './client-address.js';
import type { components, operations } from './generated/api.js';
import { decodeCursor, encodeCursor, type PageKey } from './cursor.js';
import { callJson, statement, type Statement } from './db.js';
import { problemForFailure, ProblemError, showNotFound } from './problem.js';
import type { ReadRouting } from './replica.js';

type Booking = components['schemas']['Booking'];
type NewBooking = components['schemas']['NewBooking'];
type ConfirmBooking = components['schemas']['ConfirmBooking'];
type CancelBooking = components['schemas']['CancelBooking'];
type BookingPath = operations['getBooking']['parameters']['path'];
type ShowBookingsPath = operations['listShowBookings']['parameters']['path'];
type ShowBookingsQuery = NonNullable<operations['listShowBookings']['parameters']['query']>;
type CreatedBooking = components['schemas']['CreatedBooking'];
interface Outcome<B = Booking> {
  booking: B;
  replayed: boolean;
}

// The show is the first argument: the one a distributed database routes the call by (docs/scaling.md).
const createBooking = statement('create_booking', 'select app.create_booking($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) as result');
const getBooking = statement('get_booking', 'select app.get_booking($1, $2) as result');
const confirmBooking = statement('confirm_booking', 'select app.confirm_booking($1, $2, $3, $4) as result');
const cancelBooking = statement('cancel_booking', 'select app.cancel_booking($1, $2, $3, $4) as result');
const listShowBookings = statement('list_show_bookings', 'select app.list_show_bookings($1, $2, $3, $4, $5) as result');

function failureDetail(booking: Booking, request: NewBooking): string {
  if (booking.failureReason === 'not-enough-seats') {
    return request.allowSeparate
      ? `Fewer than ${request.quantity} seats are available`
      : `No ${request.quantity} adjacent seats are available`;
  }
  if (booking.failureReason === 'area-full') {
    return `Not enough room left in: ${(booking.unavailableAreas ?? []).join(', ')}`;
  }
  return `Seats not available: ${(booking.unavailableSeats ?? []).map((seat) => seat.label).join(', ')}`;
}

function replayHeaders(outcome: Outcome<unknown>): Record<string, string> {
  return outcome.replayed ? { 'Idempotent-Replayed': 'true' } : {};
}

async function act<B = Booking>(pool: pg.Pool, query: Statement, values: unknown[]): Promise<Outcome<B>> {
  const outcome = await callJson<Outcome<B>>(pool, query, values);
  if (!outcome) throw new Error(`${query.name} returned nothing`);
  return outcome;
}

function sendOutcome(res: Response, status: number, outcome: Outcome<Booking | CreatedBooking>): void {
  res.status(status).set(replayHeaders(outcome)).json(outcome.booking);
}

export interface BookingRoutes {
  /** POST /api/bookings, the on-sale's request: the app gives it a route of its own (app.ts). */
  create: RequestHandler;
  /** Every other booking route. */
  router: Router;
}

export function bookingRoutes(
  pool: pg.Pool,
  limits: BookingLimits,
  outcomes: Counter<'outcome'>,
  adminToken: string,
  clientAddressHeader?: string,
  /** With a read replica, an answered change hands out the position its reads must wait for. */
  reads?: ReadRouting,
): BookingRoutes {
  const router = Router();
  const credential = bookingCredential(adminToken);
  const rankings = new BestAvailableRankings(pool);

  const create = async (req: Request<object, unknown, NewBooking>, res: Response) => {
    // Best available: one ranking for the bookers asking at this moment.
    const best = await rankings.place(req.body);
    const outcome = await act<CreatedBooking>(pool, createBooking, [
      req.body.showId,
      req.body,
      req.get('Idempotency-Key') ?? null,
      limits.maxSeatsPerBooking,
      limits.holdDefaultSeconds,
      limits.holdMaxSeconds,
      // The same client as the rate limits count, so hold limits hold behind proxies too.
      clientAddress(req, { header: clientAddressHeader }),
      limits.holds,
      // Only this booker's blocks are sent, so it starts at the first.
      best ?? null,
      null,
    ]);
    outcomes.inc({ outcome: outcome.booking.status });
    if (outcome.booking.status === 'failed') {
      // A failed booking holds nothing: its secret is never given out.
      const { secret: _secret, ...booking } = outcome.booking;
      throw new ProblemError(
        problemForFailure(booking.failureReason),
        failureDetail(booking, req.body),
        {
          ...(booking.unavailableSeats?.length ? { unavailableSeats: booking.unavailableSeats } : {}),
          ...(booking.unavailableAreas?.length ? { unavailableAreas: booking.unavailableAreas } : {}),
          booking,
        },
        replayHeaders(outcome),
      );
    }
    res.location(`/api/bookings/${outcome.booking.id}`);
    await reads?.sendWritePosition(res);
    sendOutcome(res, 201, outcome);
  };

  router.get('/api/bookings/:bookingId', async (req: Request<BookingPath>, res) => {
    const booking = await callJson<Booking>(pool, getBooking, [req.params.bookingId, credential(req)]);
    if (!booking) {
      throw new ProblemError('booking-not-found', `There is no booking ${req.params.bookingId}`);
    }
    res.json(booking);
  });

  router.post('/api/bookings/:bookingId/confirm', async (req: Request<BookingPath, unknown, ConfirmBooking | undefined>, res) => {
    const outcome = await act(pool, confirmBooking, [req.params.bookingId, req.body ?? {}, req.get('Idempotency-Key') ?? null, credential(req)]);
    await reads?.sendWritePosition(res);
    sendOutcome(res, 200, outcome);
  });

  router.post('/api/bookings/:bookingId/cancel', async (req: Request<BookingPath, unknown, CancelBooking | undefined>, res) => {
    const outcome = await act(pool, cancelBooking, [req.params.bookingId, req.body ?? {}, req.get('Idempotency-Key') ?? null, credential(req)]);
    await reads?.sendWritePosition(res);
    sendOutcome(res, 200, outcome);
  });

  // Admin: the contract's security guards this path before the body is read (app.ts).
  router.get('/api/shows/:showId/bookings', async (req: Request<ShowBookingsPath, unknown, unknown, ShowBookingsQuery>, res) => {
    const { status, limit = 50, cursor } = req.query;
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    const page = await callJson<{ items: Booking[]; next: PageKey | null }>(pool, listShowBookings, [
      req.params.showId,
      status ?? null,
      after?.at ?? null,
      after?.id ?? null,
      limit,
    ]);
    if (!page) throw showNotFound(req.params.showId);
    res.json(page.next ? { items: page.items, nextCursor: encodeCursor(page.next) } : { items: page.items });
  });

  return { create: create as RequestHandler, router };
}
