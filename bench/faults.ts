// `npm run test:faults`: faults injected under a bounded booking load, on
// loopback only, then the invariants on the final state. A script, not a
// vitest file: it kills and restarts processes.
//
//   1. kill -9 the service mid-load, and start it again;
//   2. stop PostgreSQL in immediate mode mid-load, and start it again;
//   3. terminate busy booking backends (pg_terminate_backend) mid-load;
//   4. clients whose connection drops retry with the same Idempotency-Key.
//
// With TEST_THROUGH_PGBOUNCER=1 the service reaches the database through
// PgBouncer in transaction mode (its listener and migrations directly).
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { invariantViolations } from './invariants.js';
import { productionNodeFlags, waitUntilReady } from '../tests/harness/live-service.js';
import { createBookingClient } from '../src/client.js';
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from '../src/embedded-postgres.js';
import { projectRoot } from '../src/paths.js';
import { TicketKeys } from '../src/ticket-codes.js';
import { PGBOUNCER, pgBouncerInstalled, startPgBouncer, type Bouncer } from '../tests/harness/pgbouncer.js';

const ADMIN_TOKEN = 'faults-admin-token-0123456789';
const REQUESTS = Number(process.env.FAULT_REQUESTS ?? 600);
const CONCURRENCY = 16;

interface Outcome {
  status: number; // 0: no response (connection refused or reset)
  ms: number;
  id?: string;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Stops PostgreSQL the way an immediate shutdown does (SIGQUIT to the postmaster), and waits until it is gone. */
async function crash(database: EmbeddedDatabase): Promise<void> {
  const pid = Number.parseInt((await readFile(`${database.dataDir}/postmaster.pid`, 'utf8')).split('\n')[0] ?? '', 10);
  process.kill(pid, 'SIGQUIT');
  for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
}

/** Starts PostgreSQL again after a crash, on the same port, with crash recovery. */
async function restart(database: EmbeddedDatabase): Promise<void> {
  await database.cluster.start();
}

const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-faults-pg-'));
const db = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: 200 });
await db.createDatabase('booking_faults');
const databaseUrl = db.url('booking_faults');
let bouncer: Bouncer | undefined;
if (process.env.TEST_THROUGH_PGBOUNCER === '1') {
  if (pgBouncerInstalled()) {
    // The settings the pools would send at connect, which the bouncer refuses.
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    await client.query(
      `alter database booking_faults set timezone = 'UTC'; alter database booking_faults set statement_timeout = 5000;
       alter database booking_faults set lock_timeout = 2000; alter database booking_faults set idle_in_transaction_session_timeout = 10000`,
    );
    await client.end();
    bouncer = await startPgBouncer(databaseUrl);
    console.log(`through PgBouncer at ${new URL(bouncer.url).port}`);
  } else {
    console.log(`TEST_THROUGH_PGBOUNCER=1 but ${PGBOUNCER} is missing: SKIPPED, the faults run directly against PostgreSQL`);
  }
}
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
let service: ChildProcess | undefined;
const summary = { requests: 0, faults: [] as string[], terminated: 0, outcomes: {} as Record<string, number>, violations: [] as string[] };

// One key for every start: the service restarts, its tickets stay valid.
const signingKey = TicketKeys.generatePem();

