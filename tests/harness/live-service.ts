// The built service, started as in production on a fresh embedded
// PostgreSQL, for the benchmark, the Postman contract run and the stream check.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/embedded-postgres.js';
import { runMigrations } from '../../src/migrate.js';
import { projectRoot } from '../../src/paths.js';
import { TicketKeys } from '../../src/ticket-codes.js';

export interface LiveService {
  base: string;
  pid: number;
  databaseUrl: string;
  /** Creates a database of its own on the same server (for baselines). */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

/** Waits for /ready to answer 200; returns how long that took. */
export async function waitUntilReady(base: string, service?: ChildProcess, timeoutMs = 30_000): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (service && (service.exitCode !== null || service.signalCode !== null)) {
      throw new Error(`the service exited (${service.exitCode ?? service.signalCode})`);
    }
    if (await fetch(`${base}/ready`).then((r) => r.ok, () => false)) return Date.now() - started;
    await sleep(100);
  }
  throw new Error('the service did not become ready');
}

/**
 * The flags `npm start` gives Node before the entry point (render.yaml starts
 * the service with the same command): the service is measured and tested as
 * it runs in production.
 */
export function productionNodeFlags(): string[] {
  const { scripts } = JSON.parse(readFileSync(`${projectRoot}package.json`, 'utf8')) as { scripts: { start: string } };
  const words = scripts.start.trim().split(/\s+/);
  const entry = words.indexOf('dist/main.js');
  if (words[0] !== 'node' || entry < 0) throw new Error(`npm start is not "node [flags] dist/main.js": ${scripts.start}`);
  return words.slice(1, entry);
}

/**
 * `nodeArgs` go before the entry point after production's flags, e.g.
 * `--cpu-prof` for a profile of the service under load; `nodeFlags` replace
 * production's flags (to compare others).
 */
export async function startLiveService(
  env: Record<string, string>,
  options: { statementStats?: boolean; nodeArgs?: string[]; nodeFlags?: string[] } = {},
): Promise<LiveService> {
  const nodeArgs = [...(options.nodeFlags ?? productionNodeFlags()), ...(options.nodeArgs ?? [])];
  const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-live-pg-'));
  let database: EmbeddedDatabase | undefined;
  let service: ChildProcess | undefined;
  const stop = async () => {
    if (service && service.exitCode === null) {
      const exited = new Promise((resolve) => service?.once('exit', resolve));
      service.kill('SIGTERM');
      await exited;
    }
    await database?.stop();
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    database = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: 400, statementStats: options.statementStats });
    await database.createDatabase('booking_live');
    const databaseUrl = database.url('booking_live');
    // Migrated first, as a deploy's pre-deploy step does; the service does not.
    await runMigrations(databaseUrl, () => {});
    const port = await freePort();
    service = spawn(process.execPath, [...nodeArgs, `${projectRoot}dist/main.js`], {
      env: {
        ...process.env, DATABASE_URL: databaseUrl, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn', MIGRATE_ON_START: 'false',
        // Production requires both; a run that does not scan needs none of its own.
        DOOR_TOKEN: `live-door-token-${randomBytes(12).toString('hex')}`, TICKET_SIGNING_KEY: TicketKeys.generatePem(),
        ...env,
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const base = `http://127.0.0.1:${port}`;
    await waitUntilReady(base, service);
    const started = database;
    const createDatabase = async (name: string) => {
      await started.createDatabase(name);
      return started.url(name);
    };
    return { base, pid: service.pid ?? 0, databaseUrl, createDatabase, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
