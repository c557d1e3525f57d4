// One real PostgreSQL for the whole run: TEST_DATABASE_URL when set,
// otherwise an embedded cluster in a temporary directory, deleted after.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../src/embedded-postgres.js';
import { runMigrations } from '../src/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
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

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const given = process.env.TEST_DATABASE_URL;
  if (given) {
    await requireConnections(given, MIN_CONNECTIONS);
    await runMigrations(given, () => {});
    project.provide('databaseUrl', given);
    return async () => {};
  }
  // Under the OS temp dir, which the postgres user can reach (not /root).
  const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-test-pg-'));
  const db = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: MIN_CONNECTIONS + 150 });
  await db.createDatabase('booking_test');
  const url = db.url('booking_test');
  await runMigrations(url, () => {});
  project.provide('databaseUrl', url);
  return () => db.stop();
}
