// `npm run bench`: load scenarios of concurrent seat contention against the
// built service (production settings) on a fresh embedded PostgreSQL. Each
// scenario ends with invariant checks in SQL; results go to bench/results/.
//
//   npm run bench                 full run
//   npm run bench -- --smoke      a few seconds, small numbers (CI)
import http from 'node:http';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import pg from 'pg';
import { createBookingClient, type components } from '../src/client.js';
import { projectRoot } from '../src/migrate.js';
import { invariantViolations } from './invariants.js';
import { startLiveService } from './live-service.js';
import { writeReport } from './report.js';
import { availableParallelism } from 'node:os';

const smoke = process.argv.includes('--smoke');
const ADMIN_TOKEN = 'bench-admin-token-0123456789';
const duration = smoke ? 3 : 15;

export interface ScenarioResult {
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
  /** Figures particular to the scenario. */
  details?: Record<string, number>;
}

export interface PgbenchResult {
  name: string;
  clients: number;
  durationSeconds: number;
  transactionsPerSecond: number;
  latencyAverageMs: number;
  transactions: number;
  failed: number;
}

const PGBENCH = ['/usr/bin/pgbench', '/usr/lib/postgresql/15/bin/pgbench'].find((path) => existsSync(path));

/**
 * The database's own limit: pgbench calling the same booking function with
 * the same workload as an HTTP scenario, on a show of its own.
 */
async function pgbenchScenario(
  name: string,
  base: string,
  databaseUrl: string,
  options: { clients: number; rows: number; seatsPerRow: number; bestAvailable?: boolean },
): Promise<PgbenchResult | undefined> {
  if (!PGBENCH) return undefined;
  const showId = await createShow(base, options.rows, options.seatsPerRow);
  const dir = await mkdtemp(path.join(tmpdir(), 'booking-pgbench-'));
  const script = `${dir}/book.sql`;
  await writeFile(
    script,
    [
      `\\set r random(1, ${options.rows})`,
      `\\set n random(1, ${options.seatsPerRow})`,
      `\\set q random(2, 4)`,
      options.bestAvailable
        ? `select app.create_booking(jsonb_build_object('showId', '${showId}', 'quantity', (:q)::int, 'section', 'Floor', 'customer', jsonb_build_object('name', 'Bench', 'email', 'bench@example.com')));`
        : `select app.create_booking(jsonb_build_object('showId', '${showId}', 'seatLabels', jsonb_build_array('Floor-R' || :r || '-' || :n), 'customer', jsonb_build_object('name', 'Bench', 'email', 'bench@example.com')));`,
      '',
    ].join('\n'),
  );
  const { stdout } = await promisify(execFile)(
    PGBENCH,
    ['-n', '-M', 'prepared', '-c', String(options.clients), '-j', '2', '-T', String(duration), '-f', script, databaseUrl],
    { maxBuffer: 10 * 1024 * 1024 },
  );
  const number = (pattern: RegExp) => Number(pattern.exec(stdout)?.[1] ?? Number.NaN);
  return {
    name,
    clients: options.clients,
    durationSeconds: duration,
    transactionsPerSecond: Math.round(number(/tps = ([\d.]+)/)),
    latencyAverageMs: number(/latency average = ([\d.]+) ms/),
    transactions: number(/number of transactions actually processed: (\d+)/),
    failed: number(/number of failed transactions: (\d+)/) || 0,
  };
}

function layout(rows: number, seatsPerRow: number, sections = 1): components['schemas']['NewShow'] {
  return {
    kind: 'show',
    name: `Benchmark ${sections}x${rows}x${seatsPerRow}`,
    venue: 'Bench Arena',
    startsAt: '2030-01-01T20:00:00Z',
    currency: 'EUR',
    categories: [{ code: 'standard', price: 1000 }],
    sections: Array.from({ length: sections }, (_, i) => ({
      name: i === 0 ? 'Floor' : `Tier${i}`,
      rows: Array.from({ length: rows }, (_, r) => ({ label: `R${r + 1}`, seats: seatsPerRow, category: 'standard' })),
    })),
  };
}

