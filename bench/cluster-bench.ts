// `npm run bench:cluster`: bookings per second through HAProxy with 1, 2 and
// 3 instances of the built service on one embedded PostgreSQL, in one
// session, the proxy opening a connection per request or keeping them,
// plus one instance without the proxy. The workload is the
// benchmark's `spread` (64 connections, one random seat of a 10,000-seat
// show each). Rounds alternate the configurations so that whatever else the
// machine is doing falls on all of them. Results: bench/results/cluster.json.
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/embedded-postgres.js';
import { runMigrations } from '../src/migrate.js';
import { projectRoot } from '../src/paths.js';
import { haproxyInstalled, HAPROXY, startCluster, type Cluster } from './cluster.js';
import { invariantViolations } from './invariants.js';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '10' }, rounds: { type: 'string', default: '2' } },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const CONNECTIONS = 64;
const ROWS = 100;
const SEATS = 100;

interface Run {
  round: number;
  instances: number;
  /** Through HAProxy with one connection per request, through it keeping connections, or straight to the instance. */
  via: 'proxy' | 'proxy-keep-alive' | 'direct';
  requestsPerSecond: number;
  /** Of those, answers 201: bookings made per second. */
  bookingsPerSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
  statusCounts: Record<string, number>;
  errors: number;
  violations: string[];
  /** CPU seconds each part used during the run: where the machine's cores went. */
  cpuSeconds: Cpu;
}

interface Cpu {
  postgres: number;
  instances: number;
  haproxy: number;
  loadGenerator: number;
  /** Every process on the machine, ours and others' (from /proc/stat). */
  machine: number;
}

/** Busy CPU seconds of the whole machine since boot. */
async function machineBusy(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = line.split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq + steal) / 100;
}

/** User and system CPU seconds of a process, from /proc (0 when it is gone). */
async function cpuOf(pid: number | undefined): Promise<number> {
  if (!pid) return 0;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime, fields 14 and 15 of the line, in clock ticks (100 a second on Linux).
  return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / 100;
}

/** The postmaster and every backend it runs (the children whose parent it is). */
async function postgresPids(postmaster: number): Promise<number[]> {
  const pids = [postmaster];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster) pids.push(Number(entry));
  }
  return pids;
}

async function cpuNow(cluster: Cluster, postmaster: number): Promise<Cpu> {
  const sum = async (pids: (number | undefined)[]) => (await Promise.all(pids.map(cpuOf))).reduce((a, b) => a + b, 0);
  const own = process.cpuUsage();
  return {
    postgres: await sum(await postgresPids(postmaster)),
    instances: await sum(cluster.instances.map((i) => i.pid)),
    haproxy: await sum([cluster.proxyPid]),
    loadGenerator: (own.user + own.system) / 1e6,
    machine: await machineBusy(),
  };
}

async function createShow(cluster: Cluster): Promise<string> {
  const response = await fetch(`${cluster.base}/api/shows`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${cluster.adminToken}` },
    body: JSON.stringify({
      kind: 'show',
      name: `Cluster bench ${Date.now()}`,
      venue: 'Bench Arena',
      startsAt: '2030-01-01T20:00:00Z',
      currency: 'EUR',
      categories: [{ code: 'standard', price: 1000 }],
      sections: [{ name: 'Floor', rows: Array.from({ length: ROWS }, (_, r) => ({ label: `R${r + 1}`, seats: SEATS, category: 'standard' })) }],
    }),
  });
  if (response.status !== 201) throw new Error(`could not create the show: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { id: string }).id;
}

