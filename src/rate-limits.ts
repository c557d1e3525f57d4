// Per-client rate limits whose counters live in PostgreSQL, so that every
// instance of the service counts against the same limit. The store is
// @acpr/rate-limit-postgresql (the PostgreSQL store express-rate-limit lists).
//
// What the store does, read from its source (1.4.1):
// - Its schema is its own: a `rate_limit` schema (tables `sessions`,
//   `records_aggregated`, `individual_records` and plpgsql functions), the
//   `uuid-ossp` extension, and a `public.migrations` table of its migration
//   tool (postgres-migrations, serialised by an advisory lock).
// - Its constructor starts those migrations and does not wait for them or
//   handle their failure: a database that goes away while they run (a
//   shutdown right after start: two limiters' migrations queue for one
//   advisory lock, retrying each second) is an unhandled 'error' and ends
//   the process. So the store is made without its constructor, and
//   `prepareRateLimitStore` runs the same migrations, awaited, with the
//   service's own migrations or at start.
// - postgres-migrations asks whether a table named `migrations` exists in
//   any schema, then reads `migrations` unqualified: graphile-migrate's
//   `graphile_migrate.migrations` answers the first and fails the second
//   ("relation \"migrations\" does not exist"). Creating its table first,
//   with its own bootstrap file, makes both questions agree.
// - `init` opens a pg pool of its own from the given settings; each request
//   is one call of `rate_limit.agg_increment`, which takes an exclusive lock
//   on `rate_limit.sessions` for its (short) transaction: all limiters of all
//   instances count one after the other.
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PostgresStore } from '@acpr/rate-limit-postgresql';
import type { RequestHandler } from 'express';
import { rateLimit } from 'express-rate-limit';
import pg from 'pg';
import { migrate } from 'postgres-migrations';
import { clientKey } from './client-address.js';
import { behindTransactionPooler } from './db.js';
import { defaultDatabaseTimeouts } from './config.js';
import { ProblemError } from './problem.js';

/** Connections of each limiter's own pool: the counting is serialised anyway. */
const STORE_POOL_SIZE = 2;

export interface LimiterOptions {
  /** The bucket's name, shared by all instances (rate_limit.sessions.name_). */
  name: string;
  /** Requests per client per window. */
  limit: number;
  windowMs: number;
  /** What the refusal's detail says is limited, e.g. "bookings". */
  what: string;
  /** The service pool's connection settings; the limiter opens a small pool of its own with them. */
  connection: pg.PoolConfig;
  clientAddressHeader?: string;
}

/**
 * One limit, counted in PostgreSQL. Refusals are the `rate-limited` problem
 * with Retry-After. When the store cannot count (its database is unreachable,
 * its pool is exhausted, or it waited too long for the lock) the request is
 * refused with a 503 problem: the limiter fails closed. The database it counts
 * in is the one every request needs, so failing open would pass requests that
 * fail anyway, except when only the limiter is overwhelmed: that is a flood,
 * which is what the limit is there to stop before it reaches the bookings' pool.
 */
export function postgresLimiter(options: LimiterOptions): RequestHandler {
  // The constructor's two assignments, without its unawaited migrations.
  const store: PostgresStore = Object.create(PostgresStore.prototype);
  store.config = storeConnection(options.connection);
  store.prefix = options.name;
  const limiter = rateLimit({
    windowMs: options.windowMs,
    limit: options.limit,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    identifier: options.name,
    store,
    keyGenerator: (req) => clientKey(req, { header: options.clientAddressHeader }),
    passOnStoreError: false,
    handler: (_req, res, next) => {
      // express-rate-limit has set Retry-After to the window's remaining seconds.
      const seconds = String(res.getHeader('Retry-After') ?? Math.ceil(options.windowMs / 1000));
      next(
        new ProblemError(
          'rate-limited',
          `At most ${options.limit} ${options.what} per ${options.windowMs / 1000} s from one client`,
          {},
          { 'Retry-After': seconds },
        ),
      );
    },
  });
  // The store's pool has no error listener: an idle connection that drops
  // would otherwise be an uncaught 'error' event and end the process.
  const storePool: unknown = store.pool;
  if (storePool instanceof EventEmitter) storePool.on('error', () => {});
  return limiter;
}

function storeConnection(connection: pg.PoolConfig): pg.PoolConfig {
  return {
    connectionString: connection.connectionString,
    host: connection.host,
    port: connection.port,
    user: connection.user,
    password: connection.password,
    database: connection.database,
    ssl: connection.ssl,
    max: STORE_POOL_SIZE,
    application_name: 'ticket-booking-rate-limit',
    // Counting is one short statement: a limiter that cannot count within a
    // second refuses the request rather than holding it. Connecting may take
    // as long as the service's own pool allows.
    // A transaction-mode PgBouncer refuses startup options; there the role's
    // settings bound the count instead.
    options: behindTransactionPooler(connection) ? undefined : '-c statement_timeout=1000 -c lock_timeout=1000 -c TimeZone=UTC',
    connectionTimeoutMillis: connection.connectionTimeoutMillis ?? defaultDatabaseTimeouts.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    // Pools that only count never keep a process alive.
    allowExitOnIdle: true,
  };
}

/**
 * Creates or updates the store's schema (the library's own migrations),
 * awaited, before any limiter is built. Needs CREATE on the database (the
 * database owner has it), not a superuser: uuid-ossp is a trusted extension.
 */
export async function prepareRateLimitStore(connectionString: string, log: (message: string) => void = () => {}): Promise<void> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    // Only when missing: a role that may not create still passes a check
    // of a schema that is complete.
    const { rows } = await client.query<{ missing: boolean }>(`select to_regclass('migrations') is null as missing`);
    if (rows[0]?.missing) await client.query(await readFile(migrationTableFile(), 'utf8'));
    const applied = await migrate({ client }, storeMigrationsFolder());
    for (const migration of applied) log(`rate limit store: applied ${migration.name}`);
  } finally {
    await client.end();
  }
}

const require = createRequire(import.meta.url);

/** The library's migrations ship beside its code. */
function storeMigrationsFolder(): string {
  return path.join(path.dirname(require.resolve('@acpr/rate-limit-postgresql')), 'migrations');
}

/** postgres-migrations' first migration: `create table if not exists migrations`. */
function migrationTableFile(): string {
  return path.join(path.dirname(require.resolve('postgres-migrations')), 'migrations', '0_create-migrations-table.sql');
}
