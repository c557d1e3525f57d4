// What the logs may hold: a request's id, method, path, status and timing,
// never its headers, body or query. Credentials, booking secrets and
// customers' names and emails must not reach a log at any level.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger, LoggerOptions } from 'pino';
import { pinoHttp, type HttpLogger } from 'pino-http';

/**
 * The second line of defence, should a header, body or customer ever be
 * logged by mistake: a value under one of these keys is censored at any
 * depth of what a log call is given.
 */
const censoredKeys = new Set(['authorization', 'cookie', 'set-cookie', 'customer', 'name', 'email', 'secret', 'password', 'token', 'members', 'body', 'headers']);
const CENSOR = '[redacted]';
/** Deeper than any object the service logs; below it, a value is censored whole. */
const MAX_DEPTH = 8;

function isPlain(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null || Array.isArray(value);
}

/**
 * A copy of `value` with every censored key's value replaced, made only
 * where something is censored: a clean object comes back as itself, so a
 * request's log line costs no copy. Plain objects and arrays are walked;
 * anything else (a request, a response, an error) is left to the
 * serializers, which pick the few fields a log may hold.
 */
export function censor(value: unknown, depth = 0): unknown {
  if (typeof value !== 'object' || value === null || !isPlain(value)) return value;
  if (depth >= MAX_DEPTH) return CENSOR;
  let copy: Record<string, unknown> | unknown[] | undefined;
  for (const key of Object.keys(value)) {
    const before = (value as Record<string, unknown>)[key];
    const after = censoredKeys.has(key) ? CENSOR : censor(before, depth + 1);
    if (after !== before) {
      copy ??= Array.isArray(value) ? [...value] : { ...value };
      (copy as Record<string, unknown>)[key] = after;
    }
  }
  return copy ?? value;
}

/** The root logger's options, shared by the service and the tests that read its logs. */
export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    // pino's own redaction walked every path pattern on every line and on
    // every request's child logger: 12 µs a request, measured. This walks
    // what a call is given, once, and copies only what it censors. A child
    // logger's bindings are not walked: the only one made is pino-http's,
    // whose request goes through the whitelisting serializer below.
    hooks: {
      logMethod(args, method) {
        const [first, ...rest] = args as unknown[];
        if (typeof first === 'object' && first !== null) {
          const censored = censor(first);
          if (censored !== first) return method.apply(this, [censored, ...rest] as Parameters<typeof method>);
        }
        return method.apply(this, args);
      },
    },
    serializers: { err: errorSummary },
  };
}

/** Development: one short line per request instead of every header. */
export const prettyTransport = {
  target: 'pino-pretty',
  options: { colorize: true, singleLine: true, ignore: 'pid,hostname,req,res,responseTime' },
};

const REQUEST_ID = /^[\w.:-]{1,128}$/;

/** The path the client asked for, without the query string: a path says enough. */
function path(req: IncomingMessage): string {
  const url = 'originalUrl' in req && typeof req.originalUrl === 'string' ? req.originalUrl : req.url;
  return (url ?? '').split('?')[0] ?? '';
}

/**
 * An error's class, code, message and stack: what a bug report needs. Never
 * its other members (a ProblemError's carry customers), nor a database
 * error's detail, which can quote the row's values.
 */
export function errorSummary(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error) };
  const code = 'code' in error && typeof error.code === 'string' ? error.code : undefined;
  return { type: error.name, ...(code ? { code } : {}), message: error.message, stack: error.stack };
}

export function httpLogger(logger: Logger): HttpLogger {
  return pinoHttp({
    logger,
    // Honour a caller's request id when it is a sane one; echo it back.
    genReqId(req, res) {
      const incoming = req.headers['x-request-id'];
      const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
      res.setHeader('X-Request-Id', id);
      return id;
    },
    // The raw objects come in: nothing leaves but what is picked here.
    wrapSerializers: false,
    serializers: {
      req: (req: IncomingMessage & { id?: unknown }) => ({ id: req.id, method: req.method, path: path(req) }),
      res: (res: ServerResponse) => ({ statusCode: res.statusCode }),
      err: errorSummary,
    },
    customLogLevel: (_req, res, error) => (error || res.statusCode >= 500 ? 'error' : 'info'),
    customSuccessMessage: (req, res, time) => `${req.method} ${path(req)} ${res.statusCode} ${Math.round(time)} ms`,
    customErrorMessage: (req, res) => `${req.method} ${path(req)} ${res.statusCode} failed`,
  });
}
