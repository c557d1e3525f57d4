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

  router.get('/ready', async (_req, res) => {
    let applied: string | null;
    try {
      applied = await callJson<string>(pool, appliedMigration, []);
    } catch {
      const body: Readiness = { status: 'unavailable', database: 'unreachable', expectedMigration: expected };
      res.status(503).set('Retry-After', '5').json(body);
      return;
    }
    const ready = applied === expected;
    const body: Readiness = {
      status: ready ? 'ready' : 'unavailable',
      database: 'up',
      expectedMigration: expected,
      ...(applied ? { appliedMigration: applied } : {}),
    };
    res.status(ready ? 200 : 503).json(body);
  });

  router.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  return router;
}
