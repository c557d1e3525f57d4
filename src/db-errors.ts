// The SQLSTATE codes the database raises, each mapped to one problem type
// (and so one HTTP status). Custom codes are documented in db/CONVENTIONS.md;
// their DETAIL is a JSON object of extension members.
import { ProblemError, type ProblemType } from './problem.js';

const sqlstates: Record<string, ProblemType> = {
  // Raised by the app schema's functions
  BKREQ: 'validation-failed',
  SEATD: 'duplicate-seat',
  SEATN: 'too-many-seats',
  STOPX: 'invalid-stops',
  SEATX: 'unknown-seat',
  AREAX: 'unknown-area',
  SHWNF: 'show-not-found',
  BKGNF: 'booking-not-found',
  LAYOT: 'invalid-layout',
  BKSTA: 'invalid-transition',
  IDKEY: 'idempotency-key-reused',
  SALES: 'sales-closed',
  HOLDL: 'hold-limit-reached',
  // The backstop constraint: only reached if a function let a double booking through
  '23P01': 'seat-unavailable',
  // Values PostgreSQL could not take: the contract catches most first; the
  // rest of class 22 (such as a NUL byte in text, 22021) is handled below.
  '22P02': 'validation-failed',
  // A column check (lengths, ranges) the contract did not already enforce
  '23514': 'validation-failed',
  // statement_timeout (or a cancel): see notRetryable below
  '57014': 'service-unavailable',
  // Transient: shutdowns, too many connections, lost races
  '57P01': 'service-unavailable',
  '57P02': 'service-unavailable',
  '57P03': 'service-unavailable',
  '53300': 'service-unavailable',
  '40001': 'service-unavailable',
  '40P01': 'service-unavailable',
  // lock_timeout: another transaction held a lock too long
  '55P03': 'service-unavailable',
};

// Whole classes: 22 is a value the request carried that PostgreSQL cannot
// store; 08 is a lost connection to the database.
const sqlstateClasses: Record<string, ProblemType> = {
  '22': 'validation-failed',
  '08': 'service-unavailable',
};

// A statement that ran out its statement_timeout did as much work as the
// bound allows; the same request does the same work against the same bound,
// so a retry a second later fails the same way. It is still a 503 (the
// service could not do it in the time it allows itself) but without a
// Retry-After that promises otherwise. Lock waits (55P03), lost races and
// connection trouble are transient and keep their Retry-After.
const notRetryable = new Set(['57014']);

function members(detail: unknown): Record<string, unknown> {
  if (typeof detail !== 'string' || !detail.startsWith('{')) return {};
  try {
    const parsed: unknown = JSON.parse(detail);
    return typeof parsed === 'object' && parsed !== null ? { ...parsed } : {};
  } catch {
    return {};
  }
}

export function problemForSqlstate(code: string, error: Record<string, unknown>): ProblemError | undefined {
  const type = sqlstates[code] ?? sqlstateClasses[code.slice(0, 2)];
  if (!type) return undefined;
  if (type === 'service-unavailable') {
    if (notRetryable.has(code)) return new ProblemError(type, 'The database did not finish this request in the time allowed');
    return new ProblemError(type, 'The database is busy or unavailable; retry shortly', {}, { 'Retry-After': '1' });
  }
  const custom = /^[A-Z]{5}$/.test(code);
  const detail = custom && typeof error.message === 'string' ? error.message : problemDetail(type);
  return new ProblemError(type, detail, custom ? members(error.detail) : {});
}

function problemDetail(type: ProblemType): string {
  return type === 'seat-unavailable' ? 'A seat was booked by someone else at the same moment' : 'A value in the request is not valid';
}
