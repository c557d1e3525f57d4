// Operations: liveness, readiness, metrics, and the published docs and contract.
import { existsSync } from 'node:fs';
import { Router } from 'express';
import helmet from 'helmet';
import type pg from 'pg';
import type { components } from './generated/api.js';
import { callJson, statement } from './db.js';
import type { Metrics } from './metrics.js';
import { latestMigration, projectRoot } from './paths.js';
import { ProblemError } from './problem.js';

type Readiness = components['schemas']['Readiness'];

export const docsPath = `${projectRoot}dist/docs/index.html`;
const appliedMigration = statement(
  'applied_migration',
  'select max(filename) as result from graphile_migrate.migrations',
);

/** /docs and /openapi.yaml: mounted before the API's own security headers. */
export function docsRoutes(apiSpecPath: string): Router {
  const router = Router();
  // The Redoc page is self-contained: inline scripts and styles, blob workers.
  const docsHeaders = helmet({
    contentSecurityPolicy: {
      directives: {
        scriptSrc: ["'self'", "'unsafe-inline'"],
        styleSrc: ["'self'", "'unsafe-inline'"],
        workerSrc: ["'self'", 'blob:'],
        imgSrc: ["'self'", 'data:', 'https:'],
      },
    },
  });
  router.get('/docs', docsHeaders, (_req, res) => {
    if (!existsSync(docsPath)) throw new ProblemError('not-found', 'The docs are not built; run npm run docs');
    res.sendFile(docsPath);
  });
  router.get('/openapi.yaml', helmet(), (_req, res) => {
    res.type('application/yaml').sendFile(apiSpecPath);
  });
  return router;
}

export function operationRoutes(pool: pg.Pool, metrics: Metrics): Router {
  const router = Router();
  const expected = latestMigration();

  router.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });

  // The public learns up or down; why it is down (the database, which
  // migration) goes to the log for the operators.
  router.get('/ready', async (req, res) => {
    const unavailable: Readiness = { status: 'unavailable' };
    let applied: string | null;
    try {
      applied = await callJson<string>(pool, appliedMigration, []);
    } catch (error) {
      req.log.warn({ err: error, expectedMigration: expected }, 'not ready: the database is unreachable');
      res.status(503).set('Retry-After', '5').json(unavailable);
      return;
    }
    // At or ahead of this version: migrations only expand the schema, so a
    // release keeps working while the next one's migrations are applied (and
    // after a rollback). Only a database that lacks one of ours is refused.
    if (applied === null || applied < expected) {
      req.log.warn({ expectedMigration: expected, appliedMigration: applied }, 'not ready: the database lacks this version\'s migrations');
      res.status(503).set('Retry-After', '5').json(unavailable);
      return;
    }
    const ready: Readiness = { status: 'ready' };
    res.json(ready);
  });

  router.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  return router;
}