function startService(): ChildProcess {
  const child = spawn(process.execPath, [...productionNodeFlags(), `${projectRoot}dist/main.js`], {
    env: {
      ...process.env, DATABASE_URL: bouncer?.url ?? databaseUrl,
      ...(bouncer ? { DATABASE_POOLER: 'transaction', DATABASE_DIRECT_URL: databaseUrl } : {}), PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'production',
      LOG_LEVEL: 'fatal', ADMIN_TOKEN, METRICS_TOKEN: 'faults-metrics-token-0123456789', RATE_LIMIT_BOOKINGS: '0', RATE_LIMIT_READS: '0', DB_CONNECT_TIMEOUT_MS: '1000',
      DOOR_TOKEN: 'faults-door-token-0123456789', TICKET_SIGNING_KEY: signingKey,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return child;
}

function post(pathname: string, body: unknown, headers: Record<string, string> = {}, dropAfterMs?: number): Promise<Outcome> {
  const payload = JSON.stringify(body);
  const started = Date.now();
  summary.requests += 1;
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: pathname, method: 'POST', agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers } },
      (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => {
          let id: string | undefined;
          try {
            id = res.statusCode === 201 ? JSON.parse(text).id : undefined;
          } catch {
            id = undefined;
          }
          resolve({ status: res.statusCode ?? 0, ms: Date.now() - started, ...(id ? { id } : {}) });
        });
        res.on('error', () => resolve({ status: 0, ms: Date.now() - started }));
      },
    );
    req.on('error', () => resolve({ status: 0, ms: Date.now() - started }));
    req.end(payload);
    if (dropAfterMs !== undefined) setTimeout(() => req.destroy(), dropAfterMs);
  });
}

let customerNumber = 0;
function booking(showId: string, rows: number, seats: number) {
  customerNumber += 1;
  return {
    showId,
    seatLabels: [`Floor-R${1 + Math.floor(Math.random() * rows)}-${1 + Math.floor(Math.random() * seats)}`],
    customer: { name: 'Fault', email: `fault${customerNumber}@example.com` },
  };
}

/** `count` bookings, CONCURRENCY at a time; `during` runs alongside. */
async function load(showId: string, count: number, during: () => Promise<void>): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const outcome = await post('/api/bookings', booking(showId, 20, 50));
      outcomes.push(outcome);
      // While the service restarts, retry at a human pace rather than spin.
      if (outcome.status === 0) await sleep(100);
    }
  };
  await Promise.all([...Array.from({ length: CONCURRENCY }, worker), during()]);
  for (const o of outcomes) summary.outcomes[String(o.status)] = (summary.outcomes[String(o.status)] ?? 0) + 1;
  return outcomes;
}