async function createShow(base: string, rows: number, seatsPerRow: number, sections = 1): Promise<string> {
  const api = createBookingClient(base, { adminToken: ADMIN_TOKEN });
  const { data, error } = await api.POST('/api/shows', { body: layout(rows, seatsPerRow, sections) });
  if (!data) throw new Error(`could not create the show: ${JSON.stringify(error)}`);
  return data.id;
}

/** Peak resident memory of a process, from /proc, sampled while a scenario runs. */
function watchRss(pid: number): () => number {
  let peak = 0;
  const timer = setInterval(async () => {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    peak = Math.max(peak, kb);
  }, 200);
  return () => {
    clearInterval(timer);
    return Math.round(peak / 1024);
  };
}

async function bookingScenario(
  name: string,
  base: string,
  db: pg.Pool,
  servicePid: number,
  options: { connections: number; rows: number; seatsPerRow: number; showId?: string; bestAvailable?: boolean },
): Promise<ScenarioResult> {
  const showId = options.showId ?? (await createShow(base, options.rows, options.seatsPerRow));
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
          // Best available: 2 to 4 adjacent seats in the section; otherwise one named seat.
          const seats = options.bestAvailable
            ? { quantity: 2 + (n % 3), section: 'Floor' }
            : { seatLabels: [`Floor-R${row}-${seat}`] };
          return {
            ...request,
            body: JSON.stringify({ showId, ...seats, customer: { name: `Bench ${n}`, email: `bench${n}@example.com` } }),
          };
        },
        onResponse: (status, body) => {
          if (status === 201) confirmedIds.push(JSON.parse(body).id);
        },
      },
    ],
  });
  const summarized = summary(name, options.connections, result, stopRss());
  summarized.violations = await invariantViolations(db, confirmedIds, showId);
  return summarized;
}

function summary(name: string, connections: number, result: autocannon.Result, peakRssMb: number): ScenarioResult {
  return {
    name,
    connections,
    durationSeconds: duration,
    requests: result.requests.total,
    requestsPerSecond: Math.round(result.requests.average),
    latencyMs: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    statusCounts: Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, stat]) => [code, Number(stat.count)])),
    errors: result.errors + result.timeouts,
    violations: [],
    peakRssMb,
  };
}

