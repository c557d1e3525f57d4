// What PostgreSQL did for one run's bookings, counted by the server itself:
// statements (with pg_stat_statements.track=all, those inside functions,
// triggers and foreign-key checks too) and WAL bytes, each per booking.
import pg from 'pg';

export interface StatementCost {
  query: string;
  callsPerBooking: number;
  meanMs: number;
}

export interface DatabaseCost {
  /** Booking attempts the run recorded (confirmed and failed). */
  bookings: number;
  confirmed: number;
  statementsPerBooking: number;
  /** From the server's WAL position: the whole cluster's writes, background work included. */
  walBytesPerBooking: number;
  /** The statements that took the most time in all, most first. */
  top: StatementCost[];
}

export interface CostMark {
  lsn: string;
}

const round = (n: number, places: number) => Math.round(n * 10 ** places) / 10 ** places;

/** Statement statistics of the whole server, read through its `postgres` database. */
export class DatabaseCosts {
  private constructor(private readonly pool: pg.Pool) {}

  /** Undefined (with the reason logged) when the server was not started with pg_stat_statements. */
  static async open(url: string): Promise<DatabaseCosts | undefined> {
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    try {
      await pool.query('create extension if not exists pg_stat_statements');
      await pool.query('select 1 from pg_stat_statements limit 1');
      return new DatabaseCosts(pool);
    } catch (error) {
      console.log(`pg_stat_statements is not available, no statement counts in this run: ${String(error)}`);
      await pool.end();
      return undefined;
    }
  }

  async start(): Promise<CostMark> {
    await this.pool.query('select pg_stat_statements_reset()');
    const { rows } = await this.pool.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn');
    return { lsn: rows[0]?.lsn ?? '0/0' };
  }

  /**
   * The run's cost in `database`, per booking. `count` answers the attempts
   * that reached the database and those of them that won a seat; it runs
   * after the statistics are read, so its own query is not in them.
   */
  async finish(
    mark: CostMark,
    database: string,
    count: () => Promise<{ total: number; confirmed: number }>,
  ): Promise<DatabaseCost> {
    const { rows: wal } = await this.pool.query<{ bytes: string }>(
      'select pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text as bytes',
      [mark.lsn],
    );
    const { rows } = await this.pool.query<{ query: string; calls: string; mean: number; total: number }>(
      `select s.query, s.calls::text as calls, s.mean_exec_time as mean, s.total_exec_time as total
       from pg_stat_statements s join pg_database d on d.oid = s.dbid
       where d.datname = $1
       order by s.total_exec_time desc`,
      [database],
    );
    const bookings = await count();
    const per = Math.max(bookings.total, 1);
    const calls = rows.reduce((sum, row) => sum + Number(row.calls), 0);
    return {
      bookings: bookings.total,
      confirmed: bookings.confirmed,
      statementsPerBooking: round(calls / per, 1),
      walBytesPerBooking: Math.round(Number(wal[0]?.bytes ?? 0) / per),
      top: rows.slice(0, 5).map((row) => ({
        query: row.query.replace(/\s+/g, ' ').trim().slice(0, 90),
        callsPerBooking: round(Number(row.calls) / per, 2),
        meanMs: round(row.mean, 3),
      })),
    };
  }

  async end(): Promise<void> {
    await this.pool.end();
  }
}

/**
 * Waits until no client of the server is running a statement (the
 * service's event sequencer aside), so a run's late requests neither count
 * in the next run nor compete with it. Returns the milliseconds it took.
 */
export async function quiesce(pool: pg.Pool, timeoutMs = 30_000): Promise<number> {
  const started = Date.now();
  let idleReads = 0;
  while (Date.now() - started < timeoutMs && idleReads < 2) {
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity
       where backend_type = 'client backend' and state = 'active' and pid <> pg_backend_pid()
         and query not like '%sequence_events%'`,
    );
    idleReads = rows[0]?.n === 0 ? idleReads + 1 : 0;
    if (idleReads < 2) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return Date.now() - started;
}
