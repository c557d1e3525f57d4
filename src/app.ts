// The Express application, built from its dependencies: no listening, no
// environment reading, so tests build it with their own pool.
import { readFileSync } from 'node:fs';
import compression from 'compression';
import cors from 'cors';
import express, { Router } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import helmet from 'helmet';
import type pg from 'pg';
import type { Logger } from 'pino';
import { randomBytes } from 'node:crypto';
import { parse } from 'yaml';
import { adminViewer, bookingCredential, guardRoutes, requireAdmin, requireAnyOf } from './admin.js';
import { checkInRoutes } from './check-in.js';
import { clientKey } from './client-address.js';
import { bookingRoutes } from './bookings.js';
import { defaultBookingLimits, defaultDatabaseTimeouts, defaultIntervals, defaultRateLimit, defaultStreamLimits, type BookingLimits, type StreamLimits } from './config.js';
import { httpLogger } from './logging.js';
import { projectRoot } from './paths.js';
import { createMetrics } from './metrics.js';
import { docsRoutes, operationRoutes } from './operations.js';
import { notFound, problemHandler } from './problem-handler.js';
import { postgresLimiter } from './rate-limits.js';
import { CONSISTENCY_TOKEN, ReadRouting, type ReplicaMonitor } from './replica.js';
import type { SeatEventHub } from './seat-events.js';
import { SeatMaps } from './seat-maps.js';
import { seatMapPageRoutes } from './seat-map-page.js';
import { showEventRoutes } from './show-events.js';
import { showRoutes } from './shows.js';
import { TicketKeys } from './ticket-codes.js';
import { ticketRoutes } from './tickets.js';

export interface AppDeps {
  /** Bookings' pool, and every write. */
  pool: pg.Pool;
  /** Reads that never write (seat maps, show listings, event history): a flood of them cannot take bookings' connections. Defaults to `pool`. */
  readPool?: pg.Pool;
  /** Seat map reads shared by concurrent requests; one is made on `readPool` when not given. */
  seatMaps?: SeatMaps;
  /** A streaming replica (started by the caller) that may serve seat maps, show listings and event history. */
  replica?: ReplicaMonitor;
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
  /** Unsent bytes per event stream, and the caps on streams (off unless given). */
  streams?: Partial<StreamLimits>;
  /** The admin bearer token for creating shows, listing bookings and reading any booking. */
  adminToken: string;
  /** The bearer token that scrapes /metrics; the admin token does not. */
  metricsToken: string;
  /** The door staff's bearer token: scans tickets and reads check-in counts, nothing else. Absent: no one can scan. */
  doorToken?: string;
  /** The keys that sign and verify ticket codes; absent: a fresh key for this app alone (tests and tools). */
  ticketKeys?: TicketKeys;
  /** Origins allowed to call the API from a browser. */
  corsOrigins?: string[];
  /**
   * Booking creations (max) and reads of shows, seat maps and events (reads)
   * per client per window, counted in the database for all instances; 0
   * turns a limit off.
   */
  rateLimit?: { max: number; windowMs: number; reads?: number };
  /** Proxy hops whose X-Forwarded-For is trusted for the client address. */
  trustProxy?: number;
  /** A header with the client's address, set by a trusted edge; see client-address.ts. */
  clientAddressHeader?: string;
}

export const apiSpecPath = `${projectRoot}openapi.yaml`;

let parsedContract: unknown;
/** openapi.yaml, parsed once. */
function contract(): unknown {
  parsedContract ??= parse(readFileSync(apiSpecPath, 'utf8'));
  return parsedContract;
}