/** The spread workload against `base`; every 201's booking must be confirmed afterwards. */
async function spread(base: string, showId: string, db: pg.Pool, cpu: () => Promise<Cpu>): Promise<Omit<Run, 'round' | 'instances' | 'via'>> {
  const confirmed: string[] = [];
  const before = await cpu();
  let n = 0;
  const result = await autocannon({
    url: base,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        method: 'POST',
        path: '/api/bookings',
        headers: { 'content-type': 'application/json' },
        setupRequest: (request) => {
          n += 1;
          const seat = `Floor-R${1 + Math.floor(Math.random() * ROWS)}-${1 + Math.floor(Math.random() * SEATS)}`;
          return { ...request, body: JSON.stringify({ showId, seatLabels: [seat], customer: { name: `Bench ${n}`, email: `bench${n}@example.com` } }) };
        },
        onResponse: (status, body) => {
          if (status === 201) confirmed.push((JSON.parse(body) as { id: string }).id);
        },
      },
    ],
  });
  const after = await cpu();
  const used = (key: keyof Cpu) => Math.round((after[key] - before[key]) * 10) / 10;
  const statusCounts = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, stat]) => [code, Number(stat.count)]));
  return {
    requestsPerSecond: Math.round(result.requests.average),
    bookingsPerSecond: Math.round(((statusCounts['201'] ?? 0) / seconds) * 10) / 10,
    latencyMs: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    statusCounts,
    errors: result.errors + result.timeouts,
    // Requests in flight when the clock stopped still commit: wait for them.
    violations: await settle(db).then(() => invariantViolations(db, confirmed, showId)),
    cpuSeconds: {
      postgres: used('postgres'),
      instances: used('instances'),
      haproxy: used('haproxy'),
      loadGenerator: used('loadGenerator'),
      machine: used('machine'),
    },
  };
}

