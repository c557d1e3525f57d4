// `npm run bench:profile`: where the service's own CPU goes while it takes
// bookings. The built service runs as in production under `node --cpu-prof`
// on a fresh embedded PostgreSQL; autocannon books single seats on loopback
// (spread: 64 connections on 10,000 seats; flash: 256 connections on 100);
// the profile is summed by layer. Each run prints, per scenario, the rate,
// the latency, how long each connection waited for its first answer, and the
// kernel's listen queue overflows.
//
//   npm run bench:profile
//   npm run bench:profile -- --no-profile --duration 10 DATABASE_POOL_SIZE=8
//   npm run bench:profile -- --keep      keeps the .cpuprofile (for DevTools)
//   npx tsx bench/profile.ts --from DIR  summarises a kept profile again
//
// A profiled run with the default settings writes its figures into
// bench/README.md, between the profile markers.
//
// Arguments of the form NAME=value are given to the service's environment.
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { createBookingClient } from '../src/client.js';
import { projectRoot } from '../src/paths.js';
import { startLiveService } from '../tests/harness/live-service.js';

const ADMIN_TOKEN = 'bench-admin-token-0123456789';
const args = process.argv.slice(2);
const profile = !args.includes('--no-profile');
const durationArg = args.indexOf('--duration');
const duration = durationArg >= 0 ? Number(args[durationArg + 1]) : 10;
const extraEnv = Object.fromEntries(args.filter((a) => /^[A-Z_]+=/.test(a)).map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

// The first rule that matches a frame's script names its layer. Frames are
// read from the sampled function outwards: the innermost frame of a known
// layer takes the sample, so the pg driver's socket writes count as the
// driver's, and Express's own as the router's.
const layers: [string, RegExp][] = [
  ['logging', /node_modules\/(pino|pino-http|pino-std-serializers|sonic-boom|fast-redact|@pinojs|thread-stream|on-exit-leak-free|quick-format-unescaped|fast-safe-stringify)\/|dist\/logging\.js/],
  ['validator', /node_modules\/(express-openapi-validator|ajv|ajv-formats|ajv-draft-04|@apidevtools|media-typer|content-type|path-to-regexp|lodash\.\w+|ono)\//],
  ['helmet', /node_modules\/helmet\//],
  ['compression', /node_modules\/(compression|compressible|negotiator|accepts|vary|on-headers|bytes|mime-db|mime-types)\//],
  ['metrics', /node_modules\/(prom-client|tdigest|bintrees)\/|dist\/metrics\.js/],
  ['rate limit', /node_modules\/(express-rate-limit|@acpr)\/|dist\/rate-limits\.js/],
  ['pg driver', /node_modules\/(pg|pg-pool|pg-protocol|pg-types|pg-connection-string|postgres-array|postgres-bytea|postgres-date|postgres-interval|pgpass|buffer-writer|packet-reader)\//],
  ['body parsing', /node_modules\/(body-parser|raw-body|iconv-lite|type-is|statuses|unpipe|destroy|http-errors)\//],
  ['router and middleware', /node_modules\/(express|router|finalhandler|send|serve-static|parseurl|qs|cookie|cors|depd|encodeurl|escape-html|fresh|range-parser|proxy-addr|forwarded|ipaddr\.js|etag|on-finished|merge-descriptors|utils-merge|debug|ms|setprototypeof|safe-buffer|is-promise|router)\//],
  ['our handlers', /dist\/[\w-]+\.js/],
];

function layerOf(stack: { functionName: string; url: string }[]): string {
  const leaf = stack[0];
  if (leaf && !leaf.url) {
    if (leaf.functionName === '(idle)') return 'idle';
    if (leaf.functionName === '(garbage collector)') return 'GC';
    if (leaf.functionName === 'stringify' || leaf.functionName === 'parse') return 'JSON';
    // Sampling is by wall clock: on a starved CPU the thread is often
    // descheduled inside its write system call, whoever asked for the write.
    if (stack.some((frame) => frame.url === 'node:internal/stream_base_commons')) return 'socket writes (system call)';
  }
  // Node's own frames count only when no package or service frame called them.
  for (const frame of stack) {
    for (const [name, pattern] of layers) if (frame.url && !frame.url.startsWith('node:') && pattern.test(frame.url)) return name;
  }
  if (stack.some((frame) => frame.url.startsWith('node:'))) return 'node http and net';
  return leaf?.functionName === '(program)' ? 'native (program)' : 'other';
}

function summarise(profile: CpuProfile): Map<string, number> {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const layerById = new Map<number, string>();
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    let layer = layerById.get(id);
    if (!layer) {
      const stack = [];
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const node = byId.get(at);
        if (node) stack.push(node.callFrame);
      }
      layer = layerOf(stack);
      layerById.set(id, layer);
    }
    totals.set(layer, (totals.get(layer) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  return totals;
}

function listenOverflows(): number {
  try {
    const out = execFileSync('nstat', ['-az', 'TcpExtListenOverflows'], { encoding: 'utf8' });
    return Number(/TcpExtListenOverflows\s+(\d+)/.exec(out)?.[1] ?? 0);
  } catch {
    return Number.NaN;
  }
}

/**
 * The longest the listen socket's accept queue got in the first seconds of a
 * scenario (ss's Recv-Q of a listening socket), and its size (Send-Q):
 * connections there wait before the service has even seen them.
 */
function watchAcceptQueue(port: string): () => Promise<{ longest: number; backlog: number }> {
  let longest = 0;
  let backlog = 0;
  const sample = () => {
    try {
      const out = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
      const [, queued, size] = /^LISTEN\s+(\d+)\s+(\d+)/m.exec(out) ?? [];
      longest = Math.max(longest, Number(queued ?? 0));
      backlog = Number(size ?? 0);
    } catch {
      // No ss here: the column stays 0.
    }
  };
  const timer = setInterval(sample, 100);
  const stop = setTimeout(() => clearInterval(timer), 3000);
  return async () => {
    clearInterval(timer);
    clearTimeout(stop);
    return { longest, backlog };
  };
}

async function createShow(base: string, rows: number, seatsPerRow: number): Promise<string> {
  const api = createBookingClient(base, { adminToken: ADMIN_TOKEN });
  const { data, error } = await api.POST('/api/shows', {
    body: {
      kind: 'show',
      name: `Profile ${rows}x${seatsPerRow}`,
      venue: 'Bench Arena',
      startsAt: '2030-01-01T20:00:00Z',
      currency: 'EUR',
      categories: [{ code: 'standard', price: 1000 }],
      sections: [{ name: 'Floor', rows: Array.from({ length: rows }, (_, r) => ({ label: `R${r + 1}`, seats: seatsPerRow, category: 'standard' })) }],
    },
  });
  if (!data) throw new Error(`could not create the show: ${JSON.stringify(error)}`);
  return data.id;
}

/** CPU time the process has used, in ms (user and system), from /proc. */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

async function book(base: string, pid: number, name: string, connections: number, rows: number, seatsPerRow: number) {
  const showId = await createShow(base, rows, seatsPerRow);
  const overflowsBefore = listenOverflows();
  const cpuBefore = await cpuMs(pid);
  const acceptQueue = watchAcceptQueue(new URL(base).port);
  let n = 0;
  const started = Date.now();
  // When each connection got its first answer: time spent in the listen
  // queue and before the first middleware shows here, not in the service's log.
  const firstAnswer = new Map<object, number>();
  const options: autocannon.Options = {
    url: base,
    connections,
    duration,
    requests: [
      {
        method: 'POST',
        path: '/api/bookings',
        headers: { 'content-type': 'application/json' },
        setupRequest: (request) => {
          n += 1;
          const seat = `Floor-R${1 + Math.floor(Math.random() * rows)}-${1 + Math.floor(Math.random() * seatsPerRow)}`;
          return { ...request, body: JSON.stringify({ showId, seatLabels: [seat], customer: { name: `Bench ${n}`, email: `bench${n}@example.com` } }) };
        },
      },
    ],
  };
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (error: unknown, done: autocannon.Result) => (error ? reject(error) : resolve(done)));
    instance.on('response', (client: object) => {
      if (!firstAnswer.has(client)) firstAnswer.set(client, Date.now() - started);
    });
  });
  const cpu = (await cpuMs(pid)) - cpuBefore;
  const firsts = [...firstAnswer.values()].sort((a, b) => a - b);
  const queue = await acceptQueue();
  const statuses = Object.entries(result.statusCodeStats ?? {})
    .map(([status, { count }]) => `${status}: ${count}`)
    .join(', ');
  return {
    scenario: name,
    connections,
    'req/s': Math.round(result.requests.average),
    'p50 ms': result.latency.p50,
    'p99 ms': result.latency.p99,
    statuses,
    errors: result.errors + result.timeouts,
    // Less noisy than req/s on a shared machine: what each answer cost the service's process.
    'service CPU ms/req': Math.round((cpu / result.requests.total) * 100) / 100,
    'first answer p50 ms': firsts[Math.floor(firsts.length / 2)] ?? Number.NaN,
    'first answer max ms': firsts.at(-1) ?? Number.NaN,
    'connections first answered after 1 s': firsts.filter((ms) => ms > 1000).length + (connections - firsts.length),
    'accept queue longest': queue.longest,
    backlog: queue.backlog,
    'listen overflows': listenOverflows() - overflowsBefore,
  };
}

const fromArg = args.indexOf('--from');
let results: Awaited<ReturnType<typeof book>>[] = [];
const profileDir = fromArg >= 0 ? String(args[fromArg + 1]) : await mkdtemp(path.join(tmpdir(), 'booking-profile-'));
if (fromArg < 0) {
  const service = await startLiveService(
    {
      NODE_ENV: 'production',
      ADMIN_TOKEN,
      METRICS_TOKEN: 'bench-metrics-token-0123456789',
      RATE_LIMIT_BOOKINGS: '0',
      RATE_LIMIT_READS: '0',
      ...extraEnv,
    },
    { nodeArgs: profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [] },
  );
  results = [];
  try {
    results.push(await book(service.base, service.pid, 'spread', 64, 100, 100));
    results.push(await book(service.base, service.pid, 'flash', 256, 10, 10));
  } finally {
    await service.stop();
  }
  console.log(`env: ${JSON.stringify(extraEnv)}, ${duration} s per scenario`);
  console.table(results);
}

if (profile) {
  const [file] = (await readdir(profileDir)).filter((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('the service wrote no profile');
  const totals = summarise(JSON.parse(await readFile(path.join(profileDir, file), 'utf8')) as CpuProfile);
  const all = [...totals.values()].reduce((a, b) => a + b, 0);
  const busy = all - (totals.get('idle') ?? 0);
  const rows = [...totals.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([layer, us]) => ({ layer, ms: Math.round(us / 1000), '% of busy': layer === 'idle' ? '' : ((100 * us) / busy).toFixed(1) }));
  console.log('Service main thread by layer, both scenarios (% of samples that were not idle):');
  console.table(rows);
  if (results.length && !Object.keys(extraEnv).length) await writeReadme(results, rows);
}
if (args.includes('--keep') || fromArg >= 0) console.log(`profile in ${profileDir}`);
else await rm(profileDir, { recursive: true, force: true });

/** The run's figures, between bench/README.md's profile markers: the README quotes the latest profile. */
async function writeReadme(
  scenarios: Awaited<ReturnType<typeof book>>[],
  layers: { layer: string; ms: number; '% of busy': string }[],
): Promise<void> {
  const file = path.join(projectRoot, 'bench', 'README.md');
  const readme = await readFile(file, 'utf8');
  const section = [
    '<!-- profile:start -->',
    `Latest profile (\`npm run bench:profile\`, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${duration} s a scenario, the built service under \`--cpu-prof\`):`,
    '',
    '| scenario | connections | req/s | p99 ms | service CPU ms/answer |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...scenarios.map((s) => `| ${s.scenario} | ${s.connections} | ${s['req/s']} | ${s['p99 ms']} | ${s['service CPU ms/req']} |`),
    '',
    '| layer of the main thread | % of busy samples |',
    '| --- | ---: |',
    ...layers.filter((l) => l.layer !== 'idle').map((l) => `| ${l.layer} | ${l['% of busy']}% |`),
    '<!-- profile:end -->',
  ].join('\n');
  await writeFile(file, readme.replace(/<!-- profile:start -->[\s\S]*<!-- profile:end -->/, section));
}
