// Through PgBouncer 1.18 in transaction mode (TEST_THROUGH_PGBOUNCER=1):
// the tests really go through it, named statements really break there, and
// the service's unnamed ones work. Streams, which need the direct
// listener, are proven by tests/live.test.ts run the same way.
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { readConfig } from '../src/config.js';
import { callJson, statement } from '../src/db.js';
import { testPool } from './support.js';

const through = inject('throughPgBouncer');

describe.skipIf(!through)('through PgBouncer in transaction mode', () => {
  const pool = testPool(4);

  /** Two clients of the bouncer, taking turns, so their transactions land on whichever server connection is free. */
  async function twoClients<T>(work: (a: pg.Client, b: pg.Client) => Promise<T>): Promise<T> {
    const a = new pg.Client({ connectionString: inject('databaseUrl') });
    const b = new pg.Client({ connectionString: inject('databaseUrl') });
    await Promise.all([a.connect(), b.connect()]);
    try {
      return await work(a, b);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  }

  it('reaches the database through the bouncer, not directly', async () => {
    const { rows } = await pool.query<{ port: number }>('select inet_server_port() as port');
    expect(String(rows[0]?.port)).toBe(new URL(inject('directUrl')).port);
    expect(new URL(inject('databaseUrl')).port).not.toBe(new URL(inject('directUrl')).port);
  });

  it('breaks named prepared statements, which is why the service sends unnamed ones there', async () => {
    const failures = await twoClients(async (a, b) => {
      const errors: string[] = [];
      for (let i = 0; i < 10; i++) {
        for (const client of [a, b]) {
          await client.query({ name: 'interleaved', text: 'select $1::int as i', values: [i] }).catch((error: Error) => errors.push(error.message));
        }
      }
      return errors;
    });
    // Each client believes its statement is prepared; the server connection
    // it lands on says otherwise ("already exists" or "does not exist").
    expect(failures.length).toBeGreaterThan(0);
    expect(failures[0]).toMatch(/prepared statement "interleaved" (already exists|does not exist)/);
  });

  it('runs the same statements unnamed from the service pool without a failure', async () => {
    const named = statement('interleaved_pool', 'select to_json($1::int) as result');
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => callJson<number>(pool, named, [i])));
    expect(results).toEqual(Array.from({ length: 40 }, (_, i) => i));
  });

  it('refuses the startup options a direct pool sends, so the database carries the settings', async () => {
    const client = new pg.Client({ connectionString: inject('databaseUrl'), options: '-c statement_timeout=1000' });
    await expect(client.connect()).rejects.toThrow(/unsupported startup parameter: options/);
    const { rows } = await pool.query<{ tz: string; st: string }>(`select current_setting('TimeZone') as tz, current_setting('statement_timeout') as st`);
    expect(rows[0]).toEqual({ tz: 'UTC', st: '5s' });
  });
});

describe('pooler configuration', () => {
  it('is direct unless told, with the listener on DATABASE_URL', () => {
    expect(readConfig({})).toMatchObject({ databasePooler: 'none', databaseDirectUrl: undefined });
    expect(readConfig({ DATABASE_POOLER: 'transaction', DATABASE_DIRECT_URL: 'postgres://db:5432/booking' })).toMatchObject({
      databasePooler: 'transaction',
      databaseDirectUrl: 'postgres://db:5432/booking',
    });
  });

  it('names the variable it refuses', () => {
    expect(() => readConfig({ DATABASE_POOLER: 'session' })).toThrow(/DATABASE_POOLER/);
    expect(() => readConfig({ DATABASE_DIRECT_URL: 'mysql://db/booking' })).toThrow(/DATABASE_DIRECT_URL/);
  });
});
