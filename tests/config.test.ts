// readConfig is a function of an environment: each bad value is refused
// here, in-process, with an error that names its variable. That the entry
// point turns such an error into exit code 78 is checked once, by starting
// it (tests/service.test.ts).
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigError, defaultBookingLimits, defaultIntervals, defaultStreamLimits, readConfig } from '../src/config.js';
import { ADMIN_TOKEN, METRICS_TOKEN } from './support.js';

// What the service tests start the process with.
const base = { NODE_ENV: 'test', ADMIN_TOKEN, METRICS_TOKEN };

describe('the configuration', () => {
  it.each([
    [{ PORT: 'eighty' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ NODE_ENV: 'staging' }, 'NODE_ENV'],
    [{ DATABASE_URL: 'mysql://localhost/db' }, 'DATABASE_URL'],
    [{ NODE_ENV: 'production' }, 'DATABASE_URL'],
    [{ NODE_ENV: 'production', DATABASE_URL: 'postgres://localhost:1/none', ADMIN_TOKEN: '' }, 'ADMIN_TOKEN'],
    [{ ADMIN_TOKEN: 'short' }, 'ADMIN_TOKEN'],
    [{ NODE_ENV: 'production', DATABASE_URL: 'postgres://localhost:1/none', METRICS_TOKEN: '' }, 'METRICS_TOKEN'],
    [{ METRICS_TOKEN: ADMIN_TOKEN }, 'METRICS_TOKEN'],
    [{ NODE_ENV: 'production', DATABASE_URL: 'postgres://localhost:1/none', DOOR_TOKEN: '' }, 'DOOR_TOKEN'],
    [{ DOOR_TOKEN: ADMIN_TOKEN }, 'DOOR_TOKEN'],
    [{ NODE_ENV: 'production', DATABASE_URL: 'postgres://localhost:1/none', DOOR_TOKEN: 'door-token-0123456789', TICKET_SIGNING_KEY: '' }, 'TICKET_SIGNING_KEY'],
    [{ TICKET_SIGNING_KEY: 'not a key' }, 'TICKET_SIGNING_KEY'],
    [{ TICKET_SIGNING_KEY: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() }, 'TICKET_SIGNING_KEY'],
    [{ TICKET_PREVIOUS_KEYS: 'short' }, 'TICKET_PREVIOUS_KEYS'],
    [{ CLIENT_ADDRESS_HEADER: 'cf connecting ip' }, 'CLIENT_ADDRESS_HEADER'],
    [{ RATE_LIMIT_READS: 'many' }, 'RATE_LIMIT_READS'],
    [{ CORS_ORIGINS: 'https://tickets.example.com/path' }, 'CORS_ORIGINS'],
    [{ HOLD_TTL_SECONDS: '3600', HOLD_MAX_SECONDS: '1800' }, 'HOLD_TTL_SECONDS'],
  ])('refuses %o, naming %s', (env, variable) => {
    const read = () => readConfig({ ...base, ...env });
    expect(read).toThrow(ConfigError);
    expect(read).toThrow(new RegExp(`^${variable} `));
  });

  it('starts from the defaults, each stated once in config.ts', () => {
    const config = readConfig(base);
    expect(config).toMatchObject({
      port: 3000,
      nodeEnv: 'test',
      bookingLimits: defaultBookingLimits,
      streams: defaultStreamLimits,
      ...defaultIntervals,
    });
  });

  it('takes the values it is given', () => {
    const config = readConfig({
      ...base,
      PORT: '8080',
      SSE_HEARTBEAT_MS: '5000',
      EVENTS_INTERVAL_MS: '250',
      MAX_SEATS_PER_BOOKING: '4',
      CORS_ORIGINS: 'https://tickets.example.com, https://box.example.com',
    });
    expect(config).toMatchObject({ port: 8080, heartbeatMs: 5000, sequenceIntervalMs: 250, corsOrigins: ['https://tickets.example.com', 'https://box.example.com'] });
    expect(config.bookingLimits.maxSeatsPerBooking).toBe(4);
  });
});