/** Reads of a 20,000-seat show's map: whole, then revalidated with its ETag. */
async function seatMapScenarios(base: string, servicePid: number): Promise<ScenarioResult[]> {
  const showId = await createShow(base, 50, 100, 4);
  // Some seats booked, so statuses vary.
  for (let i = 0; i < 200; i++) {
    await fetch(`${base}/api/bookings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ showId, quantity: 4, customer: { name: 'Map', email: 'map@example.com' } }),
    });
  }
  await sleep(300);
  const path = `/api/shows/${showId}/seats`;
  const first = await fetch(`${base}${path}`);
  const etag = first.headers.get('etag') ?? '';
  const size = (await first.text()).length;
  const connections = smoke ? 4 : 16;
  let stopRss = watchRss(servicePid);
  const full = await autocannon({ url: `${base}${path}`, connections, duration });
  const fullResult = summary('seat-map', connections, full, stopRss());
  fullResult.details = { seats: 20_000, bodyBytes: size };
  stopRss = watchRss(servicePid);
  const cached = await autocannon({ url: `${base}${path}`, connections, duration, headers: { 'if-none-match': etag } });
  const cachedResult = summary('seat-map-304', connections, cached, stopRss());
  if (!cachedResult.statusCounts['304']) cachedResult.violations.push('revalidation did not answer 304');
  return [fullResult, cachedResult];
}

/** Bookings while N SSE subscribers listen: every subscriber must see every booking. */
async function fanOutScenario(base: string, db: pg.Pool, servicePid: number, subscribers: number): Promise<ScenarioResult> {
  const showId = await createShow(base, 100, 100);
  const url = new URL(`${base}/api/shows/${showId}/events`);
  const rssBefore = Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${servicePid}/status`, 'utf8'))?.[1] ?? 0);
  const received = new Array<number>(subscribers).fill(0);
  const sockets: http.ClientRequest[] = [];
  await Promise.all(
    Array.from({ length: subscribers }, (_, i) =>
      new Promise<void>((resolve, reject) => {
        const req = http.get(
          { host: url.hostname, port: url.port, path: url.pathname, agent: false, headers: { accept: 'text/event-stream' } },
          (res) => {
            res.setEncoding('utf8');
            let partial = '';
            res.on('data', (chunk: string) => {
              const lines = (partial + chunk).split('\n');
              partial = lines.pop() ?? '';
              received[i] = (received[i] ?? 0) + lines.filter((line) => line === 'event: booked').length;
            });
            res.once('data', () => resolve());
          },
        );
        req.on('error', reject);
        sockets.push(req);
      }),
    ),
  );
  const result = await bookingScenario('fan-out', base, db, servicePid, {
    connections: smoke ? 8 : 32,
    rows: 100,
    seatsPerRow: 100,
    showId,
  });
  // Requests still in flight when the clock stopped were booked too: count
  // what the database holds, then let the last events arrive.
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from app.bookings where show_id = $1 and status = 'confirmed'`,
    [showId],
  );
  const confirmed = rows[0]?.n ?? 0;
  for (let i = 0; i < 50 && received.some((n) => n < confirmed); i++) await sleep(100);
  const short = received.filter((n) => n !== confirmed).length;
  if (short) result.violations.push(`${short} of ${subscribers} subscribers did not receive exactly ${confirmed} booked events`);
  result.details = {
    subscribers,
    eventsDelivered: received.reduce((a, b) => a + b, 0),
    rssBeforeSubscribersMb: Math.round(rssBefore / 1024),
  };
  for (const socket of sockets) socket.destroy();
  return result;
}

const service = await startLiveService({
  NODE_ENV: 'production',
  ADMIN_TOKEN,
  METRICS_TOKEN: 'bench-metrics-token-0123456789',
  // The load generator is one client: no per-client limits.
  RATE_LIMIT_BOOKINGS: '0',
  RATE_LIMIT_READS: '0',
  // Nor a per-client cap on streams: the fan-out's subscribers share its address.
  SSE_MAX_STREAMS_PER_CLIENT: '0',
});
const db = new pg.Pool({ connectionString: service.databaseUrl, max: 4 });
let failed = false;
try {
  const { base, pid } = service;

  const flash = { connections: smoke ? 32 : 256, rows: 10, seatsPerRow: 10 };
  const spread = { connections: smoke ? 16 : 64, rows: 100, seatsPerRow: 100 };
  const best = { connections: smoke ? 16 : 64, rows: 100, seatsPerRow: 100, bestAvailable: true };
  const results = [
    await bookingScenario('flash-sale', base, db, pid, flash),
    await bookingScenario('spread', base, db, pid, spread),
    await bookingScenario('best-available', base, db, pid, best),
    ...(await seatMapScenarios(base, pid)),
    await fanOutScenario(base, db, pid, smoke ? 50 : 500),
  ];
  // The same workloads straight into the database, in the same run.
  const pgbench = [
    await pgbenchScenario('flash-sale', base, service.databaseUrl, { ...flash, clients: flash.connections }),
    await pgbenchScenario('spread', base, service.databaseUrl, { ...spread, clients: spread.connections }),
    await pgbenchScenario('best-available', base, service.databaseUrl, { ...best, clients: best.connections }),
  ].filter((result): result is PgbenchResult => result !== undefined);
  for (const result of results) {
    const limit = pgbench.find((p) => p.name === result.name);
    if (limit) result.details = { ...result.details, pgbenchTps: limit.transactionsPerSecond, ratioToPgbench: Math.round((result.requestsPerSecond / limit.transactionsPerSecond) * 100) / 100 };
  }
  if (!PGBENCH) console.log('pgbench not found (apt-get install postgresql-client): no database baseline in this run');

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
  for (const r of results) if (r.details) console.log(`${r.name}: ${JSON.stringify(r.details)}`);
  for (const r of results) for (const v of r.violations) console.error(`VIOLATION in ${r.name}: ${v}`);
  failed = results.some((r) => r.violations.length > 0);
  const file = `${projectRoot}bench/results/${smoke ? 'smoke' : 'latest'}.json`;
  const report = { date: new Date().toISOString(), smoke, machine: { cores: availableParallelism() }, results, pgbench };
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`results written to ${path.relative(projectRoot, file)}`);
  console.table(pgbench);
  if (!smoke) await writeReport(report);
} finally {
  await db.end();
  await service.stop();
}
process.exit(failed ? 1 : 0);
