// `npm run bench`: the built service (production settings) against a fresh
// embedded PostgreSQL, side by side with pgbench calling its booking
// function and pgbench calling the minimal booking of ../shared/limit, all
// on the same server in the same run. Every scenario ends with invariant
// checks in SQL; results go to bench/results/.
//
//   npm run bench                 full run
//   npm run bench -- --smoke      a few seconds a run (CI); never committed
//   npm run bench -- --only=fan-out,seat-map --no-baselines
//                                 named scenarios only (the booking workloads,
//                                 seat-map, fan-out, door-rush), without the
//                                 pgbench and bare Express runs; written to
//                                 results/partial.json
//   npm run bench -- --node-args="--max-semi-space-size=4"
//                                 the service's Node and V8 flags instead of
//                                 those of `npm start`
//   npm run bench -- --memory-detail
//                                 also where the memory was (V8's heap spaces)
//                                 at each scenario's peak RSS
//   npm run bench -- --only=best-available --rounds=3
//                                 the named booking workloads, round after round
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import pg from 'pg';
import { createBookingClient, type components } from '../src/client.js';
import { readConfig } from '../src/config.js';
import { freePort } from '../src/embedded-postgres.js';
import { projectRoot } from '../src/paths.js';
import { DatabaseCosts, quiesce, type DatabaseCost } from './database-cost.js';
import { invariantViolations } from './invariants.js';
import { startLiveService, waitUntilReady } from '../tests/harness/live-service.js';
import { LIMIT_DIR, PGBENCH, minimalUnavailable, pgbench, psqlFile, withScript, type PgbenchResult } from './pgbench.js';
import { writeReport, type Report } from './report.js';
import { TicketKeys } from '../src/ticket-codes.js';

const smoke = process.argv.includes('--smoke');
const option = (name: string) => process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3);
/** Scenarios to run, by name; all when absent. */
const only = option('only')?.split(',').filter(Boolean);
const runs = (name: string) => !only || only.includes(name);
const baselinesOn = !process.argv.includes('--no-baselines');
const nodeArgs = option('node-args')?.split(' ').filter(Boolean);
/** How many times each chosen booking workload runs, one after another. */
const rounds = Math.max(1, Number(option('rounds') ?? 1) || 1);
/** A run of part of the bench, or with other flags: its figures are not the bench's. */
const partial = only !== undefined || !baselinesOn || nodeArgs !== undefined || rounds > 1;
const ADMIN_TOKEN = 'bench-admin-token-0123456789';
const DOOR_TOKEN = 'bench-door-token-0123456789';
// The bench holds the service's signing key, so it can make the door rush's
// codes itself (checked against the service's own for one booking).
const TICKET_SIGNING_KEY = TicketKeys.generatePem();
/** Every run of a workload, HTTP or pgbench, lasts this long. */
const duration = smoke ? 3 : 10;

export interface ScenarioResult {
  name: string;
  connections: number;
  durationSeconds: number;
  requests: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
  statusCounts: Record<string, number>;
  /** Answers other than 2xx, 304 and 409, by status and problem detail: why they failed. */
  problems?: Record<string, number>;
  errors: number;
  violations: string[];
  peakRssMb: number;
  /** What PostgreSQL did per booking in this run. */
  database?: DatabaseCost;
  /** Figures particular to the scenario. */
  details?: Record<string, number>;
}

export type { PgbenchResult };

/** One workload three ways, in one run: the service, its function, the minimal function. */
export interface Comparison {
  workload: string;
  description: string;
  connections: number;
  serviceRps: number;
  functionTps?: number;
  minimalTps?: number;
  /** Bare Express 5 with one `select 1` a request (bench/bare-express.ts), under the same load: the HTTP ceiling. */
  bareExpress?: { requestsPerSecond: number; p99: number };
  serviceToMinimal?: number;
  functionToMinimal?: number;
  serviceToFunction?: number;
  serviceToBareExpress?: number;
  bareExpressToMinimal?: number;
  /** The workload this one is measured against, and the ratio of their service rates. */
  comparedTo?: string;
  serviceToCompared?: number;
}

interface Workload {
  name: string;
  description: string;
  connections: number;
  rows: number;
  seatsPerRow: number;
  pick: 'one' | 'three' | 'best' | 'area';
  /** With pick 'area': the capacity of the show's standing area, one admission a booking. */
  areaCapacity?: number;
  /** The minimal function's script for this workload, and the show it books. */
  minimal?: { script: 'hot.pgbench' | 'spread.pgbench'; show: number };
  /** Report this workload's service rate as a ratio to another's. */
  comparedTo?: string;
}

