// The Express application, built from its dependencies: no listening, no
// environment reading, so tests build it with their own pool.
import { randomUUID } from 'node:crypto';
import compression from 'compression';
import cors from 'cors';
import express from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import { rateLimit } from 'express-rate-limit';
import helmet from 'helmet';
import type pg from 'pg';
import type { Logger } from 'pino';
import { pinoHttp } from 'pino-http';
import { requireAdmin } from './admin.js';
import { bookingRoutes } from './bookings.js';
import { defaultBookingLimits, defaultDatabaseTimeouts, type BookingLimits } from './config.js';
import { projectRoot } from './paths.js';
import { createMetrics } from './metrics.js';
import { docsRoutes, operationRoutes } from './operations.js';
import { notFound, problemHandler, ProblemError } from './problem.js';
import type { SeatEventHub } from './seat-events.js';
import { SeatMaps } from './seat-maps.js';
import { showEventRoutes } from './show-events.js';
import { showRoutes } from './shows.js';

export interface AppDeps {
  /** Bookings' pool, and every write. */
  pool: pg.Pool;
  /** Reads that never write (seat maps, show listings, event history): a flood of them cannot take bookings' connections. Defaults to `pool`. */
  readPool?: pg.Pool;
  /** Seat map reads shared by concurrent requests; one is made on `readPool` when not given. */
  seatMaps?: SeatMaps;
  /** statement_timeout for creating a show. */
  adminStatementTimeoutMs?: number;
  logger: Logger;
  /** Check every response against the contract (development and tests). */
  validateResponses: boolean;
  /** Largest request body, in bytes. */
  bodyLimit?: number;
  bookingLimits?: BookingLimits;
  /** The process's seat event hub, which feeds event streams. */
  events: SeatEventHub;
  /** How often an idle event stream gets a keep-alive comment. */
  heartbeatMs?: number;
  /** The admin bearer token for creating shows and reading metrics. */
  adminToken: string;
  /** Origins allowed to call the API from a browser. */
  corsOrigins?: string[];
  /** Booking creations per client per window; max 0 turns it off. */
  rateLimit?: { max: number; windowMs: number };
  /** Proxy hops whose X-Forwarded-For is trusted for the client address. */
  trustProxy?: number;
}

export const apiSpecPath = `${projectRoot}openapi.yaml`;

const REQUEST_ID = /^[\w.:-]{1,128}$/;

export function makeApp({
  pool,
  readPool = pool,
  seatMaps = new SeatMaps(readPool),
  adminStatementTimeoutMs = defaultDatabaseTimeouts.adminStatementTimeoutMs,
  logger,
  validateResponses,
  bodyLimit = 256 * 1024,
  bookingLimits = defaultBookingLimits,
  events,
  heartbeatMs = 15_000,
  adminToken,
  corsOrigins = [],
  rateLimit: limits = { max: 0, windowMs: 60_000 },
  trustProxy = 0,
}: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // ETags are the seat map's own; hashing every other body would be wasted work.
  app.set('etag', false);
  app.set('trust proxy', trustProxy);
  const metrics = createMetrics(pool, events);
  const admin = requireAdmin(adminToken);
  app.use(
    pinoHttp({
      logger,
      // Honour a caller's request id when it is a sane one; echo it back.
      genReqId(req, res) {
        const incoming = req.headers['x-request-id'];
        const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
        res.setHeader('X-Request-Id', id);
        return id;
      },
      customLogLevel: (_req, res, error) => (error || res.statusCode >= 500 ? 'error' : 'info'),
    }),
  );
  app.use(metrics.middleware);
  // Event streams are never compressed: the compressor would hold events
  // back until its buffer fills. Seat maps arrive already gzipped when the
  // client accepts it, and the middleware leaves encoded bodies alone.
  app.use(
    compression({
      filter: (req, res) => !/^text\/event-stream\b/i.test(String(res.getHeader('Content-Type') ?? '')) && compression.filter(req, res),
    }),
  );
  app.use(docsRoutes(apiSpecPath));
  app.use(helmet());
  if (corsOrigins.length) {
    app.use(
      cors({
        origin: corsOrigins,
        exposedHeaders: ['ETag', 'Location', 'Retry-After', 'X-Request-Id', 'Idempotent-Replayed'],
        maxAge: 600,
      }),
    );
  }
  // Cheap refusals first: credentials and rate limits before body parsing.
  app.post('/api/shows', admin);
  app.get('/metrics', admin);
  app.get('/api/shows/:showId/bookings', admin);
  if (limits.max > 0) {
    app.post(
      '/api/bookings',
      rateLimit({
        windowMs: limits.windowMs,
        limit: limits.max,
        standardHeaders: 'draft-8',
        legacyHeaders: false,
        handler: (_req, res, next) => {
          // express-rate-limit has set Retry-After to the window's remaining seconds.
          const seconds = String(res.getHeader('Retry-After') ?? Math.ceil(limits.windowMs / 1000));
          next(new ProblemError('rate-limited', `At most ${limits.max} bookings per ${limits.windowMs / 1000} s from one client`, {}, { 'Retry-After': seconds }));
        },
      }),
    );
  }
  app.use(express.json({ limit: bodyLimit }));
  app.use(
    OpenApiValidator.middleware({
      apiSpec: apiSpecPath,
      // allErrors: a client learns every wrong field at once.
      validateRequests: { allowUnknownQueryParameters: false, allErrors: true },
      validateResponses: validateResponses ? { removeAdditional: false } : false,
      validateFormats: true,
      // Credentials are checked by requireAdmin, before the body is read.
      validateSecurity: false,
    }),
  );
  app.use(operationRoutes(pool, metrics));
  app.use(showRoutes({ pool, readPool, seatMaps, validateResponses, adminStatementTimeoutMs }));
  // Event history and the show check before a stream only read; the hub keeps its own pool.
  app.use(showEventRoutes(readPool, events, heartbeatMs));
  app.use(bookingRoutes(pool, bookingLimits, metrics.bookings));
  app.use(notFound);
  app.use(problemHandler(bodyLimit));
  return app;
}
