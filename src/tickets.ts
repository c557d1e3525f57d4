// Tickets: a confirmed booking's tickets with their signed codes, each code
// as a QR image, and the key set scanners verify codes with offline. The
// database answers which tickets exist and their state; codes are signed
// here, on demand, so nothing about a ticket is stored until it is scanned.
import { Router, type Request } from 'express';
import type pg from 'pg';
import QRCode from 'qrcode';
import { bookingCredential } from './admin.js';
import { callJson, statement } from './db.js';
import type { components, operations } from './generated/api.js';
import { ProblemError } from './problem.js';
import type { TicketKeys } from './ticket-codes.js';

type TicketList = components['schemas']['TicketList'];
type Ticket = components['schemas']['Ticket'];
type TicketsPath = operations['listBookingTickets']['parameters']['path'];
type QrPath = operations['getTicketQrCode']['parameters']['path'];

/** A ticket as the database answers it, before its code. */
type StoredTicket = Omit<Ticket, 'id' | 'code' | 'qrCode'>;
type StoredTicketList = Omit<TicketList, 'tickets'> & { tickets: StoredTicket[] };

const bookingTickets = statement('booking_tickets', 'select app.booking_tickets($1, $2) as result');

/** A booking's tickets, each valid or admitted one with its signed code. */
function withCodes(list: StoredTicketList, keys: TicketKeys): TicketList {
  return {
    ...list,
    tickets: list.tickets.map((ticket) => {
      const id = `${list.bookingId}.${ticket.seat.id}`;
      if (ticket.status === 'void') return { id, ...ticket };
      const code = keys.sign({ showId: list.showId, bookingId: list.bookingId, seatId: ticket.seat.id, label: ticket.seat.label });
      return { id, ...ticket, code, qrCode: `/api/bookings/${list.bookingId}/tickets/${ticket.seat.id}/qr` };
    }),
  };
}

export function ticketRoutes(pool: pg.Pool, keys: TicketKeys, adminToken: string): Router {
  const router = Router();
  const credential = bookingCredential(adminToken);

  const tickets = async (bookingId: string, secret: string | null): Promise<TicketList> => {
    const list = await callJson<StoredTicketList>(pool, bookingTickets, [bookingId, secret]);
    if (!list) throw new ProblemError('booking-not-found', `There is no booking ${bookingId}`);
    return withCodes(list, keys);
  };

  // Public: a scanner needs only these to verify codes offline.
  router.get('/api/tickets/keys', (_req, res) => {
    res.set('Cache-Control', 'public, max-age=300').json(keys.keySet);
  });

  router.get('/api/bookings/:bookingId/tickets', async (req: Request<TicketsPath>, res) => {
    res.json(await tickets(req.params.bookingId, credential(req)));
  });

  router.get('/api/bookings/:bookingId/tickets/:seatId/qr', async (req: Request<QrPath>, res) => {
    const { bookingId, seatId } = req.params;
    const list = await tickets(bookingId, credential(req));
    const code = list.tickets.find((ticket) => ticket.seat.id === Number(seatId))?.code;
    if (!code) throw new ProblemError('ticket-not-found', `Booking ${bookingId} has no valid ticket for seat ${seatId}`);
    const svg = await QRCode.toString(code, { type: 'svg', errorCorrectionLevel: 'M', margin: 4 });
    res.type('image/svg+xml').set('Cache-Control', 'private, no-store').send(svg);
  });

  return router;
}
