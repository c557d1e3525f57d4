// One real PostgreSQL for the whole run: TEST_DATABASE_URL when set,
// otherwise an embedded cluster in a temporary directory, deleted after.
// With TEST_THROUGH_PGBOUNCER=1, the tests reach it through PgBouncer in
// transaction mode, as a service behind one would.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../src/embedded-postgres.js';
import { runMigrations } from '../src/migrate.js';
import { PGBOUNCER, pgBouncerInstalled, startPgBouncer } from './harness/pgbouncer.js';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    /** The database itself, for LISTEN: the same as databaseUrl unless through PgBouncer. */
    directUrl: string;
    /** databaseUrl is PgBouncer in transaction mode. */
    throughPgBouncer: boolean;
  }
}

// The race tests open 100 connections of their own beside the pools.
const MIN_CONNECTIONS = 250;

async function requireConnections(url: string, needed: number): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ max_connections: string }>('show max_connections');
    const max = Number(rows[0]?.max_connections);
    if (max < needed) {
      throw new Error(`TEST_DATABASE_URL: the server allows ${max} connections; the race tests need max_connections >= ${needed}`);
    }
  } finally {
    await client.end();
  }
}

// Behind a transaction-mode PgBouncer the pools send no startup options, so
// the database carries the settings they would have sent (README, PgBouncer).
async function throughPgBouncer(project: TestProject, url: string): Promise<() => Promise<void>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const database = pg.escapeIdentifier(new URL(url).pathname.slice(1));
    await client.query(
      `alter database ${database} set timezone = 'UTC';
       alter database ${database} set statement_timeout = 5000;
       alter database ${database} set lock_timeout = 2000;
       alter database ${database} set idle_in_transaction_session_timeout = 10000`,
    );
  } finally {
    await client.end();
  }
  const bouncer = await startPgBouncer(url);
  project.provide('databaseUrl', bouncer.url);
  project.provide('directUrl', url);
  project.provide('throughPgBouncer', true);
  return () => bouncer.stop();
}

function wantPgBouncer(): boolean {
  if (process.env.TEST_THROUGH_PGBOUNCER !== '1') return false;
  if (pgBouncerInstalled()) return true;
  process.stderr.write(`TEST_THROUGH_PGBOUNCER=1 but ${PGBOUNCER} is missing (apt-get install pgbouncer): SKIPPED, the tests run directly against PostgreSQL\n`);
  return false;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  project.provide('throughPgBouncer', false);
  const bounce = wantPgBouncer();
  const given = process.env.TEST_DATABASE_URL;
  if (given) {
    await requireConnections(given, MIN_CONNECTIONS);
    await runMigrations(given, () => {});
    project.provide('databaseUrl', given);
    project.provide('directUrl', given);
    return bounce ? throughPgBouncer(project, given) : async () => {};
  }
  // Under the OS temp dir, which the postgres user can reach (not /root).
  const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-test-pg-'));
  const db = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: MIN_CONNECTIONS + 150 });
  await db.createDatabase('booking_test');
  const url = db.url('booking_test');
  await runMigrations(url, () => {});
  project.provide('databaseUrl', url);
  project.provide('directUrl', url);
  if (!bounce) return () => db.stop();
  const stopBouncer = await throughPgBouncer(project, url);
  return async () => {
    await stopBouncer();
    await db.stop();
  };
}