/** Waits until no booking statement runs on the server. */
async function settle(db: pg.Pool): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const { rows } = await db.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity where state = 'active' and pid <> pg_backend_pid() and query like '%create_booking%'`,
    );
    if (rows[0]?.n === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const ours = (r: Run) => r.cpuSeconds.postgres + r.cpuSeconds.instances + r.cpuSeconds.haproxy + r.cpuSeconds.loadGenerator;

function perRequest(runs: Run[]): Cpu {
  const requests = runs.reduce((n, r) => n + r.requestsPerSecond * seconds, 0) || 1;
  const total = (key: keyof Cpu) => Math.round((runs.reduce((n, r) => n + r.cpuSeconds[key], 0) / requests) * 1e5) / 100;
  return {
    postgres: total('postgres'),
    instances: total('instances'),
    haproxy: total('haproxy'),
    loadGenerator: total('loadGenerator'),
    machine: total('machine'),
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? 0) : Math.round((((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2) * 10) / 10;
};

if (!haproxyInstalled()) {
  console.error(`${HAPROXY} is missing (apt-get install haproxy)`);
  process.exit(1);
}
const loadBefore = loadavg();
const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-cluster-bench-pg-'));
const database = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: 300 });
let failed = false;
try {
  await database.createDatabase('booking_bench');
  const databaseUrl = database.url('booking_bench');
  await runMigrations(databaseUrl, () => {});
  const postmaster = Number.parseInt((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0] ?? '', 10);
  const db = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const { rows } = await db.query<{ v: string }>(
    `select format('PostgreSQL %s, fsync %s, synchronous_commit %s, max_connections %s', current_setting('server_version'),
       current_setting('fsync'), current_setting('synchronous_commit'), current_setting('max_connections')) as v`,
  );
  const runs: Run[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const [instances, serverKeepAlive] of [1, 2, 3].flatMap((n) => [[n, false], [n, true]] as const)) {
      const cluster = await startCluster({
        instances,
        databaseUrl,
        migrate: false,
        serverKeepAlive,
        // One load generator is one client: no per-client limits.
        env: { RATE_LIMIT_BOOKINGS: '0', RATE_LIMIT_READS: '0', SSE_MAX_STREAMS_PER_CLIENT: '0' },
      });
      try {
        const targets: { via: Run['via']; base: string }[] = [{ via: serverKeepAlive ? 'proxy-keep-alive' : 'proxy', base: cluster.base }];
        if (instances === 1 && !serverKeepAlive) targets.push({ via: 'direct', base: cluster.instances[0]?.base ?? '' });
        for (const { via, base } of targets) {
          const showId = await createShow(cluster);
          const run: Run = { round, instances, via, ...(await spread(base, showId, db, () => cpuNow(cluster, postmaster))) };
          runs.push(run);
          console.log(
            `round ${round}, ${instances} instance(s) ${via}: ${run.requestsPerSecond} req/s, ${run.bookingsPerSecond} bookings/s, ` +
              `p99 ${run.latencyMs.p99} ms, statuses ${JSON.stringify(run.statusCounts)}, errors ${run.errors}, violations ${run.violations.length}, ` +
              `CPU s ${JSON.stringify(run.cpuSeconds)}`,
          );
        }
      } finally {
        await cluster.stop();
      }
    }
  }
  await db.end();
  const configurations: { instances: number; via: Run['via'] }[] = [
    { instances: 1, via: 'direct' },
    ...[1, 2, 3].flatMap((instances) => (['proxy', 'proxy-keep-alive'] as const).map((via) => ({ instances, via }))),
  ];
  const summary = configurations.map(({ instances, via }) => {
    const mine = runs.filter((r) => r.instances === instances && r.via === via);
    return {
      instances,
      via,
      runs: mine.length,
      medianRequestsPerSecond: median(mine.map((r) => r.requestsPerSecond)),
      medianBookingsPerSecond: median(mine.map((r) => r.bookingsPerSecond)),
      medianP99Ms: median(mine.map((r) => r.latencyMs.p99)),
      /** CPU milliseconds per request, by part, over all its runs. */
      cpuMsPerRequest: perRequest(mine),
      /** Of the machine's busy CPU, the share that the database, instances, proxy and load generator had. */
      medianShareOfMachine: median(mine.map((r) => Math.round((ours(r) / (r.cpuSeconds.machine || 1)) * 100) / 100)),
      /** Requests per CPU second those parts had: throughput as if they had the machine to themselves. */
      medianRequestsPerCpuSecond: median(mine.map((r) => Math.round((r.requestsPerSecond * seconds) / (ours(r) || 1)))),
    };
  });
  console.table(
    summary.map((s) => ({
      configuration: `${s.instances} instance${s.instances > 1 ? 's' : ''}, ${{ direct: 'direct', proxy: 'HAProxy, a connection a request', 'proxy-keep-alive': 'HAProxy, keep-alive' }[s.via]}`,
      'req/s (median)': s.medianRequestsPerSecond,
      'bookings/s (median)': s.medianBookingsPerSecond,
      'p99 ms (median)': s.medianP99Ms,
      'share of machine': s.medianShareOfMachine,
      'req per CPU s': s.medianRequestsPerCpuSecond,
      'CPU ms/request: postgres': s.cpuMsPerRequest.postgres,
      instances: s.cpuMsPerRequest.instances,
      haproxy: s.cpuMsPerRequest.haproxy,
      autocannon: s.cpuMsPerRequest.loadGenerator,
      'whole machine': s.cpuMsPerRequest.machine,
    })),
  );
  for (const run of runs) for (const v of run.violations) console.error(`VIOLATION in round ${run.round}, ${run.instances} ${run.via}: ${v}`);
  failed = runs.some((r) => r.violations.length > 0);
  const report = {
    date: new Date().toISOString(),
    machine: {
      cores: availableParallelism(),
      loadAverageBefore: loadBefore.map((x) => Math.round(x * 100) / 100),
      loadAverageAfter: loadavg().map((x) => Math.round(x * 100) / 100),
      postgres: rows[0]?.v ?? '',
    },
    notes: [
      'One machine: PostgreSQL, every instance, HAProxy and the load generator (autocannon) share its cores, so more instances add processes competing for the same CPU; they do not add capacity.',
      'Other work ran on the machine during the run (see the load averages); absolute figures move by a factor of 2 or more between runs.',
      'Instances use the default pools (8 booking + 5 read connections each); rate limits are off, as the load generator is one client.',
      'proxy: HAProxy opens a connection to the instance for every request (option http-server-close, what the cluster tests use); proxy-keep-alive: it keeps them open (option http-keep-alive, http-reuse safe).',
    ],
    workload: { name: 'spread', connections: CONNECTIONS, seats: ROWS * SEATS, seatsPerBooking: 1, durationSeconds: seconds },
    summary,
    runs,
  };
  const file = `${projectRoot}bench/results/cluster.json`;
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`results written to ${path.relative(projectRoot, file)}`);
} finally {
  await database.stop();
  await rm(dataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
