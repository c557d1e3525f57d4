// pgbench runs on the bench's own database server: the booking function
// called directly, and the minimal booking of ../shared/limit, the least a
// booking can be on PostgreSQL.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from '../src/paths.js';
import type { DatabaseCost } from './database-cost.js';

const run = promisify(execFile);

export const PGBENCH = ['/usr/bin/pgbench', '/usr/lib/postgresql/15/bin/pgbench'].find((file) => existsSync(file));
const PSQL = ['/usr/bin/psql', '/usr/lib/postgresql/15/bin/psql'].find((file) => existsSync(file));

/** Beside the repository, as CI clones it; never copied into it. */
export const LIMIT_DIR = path.resolve(projectRoot, '../shared/limit');

export interface PgbenchResult {
  name: string;
  /** What pgbench called: the service's booking function or the minimal one. */
  target: 'create_booking' | 'minimal';
  clients: number;
  durationSeconds: number;
  transactionsPerSecond: number;
  latencyAverageMs: number;
  transactions: number;
  failed: number;
  /** What PostgreSQL did per booking in this run. */
  database?: DatabaseCost;
  /** The invariants' violations on the run's show (pgbench → create_booking). */
  violations?: string[];
}

export async function pgbench(
  url: string,
  script: string,
  clients: number,
  durationSeconds: number,
): Promise<Omit<PgbenchResult, 'name' | 'target'>> {
  if (!PGBENCH) throw new Error('pgbench is not installed');
  const { stdout } = await run(
    PGBENCH,
    ['-n', '-M', 'prepared', '-c', String(clients), '-j', '2', '-T', String(durationSeconds), '-f', script, url],
    { maxBuffer: 10 * 1024 * 1024 },
  );
  const number = (pattern: RegExp) => Number(pattern.exec(stdout)?.[1] ?? Number.NaN);
  return {
    clients,
    durationSeconds,
    transactionsPerSecond: Math.round(number(/tps = ([\d.]+)/)),
    latencyAverageMs: number(/latency average = ([\d.]+) ms/),
    transactions: number(/number of transactions actually processed: (\d+)/),
    failed: number(/number of failed transactions: (\d+)/) || 0,
  };
}

/** Runs `use` with a pgbench script written to a directory of its own, which is removed after. */
export async function withScript<T>(lines: string[], use: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'booking-pgbench-'));
  try {
    const file = path.join(dir, 'book.sql');
    await writeFile(file, `${lines.join('\n')}\n`);
    return await use(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function psqlFile(url: string, file: string): Promise<void> {
  if (!PSQL) throw new Error('psql is not installed');
  await run(PSQL, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', file, url]);
}

/**
 * Why the minimal baseline cannot run here, or undefined when it can. Its
 * absence is reported, never a failure: the service's own figures stand.
 */
export function minimalUnavailable(): string | undefined {
  if (!PGBENCH) return 'pgbench not found (apt-get install postgresql-client)';
  if (!PSQL) return 'psql not found (apt-get install postgresql-client)';
  for (const file of ['minimal.sql', 'reset.sql', 'hot.pgbench', 'spread.pgbench']) {
    if (!existsSync(path.join(LIMIT_DIR, file))) return `${path.join(LIMIT_DIR, file)} is missing`;
  }
  return undefined;
}
