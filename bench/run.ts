// `npm run bench`: load scenarios of concurrent seat contention against the
// built service (production settings) on a fresh embedded PostgreSQL. Each
// scenario ends with invariant checks in SQL; results go to bench/results/.
//
//   npm run bench                 full run
//   npm run bench -- --smoke      a few seconds, small numbers (CI)
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import pg from 'pg';
import { freePort, startEmbeddedPostgres } from '../src/embedded-postgres.js';
import { projectRoot, runMigrations } from '../src/migrate.js';

const smoke = process.argv.includes('--smoke');
const duration = smoke ? 3 : 15;

interface ScenarioResult {
  name: string;
  connections: number;
  durationSeconds: number;
  requests: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
  statusCounts: Record<string, number>;
  errors: number;
  violations: string[];
  peakRssMb: number;
}

function layout(rows: number, seatsPerRow: number) {
  return {
    kind: 'show',
    name: `Benchmark ${rows}x${seatsPerRow}`,
    venue: 'Bench Arena',
    startsAt: '2030-01-01T20:00:00Z',
    currency: 'EUR',
    categories: [{ code: 'standard', price: 1000 }],
    sections: [
      {
        name: 'Floor',
        rows: Array.from({ length: rows }, (_, r) => ({ label: `R${r + 1}`, seats: seatsPerRow, category: 'standard' })),
      },
    ],
  };
}

async function createShow(base: string, rows: number, seatsPerRow: number): Promise<string> {
  const response = await fetch(`${base}/api/shows`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(layout(rows, seatsPerRow)),
  });
  if (response.status !== 201) throw new Error(`could not create the show: ${response.status} ${await response.text()}`);
  const show: { id: string } = JSON.parse(await response.text());
  return show.id;
}

/** Peak resident memory of a process, from /proc, sampled while a scenario runs. */
function watchRss(pid: number): () => number {
  let peak = 0;
  const timer = setInterval(async () => {
    const status = await import('node:fs/promises').then((fs) => fs.readFile(`/proc/${pid}/status`, 'utf8')).catch(() => '');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    peak = Math.max(peak, kb);
  }, 200);
  return () => {
    clearInterval(timer);
    return Math.round(peak / 1024);
  };
}

/** The invariants every scenario must end with; each entry is a violation. */
async function checkInvariants(db: pg.Pool, showId: string, confirmedIds: string[]): Promise<string[]> {
  const violations: string[] = [];
  const doubles = await db.query(
    `select a.seat_id from app.booking_seats a join app.booking_seats b
       on a.seat_id = b.seat_id and a.booking_id < b.booking_id and a.legs && b.legs
     where a.show_id = $1 and a.active and b.active`,
    [showId],
  );
  if (doubles.rowCount) violations.push(`${doubles.rowCount} seats in two active bookings`);
  const confirmed = await db.query<{ id: string }>(
    `select id from app.bookings where id = any($1::uuid[]) and status = 'confirmed'`,
    [confirmedIds],
  );
  if (confirmed.rowCount !== confirmedIds.length) {
    violations.push(`${confirmedIds.length - (confirmed.rowCount ?? 0)} bookings answered 201 but are not confirmed`);
  }
  const lapsed = await db.query(
    `select 1 from app.bookings where show_id = $1 and status = 'pending' and expires_at < now()`,
    [showId],
  );
  if (lapsed.rowCount) violations.push(`${lapsed.rowCount} pending bookings past their expiry`);
  return violations;
}

async function bookingScenario(
  name: string,
  base: string,
  db: pg.Pool,
  servicePid: number,
  options: { connections: number; rows: number; seatsPerRow: number },
): Promise<ScenarioResult> {
  const showId = await createShow(base, options.rows, options.seatsPerRow);
  const confirmedIds: string[] = [];
  const stopRss = watchRss(servicePid);
  let n = 0;
  const result = await autocannon({
    url: base,
    connections: options.connections,
    duration,
    requests: [
      {
        method: 'POST',
        path: '/api/bookings',
        headers: { 'content-type': 'application/json' },
        setupRequest: (request) => {
          const row = 1 + Math.floor(Math.random() * options.rows);
          const seat = 1 + Math.floor(Math.random() * options.seatsPerRow);
          n += 1;
          return {
            ...request,
            body: JSON.stringify({
              showId,
              seatLabels: [`Floor-R${row}-${seat}`],
              customer: { name: `Bench ${n}`, email: `bench${n}@example.com` },
            }),
          };
        },
        onResponse: (status, body) => {
          if (status === 201) confirmedIds.push(JSON.parse(body).id);
        },
      },
    ],
  });
  const peakRssMb = stopRss();
  const statusCounts = Object.fromEntries(
    Object.entries(result.statusCodeStats ?? {}).map(([code, stat]) => [code, Number(stat.count)]),
  );
  return {
    name,
    connections: options.connections,
    durationSeconds: duration,
    requests: result.requests.total,
    requestsPerSecond: Math.round(result.requests.average),
    latencyMs: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    statusCounts,
    errors: result.errors + result.timeouts,
    violations: await checkInvariants(db, showId, confirmedIds),
    peakRssMb,
  };
}

async function waitUntilServing(base: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await fetch(`${base}/api/shows?limit=1`).then((r) => r.ok, () => false)) return;
    await sleep(100);
  }
  throw new Error('the service did not start');
}

const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-bench-pg-'));
const database = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: 200 });
let service: ChildProcess | undefined;
const db = new pg.Pool({ connectionString: database.url('booking_bench'), max: 4 });
let failed = false;
try {
  await database.createDatabase('booking_bench');
  await runMigrations(database.url('booking_bench'), () => {});
  const port = await freePort();
  service = spawn(process.execPath, [`${projectRoot}dist/main.js`], {
    env: {
      ...process.env,
      DATABASE_URL: database.url('booking_bench'),
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      HOST: '127.0.0.1',
      PORT: String(port),
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  await waitUntilServing(base);
  const pid = service.pid ?? 0;

  const results = [
    await bookingScenario('flash-sale', base, db, pid, { connections: smoke ? 32 : 256, rows: 10, seatsPerRow: 10 }),
    await bookingScenario('spread', base, db, pid, { connections: smoke ? 16 : 64, rows: 100, seatsPerRow: 100 }),
  ];

  console.table(
    results.map((r) => ({
      scenario: r.name,
      connections: r.connections,
      'req/s': r.requestsPerSecond,
      'p50 ms': r.latencyMs.p50,
      'p99 ms': r.latencyMs.p99,
      statuses: JSON.stringify(r.statusCounts),
      errors: r.errors,
      'peak RSS MB': r.peakRssMb,
      violations: r.violations.length,
    })),
  );
  for (const r of results) for (const v of r.violations) console.error(`VIOLATION in ${r.name}: ${v}`);
  failed = results.some((r) => r.violations.length > 0);
  const file = `${projectRoot}bench/results/${smoke ? 'smoke' : 'latest'}.json`;
  await writeFile(file, `${JSON.stringify({ date: new Date().toISOString(), smoke, results }, null, 2)}\n`);
  console.log(`results written to ${path.relative(projectRoot, file)}`);
} finally {
  service?.kill('SIGTERM');
  await db.end();
  await database.stop();
  await rm(dataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
