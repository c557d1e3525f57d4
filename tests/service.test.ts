// The real entry point, as `npm start` runs it: embedded database, clean
// shutdown, and no booking lost across restarts, even after SIGKILL.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../src/embedded-postgres.js';
import { ADMIN_TOKEN, METRICS_TOKEN, admin, customer, theatre, type Booking, type SeatMap, type ShowDetail } from './support.js';

const root = path.resolve(import.meta.dirname, '..');
const started: ChildProcess[] = [];

function startService(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: '', NODE_ENV: 'test', LOG_LEVEL: 'warn', HOST: '127.0.0.1', ADMIN_TOKEN, METRICS_TOKEN, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  return child;
}

function exited(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
}

async function waitUntilServing(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/api/shows?limit=1`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`service on port ${port} did not start`);
}

async function json<T>(port: number, pathname: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`http://127.0.0.1:${port}${pathname}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json', ...admin },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const parsed: T = JSON.parse(await response.text());
  return { status: response.status, body: parsed };
}

afterAll(() => {
  for (const child of started) if (child.exitCode === null) child.kill('SIGKILL');
});

describe('the service process', () => {
  it('keeps every confirmed booking across a clean restart and a SIGKILL', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-service-pg-'));
    try {
      const env = { EMBEDDED_PG_DATA_DIR: dataDir };
      let port = await freePort();
      let service = startService({ ...env, PORT: String(port) });
      await waitUntilServing(port);
      const show = (await json<ShowDetail>(port, '/api/shows', theatre())).body;
      const booked = await json<Booking>(port, '/api/bookings', { showId: show.id, seatLabels: ['Stalls-A-1'], customer: customer() });
      expect(booked.status).toBe(201);

      // SIGTERM with an event stream open: the stream is ended, and the
      // service and its embedded database stop cleanly within the bound.
      const stream = await fetch(`http://127.0.0.1:${port}/api/shows/${show.id}/events`, { headers: { accept: 'text/event-stream' } });
      expect(stream.status).toBe(200);
      const streamEnded = stream.text();
      const stopped = exited(service);
      const asked = Date.now();
      service.kill('SIGTERM');
      expect((await stopped).code).toBe(0);
      expect(Date.now() - asked).toBeLessThan(8_000);
      await streamEnded;
      expect(existsSync(path.join(dataDir, 'postmaster.pid'))).toBe(false);

      port = await freePort();
      service = startService({ ...env, PORT: String(port) });
      await waitUntilServing(port);
      expect((await json<Booking>(port, `/api/bookings/${booked.body.id}`)).body.status).toBe('confirmed');
      const second = await json(port, '/api/bookings', { showId: show.id, seatLabels: ['Stalls-A-2'], customer: customer() });
      expect(second.status).toBe(201);

      // SIGKILL leaves the database running without its service; the next start takes over.
      const killed = exited(service);
      service.kill('SIGKILL');
      await killed;
      port = await freePort();
      service = startService({ ...env, PORT: String(port) });
      await waitUntilServing(port);
      const seats = (await json<SeatMap>(port, `/api/shows/${show.id}/seats?status=booked`)).body;
      expect(seats.seats.map((seat) => seat.label)).toEqual(['Stalls-A-1', 'Stalls-A-2']);
      const retaken = await json(port, '/api/bookings', { showId: show.id, seatLabels: ['Stalls-A-2'], customer: customer() });
      expect(retaken.status).toBe(409);

      const last = exited(service);
      service.kill('SIGTERM');
      expect((await last).code).toBe(0);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  // Each bad value is refused in-process (tests/config.test.ts); this is the exit code a supervisor sees.
  it('refuses to start with a bad value: exit code 78, naming the variable', async () => {
    const result = await exited(startService({ PORT: 'eighty' }));
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('Configuration error: PORT');
  });
});
