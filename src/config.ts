// Configuration is read and validated once, at start. A bad value stops the
// process with a message that names the variable.
import { createPrivateKey, type KeyObject } from 'node:crypto';

export type NodeEnv = 'development' | 'production' | 'test';

export interface Config extends Intervals {
  /** Absent: run an embedded PostgreSQL (not allowed in production). */
  databaseUrl: string | undefined;
  /** A direct (not pooled) connection for what needs a session of its own: LISTEN and migrations' advisory locks; absent: DATABASE_URL. */
  databaseDirectUrl: string | undefined;
  /** DATABASE_URL is a transaction-mode pooler (PgBouncer before 1.21): unnamed statements, no startup options. */
  databasePooler: 'none' | 'transaction';
  /** A streaming replica for reads that may be a moment behind (seat maps, show listings, event history); absent: all on the primary. */
  databaseReplica: ReplicaConfig | undefined;
  port: number;
  host: string;
  nodeEnv: NodeEnv;
  logLevel: string;
  databasePoolSize: number;
  /** The separate pool for reads (seat maps, listings, event history), so they never take bookings' connections. */
  databaseReadPoolSize: number;
  /** Where the embedded PostgreSQL keeps its data. */
  embeddedDataDir: string | undefined;
  bookingLimits: BookingLimits;
  streams: StreamLimits;
  /** Bearer token for admin operations; absent in development means "generate one". */
  adminToken: string | undefined;
  /** Bearer token for scraping /metrics, never the admin token; absent in development means "generate one". */
  metricsToken: string | undefined;
  /** Bearer token for check-in at the doors, and nothing else; absent in development means "generate one". */
  doorToken: string | undefined;
  /** The Ed25519 key that signs ticket codes (PKCS#8 PEM); absent outside production means "generate one" (persisted in development). */
  ticketSigningKey: string | undefined;
  /** Public keys of earlier signing keys whose codes still verify (raw 32 bytes, base64url, as the key set's `x`). */
  ticketPreviousKeys: string[];
  /** Origins allowed to call the API from a browser; empty: no CORS headers. */
  corsOrigins: string[];
  /** Booking creations and reads of shows per client per window; 0 turns a limit off. */
  rateLimit: { max: number; windowMs: number; reads: number };
  /** Proxy hops in front of the service whose X-Forwarded-For to trust (Render: 2, its CDN and its proxy). */
  trustProxy: number;
  /** A header holding the client's address, set by a trusted edge; unset: from X-Forwarded-For. */
  clientAddressHeader: string | undefined;
  database: DatabaseTimeouts;
  /** Apply the committed migrations at start (off where a deploy step runs them). */
  migrateOnStart: boolean;
}

export interface ReplicaConfig {
  url: string;
  /** Replay lag past which the replica is skipped and every read goes to the primary. */
  maxLagMs: number;
  /** How often the replica's replay position and lag are read. */
  pollMs: number;
}

export const defaultReplica = { maxLagMs: 1_000, pollMs: 100 };

export interface DatabaseTimeouts {
  statementTimeoutMs: number;
  lockTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
  connectTimeoutMs: number;
  /** statement_timeout for admin work that may take seconds: creating the largest shows. */
  adminStatementTimeoutMs: number;
}

export const defaultDatabaseTimeouts: DatabaseTimeouts = {
  statementTimeoutMs: 5_000,
  lockTimeoutMs: 2_000,
  idleInTransactionTimeoutMs: 10_000,
  connectTimeoutMs: 2_000,
  adminStatementTimeoutMs: 60_000,
};

/** What one client may keep in live holds; 0 turns a limit off. */
export interface HoldLimits {
  /** Seats one client address may hold in one show at once. */
  seatsPerClient: number;
  /** Seats one customer email may hold in one show at once. */
  seatsPerEmail: number;
  /** Live holds one client address may have, over all shows. */
  holdsPerClient: number;
}

export interface StreamLimits {
  /** Unsent bytes past which an event stream's client counts as not keeping up, and is dropped. */
  maxBufferBytes: number;
  /** Open event streams per client address; 0: no cap. */
  maxPerClient: number;
  /** Open event streams in the process; 0: no cap. */
  maxTotal: number;
}

export const defaultStreamLimits: StreamLimits = {
  maxBufferBytes: 256 * 1024,
  maxPerClient: 10,
  maxTotal: 1000,
};