const workloads: Workload[] = [
  { name: 'hot', description: '100 seats, one seat a booking', connections: 64, rows: 10, seatsPerRow: 10, pick: 'one', minimal: { script: 'hot.pgbench', show: 1 } },
  { name: 'spread', description: '10,000 seats, one seat a booking', connections: 64, rows: 100, seatsPerRow: 100, pick: 'one', minimal: { script: 'spread.pgbench', show: 2 } },
  { name: 'flash', description: '100 seats, one seat a booking', connections: 256, rows: 10, seatsPerRow: 10, pick: 'one', minimal: { script: 'hot.pgbench', show: 1 } },
  // The flash sale again on a standing area: 100 admissions, one a booking,
  // each taking any free unit (SKIP LOCKED) instead of one named seat.
  {
    name: 'stampede', description: 'a standing area of 100, one admission a booking', connections: 256, rows: 10, seatsPerRow: 10,
    pick: 'area', areaCapacity: 100, minimal: { script: 'hot.pgbench', show: 1 }, comparedTo: 'flash',
  },
  // A festival's standing area, 100 times the stampede's and as large as
  // spread's show: an admission must cost what a seat does whatever the
  // area's size, and latecomers to a sold-out area what a seat's loser does.
  {
    name: 'festival', description: 'a standing area of 10,000, one admission a booking', connections: 64, rows: 10, seatsPerRow: 10,
    pick: 'area', areaCapacity: 10000, comparedTo: 'spread',
  },
  { name: 'multi', description: '10,000 seats, 3 adjacent seats a booking', connections: 64, rows: 100, seatsPerRow: 100, pick: 'three' },
  { name: 'best-available', description: '10,000 seats, 2 to 4 adjacent seats anywhere in the section', connections: 64, rows: 100, seatsPerRow: 100, pick: 'best' },
];

const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? undefined : Math.round((a / b) * 100) / 100;

