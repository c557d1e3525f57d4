// `npm run test:streams`: the outsider check for bounded event streams, on
// loopback only. The built service runs as in production on a fresh
// embedded PostgreSQL; 50 event stream clients send their request and then
// never read, one more client reads, and a bounded booking burst runs for
// 30 s. The service's RSS is sampled throughout. It passes when the RSS
// stays under 250 MB, the service disconnected every client that does not
// read, and the reading client stayed connected and received every event.
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startLiveService } from '../tests/harness/live-service.js';
import { createBookingClient } from '../src/client.js';

const ADMIN_TOKEN = 'streams-admin-token-0123456789';
const SLOW_CLIENTS = 50;
const BURST_MS = 30_000;
const CONCURRENCY = 16;
const MAX_RSS_MB = 250;
// Holds of 50 adjacent seats that lapse after a second: each gives a `held`
// and an `expired` event of about 2 KB, and the blocks are free again for the
// next round, so the burst never runs out of seats.
const ROWS = 20;
const SEATS_PER_ROW = 500;
const BLOCK = 50;

const service = await startLiveService({
  NODE_ENV: 'production',
  ADMIN_TOKEN,
  METRICS_TOKEN: 'streams-metrics-token-0123456789',
  RATE_LIMIT_READS: '0',
  // The burst and every stream client share one address.
  RATE_LIMIT_BOOKINGS: '0',
  SSE_MAX_STREAMS_PER_CLIENT: '0',
  HOLD_LIMIT_SEATS_PER_CLIENT: '0',
  HOLD_LIMIT_HOLDS_PER_CLIENT: '0',
  HOLD_LIMIT_SEATS_PER_EMAIL: '0',
  MAX_SEATS_PER_BOOKING: String(BLOCK),
  SWEEP_INTERVAL_MS: '200',
});
const url = new URL(service.base);
const db = new pg.Pool({ connectionString: service.databaseUrl, max: 2 });

async function rssMb(): Promise<number> {
  const status = await readFile(`/proc/${service.pid}/status`, 'utf8').catch(() => '');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** Sends the stream request, sees the stream open, then never reads again. */
async function neverReadingClient(showId: string): Promise<{ closed: () => boolean; socket: net.Socket }> {
  const socket = net.connect({ host: url.hostname, port: Number(url.port) });
  let closed = false;
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  socket.write(`GET /api/shows/${showId}/events HTTP/1.1\r\nHost: ${url.host}\r\nAccept: text/event-stream\r\n\r\n`);
  const head = await new Promise<string>((resolve, reject) => {
    socket.once('data', (chunk: Buffer) => resolve(chunk.toString()));
    socket.once('close', () => reject(new Error('a stream client was closed before its stream opened')));
  });
  if (!head.startsWith('HTTP/1.1 200 ')) throw new Error(`a stream was refused: ${head.split('\r\n')[0]}`);
  socket.pause();
  return { socket, closed: () => closed };
}

/** A client that reads every event; counts them. */
async function readingClient(showId: string): Promise<{ events: () => number; closed: () => boolean; stop: () => void }> {
  let events = 0;
  let closed = false;
  const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.get(
      { host: url.hostname, port: url.port, path: `/api/shows/${showId}/events`, agent: false, headers: { accept: 'text/event-stream' } },
      resolve,
    );
    req.on('error', reject);
  });
  if (response.statusCode !== 200) throw new Error(`the reading client was refused: ${response.statusCode}`);
  response.setEncoding('utf8');
  let partial = '';
  response.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    events += lines.filter((line) => line.startsWith('id: ')).length;
  });
  response.on('close', () => (closed = true));
  response.on('error', () => {});
  return { events: () => events, closed: () => closed, stop: () => response.destroy() };
}

