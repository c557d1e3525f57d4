// One real PostgreSQL for the whole run: TEST_DATABASE_URL when set,
// otherwise an embedded cluster in a temporary directory, deleted after.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../src/embedded-postgres.js';
import { runMigrations } from '../src/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const given = process.env.TEST_DATABASE_URL;
  if (given) {
    await runMigrations(given, () => {});
    project.provide('databaseUrl', given);
    return async () => {};
  }
  // Under the OS temp dir, which the postgres user can reach (not /root).
  const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-test-pg-'));
  const db = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: 400 });
  await db.createDatabase('booking_test');
  const url = db.url('booking_test');
  await runMigrations(url, () => {});
  project.provide('databaseUrl', url);
  return () => db.stop();
}
