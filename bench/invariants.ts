// The invariants every load, fault and property run must end with, in one
// place: the benchmark, the fault script and the tests all check these.
import type pg from 'pg';

/** Seats in two active bookings over overlapping legs (of one show, or all). */
export async function doubleBookedSeats(db: pg.Pool, showId?: string): Promise<string[]> {
  const { rows } = await db.query<{ seat_id: string }>(
    `select a.seat_id from app.booking_seats a join app.booking_seats b
       on a.seat_id = b.seat_id and a.booking_id < b.booking_id and a.legs && b.legs
     where a.active and b.active and ($1::uuid is null or a.show_id = $1)`,
    [showId ?? null],
  );
  return rows.map((row) => row.seat_id);
}

/** Holds still pending past their expiry (of one show, or all). */
export async function lapsedHolds(db: pg.Pool, showId?: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `select id from app.bookings
     where status = 'pending' and expires_at <= now() and ($1::uuid is null or show_id = $1)`,
    [showId ?? null],
  );
  return rows.map((row) => row.id);
}

/**
 * Standing areas whose ledger of taken units (app.area_ledger) does not sum
 * to their number of active booking rows (of one show, or all). Read in one
 * statement: both change in the same transactions, so any snapshot agrees.
 */
export async function areaCountMismatches(db: pg.Pool, showId?: string): Promise<string[]> {
  const { rows } = await db.query<{ area: string }>(
    `select a.show_id || '/' || a.name as area from app.areas a
     where ($1::uuid is null or a.show_id = $1)
       and (select coalesce(sum(l.taken), 0) from app.area_ledger l where l.show_id = a.show_id and l.area = a.name)
           <> (select count(*) from app.booking_seats bs
               where bs.seat_id between a.first_unit_id and a.last_unit_id and bs.active)`,
    [showId ?? null],
  );
  return rows.map((row) => row.area);
}

/**
 * The violations of a run's end state: seats in two active bookings, 201s
 * that are not Confirmed, holds alive past their expiry, standing areas
 * miscounted. Empty is the only acceptable answer.
 */
export async function invariantViolations(db: pg.Pool, confirmedIds: Iterable<string>, showId?: string): Promise<string[]> {
  const violations: string[] = [];
  const doubles = await doubleBookedSeats(db, showId);
  if (doubles.length) violations.push(`${doubles.length} seats in two active bookings`);
  const ids = [...confirmedIds];
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from app.bookings where id = any($1::uuid[]) and status = 'confirmed'`,
    [ids],
  );
  const confirmed = rows[0]?.n ?? 0;
  if (confirmed !== ids.length) violations.push(`${ids.length - confirmed} bookings answered 201 but are not confirmed`);
  const lapsed = await lapsedHolds(db, showId);
  if (lapsed.length) violations.push(`${lapsed.length} pending bookings past their expiry`);
  const miscounted = await areaCountMismatches(db, showId);
  if (miscounted.length) violations.push(`${miscounted.length} standing areas whose ledger of taken units is not their active bookings`);
  return violations;
}