const admin = new pg.Pool({ connectionString: databaseUrl, max: 2 });
admin.on('error', () => {});
const confirmedSeen = new Set<string>();
let exitCode = 1;
try {
  service = startService();
  await waitUntilReady(base, service);
  const api = createBookingClient(base, { adminToken: ADMIN_TOKEN });
  const created = await api.POST('/api/shows', {
    body: {
      kind: 'show', name: 'Faults', venue: 'Loopback', startsAt: '2030-01-01T20:00:00Z', currency: 'EUR',
      categories: [{ code: 'standard', price: 1000 }],
      sections: [{ name: 'Floor', rows: Array.from({ length: 20 }, (_, r) => ({ label: `R${r + 1}`, seats: 50, category: 'standard' })) }],
    },
  });
  const showId = created.data?.id;
  if (!showId) throw new Error(`could not create the show: ${JSON.stringify(created.error)}`);
  const keep = (outcomes: Outcome[]) => outcomes.forEach((o) => o.id && confirmedSeen.add(o.id));

  // 1. kill -9 the service mid-load; start it again.
  keep(await load(showId, REQUESTS, async () => {
    await sleep(300);
    service?.kill('SIGKILL');
    summary.faults.push('service killed with SIGKILL');
    await sleep(300);
    service = startService();
    await waitUntilReady(base, service);
  }));

  // 2. PostgreSQL stopped in immediate mode mid-load; started again.
  const whileDown: Outcome[] = [];
  keep(await load(showId, REQUESTS, async () => {
    await sleep(300);
    await crash(db);
    summary.faults.push('PostgreSQL stopped in immediate mode');
    for (let i = 0; i < 10; i++) whileDown.push(await post('/api/bookings', booking(showId, 20, 50)));
    await restart(db);
  }));
  if (service.exitCode !== null) summary.violations.push('the service exited while the database was down');
  const downStatuses = new Set(whileDown.map((o) => o.status));
  if ([...downStatuses].some((s) => s !== 503)) summary.violations.push(`while the database was down: statuses ${[...downStatuses]}, not all 503`);
  const slowest = Math.max(...whileDown.map((o) => o.ms));
  if (slowest > 3_000) summary.violations.push(`a 503 took ${slowest} ms while the database was down`);
  const recoveredMs = await waitUntilReady(base, service);

  // 3. Busy booking backends terminated mid-transaction.
  keep(await load(showId, REQUESTS, async () => {
    for (let i = 0; i < 8; i++) {
      await sleep(100);
      const { rows } = await admin.query<{ n: number }>(
        `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
         where application_name = 'ticket-booking' and state = 'active' and pid <> pg_backend_pid()`,
      );
      summary.terminated += rows[0]?.n ?? 0;
      summary.faults.push('busy booking backends terminated');
    }
  }));
  if (service.exitCode !== null) summary.violations.push('the service exited when its backends were terminated');

  // 4. Connections dropped mid-request; retried with the same Idempotency-Key.
  const retried: Array<{ email: string; outcome: Outcome }> = [];
  await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const body = booking(showId, 20, 50);
    const key = `fault-retry-${i}-${Date.now()}`;
    await post('/api/bookings', body, { 'idempotency-key': key }, i % 5);
    summary.faults.push('connection dropped mid-request');
    let outcome: Outcome = { status: 0, ms: 0 };
    for (let attempt = 0; attempt < 10 && (outcome.status === 0 || outcome.status === 503); attempt++) {
      outcome = await post('/api/bookings', body, { 'idempotency-key': key });
    }
    if (outcome.id) confirmedSeen.add(outcome.id);
    retried.push({ email: body.customer.email, outcome });
  }));
  for (const { email, outcome } of retried) {
    const { rows } = await admin.query<{ n: number }>('select count(*)::int as n from app.bookings where customer_email = $1', [email]);
    if (rows[0]?.n !== 1) summary.violations.push(`${email}: ${rows[0]?.n} bookings after a dropped connection and retries (last status ${outcome.status})`);
  }

  // The invariants on the final state.
  await admin.query('select app.sweep()');
  summary.violations.push(...(await invariantViolations(admin, confirmedSeen)));
  const serverErrors = Object.entries(summary.outcomes).filter(([status]) => Number(status) >= 500 && status !== '503');
  if (serverErrors.length) summary.violations.push(`server errors other than 503: ${JSON.stringify(serverErrors)}`);

  const report = {
    date: new Date().toISOString(),
    requests: summary.requests,
    faultsInjected: summary.faults.length,
    faults: Object.fromEntries([...new Set(summary.faults)].map((f) => [f, summary.faults.filter((g) => g === f).length])),
    backendsTerminated: summary.terminated,
    outcomes: summary.outcomes,
    confirmedBookingsChecked: confirmedSeen.size,
    databaseRecoveryMs: recoveredMs,
    slowest503WhileDownMs: slowest,
    violations: summary.violations,
  };
  console.log(JSON.stringify(report, null, 2));
  // CI writes its figures elsewhere, so a run leaves the committed ones as they are.
  await writeFile(process.env.FAULTS_REPORT ?? `${projectRoot}bench/results/faults.json`, `${JSON.stringify(report, null, 2)}\n`);
  exitCode = summary.violations.length ? 1 : 0;
  console.log(`${summary.requests} requests, ${summary.faults.length} faults injected, ${summary.violations.length} violations`);
} finally {
  if (service && service.exitCode === null) {
    service.kill('SIGTERM');
    await new Promise((resolve) => service?.once('exit', resolve));
  }
  await admin.end();
  await bouncer?.stop();
  await db.stop();
  await rm(dataDir, { recursive: true, force: true });
}
process.exit(exitCode);
