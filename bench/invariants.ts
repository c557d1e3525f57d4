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
 * The violations of a run's end state: seats in two active bookings, 201s
 * that are not Confirmed, holds alive past their expiry. Empty is the only
 * acceptable answer.
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
  return violations;
}
