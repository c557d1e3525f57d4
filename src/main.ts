// The entry point: read config, get a database (the given one, or an
// embedded one), migrate it, serve, and shut down in order on a signal.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import { pino } from 'pino';
import { makeApp } from './app.js';
import { createAppServer } from './app-server.js';
import { ConfigError, readConfig } from './config.js';
import { createPool } from './db.js';
import { loggerOptions, prettyTransport } from './logging.js';
import type { EmbeddedDatabase } from './embedded-postgres.js';
import { projectRoot } from './paths.js';
import { prepareRateLimitStore } from './rate-limits.js';
import { ReplicaMonitor } from './replica.js';
import { SeatEventHub } from './seat-events.js';
import { startSweeper } from './sweeper.js';
import { keptSigningKey, TicketKeys } from './ticket-codes.js';

// A .env beside the project fills in what the environment leaves unset
// (variables already set win), as .env.example describes.
const envFile = `${projectRoot}.env`;
if (existsSync(envFile)) process.loadEnvFile(envFile);

let config;
try {
  config = readConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`Configuration error: ${error.message}\n`);
  process.exit(78);
}

const logger = pino({
  ...loggerOptions(config.logLevel),
  ...(config.nodeEnv === 'production' ? {} : { transport: prettyTransport }),
});

let embedded: EmbeddedDatabase | undefined;
let databaseUrl = config.databaseUrl;
if (!databaseUrl) {
  const dataDir = config.embeddedDataDir ?? `${projectRoot}.data/postgres`;
  logger.info({ dataDir }, 'no DATABASE_URL: starting the embedded PostgreSQL');
  // Loaded only when needed: a service with DATABASE_URL never pays for it.
  const { startEmbeddedPostgres } = await import('./embedded-postgres.js');
  try {
    embedded = await startEmbeddedPostgres({
      dataDir,
      persistent: true,
      onLog: (message) => logger.debug({ postgres: message.trim() }, 'postgres'),
    });
  } catch (error) {
    // A sentence that says what to do, not a stack trace.
    process.stderr.write(`Cannot start the embedded PostgreSQL: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
  await embedded.createDatabase('booking');
  databaseUrl = embedded.url('booking');
}

// LISTEN and the migrators' advisory locks belong to a session, which a
// transaction-mode pooler would hand to others between transactions.
const directUrl = config.databaseDirectUrl ?? databaseUrl;
const transactionPooler = config.databasePooler === 'transaction';

if (config.migrateOnStart) {
  // Loaded only to migrate: where migrations run before deploys, the service
  // never carries the migration tool.
  const { runMigrations } = await import('./migrate.js');
  await runMigrations(directUrl, (message) => logger.info(message));
} else if (config.rateLimit.max || config.rateLimit.reads) {
  // The store would create its schema itself, unawaited; this way a missing
  // privilege stops the start with a message instead of a later crash.
  await prepareRateLimitStore(directUrl, (message) => logger.info(message));
}
const pool = createPool({ connectionString: databaseUrl, max: config.databasePoolSize, timeouts: config.database, transactionPooler });
const readPool = createPool({
  connectionString: databaseUrl,
  max: config.databaseReadPoolSize,
  applicationName: 'ticket-booking-reads',
  timeouts: config.database,
  transactionPooler,
});
// Reads that may be a moment behind can come from a streaming replica, its
// pool as large as the primary's read pool.
const replicaConfig = config.databaseReplica;
const replica = replicaConfig
  ? new ReplicaMonitor(
      readPool,
      createPool({
        connectionString: replicaConfig.url,
        max: config.databaseReadPoolSize,
        applicationName: 'ticket-booking-replica-reads',
        timeouts: config.database,
        transactionPooler,
      }),
      replicaConfig,
      logger,
    )
  : undefined;
await replica?.start();

/**
 * Without TICKET_SIGNING_KEY (never in production): in development, a key
 * kept beside the embedded database's data, so tickets given out stay valid
 * across restarts; otherwise (tests) a key for this run.
 */
function developmentSigningKey(nodeEnv: string): string {
  if (nodeEnv !== 'development') return TicketKeys.generatePem();
  const file = `${projectRoot}.data/ticket-signing-key.pem`;
  const { pem, created } = keptSigningKey(file);
  if (created) process.stdout.write(`Ticket signing key made for development in ${file} (set TICKET_SIGNING_KEY in production)\n`);
  return pem;
}

// Development without ADMIN_TOKEN: a token for this run, shown once.
const adminToken = config.adminToken ?? randomBytes(24).toString('base64url');
if (!config.adminToken) process.stdout.write(`Admin token for this run (set ADMIN_TOKEN to choose one): ${adminToken}\n`);
const metricsToken = config.metricsToken ?? randomBytes(24).toString('base64url');
if (!config.metricsToken) process.stdout.write(`Metrics token for this run (set METRICS_TOKEN to choose one): ${metricsToken}\n`);
const doorToken = config.doorToken ?? randomBytes(24).toString('base64url');
if (!config.doorToken) process.stdout.write(`Door token for this run (set DOOR_TOKEN to choose one): ${doorToken}\n`);
const ticketKeys = new TicketKeys(config.ticketSigningKey ?? developmentSigningKey(config.nodeEnv), config.ticketPreviousKeys);
logger.info({ kid: ticketKeys.signingKeyId }, 'ticket codes are signed with this key');
const events = new SeatEventHub(pool, logger, { sequenceIntervalMs: config.sequenceIntervalMs, listenUrl: directUrl });
await events.start();
const app = makeApp({
  pool,
  readPool,
  replica,
  adminStatementTimeoutMs: config.database.adminStatementTimeoutMs,
  logger,
  validateResponses: config.nodeEnv !== 'production',
  bookingLimits: config.bookingLimits,
  events,
  heartbeatMs: config.heartbeatMs,
  streams: config.streams,
  adminToken,
  metricsToken,
  doorToken,
  ticketKeys,
  corsOrigins: config.corsOrigins,
  rateLimit: config.rateLimit,
  trustProxy: config.trustProxy,
  clientAddressHeader: config.clientAddressHeader,
});
const sweeper = startSweeper(pool, config.sweepIntervalMs, logger);

// Every client of an on-sale connects at once: each must find room in the
// accept queue, or the kernel drops its SYN and the client retries after
// 1, 3, 7 s. Node's default (511) already holds the 256 of the flash
// benchmark (0 listen overflows measured); this leaves room beyond it. The
// kernel caps it at net.core.somaxconn.
const server: Server = createAppServer(app).listen({ port: config.port, host: config.host, backlog: 2048 }, () => {
  logger.info(`listening on http://${config.host === '0.0.0.0' ? 'localhost' : config.host}:${config.port}`);
});

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down');
  // Bounded: whatever still runs after 10 s is cut off.
  const force = setTimeout(() => {
    logger.error('shutdown took too long; exiting');
    process.exit(1);
  }, 10_000);
  force.unref();
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  // Event streams never finish by themselves: end them so the server can close.
  await events.stop();
  await closed;
  await sweeper.stop();
  await replica?.stop();
  await Promise.all([pool.end(), readPool.end(), replica?.pool.end()]);
  await embedded?.stop();
  logger.info('stopped');
  process.exit(0);
}

process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
