// Check-in at the doors: every ticket admitted at most once, even when
// gates scan it at the same instant on separate connections that really
// commit; offline uploads counted once however often they are sent; and
// every refusal with its reason.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { pino } from 'pino';
import request from 'supertest';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { makeApp } from '../src/app.js';
import { loggerOptions } from '../src/logging.js';
import { SeatEventHub } from '../src/seat-events.js';
import { TicketKeys } from '../src/ticket-codes.js';
import type { components } from '../src/generated/api.js';
import {
  ADMIN_TOKEN,
  DOOR_TOKEN,
  METRICS_TOKEN,
  admin,
  createShow,
  customer,
  door,
  owner,
  serve,
  testApp,
  testPool,
  theatre,
  type CreatedBooking,
  withClients,
} from './support.js';

type TicketList = components['schemas']['TicketList'];
type ScanResult = components['schemas']['ScanResult'];
type ScanBatchResult = components['schemas']['ScanBatchResult'];

const keys = new TicketKeys(TicketKeys.generatePem());
const pool = testPool(20);
const app = await testApp(pool, { ticketKeys: keys });
const server = serve(app);

async function book(showId: string, seatLabels: string[]): Promise<CreatedBooking> {
  return (await request(app).post('/api/bookings').send({ showId, seatLabels, customer: customer() }).expect(201)).body;
}

async function codesOf(booking: CreatedBooking): Promise<string[]> {
  const list: TicketList = (await request(app).get(`/api/bookings/${booking.id}/tickets`).set(owner(booking)).expect(200)).body;
  return list.tickets.map((ticket) => ticket.code ?? '');
}

/** A big show, every seat booked two at a time: its show id and ticket codes. */
async function bookedShow(rows: number, seatsPerRow: number): Promise<{ showId: string; codes: string[] }> {
  const show = await createShow(app, theatre({
    sections: [{ name: 'Hall', rows: Array.from({ length: rows }, (_, r) => ({ label: `R${r + 1}`, seats: seatsPerRow, category: 'standard' })) }],
  }));
  const codes: string[] = [];
  for (let r = 1; r <= rows; r++) {
    for (let n = 1; n < seatsPerRow; n += 2) codes.push(...(await codesOf(await book(show.id, [`Hall-R${r}-${n}`, `Hall-R${r}-${n + 1}`]))));
  }
  return { showId: show.id, codes };
}

const now = () => new Date().toISOString();

/** A scan POSTed on a connection of its own. */
function scanOwnConnection(showId: string, body: unknown): Promise<{ status: number; body: ScanResult & { type?: string } }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: server.port,
        path: `/api/shows/${showId}/check-ins`,
        method: 'POST',
        agent: false,
        headers: { ...door, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}


async function admissions(showId: string): Promise<Array<{ booking_id: string; seat_id: string; n: number }>> {
  const { rows } = await pool.query(
    'select booking_id, seat_id, count(*)::int as n from app.ticket_admissions where show_id = $1 group by 1, 2',
    [showId],
  );
  return rows;
}

