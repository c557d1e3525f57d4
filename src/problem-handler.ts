// Every error the service answers is an RFC 9457 problem, made here from
// whatever was thrown: a ProblemError, a contract violation, a body-parser
// error, a database error, or a bug. The vocabulary is problem.ts.
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { error as validatorErrors } from 'express-openapi-validator';
import { problemForSqlstate, problemTypes, ProblemError } from './problem.js';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

const RETRY_AFTER = { 'Retry-After': '1' };

// Errors of the network or pool, before PostgreSQL could answer.
const CONNECTION_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);
const CONNECTION_ERROR_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error',
  'Cannot use a pool after calling end',
];

function fromValidator(error: ValidatorError): ProblemError {
  const errors = error.errors.map((item) => ({
    name: item.path.replace(/^\//, '').replaceAll('/', '.'),
    reason: item.message,
  }));
  const detail = errors.map((e) => `${e.name}: ${e.reason}`).join('; ') || error.message;
  switch (error.status) {
    case 400:
      return new ProblemError('validation-failed', detail, { errors });
    case 404:
      return new ProblemError('not-found', 'There is nothing at this path');
    case 405:
      return new ProblemError('method-not-allowed', error.message, {}, error.headers?.Allow ? { Allow: error.headers.Allow } : {});
    case 406:
      return new ProblemError('not-acceptable', error.message);
    case 413:
      return new ProblemError('payload-too-large', error.message);
    case 415:
      return new ProblemError('unsupported-media-type', error.message);
    default:
      // A response that breaks the contract is our bug, not the client's.
      return new ProblemError('internal-error', 'The service produced an invalid response');
  }
}

// body-parser marks its errors with a `type`.
function fromBodyParser(error: Record<string, unknown>, bodyLimit: number): ProblemError | undefined {
  switch (error.type) {
    case 'entity.parse.failed':
      return new ProblemError('malformed-json', typeof error.message === 'string' ? error.message : 'Invalid JSON');
    case 'entity.too.large':
      return new ProblemError('payload-too-large', `The body may be at most ${bodyLimit} bytes`);
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new ProblemError('unsupported-media-type', typeof error.message === 'string' ? error.message : 'Unsupported encoding');
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
      return new ProblemError('validation-failed', 'The request body was incomplete');
    default:
      return undefined;
  }
}

type ValidatorError = InstanceType<(typeof validatorErrors)[keyof typeof validatorErrors]>;
const validatorErrorClasses = Object.values(validatorErrors);

function isValidatorError(error: unknown): error is ValidatorError {
  return validatorErrorClasses.some((kind) => error instanceof kind);
}

export function toProblem(error: unknown, bodyLimit: number): ProblemError {
  if (error instanceof ProblemError) return error;
  if (isValidatorError(error)) return fromValidator(error);
  if (!isRecord(error)) return new ProblemError('internal-error', 'An unexpected error occurred');
  const fromBody = fromBodyParser(error, bodyLimit);
  if (fromBody) return fromBody;
  if (typeof error.code === 'string') {
    const mapped = problemForSqlstate(error.code, error);
    if (mapped) return mapped;
    if (CONNECTION_ERROR_CODES.has(error.code)) {
      return new ProblemError('service-unavailable', 'The database is not answering; retry shortly', {}, RETRY_AFTER);
    }
  }
  const message = typeof error.message === 'string' ? error.message : '';
  if (CONNECTION_ERROR_MESSAGES.some((m) => message.includes(m))) {
    return new ProblemError('service-unavailable', 'The database is not answering; retry shortly', {}, RETRY_AFTER);
  }
  return new ProblemError('internal-error', 'An unexpected error occurred');
}

/** The one place that turns errors into responses. */
export function problemHandler(bodyLimit: number): ErrorRequestHandler {
  return (error, req, res, next) => {
    if (res.headersSent) {
      next(error);
      return;
    }
    const problem = toProblem(error, bodyLimit);
    // Never the members or the request: they can carry a customer. A 4xx
    // detail can quote what the client sent (a JSON parse error quotes the
    // body), so only a 5xx, whose detail is ours, logs it and the error.
    const logged = { problem: problem.problemType, status: problem.status };
    if (problem.status >= 500) req.log.error({ ...logged, detail: problem.message, err: error }, 'request failed');
    else req.log.debug(logged, 'request rejected');
    res
      .status(problem.status)
      .set(problem.headers)
      .type('application/problem+json')
      .json({
        ...problem.members,
        type: `/problems/${problem.problemType}`,
        title: problemTypes[problem.problemType].title,
        status: problem.status,
        detail: problem.message,
        instance: req.originalUrl.split('?')[0],
        requestId: String(req.id),
      });
  };
}

/** Any request no route answered. */
export const notFound: RequestHandler = (req) => {
  throw new ProblemError('not-found', `There is nothing at ${req.path}`);
};
