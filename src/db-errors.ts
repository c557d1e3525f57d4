// The SQLSTATE codes the database raises, each mapped to one problem type
// (and so one HTTP status). Custom codes are documented in db/CONVENTIONS.md;
// their DETAIL is a JSON object of extension members.
import { ProblemError, type ProblemType } from './problem.js';

const sqlstates: Record<string, ProblemType> = {
  // Raised by the app schema's functions
  BKREQ: 'validation-failed',
  SEATD: 'duplicate-seat',
  SEATX: 'unknown-seat',
  SHWNF: 'show-not-found',
  BKGNF: 'booking-not-found',
  LAYOT: 'invalid-layout',
  // The backstop constraint: only reached if a function let a double booking through
  '23P01': 'seat-unavailable',
  // Values PostgreSQL could not read (the contract catches these first)
  '22P02': 'validation-failed',
  '22007': 'validation-failed',
  '22008': 'validation-failed',
  '22003': 'validation-failed',
  // Transient: timeouts, shutdowns, too many connections, lost races
  '57014': 'service-unavailable',
  '57P01': 'service-unavailable',
  '57P02': 'service-unavailable',
  '57P03': 'service-unavailable',
  '53300': 'service-unavailable',
  '40001': 'service-unavailable',
  '40P01': 'service-unavailable',
};

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
  // Class 08: the connection to the database failed.
  const type = sqlstates[code] ?? (code.startsWith('08') ? 'service-unavailable' : undefined);
  if (!type) return undefined;
  if (type === 'service-unavailable') {
    return new ProblemError(type, 'The database is busy or unavailable; retry shortly', {}, { 'Retry-After': '1' });
  }
  const custom = /^[A-Z]{5}$/.test(code);
  const detail = custom && typeof error.message === 'string' ? error.message : problemDetail(type);
  return new ProblemError(type, detail, custom ? members(error.detail) : {});
}

function problemDetail(type: ProblemType): string {
  return type === 'seat-unavailable' ? 'A seat was booked by someone else at the same moment' : 'A value in the request is not valid';
}
