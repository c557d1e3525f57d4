// Prometheus metrics: request latency per route, booking outcomes, the
// database pool, event stream subscribers, the streams dropped as too slow,
// and the read replica's lag and what it served.
import type { RequestHandler } from 'express';
import type pg from 'pg';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ReplicaMonitor } from './replica.js';
import type { SeatEventHub } from './seat-events.js';

export interface Metrics {
  registry: Registry;
  bookings: Counter<'outcome'>;
  /** Event streams ended because their client did not take what it was sent. */
  streamsDropped: Counter;
  /** Reads that may come from the replica, by where they were served and why. */
  replicaReads: Counter<'served_by' | 'reason'>;
  /** Records each request's latency under its contract route. */
  middleware: RequestHandler;
}

/** The route template express-openapi-validator matched, if any. */
function contractRoute(req: object): string | undefined {
  if (!('openapi' in req) || typeof req.openapi !== 'object' || req.openapi === null) return undefined;
  const route = 'openApiRoute' in req.openapi ? req.openapi.openApiRoute : undefined;
  return typeof route === 'string' ? route : undefined;
}

export function createMetrics(pool: pg.Pool, events: SeatEventHub, replica?: ReplicaMonitor): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const latency = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request latency by method, contract route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const bookings = new Counter({
    name: 'bookings_total',
    help: 'Booking requests by outcome (confirmed, pending, failed)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  new Gauge({
    name: 'db_pool_connections',
    help: 'Database pool connections by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.set({ state: 'total' }, pool.totalCount);
      this.set({ state: 'idle' }, pool.idleCount);
      this.set({ state: 'waiting' }, pool.waitingCount);
    },
  });
  new Gauge({
    name: 'seat_event_subscribers',
    help: 'Open seat event streams',
    registers: [registry],
    collect() {
      this.set(events.subscriberCount);
    },
  });
  const streamsDropped = new Counter({
    name: 'seat_event_streams_dropped_total',
    help: 'Event streams ended because their client left more unsent than the bound',
    registers: [registry],
  });
  const replicaReads = new Counter({
    name: 'db_replica_reads_total',
    help: 'Reads the replica may serve (seat maps, show listings, event history), by where they were served (replica, primary) and why',
    labelNames: ['served_by', 'reason'],
    registers: [registry],
  });
  if (replica) {
    // A lagging replica is skipped, never a reason for the service to be unready.
    new Gauge({
      name: 'db_replica_lag_seconds',
      help: 'How long ago the primary had written WAL the read replica has not replayed yet (0: it has replayed all)',
      registers: [registry],
      collect() {
        if (replica.lagSeconds !== undefined) this.set(replica.lagSeconds);
      },
    });
    new Gauge({
      name: 'db_replica_lag_bytes',
      help: 'WAL bytes the primary had written that the read replica had not replayed, at the last poll',
      registers: [registry],
      collect() {
        if (replica.lagBytes !== undefined) this.set(replica.lagBytes);
      },
    });
    new Gauge({
      name: 'db_replica_up',
      help: '1 while the read replica answers and is a standby, else 0 (reads then go to the primary)',
      registers: [registry],
      collect() {
        this.set(replica.reachable ? 1 : 0);
      },
    });
  }
  const middleware: RequestHandler = (req, res, next) => {
    const end = latency.startTimer();
    res.on('finish', () => {
      // The contract's path template, so ids do not explode the label set.
      const route = contractRoute(req) ?? 'unmatched';
      end({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  };
  return { registry, bookings, streamsDropped, replicaReads, middleware };
}
