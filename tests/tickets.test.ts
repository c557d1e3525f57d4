// Tickets and their signed codes, QR images, and the credentials around
// them. Codes are verified the way a scanner does offline: with the key set
// the service publishes, and nothing else.
import { Resvg } from '@resvg/resvg-js';
import jsQRModule from 'jsqr';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TicketKeys, keptSigningKey, verifyTicketCode, type TicketKeySet } from '../src/ticket-codes.js';
import { ADMIN_TOKEN, admin, createShow, customer, door, owner, scraper, testApp, testPool, theatre, type CreatedBooking } from './support.js';
import type { components } from '../src/generated/api.js';

type TicketList = components['schemas']['TicketList'];

// A CommonJS module whose exports are the decoder itself, typed as an ES default export.
const jsQR = jsQRModule.default;

const keys = new TicketKeys(TicketKeys.generatePem());
const pool = testPool(4);
const app = await testApp(pool, { ticketKeys: keys });

async function book(showId: string, seatLabels: string[], hold = false): Promise<CreatedBooking> {
  return (await request(app).post('/api/bookings').send({ showId, seatLabels, customer: customer(), ...(hold ? { hold } : {}) }).expect(201)).body;
}

async function ticketsOf(booking: CreatedBooking): Promise<TicketList> {
  return (await request(app).get(`/api/bookings/${booking.id}/tickets`).set(owner(booking)).expect(200)).body;
}

async function publishedKeys(): Promise<TicketKeySet> {
  const response = await request(app).get('/api/tickets/keys').expect(200);
  expect(response.headers['cache-control']).toBe('public, max-age=300');
  return response.body;
}

/** Every single-character change of a code: each position replaced by another base64url character. */
function alterations(code: string): string[] {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  return Array.from(code, (char, i) => {
    const other = alphabet[(alphabet.indexOf(char) + 1 + (i % 63)) % 64] ?? 'A';
    return code.slice(0, i) + other + code.slice(i + 1);
  });
}

