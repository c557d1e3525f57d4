// Generated histories: random mixes of book, hold, confirm, cancel, expiry
// and sweep from several clients at once, each on its own connection, then
// the invariants on the final state. The seed is fixed (FC_SEED to change
// it) and printed on failure, so any failure replays; FC_RUNS sets how many
// histories (25 in CI).
import fc from 'fast-check';
import pg from 'pg';
import { expect, inject, it } from 'vitest';
import { doubleBookedSeats, lapsedHolds } from '../bench/invariants.js';
import { createShow, customer, testApp, testPool, theatre } from './support.js';

const pool = testPool(4);
const app = await testApp(pool);

const SEED = Number(process.env.FC_SEED ?? 20261124);
const LABELS = ['Stalls-A-1', 'Stalls-A-2', 'Stalls-A-3', 'Stalls-B-1', 'Stalls-B-2', 'Stalls-B-3'];

type Command =
  | { kind: 'book'; seats: string[]; hold: boolean }
  | { kind: 'best'; quantity: number; hold: boolean }
  | { kind: 'confirm'; pick: number }
  | { kind: 'cancel'; pick: number }
  | { kind: 'lapse'; pick: number }
  | { kind: 'sweep' };

const command: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ kind: fc.constant('book' as const), seats: fc.subarray(LABELS, { minLength: 1, maxLength: 3 }), hold: fc.boolean() }),
  fc.record({ kind: fc.constant('best' as const), quantity: fc.integer({ min: 1, max: 3 }), hold: fc.boolean() }),
  fc.record({ kind: fc.constant('confirm' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('lapse' as const), pick: fc.nat() }),
  fc.constant({ kind: 'sweep' as const }),
);
const history = fc.array(fc.array(command, { minLength: 1, maxLength: 12 }), { minLength: 2, maxLength: 4 });

/** What clients were told, per booking: the transitions that succeeded. */
interface Seen {
  created: string;
  confirmed: boolean;
  cancelled: boolean;
}

async function run(client: pg.Client, showId: string, commands: Command[], seen: Map<string, Seen>): Promise<void> {
  const ids = () => [...seen.keys()];
  const pick = (n: number) => ids()[n % Math.max(1, ids().length)];
  for (const c of commands) {
    try {
      if (c.kind === 'book' || c.kind === 'best') {
        const request = {
          showId,
          ...(c.kind === 'book' ? { seatLabels: c.seats } : { quantity: c.quantity }),
          ...(c.hold ? { hold: true } : {}),
          customer: customer(),
        };
        const { rows } = await client.query<{ r: { booking: { id: string; status: string } } }>('select app.create_booking($1) as r', [request]);
        const booking = rows[0]?.r.booking;
        if (booking) seen.set(booking.id, { created: booking.status, confirmed: booking.status === 'confirmed', cancelled: false });
      } else if (c.kind === 'sweep') {
        await client.query('select app.sweep()');
      } else {
        const id = pick(c.pick);
        if (!id) continue;
        if (c.kind === 'lapse') {
          // Time passes for a hold. In the service's lock order (the booking
          // row, then its seats' rows), or this helper could deadlock a booker.
          await client.query(
            `with b as (update app.bookings set expires_at = now() - interval '1 second' where id = $1 and status = 'pending' returning id)
             update app.booking_seats set held_until = now() - interval '1 second'
             where booking_id in (select id from b) and held_until is not null`.replaceAll('$1', pg.escapeLiteral(id)),
          );
        } else {
          await client.query(`select app.${c.kind}_booking($1)`, [id]);
          const entry = seen.get(id);
          if (entry && c.kind === 'confirm') entry.confirmed = true;
          if (entry && c.kind === 'cancel') entry.cancelled = true;
        }
      }
    } catch (error) {
      // Refused transitions are part of the history; anything else is a failure.
      if (!(error instanceof Error && 'code' in error && error.code === 'BKSTA')) throw error;
    }
  }
}

async function violations(showId: string, seen: Map<string, Seen>): Promise<string[]> {
  const found: string[] = [];
  const q = async (sql: string) => (await pool.query(sql.replaceAll('$show', pg.escapeLiteral(showId)))).rows;
  const doubles = await doubleBookedSeats(pool, showId);
  if (doubles.length) found.push(`seats in two active bookings: ${JSON.stringify(doubles)}`);
  const stray = await q(`select b.id, b.status from app.bookings b join app.booking_seats bs on bs.booking_id = b.id
      where b.show_id = $show and bs.active and b.status not in ('pending', 'confirmed')`);
  if (stray.length) found.push(`active seats of ended bookings: ${JSON.stringify(stray)}`);
  const partial = await q(`select b.id from app.bookings b join app.booking_seats bs on bs.booking_id = b.id
      where b.show_id = $show and b.status in ('pending', 'confirmed') and not bs.active`);
  if (partial.length) found.push(`live bookings missing seats: ${JSON.stringify(partial)}`);
  const lapsed = await lapsedHolds(pool, showId);
  if (lapsed.length) found.push(`holds alive past expiry after a sweep: ${JSON.stringify(lapsed)}`);
  const statuses = new Map((await q(`select id, status::text from app.bookings where show_id = $show`)).map((r) => [r.id, r.status]));
  for (const [id, entry] of seen) {
    const status = statuses.get(id);
    const expected = entry.cancelled ? ['cancelled'] : entry.confirmed ? ['confirmed'] : entry.created === 'pending' ? ['pending', 'expired'] : [entry.created];
    if (!status || !expected.includes(status)) found.push(`booking ${id}: clients saw ${JSON.stringify(entry)}, database says ${status}`);
  }
  return found;
}

it('random concurrent histories of book, hold, confirm, cancel and expiry keep every invariant', async () => {
  await fc.assert(
    fc.asyncProperty(history, async (clients) => {
      const show = await createShow(app, theatre({ sections: [{ name: 'Stalls', rows: [{ label: 'A', seats: 3, category: 'standard' }, { label: 'B', seats: 3, category: 'premium' }] }] }));
      const connections = clients.map(() => new pg.Client({ connectionString: inject('databaseUrl') }));
      await Promise.all(connections.map((c) => c.connect()));
      const seen = new Map<string, Seen>();
      try {
        await Promise.all(clients.map((commands, i) => run(connections[i] as pg.Client, show.id, commands, seen)));
      } finally {
        await Promise.all(connections.map((c) => c.end()));
      }
      await pool.query('select app.sweep()');
      expect(await violations(show.id, seen)).toEqual([]);
    }),
    { seed: SEED, numRuns: Number(process.env.FC_RUNS ?? 25), verbose: 1 },
  );
});