export function makeApp({
  pool,
  readPool = pool,
  seatMaps = new SeatMaps(readPool),
  replica,
  adminStatementTimeoutMs = defaultDatabaseTimeouts.adminStatementTimeoutMs,
  logger,
  validateResponses,
  bodyLimit = 256 * 1024,
  bookingLimits = defaultBookingLimits,
  events,
  heartbeatMs = defaultIntervals.heartbeatMs,
  streams = {},
  adminToken,
  metricsToken,
  // Absent, no credential can match: check-in is closed.
  doorToken = randomBytes(32).toString('base64url'),
  ticketKeys = new TicketKeys(TicketKeys.generatePem()),
  corsOrigins = [],
  // Off unless given: tests and tools build apps that must not be limited.
  rateLimit: limits = { max: 0, windowMs: defaultRateLimit.windowMs },
  trustProxy = 0,
  clientAddressHeader,
}: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // ETags are the seat map's own; hashing every other body would be wasted work.
  app.set('etag', false);
  app.set('trust proxy', trustProxy);
  const metrics = createMetrics(pool, events, replica);
  const reads = new ReadRouting(readPool, replica, metrics.replicaReads);
  const replicaSeatMaps = replica ? new SeatMaps(replica.pool) : undefined;
  app.use(httpLogger(logger));
  app.use(metrics.middleware);
  // Event streams are never compressed: the compressor would hold events
  // back until its buffer fills. Seat maps arrive already gzipped when the
  // client accepts it, and the middleware leaves encoded bodies alone.
  const compress = compression({
    filter: (req, res) => !/^text\/event-stream\b/i.test(String(res.getHeader('Content-Type') ?? '')) && compression.filter(req, res),
  });
  // The docs and the seat map page, with their own security headers; no
  // API path is theirs, so an API request passes them in one step instead
  // of entering each router.
  const pages = Router();
  pages.use(compress, docsRoutes(apiSpecPath), seatMapPageRoutes());
  // A booking route answers one booking, nearly always under the 1 kB
  // threshold: wrapping every response there cost the booking path CPU and
  // compressed next to nothing.
  app.use((req, res, next) => {
    if (!req.path.startsWith('/api/')) pages(req, res, next);
    else if (req.path.startsWith('/api/bookings')) next();
    else compress(req, res, next);
  });
  app.use(helmet());
  if (corsOrigins.length) {
    app.use(
      cors({
        origin: corsOrigins,
        exposedHeaders: ['ETag', 'Location', 'Retry-After', 'X-Request-Id', 'Idempotent-Replayed', CONSISTENCY_TOKEN],
        maxAge: 600,
      }),
    );
  }
  // Cheap refusals first: credentials and rate limits before body parsing.
  // Which routes need which credential is the contract's `security`. A
  // booking's own routes need its secret (or the admin token): a request
  // without any credential is refused before its body is read.
  const bookingAccess = bookingCredential(adminToken);
  const guards = express.Router();
  guardRoutes(guards, contract(), {
    adminToken: requireAdmin(adminToken),
    metricsToken: requireAdmin(metricsToken, 'metrics'),
    // Only door staff scan (the admin token cannot); both read the counts.
    doorToken: requireAdmin(doorToken, 'door'),
    'adminToken or doorToken': requireAnyOf([doorToken, adminToken], 'door'),
    'adminToken or bookingSecret': (req, _res, next) => {
      bookingAccess(req);
      next();
    },
  });
  const limiter = { windowMs: limits.windowMs, connection: pool.options, clientAddressHeader };
  const parseJson = express.json({ limit: bodyLimit });
  const validate = OpenApiValidator.middleware({
    apiSpec: apiSpecPath,
    // allErrors: a client learns every wrong field at once.
    validateRequests: { allowUnknownQueryParameters: false, allErrors: true },
    validateResponses: validateResponses ? { removeAdditional: false } : false,
    validateFormats: true,
    // Credentials are checked by the contract's guards below, before the body is read.
    validateSecurity: false,
    // The contract takes no uploads.
    fileUploader: false,
  });
  const bookings = bookingRoutes(pool, bookingLimits, metrics.bookings, adminToken, clientAddressHeader, reads);
  // The on-sale's request has a route of its own: the same rate limit,
  // body parser and contract validation as any request, without passing
  // the credential guards (it needs none) and the routers it never uses.
  const bookingLimit = limits.max > 0 ? [postgresLimiter({ ...limiter, name: 'bookings', limit: limits.max, what: 'bookings' })] : [];
  // The one error handler answers there too: a lost seat, the on-sale's
  // common answer, does not travel through every later layer to reach it.
  const problems = problemHandler(bodyLimit);
  app.post('/api/bookings', ...bookingLimit, parseJson, validate, bookings.create, problems);
  app.use(guards);
  if (limits.reads) {
    app.get(['/api/shows', '/api/shows/*rest'], postgresLimiter({ ...limiter, name: 'reads', limit: limits.reads, what: 'reads of shows' }));
  }
  app.use(parseJson);
  app.use(validate);
  app.use(bookings.router);
  app.use(operationRoutes(pool, metrics));
  app.use(showRoutes({ pool, reads, seatMaps, replicaSeatMaps, validateResponses, adminStatementTimeoutMs }));
  // Event history and the show check before a stream only read; the hub keeps its own pool.
  const streamOptions = { maxBufferBytes: defaultStreamLimits.maxBufferBytes, maxPerClient: 0, maxTotal: 0, ...streams, heartbeatMs };
  // Stream caps count the client the rate limits count.
  const streamClient = (req: Parameters<typeof clientKey>[0]) => clientKey(req, { header: clientAddressHeader });
  app.use(showEventRoutes(readPool, reads, events, streamOptions, { dropped: metrics.streamsDropped, logger }, adminViewer(adminToken), streamClient));
  app.use(ticketRoutes(pool, ticketKeys, adminToken));
  app.use(checkInRoutes(pool, ticketKeys));
  app.use(notFound);
  app.use(problems);
  return app;
}
