// `npm run postman:test`: runs the Postman collection generated from
// openapi.yaml with newman against the built service on a fresh database,
// with response validation on. Its assertions are Portman's contract tests
// (status, content type, JSON body and schema for every operation) and the
// integration tests of postman/portman-config.json: a double booking's 409,
// a seat freed by a cancel, and requests without their credential refused.
import { spawn } from 'node:child_process';
import { startLiveService } from '../tests/harness/live-service.js';
import { projectRoot } from '../src/paths.js';

const ADMIN_TOKEN = 'postman-admin-token-0123456789';
const METRICS_TOKEN = 'postman-metrics-token-0123456789';
const DOOR_TOKEN = 'postman-door-token-0123456789';
const service = await startLiveService({ NODE_ENV: 'development', ADMIN_TOKEN, METRICS_TOKEN, DOOR_TOKEN, RATE_LIMIT_BOOKINGS: '0', RATE_LIMIT_READS: '0' });
let code = 1;
try {
  code = await new Promise<number>((resolve) => {
    const newman = spawn(
      `${projectRoot}node_modules/.bin/newman`,
      [
        'run', `${projectRoot}postman/collection.json`,
        '--env-var', `baseUrl=${service.base}`,
        '--env-var', `adminToken=${ADMIN_TOKEN}`,
        '--env-var', `bearerToken=${ADMIN_TOKEN}`,
        '--env-var', `metricsToken=${METRICS_TOKEN}`,
        '--env-var', `doorToken=${DOOR_TOKEN}`,
        '--reporters', 'cli',
        '--bail', 'failure',
      ],
      { stdio: 'inherit' },
    );
    newman.on('exit', (status) => resolve(status ?? 1));
  });
} finally {
  await service.stop();
}
process.exit(code);
