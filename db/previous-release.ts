// `npm run test:previous-release`: the release named in db/previous-release
// runs against a database migrated to this checkout, as it does during a
// deploy (the pre-deploy step migrates while the old instances still serve)
// and after a rollback. This checkout's code runs beside it on the same
// database, and a smoke drives both: a show, bookings, a hold confirmed,
// reads with the secret, the seat map, events live and in history, a retry
// that lands on the other release, a cancel. Loopback only; one pass.
//
// Not a vitest file: it extracts and builds another commit and runs two
// services. It skips, saying why, where the git history is not at hand.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { invariantViolations } from '../bench/invariants.js';
import { waitUntilReady } from '../tests/harness/live-service.js';
import { freePort, startEmbeddedPostgres } from '../src/embedded-postgres.js';
import { runMigrations } from '../src/migrate.js';
import { latestMigration, projectRoot } from '../src/paths.js';
import { TicketKeys } from '../src/ticket-codes.js';

const ADMIN_TOKEN = 'previous-admin-token-0123456789';
const METRICS_TOKEN = 'previous-metrics-token-0123456789';
// Production requires both of this release; the previous one ignores them.
const DOOR_TOKEN = 'previous-door-token-0123456789';
const TICKET_SIGNING_KEY = TicketKeys.generatePem();

function git(...args: string[]): { ok: boolean; out: string } {
  const result = spawnSync('git', ['-C', projectRoot, ...args], { encoding: 'utf8' });
  return { ok: result.status === 0, out: (result.stdout ?? '').trim() };
}

function run(command: string, args: string[], cwd: string): void {
  const result = spawnSync(command, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed in ${cwd}`);
}

function skip(reason: string): never {
  console.log(`SKIPPED: ${reason}`);
  console.log('0 passed, 0 failed');
  process.exit(0);
}

const commit = readFileSync(`${projectRoot}db/previous-release`, 'utf8')
  .split('\n')
  .map((line) => line.trim())
  .find((line) => line && !line.startsWith('#'));
if (!commit || !/^[0-9a-f]{7,40}$/.test(commit)) throw new Error('db/previous-release names no commit id');
if (!git('rev-parse', '--git-dir').ok) skip('not a git checkout, so the previous release cannot be extracted');
if (!git('cat-file', '-e', `${commit}^{commit}`).ok) {
  skip(`commit ${commit} is not in this clone's history (a shallow clone?); fetch it (git fetch --unshallow) to run this check`);
}

// The previous release, built in a directory of its own. Its dependencies
// are this checkout's when they hold all of its packages; otherwise its own.
const oldRoot = await mkdtemp(path.join(tmpdir(), 'booking-previous-release-'));
const archive = path.join(oldRoot, '..', `${path.basename(oldRoot)}.tar`);
const cleanups: (() => Promise<void>)[] = [async () => rm(oldRoot, { recursive: true, force: true }), async () => rm(archive, { force: true })];
run('git', ['-C', projectRoot, 'archive', '--format=tar', '-o', archive, commit], projectRoot);
run('tar', ['-xf', archive, '-C', oldRoot], projectRoot);
/** The packages a lockfile installs, by path: version and integrity (not the project's own entry, nor dev flags). */
function installed(lockfile: string): Map<string, string> {
  const { packages } = JSON.parse(readFileSync(lockfile, 'utf8')) as { packages: Record<string, { version?: string; integrity?: string }> };
  return new Map(Object.entries(packages).filter(([name]) => name !== '').map(([name, entry]) => [name, `${entry.version}:${entry.integrity}`]));
}
// This checkout's node_modules serve when they hold every package the
// previous release installs, at the same version (packages added since are harmless).
const ours = installed(`${projectRoot}package-lock.json`);
if ([...installed(`${oldRoot}/package-lock.json`)].every(([name, version]) => ours.get(name) === version)) {
  await symlink(`${projectRoot}node_modules`, `${oldRoot}/node_modules`, 'dir');
} else {
  console.log(`the installed packages changed since ${commit}: npm ci for the previous release`);
  run('npm', ['ci', '--no-audit', '--no-fund', '--ignore-scripts'], oldRoot);
}
run(process.execPath, [`${oldRoot}/node_modules/typescript/bin/tsc`, '-p', 'tsconfig.build.json'], oldRoot);
if (!existsSync(`${oldRoot}/dist/main.js`)) throw new Error('the previous release did not build');
if (!existsSync(`${projectRoot}dist/main.js`)) throw new Error('this checkout is not built: run npm run build');

const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-previous-pg-'));
const db = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: 100 });
cleanups.unshift(async () => db.stop());
await db.createDatabase('booking_previous');
const databaseUrl = db.url('booking_previous');
// The pre-deploy step: this checkout's migrations, before either release serves.
await runMigrations(databaseUrl, () => {});