function layout(rows: number, seatsPerRow: number, sections = 1, areaCapacity?: number): components['schemas']['NewShow'] {
  return {
    ...(areaCapacity ? { areas: [{ name: 'Standing', category: 'standard', capacity: areaCapacity }] } : {}),
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

async function createShow(base: string, rows: number, seatsPerRow: number, sections = 1, areaCapacity?: number): Promise<string> {
  const api = createBookingClient(base, { adminToken: ADMIN_TOKEN });
  const { data, error } = await api.POST('/api/shows', { body: layout(rows, seatsPerRow, sections, areaCapacity) });
  if (!data) throw new Error(`could not create the show: ${JSON.stringify(error)}`);
  return data.id;
}

/** Where the service's memory was at its peak RSS (`--memory-detail`), in MB, from its /metrics. */
const memoryDetail = process.argv.includes('--memory-detail');
let metricsBase = '';
const METRICS_TOKEN = 'bench-metrics-token-0123456789';
const peakMemory: Record<string, Record<string, number>> = {};

async function heapFigures(): Promise<Record<string, number>> {
  const text = await (await fetch(`${metricsBase}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).text();
  const figures: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^nodejs_(heap_size_total|heap_size_used|external_memory|heap_space_size_total)_bytes(?:\{space="(\w+)"\})? (\d+)/.exec(line);
    if (m) figures[m[2] ? `space:${m[2]}` : m[1] ?? ''] = Math.round(Number(m[3]) / 1048576);
  }
  return figures;
}

/** CPU seconds a process has used, user and system, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The service's CPU seconds per scenario (`--memory-detail`): what a request costs it, whatever else the machine does. */
const cpuUsed: Record<string, number> = {};

/** Peak resident memory of a process, from /proc, sampled while a scenario runs. */
function watchRss(pid: number, name = ''): () => number {
  let peak = 0;
  let detailAt = 0;
  const cpuAtStart = memoryDetail ? cpuSeconds(pid) : 0;
  const timer = setInterval(async () => {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    peak = Math.max(peak, kb);
    // A new peak by more than 2 MB: where the memory is now.
    if (memoryDetail && name && peak > detailAt + 2048) {
      detailAt = peak;
      const figures = await heapFigures().catch(() => ({}));
      peakMemory[name] = { rss: Math.round(kb / 1024), ...figures };
    }
  }, 200);
  return () => {
    clearInterval(timer);
    if (memoryDetail && name) cpuUsed[name] = cpuSeconds(pid) - cpuAtStart;
    return Math.round(peak / 1024);
  };
}

/** The seats a request asks for, as the request body's members. */
function seatsFor(workload: Pick<Workload, 'rows' | 'seatsPerRow' | 'pick'>, n: number): Record<string, unknown> {
  if (workload.pick === 'best') return { quantity: 2 + (n % 3), section: 'Floor' };
  if (workload.pick === 'area') return { areas: [{ name: 'Standing', quantity: 1 }] };
  const row = 1 + Math.floor(Math.random() * workload.rows);
  if (workload.pick === 'three') {
    const first = 1 + Math.floor(Math.random() * (workload.seatsPerRow - 2));
    return { seatLabels: [0, 1, 2].map((i) => `Floor-R${row}-${first + i}`) };
  }
  return { seatLabels: [`Floor-R${row}-${1 + Math.floor(Math.random() * workload.seatsPerRow)}`] };
}

/** The same requests as seatsFor, as a pgbench script calling the function as the service does. */
function functionScript(workload: Workload, showId: string): string[] {
  const call = (seats: string) =>
    `select app.create_booking('${showId}', jsonb_build_object('showId', '${showId}', ${seats}, 'customer', jsonb_build_object('name', 'Bench', 'email', 'bench@example.com')), null, 10, 600, 1800, '127.0.0.1', '{}');`;
  const label = (seat: string) => `'Floor-R' || :r || '-' || :${seat}`;
  switch (workload.pick) {
    case 'best':
      return [`\\set q random(2, 4)`, call(`'quantity', (:q)::int, 'section', 'Floor'`)];
    case 'area':
      return [call(`'areas', jsonb_build_array(jsonb_build_object('name', 'Standing', 'quantity', 1))`)];
    case 'three':
      return [
        `\\set r random(1, ${workload.rows})`,
        `\\set a random(1, ${workload.seatsPerRow - 2})`,
        `\\set b :a + 1`,
        `\\set c :a + 2`,
        call(`'seatLabels', jsonb_build_array(${label('a')}, ${label('b')}, ${label('c')})`),
      ];
    case 'one':
      return [`\\set r random(1, ${workload.rows})`, `\\set a random(1, ${workload.seatsPerRow})`, call(`'seatLabels', jsonb_build_array(${label('a')})`)];
  }
}

async function showBookings(db: pg.Pool, showId: string): Promise<{ total: number; confirmed: number }> {
  const { rows } = await db.query<{ total: number; confirmed: number }>(
    `select count(*)::int as total, (count(*) filter (where status = 'confirmed'))::int as confirmed
     from app.bookings where show_id = $1`,
    [showId],
  );
  return rows[0] ?? { total: 0, confirmed: 0 };
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

interface Context {
  base: string;
  pid: number;
  db: pg.Pool;
  costs: DatabaseCosts | undefined;
}

async function bookingScenario(
  name: string,
  { base, pid, db, costs }: Context,
  workload: Pick<Workload, 'connections' | 'rows' | 'seatsPerRow' | 'pick' | 'areaCapacity'>,
  showId?: string,
): Promise<ScenarioResult> {
  const show = showId ?? (await createShow(base, workload.rows, workload.seatsPerRow, 1, workload.areaCapacity));
  const confirmedIds: string[] = [];
  const problems: Record<string, number> = {};
  await quiesce(db);
  const mark = await costs?.start();
  const stopRss = watchRss(pid, name);
  let n = 0;
  const result = await autocannon({
    url: base,
    connections: workload.connections,
    duration,
    requests: [
      {
        method: 'POST',
        path: '/api/bookings',
        headers: { 'content-type': 'application/json' },
        setupRequest: (request) => {
          n += 1;
          return {
            ...request,
            body: JSON.stringify({ showId: show, ...seatsFor(workload, n), customer: { name: `Bench ${n}`, email: `bench${n}@example.com` } }),
          };
        },
        onResponse: (status, body) => {
          if (status === 201) confirmedIds.push(JSON.parse(body).id);
          else if (status !== 409) {
            // The problem's detail names the cause: a pool wait, a lock wait, a statement timeout.
            let detail = '';
            try {
              detail = String(JSON.parse(body).detail ?? '');
            } catch {
              detail = body.slice(0, 80);
            }
            const key = `${status} ${detail}`.trim();
            problems[key] = (problems[key] ?? 0) + 1;
          }
        },
      },
    ],
  });
  const summarized = summary(name, workload.connections, result, stopRss());
  if (Object.keys(problems).length) summarized.problems = problems;
  // Requests in flight when the clock stopped still run, and book: they
  // belong to this run, and nothing counted before they end is final.
  const atClock = await showBookings(db, show);
  const drainMs = await quiesce(db);
  if (mark && costs) summarized.database = await costs.finish(mark, 'booking_live', () => showBookings(db, show));
  const bookings = await showBookings(db, show);
  summarized.details = { drainMs, confirmedAfterClock: bookings.confirmed - atClock.confirmed };
  summarized.violations = await invariantViolations(db, confirmedIds, show);
  return summarized;
}

/** pgbench calling app.create_booking with the workload's requests, on a show of its own. */
async function functionBaseline(context: Context, workload: Workload, databaseUrl: string): Promise<PgbenchResult> {
  const showId = await createShow(context.base, workload.rows, workload.seatsPerRow, 1, workload.areaCapacity);
  await quiesce(context.db);
  const mark = await context.costs?.start();
  const result = await withScript(functionScript(workload, showId), (script) => pgbench(databaseUrl, script, workload.connections, duration));
  await quiesce(context.db);
  const database = mark && context.costs ? await context.costs.finish(mark, 'booking_live', () => showBookings(context.db, showId)) : undefined;
  const violations = await invariantViolations(context.db, [], showId);
  return { name: workload.name, target: 'create_booking', ...result, ...(database ? { database } : {}), violations };
}

/** pgbench calling the minimal function, on its own database of the same server, every seat free again. */
async function minimalBaseline(context: Context, workload: Workload, limitUrl: string): Promise<PgbenchResult | undefined> {
  if (!workload.minimal) return undefined;
  await psqlFile(limitUrl, path.join(LIMIT_DIR, 'reset.sql'));
  await quiesce(context.db);
  const mark = await context.costs?.start();
  const result = await pgbench(limitUrl, path.join(LIMIT_DIR, workload.minimal.script), workload.connections, duration);
  const show = workload.minimal.show;
  const count = async () => {
    const limit = new pg.Client({ connectionString: limitUrl });
    await limit.connect();
    const { rows } = await limit
      .query<{ total: number; confirmed: number }>(
        `select count(*)::int as total, (count(*) filter (where status = 'confirmed'))::int as confirmed from bookings where show_id = $1`,
        [show],
      )
      .finally(() => limit.end());
    return rows[0] ?? { total: 0, confirmed: 0 };
  };
  const database = mark && context.costs ? await context.costs.finish(mark, 'limit', count) : undefined;
  return { name: workload.name, target: 'minimal', ...result, ...(database ? { database } : {}) };
}

/** bench/bare-express.ts as a child process on the bench's database server, with the service's pool size. */
async function startBareExpress(databaseUrl: string): Promise<{ base: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', `${projectRoot}bench/bare-express.ts`], {
    env: { ...process.env, NODE_ENV: 'production', DATABASE_URL: databaseUrl, PORT: String(port), POOL_SIZE: String(readConfig({}).databasePoolSize) },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  try {
    await waitUntilReady(base, child, 15_000);
  } catch (error) {
    await stop();
    throw error;
  }
  return { base, stop };
}

/** Bare Express under the workload's load: the same connections and request bodies as the service's run. */
async function bareExpressBaseline(
  context: Context,
  workload: Workload,
  bare: { base: string },
): Promise<{ requestsPerSecond: number; p99: number }> {
  await quiesce(context.db);
  let n = 0;
  const result = await autocannon({
    url: `${bare.base}/book`,
    connections: workload.connections,
    duration,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    requests: [
      {
        setupRequest: (request) => {
          n += 1;
          const body = { showId: 'bare', ...seatsFor(workload, n), customer: { name: `Bench ${n}`, email: `bench${n}@example.com` } };
          return { ...request, body: JSON.stringify(body) };
        },
      },
    ],
  });
  return { requestsPerSecond: Math.round(result.requests.average), p99: result.latency.p99 };
}

/** Reads of a 20,000-seat show's map: whole, then revalidated with its ETag. */
async function seatMapScenarios({ base, pid }: Context): Promise<ScenarioResult[]> {
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
  const mapPath = `/api/shows/${showId}/seats`;
  const first = await fetch(`${base}${mapPath}`);
  const etag = first.headers.get('etag') ?? '';
  const size = (await first.text()).length;
  const connections = smoke ? 4 : 16;
  let stopRss = watchRss(pid, 'seat-map');
  const full = await autocannon({ url: `${base}${mapPath}`, connections, duration });
  const fullResult = summary('seat-map', connections, full, stopRss());
  fullResult.details = { seats: 20_000, bodyBytes: size };
  stopRss = watchRss(pid, 'seat-map-304');
  const cached = await autocannon({ url: `${base}${mapPath}`, connections, duration, headers: { 'if-none-match': etag } });
  const cachedResult = summary('seat-map-304', connections, cached, stopRss());
  if (!cachedResult.statusCounts['304']) cachedResult.violations.push('revalidation did not answer 304');
  return [fullResult, cachedResult];
}

/** The ids of a show's `booked` events in its public history, oldest first. */
async function bookedInHistory(base: string, showId: string): Promise<number[]> {
  const ids: number[] = [];
  let after = 0;
  for (;;) {
    const response = await fetch(`${base}/api/shows/${showId}/events?after=${after}&limit=1000`, { headers: { accept: 'application/json' } });
    const page = (await response.json()) as components['schemas']['SeatEventPage'];
    for (const event of page.items) if (event.type === 'booked') ids.push(event.id);
    if (page.nextAfter === undefined) return ids;
    after = page.nextAfter;
  }
}

/**
 * Bookings while N SSE subscribers listen: every subscriber must receive each
 * `booked` event of the show exactly once, in order, and there must be one
 * per confirmed booking.
 */
async function fanOutScenario(context: Context, subscribers: number): Promise<ScenarioResult> {
  const { base, db, pid } = context;
  const showId = await createShow(base, 100, 100);
  const url = new URL(`${base}/api/shows/${showId}/events`);
  const rssBefore = Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  // Per subscriber: the ids of the booked events received, in arrival order.
  const received: number[][] = Array.from({ length: subscribers }, () => []);
  const sockets: http.ClientRequest[] = [];
  await Promise.all(
    Array.from({ length: subscribers }, (_, i) =>
      new Promise<void>((resolve, reject) => {
        const req = http.get(
          { host: url.hostname, port: url.port, path: url.pathname, agent: false, headers: { accept: 'text/event-stream' } },
          (res) => {
            res.setEncoding('utf8');
            let partial = '';
            let id = Number.NaN;
            res.on('data', (chunk: string) => {
              const lines = (partial + chunk).split('\n');
              partial = lines.pop() ?? '';
              for (const line of lines) {
                if (line.startsWith('id: ')) id = Number(line.slice(4));
                else if (line === 'event: booked') received[i]?.push(id);
                else if (line === '') id = Number.NaN;
              }
            });
            res.once('data', () => resolve());
          },
        );
        req.on('error', reject);
        sockets.push(req);
      }),
    ),
  );
  const result = await bookingScenario('fan-out', context, { connections: smoke ? 8 : 32, rows: 100, seatsPerRow: 100, pick: 'one' }, showId);
  // bookingScenario waited for the requests still in flight when the clock
  // stopped; the sequencer then gives their events positions within a tick.
  const { confirmed } = await showBookings(db, showId);
  let history = await bookedInHistory(base, showId);
  for (let i = 0; i < 50 && history.length < confirmed; i++) {
    await sleep(100);
    history = await bookedInHistory(base, showId);
  }
  if (history.length !== confirmed) result.violations.push(`the show's history holds ${history.length} booked events for ${confirmed} confirmed bookings`);
  const expected = history.length;
  for (let i = 0; i < 50 && received.some((ids) => ids.length < expected); i++) await sleep(100);
  const wanted = new Set(history);
  let short = 0;
  let extra = 0;
  let duplicated = 0;
  let disordered = 0;
  let foreign = 0;
  for (const ids of received) {
    if (new Set(ids).size !== ids.length) duplicated += 1;
    if (ids.some((id, k) => k > 0 && id <= (ids[k - 1] ?? 0))) disordered += 1;
    if (ids.some((id) => !wanted.has(id))) foreign += 1;
    if (ids.length < expected) short += 1;
    if (ids.length > expected) extra += 1;
  }
  const of = `of ${subscribers} subscribers`;
  if (short) result.violations.push(`${short} ${of} received fewer than the ${expected} booked events`);
  if (extra) result.violations.push(`${extra} ${of} received more than the ${expected} booked events`);
  if (duplicated) result.violations.push(`${duplicated} ${of} received an event twice`);
  if (disordered) result.violations.push(`${disordered} ${of} received events out of order`);
  if (foreign) result.violations.push(`${foreign} ${of} received an event not in the show's history`);
  result.details = {
    ...result.details,
    subscribers,
    eventsDelivered: received.reduce((sum, ids) => sum + ids.length, 0),
    rssBeforeSubscribersMb: Math.round(rssBefore / 1024),
  };
  for (const socket of sockets) socket.destroy();
  return result;
}

/**
 * The door rush: 10 gates scan every ticket of a sold-out 5,000-seat show as
 * fast as they can, with second scans of 10% of the tickets mixed in at
 * other gates. After it, SQL checks that every ticket was admitted once and
 * only once, and that each second scan was refused as already admitted.
 */
async function doorRushScenario({ base, pid, db }: Context): Promise<ScenarioResult> {
  const gates = 10;
  const showId = await createShow(base, 50, 100);
  // Sold out in one statement: the rush, not the sale, is measured here.
  await db.query(
    `select app.create_booking(jsonb_build_object('showId', $1::text,
       'seatLabels', (select jsonb_agg('Floor-R' || r || '-' || (n + k)) from generate_series(0, 3) k),
       'customer', jsonb_build_object('name', 'Door rush', 'email', 'door@example.com')))
     from generate_series(1, 50) r, generate_series(1, 100, 4) n`,
    [showId],
  );
  const { rows: seats } = await db.query<{ booking_id: string; seat_id: string; label: string }>(
    `select bs.booking_id, bs.seat_id, s.label from app.booking_seats bs join app.seats s on s.id = bs.seat_id
     where bs.show_id = $1 and bs.active order by bs.booking_id, bs.seat_id`,
    [showId],
  );
  const keys = new TicketKeys(TICKET_SIGNING_KEY);
  const codes = seats.map((seat) => keys.sign({ showId, bookingId: seat.booking_id, seatId: Number(seat.seat_id), label: seat.label }));
  const violations: string[] = [];
  const sample = seats[0]?.booking_id ?? '';
  const listed = (await (await fetch(`${base}/api/bookings/${sample}/tickets`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as components['schemas']['TicketList'];
  const mine = seats.flatMap((seat, i) => (seat.booking_id === sample ? [codes[i]] : []));
  if (JSON.stringify(listed.tickets.map((ticket) => ticket.code)) !== JSON.stringify(mine)) violations.push("the bench's codes are not the service's");
  // Every ticket once, and a tenth of them again, in an order where a second
  // scan may come right after the first or long after it.
  const duplicates = Math.floor(codes.length / 10);
  const order = [...codes.keys(), ...Array.from({ length: duplicates }, (_, i) => (i * 7919) % codes.length)];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j] ?? 0, order[i] ?? 0];
  }
  const bodies = order.map((ticket, i) =>
    JSON.stringify({ code: codes[ticket], gate: `Gate ${i % gates}`, scannedAt: new Date().toISOString(), nonce: `rush-${String(i).padStart(6, '0')}` }),
  );
  // The answer each scan got; a connection sends one scan at a time.
  const answered = new Map<number, number>();
  const sentOn = new WeakMap<object, number>();
  let n = 0;
  const problems: Record<string, number> = {};
  const stopRss = watchRss(pid, 'door-rush');
  const result = await autocannon({
    url: base,
    connections: gates,
    amount: order.length,
    requests: [
      {
        method: 'POST',
        path: `/api/shows/${showId}/check-ins`,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${DOOR_TOKEN}` },
        setupRequest: (request, context) => {
          const i = n++ % bodies.length;
          sentOn.set(context, i);
          return { ...request, body: bodies[i] };
        },
        onResponse: (status, body, context) => {
          const i = sentOn.get(context);
          if (i !== undefined) answered.set(i, status);
          if (status !== 200 && status !== 409) {
            const key = `${status} ${String((JSON.parse(body) as { type?: string }).type ?? '')}`;
            problems[key] = (problems[key] ?? 0) + 1;
          }
        },
      },
    ],
  });
  const summarized = summary('door-rush', gates, result, stopRss());
  summarized.durationSeconds = Math.round(result.duration * 10) / 10;
  if (Object.keys(problems).length) summarized.problems = problems;
  // A scanner whose scan got no answer, or a 503, sends it again with the
  // same nonce: counted once whether or not the first one was recorded.
  let retried = 0;
  for (let i = 0; i < bodies.length; i++) {
    for (let attempt = 0; attempt < 5 && answered.get(i) !== 200 && answered.get(i) !== 409; attempt++) {
      retried += 1;
      const response = await fetch(`${base}/api/shows/${showId}/check-ins`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${DOOR_TOKEN}` },
        body: bodies[i],
      });
      await response.arrayBuffer();
      answered.set(i, response.status);
    }
  }
  const finalStatuses: Record<string, number> = {};
  for (const status of answered.values()) finalStatuses[status] = (finalStatuses[status] ?? 0) + 1;
  await quiesce(db);
  const { rows: twice } = await db.query<{ n: number }>(
    `select count(*)::int as n from (select 1 from app.ticket_admissions where show_id = $1
     group by booking_id, seat_id having count(*) > 1) t`,
    [showId],
  );
  const { rows: outcomes } = await db.query<{ outcome: string; n: number }>(
    'select outcome, count(*)::int as n from app.ticket_scans where show_id = $1 group by outcome',
    [showId],
  );
  const { rows: admitted } = await db.query<{ n: number }>('select count(*)::int as n from app.ticket_admissions where show_id = $1', [showId]);
  const scans = Object.fromEntries(outcomes.map((row) => [row.outcome, row.n]));
  if ((twice[0]?.n ?? 0) > 0) violations.push(`${twice[0]?.n} tickets admitted more than once`);
  if (admitted[0]?.n !== codes.length) violations.push(`${admitted[0]?.n} of ${codes.length} tickets admitted`);
  if (scans.admitted !== codes.length) violations.push(`${scans.admitted ?? 0} scans admitted, for ${codes.length} tickets`);
  if (scans['already-admitted'] !== duplicates) violations.push(`${scans['already-admitted'] ?? 0} second scans refused as already admitted, of ${duplicates}`);
  const other = Object.keys(scans).filter((outcome) => outcome !== 'admitted' && outcome !== 'already-admitted');
  if (other.length) violations.push(`scans with other outcomes: ${JSON.stringify(scans)}`);
  if (answered.size !== bodies.length) violations.push(`${bodies.length - answered.size} scans never answered`);
  if (finalStatuses['200'] !== codes.length) violations.push(`${finalStatuses['200'] ?? 0} answers admitted, for ${codes.length} tickets`);
  if (finalStatuses['409'] !== duplicates) violations.push(`${finalStatuses['409'] ?? 0} answers refused, for ${duplicates} second scans`);
  summarized.violations = violations;
  summarized.details = { gates, tickets: codes.length, secondScans: duplicates, admitted: admitted[0]?.n ?? 0, refused: scans['already-admitted'] ?? 0, retried };
  return summarized;
}

/** The server's version and durability, which set what its figures mean. */
async function serverSettings(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ v: string }>(
    `select format('PostgreSQL %s, fsync %s, synchronous_commit %s', current_setting('server_version'),
       current_setting('fsync'), current_setting('synchronous_commit')) as v`,
  );
  return rows[0]?.v ?? '';
}

const service = await startLiveService(
  {
    NODE_ENV: 'production',
    ADMIN_TOKEN,
    DOOR_TOKEN,
    TICKET_SIGNING_KEY,
    METRICS_TOKEN,
    // The load generator is one client: no per-client limits.
    RATE_LIMIT_BOOKINGS: '0',
    RATE_LIMIT_READS: '0',
    // Nor a per-client cap on streams: the fan-out's subscribers share its address.
    SSE_MAX_STREAMS_PER_CLIENT: '0',
  },
  { statementStats: true, ...(nodeArgs ? { nodeFlags: nodeArgs } : {}) },
);
const db = new pg.Pool({ connectionString: service.databaseUrl, max: 4 });
const costs = await DatabaseCosts.open(service.databaseUrl.replace(/\/booking_live$/, '/postgres'));
let failed = false;
let bareExpress: Awaited<ReturnType<typeof startBareExpress>> | undefined;
metricsBase = service.base;
try {
  const context: Context = { base: service.base, pid: service.pid, db, costs };
  const notes: string[] = [];
  if (!PGBENCH) notes.push('pgbench not found (apt-get install postgresql-client): no database baselines in this run');
  const missing = minimalUnavailable();
  let limitUrl: string | undefined;
  if (missing) notes.push(`minimal function baseline skipped: ${missing}`);
  else {
    limitUrl = await service.createDatabase('limit');
    await psqlFile(limitUrl, path.join(LIMIT_DIR, 'minimal.sql'));
  }
  for (const note of notes) console.log(note);
  if (baselinesOn) bareExpress = await startBareExpress(service.databaseUrl);

  // Each workload's runs back to back (the service, pgbench on its function,
  // the minimal function, bare Express; same duration, fresh seats), so they
  // share whatever else the machine is doing at that moment.
  const results: ScenarioResult[] = [];
  const baselines: PgbenchResult[] = [];
  const comparisons: Comparison[] = [];
  for (const workload of Array.from({ length: rounds }, () => workloads.filter((w) => runs(w.name))).flat()) {
    console.log(`${workload.name}: ${workload.description}, ${workload.connections} connections, ${duration} s each`);
    const served = await bookingScenario(workload.name, context, workload);
    results.push(served);
    const viaFunction = PGBENCH && baselinesOn ? await functionBaseline(context, workload, service.databaseUrl) : undefined;
    const minimal = limitUrl && baselinesOn ? await minimalBaseline(context, workload, limitUrl) : undefined;
    const bare = bareExpress && workload.minimal ? await bareExpressBaseline(context, workload, bareExpress) : undefined;
    for (const baseline of [viaFunction, minimal]) if (baseline) baselines.push(baseline);
    comparisons.push({
      workload: workload.name,
      description: workload.description,
      connections: workload.connections,
      serviceRps: served.requestsPerSecond,
      functionTps: viaFunction?.transactionsPerSecond,
      minimalTps: minimal?.transactionsPerSecond,
      ...(bare ? { bareExpress: bare } : {}),
      serviceToMinimal: ratio(served.requestsPerSecond, minimal?.transactionsPerSecond),
      functionToMinimal: ratio(viaFunction?.transactionsPerSecond, minimal?.transactionsPerSecond),
      serviceToFunction: ratio(served.requestsPerSecond, viaFunction?.transactionsPerSecond),
      serviceToBareExpress: ratio(served.requestsPerSecond, bare?.requestsPerSecond),
      bareExpressToMinimal: ratio(bare?.requestsPerSecond, minimal?.transactionsPerSecond),
    });
    const compared = comparisons.find((c) => c.workload === workload.comparedTo);
    const current = comparisons.at(-1);
    if (compared && current) {
      current.comparedTo = compared.workload;
      current.serviceToCompared = ratio(served.requestsPerSecond, compared.serviceRps);
    }
  }
  if (runs('seat-map')) results.push(...(await seatMapScenarios(context)));
  if (runs('fan-out')) results.push(await fanOutScenario(context, smoke ? 50 : 500));
  if (runs('door-rush')) {
    console.log('door rush: 10 gates scanning 5,000 tickets, a tenth of them twice');
    results.push(await doorRushScenario(context));
  }

  console.table(
    results.map((r) => ({
      scenario: r.name,
      connections: r.connections,
      'req/s': r.requestsPerSecond,
      'p50 ms': r.latencyMs.p50,
      'p99 ms': r.latencyMs.p99,
      'max ms': r.latencyMs.max,
      statuses: JSON.stringify(r.statusCounts),
      errors: r.errors,
      'peak RSS MB': r.peakRssMb,
      violations: r.violations.length,
    })),
  );
  console.log('Ratios within this run (absolute figures on a shared machine are noise):');
  console.table(
    comparisons.map((c) => ({
      workload: c.workload,
      connections: c.connections,
      'service req/s': c.serviceRps,
      'pgbench→create_booking tps': c.functionTps ?? '',
      'pgbench→minimal tps': c.minimalTps ?? '',
      'service/minimal': c.serviceToMinimal ?? '',
      'function/minimal': c.functionToMinimal ?? '',
      'service/function': c.serviceToFunction ?? '',
      'bare Express req/s': c.bareExpress?.requestsPerSecond ?? '',
      'service/bare Express': c.serviceToBareExpress ?? '',
      'bare Express/minimal': c.bareExpressToMinimal ?? '',
      'service/compared': c.comparedTo ? `${c.serviceToCompared ?? ''} (to ${c.comparedTo})` : '',
    })),
  );
  const costRows = [
    ...results.filter((r) => r.database).map((r) => ({ run: `${r.name} service`, cost: r.database })),
    ...baselines.filter((b) => b.database).map((b) => ({ run: `${b.name} pgbench→${b.target}`, cost: b.database })),
  ];
  if (costRows.length) {
    console.log('What PostgreSQL did per booking attempt (pg_stat_statements, track=all; WAL of the whole server):');
    console.table(
      costRows.map(({ run, cost }) => ({
        run,
        bookings: cost?.bookings,
        confirmed: cost?.confirmed,
        'statements/booking': cost?.statementsPerBooking,
        'WAL bytes/booking': cost?.walBytesPerBooking,
      })),
    );
  }
  for (const r of results) if (r.problems) console.log(`${r.name} answered: ${JSON.stringify(r.problems)}`);
  for (const r of results) if (r.details) console.log(`${r.name}: ${JSON.stringify(r.details)}`);
  if (memoryDetail) {
    console.log('At each scenario\'s peak RSS, MB (heap spaces are V8\'s committed sizes):');
    console.table(peakMemory);
    console.log('The service\'s CPU ms per request:');
    console.table(Object.fromEntries(results.map((r) => [r.name, Math.round(((cpuUsed[r.name] ?? 0) * 1000 * 100) / Math.max(1, r.requests)) / 100])));
  }
  for (const r of results) for (const v of r.violations) console.error(`VIOLATION in ${r.name}: ${v}`);
  for (const b of baselines) for (const v of b.violations ?? []) console.error(`VIOLATION in pgbench ${b.name}: ${v}`);
  failed = results.some((r) => r.violations.length > 0) || baselines.some((b) => (b.violations ?? []).length > 0);
  const file = `${projectRoot}bench/results/${smoke ? 'smoke' : partial ? 'partial' : 'latest'}.json`;
  const report: Report = {
    date: new Date().toISOString(),
    smoke,
    machine: { cores: availableParallelism(), postgres: await serverSettings(db) },
    durationSeconds: duration,
    notes,
    comparisons,
    results,
    pgbench: baselines,
  };
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`results written to ${path.relative(projectRoot, file)}`);
  if (!smoke && !partial) await writeReport(report);
} finally {
  await bareExpress?.stop();
  await costs?.end();
  await db.end();
  await service.stop();
}
process.exit(failed ? 1 : 0);