export interface BookingLimits {
  maxSeatsPerBooking: number;
  holdDefaultSeconds: number;
  holdMaxSeconds: number;
  holds: HoldLimits;
}

export const defaultBookingLimits: BookingLimits = {
  maxSeatsPerBooking: 10,
  holdDefaultSeconds: 600,
  holdMaxSeconds: 1800,
  holds: { seatsPerClient: 40, seatsPerEmail: 10, holdsPerClient: 10 },
};

/** How often the background work runs, and how often an idle event stream hears from us. */
export interface Intervals {
  /** How often lapsed holds are recorded as expired and old idempotency keys purged. */
  sweepIntervalMs: number;
  /** How often committed seat events are given their positions and published. */
  sequenceIntervalMs: number;
  /** How often an idle event stream gets a keep-alive comment. */
  heartbeatMs: number;
}

export const defaultIntervals: Intervals = {
  sweepIntervalMs: 1000,
  sequenceIntervalMs: 100,
  heartbeatMs: 15_000,
};

/** Booking creations and reads of shows per client per window. */
export const defaultRateLimit = { max: 120, windowMs: 60_000, reads: 600 };

export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function oneOf<T extends string>(env: NodeJS.ProcessEnv, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const match = allowed.find((value) => value === raw);
  if (!match) throw new ConfigError(name, `must be one of ${allowed.join(', ')}, got "${raw}"`);
  return match;
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const nodeEnv = oneOf(env, 'NODE_ENV', ['development', 'production', 'test'] as const, 'development');
  const databaseUrl = env.DATABASE_URL || undefined;
  if (databaseUrl !== undefined) {
    let protocol: string;
    try {
      protocol = new URL(databaseUrl).protocol;
    } catch {
      throw new ConfigError('DATABASE_URL', 'is not a valid URL');
    }
    if (protocol !== 'postgres:' && protocol !== 'postgresql:') {
      throw new ConfigError('DATABASE_URL', `must be a postgres:// URL, got ${protocol}//…`);
    }
  } else if (nodeEnv === 'production') {
    throw new ConfigError('DATABASE_URL', 'is required in production (the embedded database is for development)');
  }
  return {
    databaseUrl,
    databaseDirectUrl: readPostgresUrl(env, 'DATABASE_DIRECT_URL'),
    databasePooler: oneOf(env, 'DATABASE_POOLER', ['none', 'transaction'] as const, 'none'),
    databaseReplica: readReplica(env),
    port: integer(env, 'PORT', 3000, 0, 65535),
    host: env.HOST || '0.0.0.0',
    nodeEnv,
    logLevel: oneOf(env, 'LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
    // On 2 cores, backends beyond a few per core only queue inside
    // PostgreSQL: 8 booked as fast as 16 or 20, with a lower p99 (bench/README.md).
    databasePoolSize: integer(env, 'DATABASE_POOL_SIZE', 8, 1, 500),
    databaseReadPoolSize: integer(env, 'DATABASE_READ_POOL_SIZE', 5, 1, 500),
    embeddedDataDir: env.EMBEDDED_PG_DATA_DIR || undefined,
    bookingLimits: readBookingLimits(env),
    sweepIntervalMs: integer(env, 'SWEEP_INTERVAL_MS', defaultIntervals.sweepIntervalMs, 100, 600_000),
    sequenceIntervalMs: integer(env, 'EVENTS_INTERVAL_MS', defaultIntervals.sequenceIntervalMs, 10, 10_000),
    heartbeatMs: integer(env, 'SSE_HEARTBEAT_MS', defaultIntervals.heartbeatMs, 1_000, 300_000),
    streams: {
      // Below a socket's own high-water mark, a client that reads would be dropped whenever a write waits.
      maxBufferBytes: integer(env, 'SSE_MAX_BUFFER_BYTES', defaultStreamLimits.maxBufferBytes, 16_384, 64 * 1024 * 1024),
      maxPerClient: integer(env, 'SSE_MAX_STREAMS_PER_CLIENT', defaultStreamLimits.maxPerClient, 0, 100_000),
      maxTotal: integer(env, 'SSE_MAX_STREAMS', defaultStreamLimits.maxTotal, 0, 100_000),
    },
    adminToken: readToken(env, 'ADMIN_TOKEN', nodeEnv),
    metricsToken: readMetricsToken(env, nodeEnv),
    doorToken: readDoorToken(env, nodeEnv),
    ticketSigningKey: readSigningKey(env, nodeEnv),
    ticketPreviousKeys: readPreviousKeys(env),
    corsOrigins: readOrigins(env),
    rateLimit: {
      max: integer(env, 'RATE_LIMIT_BOOKINGS', defaultRateLimit.max, 0, 1_000_000),
      windowMs: integer(env, 'RATE_LIMIT_WINDOW_MS', defaultRateLimit.windowMs, 1_000, 3_600_000),
      // A booking page that polls its seat map every 2 s uses 30 a minute;
      // the rest is room for clients that share one address.
      reads: integer(env, 'RATE_LIMIT_READS', defaultRateLimit.reads, 0, 1_000_000),
    },
    trustProxy: integer(env, 'TRUST_PROXY', 0, 0, 10),
    clientAddressHeader: readHeaderName(env, 'CLIENT_ADDRESS_HEADER'),
    migrateOnStart: oneOf(env, 'MIGRATE_ON_START', ['true', 'false'] as const, 'true') === 'true',
    database: {
      statementTimeoutMs: integer(env, 'DB_STATEMENT_TIMEOUT_MS', defaultDatabaseTimeouts.statementTimeoutMs, 100, 600_000),
      lockTimeoutMs: integer(env, 'DB_LOCK_TIMEOUT_MS', defaultDatabaseTimeouts.lockTimeoutMs, 10, 600_000),
      idleInTransactionTimeoutMs: integer(env, 'DB_IDLE_IN_TRANSACTION_TIMEOUT_MS', defaultDatabaseTimeouts.idleInTransactionTimeoutMs, 100, 600_000),
      connectTimeoutMs: integer(env, 'DB_CONNECT_TIMEOUT_MS', defaultDatabaseTimeouts.connectTimeoutMs, 100, 60_000),
      adminStatementTimeoutMs: integer(env, 'DB_ADMIN_STATEMENT_TIMEOUT_MS', defaultDatabaseTimeouts.adminStatementTimeoutMs, 1_000, 600_000),
    },
  };
}

function readPostgresUrl(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const url = env[name] || undefined;
  if (url === undefined) return undefined;
  let protocol: string;
  try {
    protocol = new URL(url).protocol;
  } catch {
    throw new ConfigError(name, 'is not a valid URL');
  }
  if (protocol !== 'postgres:' && protocol !== 'postgresql:') throw new ConfigError(name, `must be a postgres:// URL, got ${protocol}//…`);
  return url;
}

function readReplica(env: NodeJS.ProcessEnv): ReplicaConfig | undefined {
  const url = readPostgresUrl(env, 'DATABASE_REPLICA_URL');
  if (url === undefined) return undefined;
  return {
    url,
    maxLagMs: integer(env, 'DATABASE_REPLICA_MAX_LAG_MS', defaultReplica.maxLagMs, 0, 3_600_000),
    pollMs: integer(env, 'DATABASE_REPLICA_POLL_MS', defaultReplica.pollMs, 10, 60_000),
  };
}

function readToken(env: NodeJS.ProcessEnv, name: string, nodeEnv: NodeEnv): string | undefined {
  const token = env[name] || undefined;
  if (token === undefined) {
    if (nodeEnv === 'production') throw new ConfigError(name, 'is required in production');
    return undefined;
  }
  if (token.length < 16 || /\s/.test(token)) {
    throw new ConfigError(name, 'must be at least 16 characters with no spaces');
  }
  return token;
}

// Least privilege: whoever scrapes metrics must not be able to create shows.
function readMetricsToken(env: NodeJS.ProcessEnv, nodeEnv: NodeEnv): string | undefined {
  const token = readToken(env, 'METRICS_TOKEN', nodeEnv);
  if (token !== undefined && token === env.ADMIN_TOKEN) throw new ConfigError('METRICS_TOKEN', 'must differ from ADMIN_TOKEN');
  return token;
}

// Door staff scan tickets and do nothing else: their token opens no admin route.
function readDoorToken(env: NodeJS.ProcessEnv, nodeEnv: NodeEnv): string | undefined {
  const token = readToken(env, 'DOOR_TOKEN', nodeEnv);
  if (token !== undefined && (token === env.ADMIN_TOKEN || token === env.METRICS_TOKEN)) {
    throw new ConfigError('DOOR_TOKEN', 'must differ from ADMIN_TOKEN and METRICS_TOKEN');
  }
  return token;
}

/** An Ed25519 private key as PKCS#8 PEM (newlines may be written \n), or its DER in base64; answered as PEM. */
function readSigningKey(env: NodeJS.ProcessEnv, nodeEnv: NodeEnv): string | undefined {
  const raw = env.TICKET_SIGNING_KEY?.trim();
  if (!raw) {
    if (nodeEnv === 'production') throw new ConfigError('TICKET_SIGNING_KEY', 'is required in production (an Ed25519 private key, PKCS#8 PEM)');
    return undefined;
  }
  let key: KeyObject;
  try {
    key = raw.startsWith('-----')
      ? createPrivateKey(raw.replaceAll('\\n', '\n'))
      : createPrivateKey({ key: Buffer.from(raw, 'base64'), format: 'der', type: 'pkcs8' });
  } catch {
    throw new ConfigError('TICKET_SIGNING_KEY', 'is not a private key in PKCS#8 PEM or base64 DER');
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new ConfigError('TICKET_SIGNING_KEY', `must be an Ed25519 key, got ${key.asymmetricKeyType ?? 'another kind'}`);
  }
  return key.export({ format: 'pem', type: 'pkcs8' }).toString();
}

function readPreviousKeys(env: NodeJS.ProcessEnv): string[] {
  const raw = env.TICKET_PREVIOUS_KEYS?.trim();
  if (!raw) return [];
  return raw.split(',').map((key) => key.trim()).filter(Boolean).map((key) => {
    if (!/^[A-Za-z0-9_-]{43}$/.test(key) || Buffer.from(key, 'base64url').length !== 32) {
      throw new ConfigError('TICKET_PREVIOUS_KEYS', `must list Ed25519 public keys as 43 base64url characters (a key set's "x"), got "${key}"`);
    }
    return key;
  });
}

function readHeaderName(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  if (!/^[A-Za-z0-9-]+$/.test(raw)) throw new ConfigError(name, `must be a header name such as CF-Connecting-IP, got "${raw}"`);
  return raw.toLowerCase();
}

function readOrigins(env: NodeJS.ProcessEnv): string[] {
  const raw = env.CORS_ORIGINS?.trim();
  if (!raw) return [];
  const origins = raw.split(',').map((origin) => origin.trim()).filter(Boolean);
  for (const origin of origins) {
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      throw new ConfigError('CORS_ORIGINS', `has an origin that is not a URL: "${origin}"`);
    }
    if (parsed.origin !== origin) {
      throw new ConfigError('CORS_ORIGINS', `must list bare origins such as https://tickets.example.com, got "${origin}"`);
    }
  }
  return origins;
}

