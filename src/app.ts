// The Express application, built from its dependencies: no listening, no
// environment reading, so tests build it with their own pool.
import { randomUUID } from 'node:crypto';
import express from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import type pg from 'pg';
import type { Logger } from 'pino';
import { pinoHttp } from 'pino-http';
import { bookingRoutes } from './bookings.js';
import { defaultBookingLimits, type BookingLimits } from './config.js';
import { projectRoot } from './migrate.js';
import { notFound, problemHandler } from './problem.js';
import type { SeatEventHub } from './seat-events.js';
import { showEventRoutes } from './show-events.js';
import { showRoutes } from './shows.js';

export interface AppDeps {
  pool: pg.Pool;
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
}

export const apiSpecPath = `${projectRoot}openapi.yaml`;

const REQUEST_ID = /^[\w.:-]{1,128}$/;

export function makeApp({
  pool,
  logger,
  validateResponses,
  bodyLimit = 256 * 1024,
  bookingLimits = defaultBookingLimits,
  events,
  heartbeatMs = 15_000,
}: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // ETags are the seat map's own; hashing every other body would be wasted work.
  app.set('etag', false);
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
  app.use(express.json({ limit: bodyLimit }));
  app.use(
    OpenApiValidator.middleware({
      apiSpec: apiSpecPath,
      // allErrors: a client learns every wrong field at once.
      validateRequests: { allowUnknownQueryParameters: false, allErrors: true },
      validateResponses: validateResponses ? { removeAdditional: false } : false,
      validateFormats: true,
    }),
  );
  app.use(showRoutes(pool, validateResponses));
  app.use(showEventRoutes(pool, events, heartbeatMs));
  app.use(bookingRoutes(pool, bookingLimits));
  app.use(notFound);
  app.use(problemHandler(bodyLimit));
  return app;
}