const checks: Array<{ name: string; ok: boolean }> = [];
let summary = '';
try {
  const api = createBookingClient(service.base, { adminToken: ADMIN_TOKEN });
  const created = await api.POST('/api/shows', {
    body: {
      kind: 'show', name: 'Stream memory', venue: 'Loopback', startsAt: '2030-01-01T20:00:00Z', currency: 'EUR',
      categories: [{ code: 'standard', price: 1000 }],
      sections: [{ name: 'Floor', rows: Array.from({ length: ROWS }, (_, r) => ({ label: `R${r + 1}`, seats: SEATS_PER_ROW, category: 'standard' })) }],
    },
  });
  const showId = created.data?.id;
  if (!showId) throw new Error(`could not create the show: ${JSON.stringify(created.error)}`);

  const rssBefore = await rssMb();
  let maxRss = rssBefore;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      maxRss = Math.max(maxRss, await rssMb());
      await sleep(200);
    }
  })();

  const slow = await Promise.all(Array.from({ length: SLOW_CLIENTS }, () => neverReadingClient(showId)));
  const reader = await readingClient(showId);

  const statuses: Record<string, number> = {};
  const blocks = ROWS * (SEATS_PER_ROW / BLOCK);
  let next = 0;
  const until = Date.now() + BURST_MS;
  const worker = async () => {
    while (Date.now() < until) {
      const block = next++ % blocks;
      const row = Math.floor(block / (SEATS_PER_ROW / BLOCK)) + 1;
      const first = (block % (SEATS_PER_ROW / BLOCK)) * BLOCK + 1;
      const { response } = await api.POST('/api/bookings', {
        body: {
          showId,
          seatLabels: Array.from({ length: BLOCK }, (_, i) => `Floor-R${row}-${first + i}`),
          hold: true,
          holdSeconds: 1,
          customer: { name: 'Stream', email: `stream${next}@example.com` },
        },
      });
      statuses[response.status] = (statuses[response.status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));

  // The last holds lapse and are swept; then the reader must have every event.
  await sleep(1_500);
  const { rows } = await db.query<{ n: number }>('select count(position)::int as n from app.seat_events where show_id = $1', [showId]);
  const sequenced = rows[0]?.n ?? 0;
  for (let i = 0; i < 50 && reader.events() < sequenced; i++) await sleep(100);

  // A client the service disconnected finds the end as soon as it reads.
  for (const client of slow) client.socket.resume();
  for (let i = 0; i < 30 && slow.some((client) => !client.closed()); i++) await sleep(100);
  const disconnected = slow.filter((client) => client.closed()).length;
  sampling = false;
  await sampler;

  checks.push({ name: `max RSS ${maxRss.toFixed(0)} MB under ${MAX_RSS_MB} MB`, ok: maxRss < MAX_RSS_MB });
  checks.push({ name: `${disconnected} of ${SLOW_CLIENTS} clients that never read disconnected by the service`, ok: disconnected === SLOW_CLIENTS });
  checks.push({ name: `the reading client connected, with ${reader.events()} of ${sequenced} events`, ok: !reader.closed() && reader.events() === sequenced });
  checks.push({ name: `the burst made holds (${statuses[201] ?? 0} answered 201)`, ok: (statuses[201] ?? 0) > 0 });
  reader.stop();
  for (const client of slow) client.socket.destroy();

  summary =
    `stream memory: RSS ${rssBefore.toFixed(0)} → max ${maxRss.toFixed(0)} MB (limit ${MAX_RSS_MB}), ` +
    `${disconnected}/${SLOW_CLIENTS} non-reading clients disconnected, reader ${reader.events()}/${sequenced} events, ` +
    `bookings ${JSON.stringify(statuses)} in ${BURST_MS / 1000} s`;
} catch (error) {
  checks.push({ name: `the run completed (${error instanceof Error ? error.message : String(error)})`, ok: false });
} finally {
  await db.end();
  await service.stop();
}

for (const check of checks) console.log(`${check.ok ? 'ok  ' : 'FAIL'} ${check.name}`);
if (summary) console.log(summary);
const failed = checks.filter((check) => !check.ok).length;
console.log(`${checks.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
