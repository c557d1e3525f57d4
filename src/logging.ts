// What the logs may hold: a request's id, method, path, status and timing,
// never its headers, body or query. Credentials, booking secrets and
// customers' names and emails must not reach a log at any level.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger, LoggerOptions } from 'pino';
import { pinoHttp, type HttpLogger } from 'pino-http';

/**
 * The second line of defence, should a header, body or customer ever be
 * logged by mistake: these paths are censored wherever they appear.
 */
const redactedPaths = ['authorization', 'cookie', 'customer', 'name', 'email', 'secret', 'password', 'token', 'members', 'body', 'headers']
  .flatMap((key) => [key, `*.${key}`, `*.*.${key}`])
  .concat(['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]']);

/** The root logger's options, shared by the service and the tests that read its logs. */
export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    redact: { paths: redactedPaths, censor: '[redacted]' },
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