function readBookingLimits(env: NodeJS.ProcessEnv): BookingLimits {
  const holdMaxSeconds = integer(env, 'HOLD_MAX_SECONDS', defaultBookingLimits.holdMaxSeconds, 1, 86_400);
  const holdDefaultSeconds = integer(env, 'HOLD_TTL_SECONDS', Math.min(defaultBookingLimits.holdDefaultSeconds, holdMaxSeconds), 1, 86_400);
  if (holdDefaultSeconds > holdMaxSeconds) {
    throw new ConfigError('HOLD_TTL_SECONDS', `must not exceed HOLD_MAX_SECONDS (${holdMaxSeconds}), got ${holdDefaultSeconds}`);
  }
  return {
    // The contract allows 100 seats at most in any request.
    maxSeatsPerBooking: integer(env, 'MAX_SEATS_PER_BOOKING', defaultBookingLimits.maxSeatsPerBooking, 1, 100),
    holdDefaultSeconds,
    holdMaxSeconds,
    holds: {
      seatsPerClient: integer(env, 'HOLD_LIMIT_SEATS_PER_CLIENT', defaultBookingLimits.holds.seatsPerClient, 0, 100_000),
      seatsPerEmail: integer(env, 'HOLD_LIMIT_SEATS_PER_EMAIL', defaultBookingLimits.holds.seatsPerEmail, 0, 100_000),
      holdsPerClient: integer(env, 'HOLD_LIMIT_HOLDS_PER_CLIENT', defaultBookingLimits.holds.holdsPerClient, 0, 100_000),
    },
  };
}