describe('tickets', () => {
  it('are one per confirmed seat, each with a code that verifies offline with the published keys', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-A-1', 'Stalls-A-2', 'Stalls-B-3']);
    const list = await ticketsOf(booking);
    expect(list).toMatchObject({ bookingId: booking.id, showId: show.id, bookingStatus: 'confirmed' });
    expect(list.tickets.map((ticket) => ticket.seat.label)).toEqual(['Stalls-A-1', 'Stalls-A-2', 'Stalls-B-3']);
    const keySet = await publishedKeys();
    expect(keySet.keys).toEqual([expect.objectContaining({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', kid: keys.signingKeyId })]);
    for (const ticket of list.tickets) {
      expect(ticket.status).toBe('valid');
      expect(ticket.id).toBe(`${booking.id}.${ticket.seat.id}`);
      // Short enough for a QR code of modest size.
      expect(ticket.code?.length).toBeLessThan(260);
      const check = verifyTicketCode(ticket.code ?? '', keySet);
      expect(check).toEqual({
        valid: true,
        kid: keys.signingKeyId,
        ticket: { showId: show.id, bookingId: booking.id, seatId: ticket.seat.id, label: ticket.seat.label },
      });
    }
    // Codes are stable: the same ticket read again has the same code.
    expect((await ticketsOf(booking)).tickets.map((t) => t.code)).toEqual(list.tickets.map((t) => t.code));
  });

  it('do not exist for a hold until it is confirmed', async () => {
    const show = await createShow(app);
    const hold = await book(show.id, ['Stalls-A-3'], true);
    expect((await ticketsOf(hold)).tickets).toEqual([]);
    await request(app).post(`/api/bookings/${hold.id}/confirm`).set(owner(hold)).send({}).expect(200);
    expect((await ticketsOf(hold)).tickets).toEqual([expect.objectContaining({ status: 'valid', code: expect.any(String) })]);
  });

  it('are void once the booking is cancelled: no code, no QR image', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-A-4']);
    const [ticket] = (await ticketsOf(booking)).tickets;
    await request(app).post(`/api/bookings/${booking.id}/cancel`).set(owner(booking)).send({}).expect(200);
    const list = await ticketsOf(booking);
    expect(list.bookingStatus).toBe('cancelled');
    expect(list.tickets).toEqual([{ id: ticket?.id, seat: ticket?.seat, status: 'void' }]);
    const qr = await request(app).get(`/api/bookings/${booking.id}/tickets/${ticket?.seat.id}/qr`).set(owner(booking)).expect(404);
    expect(qr.body.type).toBe('/problems/ticket-not-found');
  });

  it('need the booking secret: none is a 401, a wrong one a 404, the admin token reads any', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-B-1']);
    const other = await book(show.id, ['Stalls-B-2']);
    const path = `/api/bookings/${booking.id}/tickets`;
    expect((await request(app).get(path).expect(401)).body.type).toBe('/problems/unauthorized');
    expect((await request(app).get(path).set(owner(other)).expect(404)).body.type).toBe('/problems/booking-not-found');
    await request(app).get(`${path}/${booking.seats[0]?.id}/qr`).set(owner(other)).expect(404);
    await request(app).get(`${path}/${booking.seats[0]?.id}/qr`).expect(401);
    // The door token is no booking's secret.
    await request(app).get(path).set(door).expect(404);
    const asAdmin = (await request(app).get(path).set(admin).expect(200)).body as TicketList;
    expect(asAdmin.tickets).toHaveLength(1);
  });
});

describe('a ticket code', () => {
  it('fails verification when any character is changed', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-B-4']);
    const code = (await ticketsOf(booking)).tickets[0]?.code ?? '';
    const keySet = await publishedKeys();
    expect(verifyTicketCode(code, keySet).valid).toBe(true);
    const altered = alterations(code);
    expect(altered).toHaveLength(code.length);
    for (const variant of altered) expect(verifyTicketCode(variant, keySet), variant).toMatchObject({ valid: false });
    // Cut short, lengthened, or not base64url at all.
    for (const variant of [code.slice(0, -1), `${code}A`, code.slice(1), `${code.slice(0, 20)}+${code.slice(21)}`, '']) {
      expect(verifyTicketCode(variant, keySet).valid).toBe(false);
    }
  });

  it('made with another key, even one claiming the service key id, fails verification', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-B-5']);
    const ticket = (await ticketsOf(booking)).tickets[0];
    const forger = new TicketKeys(TicketKeys.generatePem());
    const claim = { showId: show.id, bookingId: booking.id, seatId: ticket?.seat.id ?? 0, label: ticket?.seat.label ?? '' };
    const forged = forger.sign(claim);
    const keySet = await publishedKeys();
    expect(verifyTicketCode(forged, keySet)).toEqual({ valid: false, reason: 'unknown-key' });
    // The forger's signature over a payload that names the service's key.
    const bytes = Buffer.from(forged, 'base64url');
    Buffer.from(keys.signingKeyId, 'base64url').copy(bytes, 1);
    expect(verifyTicketCode(bytes.toString('base64url'), keySet)).toEqual({ valid: false, reason: 'bad-signature' });
  });

  it('signed by a development key kept in a file still verifies after a restart', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'ticket-key-'));
    try {
      const file = path.join(dir, 'data', 'ticket-signing-key.pem');
      const first = keptSigningKey(file);
      expect(first.created).toBe(true);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const claim = { showId: '0b6a3c1e-6f3e-4a57-9a52-1f0e2b7d9c11', bookingId: '5d0c8f0a-3b8e-4c3a-9a8e-2f4b6c1d7e90', seatId: 3, label: 'Stalls-A-3' };
      const code = new TicketKeys(first.pem).sign(claim);
      const again = keptSigningKey(file);
      expect(again).toEqual({ pem: first.pem, created: false });
      expect(new TicketKeys(again.pem).verify(code)).toMatchObject({ valid: true, ticket: claim });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('signed by a previous key still verifies while that key is listed, and not after', () => {
    const oldPem = TicketKeys.generatePem();
    const old = new TicketKeys(oldPem);
    const oldX = old.keySet.keys[0]?.x ?? '';
    const code = old.sign({ showId: '0b6a3c1e-6f3e-4a57-9a52-1f0e2b7d9c11', bookingId: '5d0c8f0a-3b8e-4c3a-9a8e-2f4b6c1d7e90', seatId: 7, label: 'Balcony-C-7' });
    const rotated = new TicketKeys(TicketKeys.generatePem(), [oldX]);
    expect(rotated.keySet.keys.map((key) => key.kid)).toEqual([rotated.signingKeyId, old.signingKeyId]);
    expect(rotated.verify(code)).toMatchObject({ valid: true, kid: old.signingKeyId, ticket: { seatId: 7, label: 'Balcony-C-7' } });
    expect(new TicketKeys(TicketKeys.generatePem()).verify(code)).toEqual({ valid: false, reason: 'unknown-key' });
  });
});