interface Service {
  name: string;
  base: string;
  child: ChildProcess;
}

async function start(name: string, root: string): Promise<Service> {
  const port = await freePort();
  const child = spawn(process.execPath, [`${root}/dist/main.js`], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      PORT: String(port),
      HOST: '127.0.0.1',
      NODE_ENV: 'production',
      MIGRATE_ON_START: 'false',
      LOG_LEVEL: 'error',
      ADMIN_TOKEN,
      METRICS_TOKEN,
      DOOR_TOKEN,
      TICKET_SIGNING_KEY,
      RATE_LIMIT_BOOKINGS: '0',
      RATE_LIMIT_READS: '0',
      SSE_HEARTBEAT_MS: '1000',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const service = { name, base: `http://127.0.0.1:${port}`, child };
  cleanups.unshift(async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  });
  return service;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

async function call(service: Service, method: string, pathname: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(`${service.base}${pathname}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { text };
  }
  return { status: response.status, body: parsed, headers: response.headers };
}

/** The seat labels in the event frames of a show's stream, as they arrive. */
function openStream(service: Service, showId: string): { labels: string[]; close: () => void } {
  const labels: string[] = [];
  const url = new URL(`${service.base}/api/shows/${showId}/events`);
  const req = http.get({ host: url.hostname, port: url.port, path: url.pathname, agent: false, headers: { accept: 'text/event-stream' } }, (res) => {
    res.setEncoding('utf8');
    let buffer = '';
    res.on('data', (chunk: string) => {
      buffer += chunk;
      const frames = buffer.split('\n\n');
      buffer = frames.pop() ?? '';
      for (const frame of frames) {
        const data = frame.split('\n').find((line) => line.startsWith('data:'));
        if (data) for (const match of data.matchAll(/"label":"([^"]+)"/g)) labels.push(match[1] ?? '');
      }
    });
    res.on('error', () => {});
  });
  req.on('error', () => {});
  return { labels, close: () => req.destroy() };
}

const checks: { name: string; ok: boolean }[] = [];
function check(name: string, ok: boolean, detail?: unknown): void {
  checks.push({ name: ok || detail === undefined ? name : `${name} (${JSON.stringify(detail)})`, ok });
}

const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
let failed = 1;
try {
  const previous = await start(`previous release ${commit.slice(0, 7)}`, oldRoot.replace(/\/$/, ''));
  const current = await start('this checkout', projectRoot.replace(/\/$/, ''));
  await waitUntilReady(previous.base, previous.child);
  await waitUntilReady(current.base, current.child);
  check(`the previous release is ready on a database migrated to ${latestMigration()}`, true);

  const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  const show = await call(previous, 'POST', '/api/shows', {
    kind: 'show', name: 'Previous release smoke', venue: 'The Globe', startsAt: '2099-12-01T19:30:00Z', currency: 'EUR',
    categories: [{ code: 'standard', price: 2500 }],
    sections: [{ name: 'Stalls', rows: [{ label: 'A', seats: 10, category: 'standard' }] }],
  }, admin);
  check('the previous release creates a show (admin)', show.status === 201, show.body);
  const showId = String(show.body.id);
  const stream = openStream(previous, showId);
  const who = (n: number) => ({ name: 'Smoke Test', email: `smoke${n}@example.com` });

  const booked = await call(previous, 'POST', '/api/bookings', { showId, seatLabels: ['Stalls-A-1', 'Stalls-A-2'], customer: who(1) });
  check('the previous release books two seats, confirmed', booked.status === 201 && booked.body.status === 'confirmed', booked.body);
  const owner = { Authorization: `Bearer ${String(booked.body.secret)}` };
  const taken = await call(previous, 'POST', '/api/bookings', { showId, seatLabels: ['Stalls-A-2'], customer: who(2) });
  check('the previous release refuses a seat taken (409 seat-unavailable)', taken.status === 409 && taken.body.type === '/problems/seat-unavailable', taken.body);

  const hold = await call(previous, 'POST', '/api/bookings', { showId, seatLabels: ['Stalls-A-3'], hold: true, customer: who(3) });
  check('the previous release holds a seat', hold.status === 201 && hold.body.status === 'pending', hold.body);
  const holder = { Authorization: `Bearer ${String(hold.body.secret)}` };
  const confirmed = await call(previous, 'POST', `/api/bookings/${String(hold.body.id)}/confirm`, {}, holder);
  check('the previous release confirms the hold with its secret', confirmed.status === 200 && confirmed.body.status === 'confirmed', confirmed.body);

  const read = await call(previous, 'GET', `/api/bookings/${String(booked.body.id)}`, undefined, owner);
  check('the previous release reads a booking with its secret', read.status === 200 && read.body.status === 'confirmed', read.body);
  const stranger = await call(previous, 'GET', `/api/bookings/${String(booked.body.id)}`);
  check('the previous release refuses a read without the secret (401)', stranger.status === 401, stranger.body);

  // A seat booked through this checkout reaches the previous release's stream.
  const fromCurrent = await call(current, 'POST', '/api/bookings', { showId, seatLabels: ['Stalls-A-4'], customer: who(4) });
  check('this checkout books on the same database', fromCurrent.status === 201, fromCurrent.body);
  for (let i = 0; i < 50 && !stream.labels.includes('Stalls-A-4'); i++) await sleep(100);
  stream.close();
  check(
    'the previous release streams every seat event, including those of bookings made through this checkout',
    ['Stalls-A-1', 'Stalls-A-2', 'Stalls-A-3', 'Stalls-A-4'].every((label) => stream.labels.includes(label)),
    stream.labels,
  );

  const map = await call(previous, 'GET', `/api/shows/${showId}/seats`);
  const counts = map.body.counts as Record<string, number> | undefined;
  check('the previous release serves the seat map: 4 booked of 10', map.status === 200 && counts?.booked === 4 && counts.available === 6, counts);
  const history = await call(previous, 'GET', `/api/shows/${showId}/events`, undefined, { accept: 'application/json' });
  const events = (history.body.items as unknown[] | undefined) ?? [];
  check('the previous release serves the event history', history.status === 200 && events.length >= 4, history.body);

  // A retry that lands on the other release answers the same booking.
  const key = { 'Idempotency-Key': crypto.randomUUID() };
  const first = await call(previous, 'POST', '/api/bookings', { showId, seatLabels: ['Stalls-A-5'], customer: who(5) }, key);
  const retry = await call(current, 'POST', '/api/bookings', { showId, seatLabels: ['Stalls-A-5'], customer: who(5) }, key);
  check(
    'a retry on this checkout replays what the previous release answered, with the same secret',
    first.status === 201 && retry.status === 201 && retry.body.id === first.body.id && retry.body.secret === first.body.secret &&
      retry.headers.get('idempotent-replayed') === 'true',
    { first: first.status, retry: retry.status },
  );

  // Each release acts on what the other wrote.
  const cancelled = await call(current, 'POST', `/api/bookings/${String(booked.body.id)}/cancel`, { reason: 'smoke' }, owner);
  check('this checkout cancels a booking the previous release made', cancelled.status === 200 && cancelled.body.status === 'cancelled', cancelled.body);
  const cancelledFromOld = await call(previous, 'POST', `/api/bookings/${String(fromCurrent.body.id)}/cancel`, {}, {
    Authorization: `Bearer ${String(fromCurrent.body.secret)}`,
  });
  check('the previous release cancels a booking this checkout made', cancelledFromOld.status === 200 && cancelledFromOld.body.status === 'cancelled', cancelledFromOld.body);
  const again = await call(previous, 'POST', '/api/bookings', { showId, seatLabels: ['Stalls-A-1', 'Stalls-A-4'], customer: who(6) });
  check('the previous release books the freed seats again', again.status === 201, again.body);

  const listed = await call(previous, 'GET', `/api/shows/${showId}/bookings`, undefined, admin);
  check("the previous release lists the show's bookings (admin)", listed.status === 200, listed.body);

  const confirmedIds = [hold.body.id, first.body.id, again.body.id].map(String);
  const violations = await invariantViolations(pool, confirmedIds, showId);
  check('no invariant is broken: no seat twice, every 201 still confirmed, no hold past expiry', violations.length === 0, violations);
  check('neither service exited', previous.child.exitCode === null && current.child.exitCode === null);
} catch (error) {
  check(`the run completed (${error instanceof Error ? error.message : String(error)})`, false);
} finally {
  await pool.end();
  for (const cleanup of cleanups) await cleanup().catch(() => {});
  await rm(dataDir, { recursive: true, force: true });
  for (const c of checks) console.log(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name}`);
  failed = checks.filter((c) => !c.ok).length;
  console.log(`previous release ${commit.slice(0, 12)} against migrations up to ${latestMigration()}`);
  console.log(`${checks.length - failed} passed, ${failed} failed`);
}
process.exit(failed ? 1 : 0);