describe('a scan', () => {
  it('admits a ticket once; the next scan is told when and at which gate it was admitted', async () => {
    const show = await createShow(app);
    const [code] = await codesOf(await book(show.id, ['Stalls-A-1']));
    const path = `/api/shows/${show.id}/check-ins`;
    const first = await request(app).post(path).set(door).send({ code, gate: 'North', scannedAt: '2030-12-01T19:02:11.250Z' }).expect(200);
    expect(first.body).toMatchObject({ outcome: 'admitted', replayed: false, seat: { label: 'Stalls-A-1' }, admission: { gate: 'North' } });
    expect(Date.parse(first.body.admission.scannedAt)).toBe(Date.parse('2030-12-01T19:02:11.250Z'));
    const again = await request(app).post(path).set(door).send({ code, gate: 'South', scannedAt: now() }).expect(409);
    expect(again.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(again.body).toMatchObject({
      type: '/problems/ticket-already-admitted',
      outcome: 'already-admitted',
      seat: { label: 'Stalls-A-1' },
      admission: first.body.admission,
    });
    expect(again.body.detail).toContain('North');
    const counts = (await request(app).get(path).set(door).expect(200)).body;
    expect(counts).toEqual({ showId: show.id, tickets: 1, admitted: 1, gates: [{ gate: 'North', admitted: 1 }], refused: 1 });
  });

  it('with a nonce sent again is answered as the first time, and counted once', async () => {
    const show = await createShow(app);
    const [code] = await codesOf(await book(show.id, ['Stalls-A-2']));
    const path = `/api/shows/${show.id}/check-ins`;
    const scan = { code, gate: 'North', scannedAt: now(), nonce: randomUUID() };
    const first = await request(app).post(path).set(door).send(scan).expect(200);
    const retry = await request(app).post(path).set(door).send(scan).expect(200);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toEqual({ ...first.body, replayed: true });
    const other = (await codesOf(await book(show.id, ['Stalls-A-3'])))[0];
    const reused = await request(app).post(path).set(door).send({ ...scan, code: other }).expect(422);
    expect(reused.body).toMatchObject({ type: '/problems/scan-nonce-reused', outcome: 'nonce-reused' });
    expect((await request(app).get(path).set(door).expect(200)).body).toMatchObject({ tickets: 2, admitted: 1, refused: 0 });
  });

  it('refuses void, unknown, other-show, forged and malformed tickets with their reasons, and admits nothing', async () => {
    const show = await createShow(app);
    const elsewhere = await createShow(app);
    const cancelled = await book(show.id, ['Stalls-B-1']);
    const [voidCode] = await codesOf(cancelled);
    await request(app).post(`/api/bookings/${cancelled.id}/cancel`).set(owner(cancelled)).send({}).expect(200);
    const [otherShowCode] = await codesOf(await book(elsewhere.id, ['Stalls-B-1']));
    const unknownCode = keys.sign({ showId: show.id, bookingId: randomUUID(), seatId: 1, label: 'Stalls-Z-1' });
    const forgedCode = new TicketKeys(TicketKeys.generatePem()).sign({ showId: show.id, bookingId: cancelled.id, seatId: 1, label: 'Stalls-B-1' });
    const [valid] = await codesOf(await book(show.id, ['Stalls-B-2']));
    const altered = `${valid?.slice(0, 60)}${valid?.[60] === 'A' ? 'B' : 'A'}${valid?.slice(61)}`;
    const path = `/api/shows/${show.id}/check-ins`;
    const cases: Array<[string | undefined, number, string, string]> = [
      [voidCode, 409, '/problems/ticket-void', 'void'],
      [otherShowCode, 422, '/problems/ticket-other-show', 'other-show'],
      [unknownCode, 404, '/problems/ticket-not-found', 'unknown'],
      [forgedCode, 422, '/problems/ticket-invalid', 'invalid'],
      [altered, 422, '/problems/ticket-invalid', 'invalid'],
      ['AAAA', 422, '/problems/ticket-invalid', 'invalid'],
    ];
    for (const [code, status, type, outcome] of cases) {
      const response = await request(app).post(path).set(door).send({ code, gate: 'East', scannedAt: now() });
      expect({ status: response.status, type: response.body.type, outcome: response.body.outcome }, code).toEqual({ status, type, outcome });
    }
    expect(await admissions(show.id)).toEqual([]);
    expect((await request(app).get(path).set(door).expect(200)).body).toMatchObject({ tickets: 1, admitted: 0, refused: cases.length });
    // The same refusals in a batch, as outcomes.
    const batch = await request(app).post(`${path}/batch`).set(door)
      .send({ scans: cases.map(([code], i) => ({ code, gate: 'East', scannedAt: now(), nonce: `refused-${i}-${randomUUID()}` })) })
      .expect(200);
    expect(batch.body.results.map((result: ScanResult) => result.outcome)).toEqual(cases.map(([, , , outcome]) => outcome));
    expect(await admissions(show.id)).toEqual([]);
  });

  it('of a show that does not exist is a 404, and a malformed scan a 400 that records nothing', async () => {
    const show = await createShow(app);
    const [code] = await codesOf(await book(show.id, ['Stalls-A-1']));
    const missing = await request(app).post(`/api/shows/${randomUUID()}/check-ins`).set(door).send({ code, gate: 'North', scannedAt: now() }).expect(404);
    expect(missing.body.type).toBe('/problems/show-not-found');
    const path = `/api/shows/${show.id}/check-ins`;
    for (const body of [
      { code, gate: '', scannedAt: now() },
      { code, gate: 'North\u202e', scannedAt: now() },
      { code, gate: 'North', scannedAt: 'yesterday' },
      { code, gate: 'North', scannedAt: now(), nonce: 'short' },
      { code: 'not base64url!', gate: 'North', scannedAt: now() },
      { code, gate: 'North', scannedAt: now(), extra: 1 },
    ]) {
      const response = await request(app).post(path).set(door).send(body).expect(400);
      expect(response.body.type).toBe('/problems/validation-failed');
    }
    await request(app).post(`${path}/batch`).set(door).send({ scans: [] }).expect(400);
    const tooMany = Array.from({ length: 501 }, (_, i) => ({ code, gate: 'North', scannedAt: now(), nonce: `too-many-${i}` }));
    await request(app).post(`${path}/batch`).set(door).send({ scans: tooMany }).expect(400);
    expect(await admissions(show.id)).toEqual([]);
  });
});

describe('gates scanning one ticket at the same instant', () => {
  it('admit it exactly once over HTTP on separate connections; the others are told the first gate', async () => {
    const { showId, codes } = await bookedShow(2, 10);
    for (const code of codes.slice(0, 8)) {
      const scannedAt = now();
      const answers = await Promise.all(Array.from({ length: 10 }, (_, gate) => scanOwnConnection(showId, { code, gate: `Gate ${gate}`, scannedAt })));
      const admitted = answers.filter((answer) => answer.status === 200);
      expect(admitted).toHaveLength(1);
      const refused = answers.filter((answer) => answer.status === 409);
      expect(refused).toHaveLength(9);
      for (const answer of refused) {
        expect(answer.body).toMatchObject({ type: '/problems/ticket-already-admitted', admission: admitted[0]?.body.admission });
      }
    }
    expect((await admissions(showId)).map((row) => row.n)).toEqual(Array(8).fill(1));
  });

  it('admit it exactly once when separate database connections record the scans and commit', async () => {
    const { showId, codes } = await bookedShow(3, 10);
    const tickets = codes.map((code) => {
      const check = keys.verify(code);
      if (!check.valid) throw new Error('a code of the service did not verify');
      return check.ticket;
    });
    // Round after round, two connections scan each ticket at once.
    for (const ticket of tickets) {
      const results = await withClients(2, async (client, gate) => {
        const scans = [{ nonce: randomUUID(), gate: `Gate ${gate}`, scannedAt: now(), ticket }];
        const { rows } = await client.query<{ result: ScanResult[] }>('select app.check_in($1, $2) as result', [showId, JSON.stringify(scans)]);
        return rows[0]?.result[0]?.outcome;
      });
      expect(results.sort()).toEqual(['admitted', 'already-admitted']);
    }
    const rows = await admissions(showId);
    expect(rows).toHaveLength(tickets.length);
    expect(rows.every((row) => row.n === 1)).toBe(true);
    const { rows: scans } = await pool.query<{ outcome: string; n: number }>(
      'select outcome, count(*)::int as n from app.ticket_scans where show_id = $1 group by 1 order by 1',
      [showId],
    );
    expect(scans).toEqual([{ outcome: 'admitted', n: tickets.length }, { outcome: 'already-admitted', n: tickets.length }]);
  });
});

describe('offline uploads', () => {
  it('sent twice count once, and say which scans were replays', async () => {
    const { showId, codes } = await bookedShow(1, 10);
    // Two offline gates saw some of the same tickets.
    const north = codes.slice(0, 6).map((code, i) => ({ code, gate: 'North', scannedAt: new Date(Date.UTC(2030, 11, 1, 19, 0, i)).toISOString(), nonce: `north-${i}-${randomUUID()}` }));
    const south = codes.slice(4).map((code, i) => ({ code, gate: 'South', scannedAt: new Date(Date.UTC(2030, 11, 1, 19, 1, i)).toISOString(), nonce: `south-${i}-${randomUUID()}` }));
    const path = `/api/shows/${showId}/check-ins/batch`;
    const first: ScanBatchResult = (await request(app).post(path).set(door).send({ scans: north }).expect(200)).body;
    expect(first).toMatchObject({ admitted: 6, refused: 0, replayed: 0 });
    const second: ScanBatchResult = (await request(app).post(path).set(door).send({ scans: south }).expect(200)).body;
    expect(second).toMatchObject({ admitted: 4, refused: 2, replayed: 0 });
    expect(second.results.slice(0, 2).map((result) => [result.outcome, result.admission?.gate])).toEqual([
      ['already-admitted', 'North'],
      ['already-admitted', 'North'],
    ]);
    const counts = async () => (await request(app).get(`/api/shows/${showId}/check-ins`).set(admin).expect(200)).body;
    const before = await counts();
    expect(before).toMatchObject({ tickets: 10, admitted: 10, refused: 2, gates: [{ gate: 'North', admitted: 6 }, { gate: 'South', admitted: 4 }] });
    // Both uploads again, and all of them at once in one batch with a scan repeated inside it.
    for (const scans of [north, south, [...south, ...north, north[0]]]) {
      const again: ScanBatchResult = (await request(app).post(path).set(door).send({ scans }).expect(200)).body;
      expect(again).toMatchObject({ admitted: 0, refused: 0, replayed: scans.length });
      expect(again.results.every((result) => result.replayed)).toBe(true);
    }
    expect(second.results.map((r) => r.outcome)).toEqual(
      ((await request(app).post(path).set(door).send({ scans: south }).expect(200)).body as ScanBatchResult).results.map((r) => r.outcome),
    );
    expect(await counts()).toEqual(before);
    const { rows } = await pool.query('select count(*)::int as n from app.ticket_scans where show_id = $1', [showId]);
    expect(rows[0]?.n).toBe(north.length + south.length);
  });

  it('of one batch sent at once on separate connections count once', async () => {
    const { showId, codes } = await bookedShow(1, 20);
    const scans = codes.map((code, i) => ({ code, gate: 'West', scannedAt: now(), nonce: `west-${i}-${randomUUID()}` }));
    const answers = await withClients(4, async (client) => {
      const check = scans.map((scan) => {
        const verified = keys.verify(scan.code);
        return { nonce: scan.nonce, gate: scan.gate, scannedAt: scan.scannedAt, ticket: verified.valid ? verified.ticket : null };
      });
      const { rows } = await client.query<{ result: ScanResult[] }>('select app.check_in($1, $2) as result', [showId, JSON.stringify(check)]);
      return rows[0]?.result ?? [];
    });
    // Exactly one upload recorded each scan; the others replayed it.
    for (let i = 0; i < scans.length; i++) {
      const outcomes = answers.map((results) => results[i]);
      expect(outcomes.filter((result) => result && !result.replayed)).toHaveLength(1);
      expect(outcomes.every((result) => result?.outcome === 'admitted')).toBe(true);
    }
    expect((await admissions(showId)).length).toBe(scans.length);
  });
});

describe('admissions', () => {
  it("are in the admin's event history with their gate, and never in the public one", async () => {
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-A-1']);
    const [code] = await codesOf(booking);
    await request(app).post(`/api/shows/${show.id}/check-ins`).set(door).send({ code, gate: 'Stage door', scannedAt: now() }).expect(200);
    const history = async (headers: Record<string, string>) => {
      for (let i = 0; i < 50; i++) {
        const page = (await request(app).get(`/api/shows/${show.id}/events`).set(headers).set('Accept', 'application/json').expect(200)).body;
        if (page.items.length >= 2 || (!headers.Authorization && page.items.length >= 1)) return page.items;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error('the events were not sequenced');
    };
    const adminItems = await history(admin);
    expect(adminItems.map((event: { type: string }) => event.type)).toEqual(['booked', 'admitted']);
    expect(adminItems[1]).toMatchObject({ type: 'admitted', bookingId: booking.id, gate: 'Stage door', seats: [{ label: 'Stalls-A-1' }] });
    // Give the sequencer time for anything else, then read the public history.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const publicItems = await history({});
    expect(publicItems.map((event: { type: string }) => event.type)).toEqual(['booked']);
    expect(JSON.stringify(publicItems)).not.toContain(booking.id);
    expect(JSON.stringify(publicItems)).not.toContain('Stage door');
  });
});

describe('the logs of check-in', () => {
  it('hold no ticket code, door token or booking secret, at trace level', async () => {
    const logged: string[] = [];
    const logger = pino(loggerOptions('trace'), { write: (line: string) => void logged.push(line) });
    const events = new SeatEventHub(pool, logger, { sequenceIntervalMs: 50, listenUrl: inject('directUrl') });
    await events.start();
    afterAll(() => events.stop());
    const logged_app = makeApp({ pool, logger, validateResponses: true, events, adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN, doorToken: DOOR_TOKEN, ticketKeys: keys });
    const show = await createShow(logged_app);
    const booking: CreatedBooking = (await request(logged_app).post('/api/bookings').send({ showId: show.id, seatLabels: ['Stalls-A-1', 'Stalls-A-2'], customer: customer() }).expect(201)).body;
    const list: TicketList = (await request(logged_app).get(`/api/bookings/${booking.id}/tickets`).set(owner(booking)).expect(200)).body;
    const codes = list.tickets.map((ticket) => ticket.code ?? '');
    await request(logged_app).get(`/api/bookings/${booking.id}/tickets/${list.tickets[0]?.seat.id}/qr`).set(owner(booking)).expect(200);
    const path = `/api/shows/${show.id}/check-ins`;
    await request(logged_app).post(path).set(door).send({ code: codes[0], gate: 'North', scannedAt: now() }).expect(200);
    await request(logged_app).post(path).set(door).send({ code: codes[0], gate: 'North', scannedAt: now() }).expect(409);
    // A signature character changed, never to itself (a code that ended in
    // "AA" stayed valid when its last two became "AA").
    const code = codes[1] ?? '';
    const forged = `${code.slice(0, -2)}${code.at(-2) === 'A' ? 'B' : 'A'}${code.slice(-1)}`;
    await request(logged_app).post(path).set(door).send({ code: forged, gate: 'North', scannedAt: now() }).expect(422);
    await request(logged_app).post(path).set(door).send({ code: codes[1], gate: 'North\u0007', scannedAt: now() }).expect(400);
    await request(logged_app).post(`${path}/batch`).set(door).send({ scans: [{ code: codes[1], gate: 'North', scannedAt: now(), nonce: randomUUID() }] }).expect(200);
    await request(logged_app).post(path).set(admin).send({ code: codes[1], gate: 'North', scannedAt: now() }).expect(403);
    const text = logged.join('');
    expect(text).toContain(`${path} 409`);
    for (const value of [...codes, booking.secret, DOOR_TOKEN, ADMIN_TOKEN]) expect(text).not.toContain(value);
    // Nor a part of a code long enough to be one.
    for (const code of codes) expect(text).not.toContain(code.slice(40, 80));
  });
});

describe('the typed client', () => {
  it('fetches the keys, a code verifies offline with them, and the door token scans it', async () => {
    const { createBookingClient, doorToken, bookingSecret } = await import('../src/client.js');
    const { verifyTicketCode } = await import('../src/ticket-codes.js');
    const api = createBookingClient(`http://127.0.0.1:${server.port}`);
    const show = await createShow(app);
    const booking = await book(show.id, ['Stalls-A-1']);
    const { data: list } = await api.GET('/api/bookings/{bookingId}/tickets', { params: { path: { bookingId: booking.id } }, headers: bookingSecret(booking.secret) });
    const code = list?.tickets[0]?.code ?? '';
    const { data: keySet } = await api.GET('/api/tickets/keys');
    expect(keySet && verifyTicketCode(code, keySet)).toMatchObject({ valid: true, ticket: { showId: show.id, bookingId: booking.id, label: 'Stalls-A-1' } });
    const scanned = await api.POST('/api/shows/{showId}/check-ins', {
      params: { path: { showId: show.id } },
      headers: doorToken(DOOR_TOKEN),
      body: { code, gate: 'North', scannedAt: now() },
    });
    expect(scanned.data?.outcome).toBe('admitted');
    const again = await api.POST('/api/shows/{showId}/check-ins', {
      params: { path: { showId: show.id } },
      headers: doorToken(DOOR_TOKEN),
      body: { code, gate: 'South', scannedAt: now() },
    });
    expect(again.response.status).toBe(409);
    const { data: counts } = await api.GET('/api/shows/{showId}/check-ins', { params: { path: { showId: show.id } }, headers: doorToken(DOOR_TOKEN) });
    expect(counts).toMatchObject({ tickets: 1, admitted: 1, refused: 1 });
  });
});