describe("a ticket's QR image", () => {
  it('is valid SVG whose QR code holds exactly the ticket code', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-A-1', 'Stalls-A-2']);
    const list = await ticketsOf(booking);
    for (const ticket of list.tickets) {
      const response = await request(app).get(ticket.qrCode ?? '').set(owner(booking)).buffer(true).parse((res, done) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => done(null, text));
      });
      expect(response.status).toBe(200);
      expect(response.headers['content-type']).toMatch(/^image\/svg\+xml/);
      const svg = String(response.body);
      expect(svg).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
      // resvg parses the SVG strictly (it throws on malformed XML) and draws it.
      const image = new Resvg(svg, { fitTo: { mode: 'width', value: 400 } }).render();
      const decoded = jsQR(new Uint8ClampedArray(image.pixels), image.width, image.height);
      expect(decoded?.data).toBe(ticket.code);
    }
  });

  it('exists only for a seat of the booking', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-A-3']);
    const other = await book(show.id, ['Stalls-A-4']);
    const response = await request(app).get(`/api/bookings/${booking.id}/tickets/${other.seats[0]?.id}/qr`).set(owner(booking)).expect(404);
    expect(response.body.type).toBe('/problems/ticket-not-found');
  });
});

describe('the door token', () => {
  it('opens no admin route, no booking and no metrics', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-B-6']);
    expect((await request(app).post('/api/shows').set(door).send(theatre()).expect(403)).body.type).toBe('/problems/forbidden');
    await request(app).get(`/api/shows/${show.id}/bookings`).set(door).expect(403);
    await request(app).get(`/api/bookings/${booking.id}`).set(door).expect(404);
    await request(app).post(`/api/bookings/${booking.id}/cancel`).set(door).send({}).expect(404);
    await request(app).get('/metrics').set(door).expect(403);
    // Its event history is the public one: no booking ids, no admissions.
    const history = (await request(app).get(`/api/shows/${show.id}/events`).set(door).set('Accept', 'application/json').expect(200)).body;
    expect(JSON.stringify(history)).not.toContain(booking.id);
  });

  it('is needed to scan: the admin token and the public cannot', async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-B-1']);
    const code = (await ticketsOf(booking)).tickets[0]?.code;
    const scan = { code, gate: 'North', scannedAt: new Date().toISOString() };
    const path = `/api/shows/${show.id}/check-ins`;
    expect((await request(app).post(path).send(scan).expect(401)).headers['www-authenticate']).toBe('Bearer realm="door"');
    await request(app).post(path).set(admin).send(scan).expect(403);
    await request(app).post(path).set(scraper).send(scan).expect(403);
    await request(app).post(path).set(owner(booking)).send(scan).expect(403);
    await request(app).post(`${path}/batch`).set(admin).send({ scans: [{ ...scan, nonce: 'n-0123456789' }] }).expect(403);
    await request(app).post(`${path}/batch`).send({ scans: [{ ...scan, nonce: 'n-0123456789' }] }).expect(401);
    // Counts: the door and the admin, no one else.
    await request(app).get(path).expect(401);
    await request(app).get(path).set(owner(booking)).expect(403);
    await request(app).get(path).set(admin).expect(200);
    // Nothing was admitted by any of them.
    expect((await request(app).get(path).set(door).expect(200)).body).toMatchObject({ tickets: 1, admitted: 0, refused: 0 });
    const { rows } = await pool.query('select count(*)::int as n from app.ticket_scans where show_id = $1', [show.id]);
    expect(rows[0]?.n).toBe(0);
    expect(ADMIN_TOKEN).not.toBe(door.Authorization);
  });
});
