// The database pool, and calls of the app schema's functions, each one
// round trip that answers one JSON value.
import pg from 'pg';
import { defaultDatabaseTimeouts, type DatabaseTimeouts } from './config.js';

export interface DatabaseOptions {
  connectionString: string;
  max: number;
  applicationName?: string;
  /** No statement, lock wait or idle transaction may hold seat locks for long. */
  timeouts?: Partial<DatabaseTimeouts>;
  /**
   * The URL is a transaction-mode pooler (PgBouncer before 1.21). Each
   * transaction may run on another server connection, so a statement
   * prepared by name on one is missing on the next: statements go unnamed
   * (parse, bind and execute in one round trip). PgBouncer 1.18 also refuses
   * startup parameters it does not track (`options`), so the session
   * settings below must be set on the role instead (README, PgBouncer).
   */
  transactionPooler?: boolean;
}

// The pools (by their options, which the rate limit store is given) that
// sit behind a transaction-mode pooler.
const pooled = new WeakSet<object>();

/** Whether a pool, or the options of one, is behind a transaction-mode pooler. */
export function behindTransactionPooler(poolOrOptions: pg.Pool | pg.PoolConfig): boolean {
  return pooled.has(poolOrOptions instanceof pg.Pool ? poolOrOptions.options : poolOrOptions);
}

export function createPool(options: DatabaseOptions): pg.Pool {
  const t = { ...defaultDatabaseTimeouts, ...options.timeouts };
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max,
    application_name: options.applicationName ?? 'ticket-booking',
    // Timestamps leave the database as UTC ISO 8601 strings; no stuck
    // client can hold seat locks beyond these bounds.
    options: options.transactionPooler ? undefined : [
      '-c TimeZone=UTC',
      `-c statement_timeout=${t.statementTimeoutMs}`,
      `-c lock_timeout=${t.lockTimeoutMs}`,
      `-c idle_in_transaction_session_timeout=${t.idleInTransactionTimeoutMs}`,
    ].join(' '),
    // A database that does not answer is a quick 503, not a hanging request.
    connectionTimeoutMillis: t.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
  });
  // An idle client that loses its connection must not crash the process;
  // the pool drops it and the next query gets a fresh one.
  pool.on('error', () => {});
  if (options.transactionPooler) pooled.add(pool.options);
  return pool;
}

/** A named statement: prepared once per connection, then only bound and run (unnamed behind a transaction pooler). */
export interface Statement {
  name: string;
  text: string;
}

export function statement(name: string, text: string): Statement {
  return { name, text };
}

/** The query config node-postgres is given for a statement on this pool. */
export function queryOf(pool: pg.Pool, query: Statement, values: unknown[]): pg.QueryConfig {
  return behindTransactionPooler(pool) ? { text: query.text, values } : { name: query.name, text: query.text, values };
}

/**
 * Runs a statement whose one row has one column, `result`, holding JSON, and
 * returns it (null when the function found nothing). The shapes are the
 * contract's, built by the database; response validation checks them.
 */
export async function callJson<T>(pool: pg.Pool, query: Statement, values: unknown[]): Promise<T | null> {
  const result = await pool.query<{ result: T | null }>(queryOf(pool, query, values));
  return result.rows[0]?.result ?? null;
}

/** callJson for a statement that also answers `position`, the WAL position it read at (replica.ts). */
export async function callJsonAt<T>(pool: pg.Pool, query: Statement, values: unknown[]): Promise<{ result: T | null; position: string | null }> {
  const result = await pool.query<{ result: T | null; position: string | null }>(queryOf(pool, query, values));
  const row = result.rows[0];
  return { result: row?.result ?? null, position: row?.position ?? null };
}

/**
 * callJson in a transaction of its own with a longer statement_timeout, for
 * the rare admin statement that may take seconds (creating the largest
 * shows). SET LOCAL ends with the transaction, so the connection goes back
 * to the pool with the pool's own bound.
 */
export async function callJsonWithTimeout<T>(pool: pg.Pool, query: Statement, values: unknown[], statementTimeoutMs: number): Promise<T | null> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(`begin; set local statement_timeout = ${Math.trunc(statementTimeoutMs)}`);
    try {
      const result = await client.query<{ result: T | null }>(queryOf(pool, query, values));
      await client.query('commit');
      return result.rows[0]?.result ?? null;
    } catch (error) {
      await client.query('rollback').catch((rollbackError: unknown) => {
        // A connection that cannot roll back is not given to anyone else.
        broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      });
      throw error;
    }
  } finally {
    client.release(broken);
  }
}
