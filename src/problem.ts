// The service's error vocabulary, in one place: every problem type with its
// HTTP status and title, the SQLSTATEs the database raises for it, and the
// failure reasons of a failed booking. problem-handler.ts answers with it;
// this module imports nothing of the service.

/** What one problem type is: its status, its title, and where it comes from. */
interface ProblemKind {
  status: number;
  title: string;
  /** The SQLSTATEs answered as this problem (custom codes: db/CONVENTIONS.md). */
  sqlstates?: readonly string[];
  /** The `failureReason` of a failed booking answered as this problem. */
  failureReason?: string;
}

/** The problem types the API answers with; `type` is `/problems/{name}`. */
export const problemTypes = {
  'validation-failed': {
    status: 400,
    title: 'The request is not valid',
    // BKREQ: a request the database refuses. SEATD: a seat named twice, which
    // the contract's uniqueItems refuses first over HTTP, so no problem type
    // of its own. 22P02 and 23514: a value or a column check the contract
    // did not already catch (the rest of class 22 is below).
    sqlstates: ['BKREQ', 'SEATD', '22P02', '23514'],
  },
  'malformed-json': { status: 400, title: 'The request body is not valid JSON' },
  'too-many-seats': { status: 400, title: 'Too many seats for one booking', sqlstates: ['SEATN'] },
  'invalid-cursor': { status: 400, title: 'The cursor is not valid' },
  'invalid-stops': { status: 400, title: 'The stops are not valid for this trip', sqlstates: ['STOPX'] },
  unauthorized: { status: 401, title: 'This operation needs a credential' },
  forbidden: { status: 403, title: 'The credential is not valid' },
  'not-found': { status: 404, title: 'There is no such resource' },
  'show-not-found': { status: 404, title: 'There is no such show', sqlstates: ['SHWNF'] },
  'booking-not-found': { status: 404, title: 'There is no such booking', sqlstates: ['BKGNF'] },
  'ticket-not-found': { status: 404, title: 'There is no such ticket' },
  'method-not-allowed': { status: 405, title: 'The method is not allowed here' },
  'not-acceptable': { status: 406, title: 'No acceptable representation' },
  'seat-unavailable': {
    status: 409,
    title: 'A seat is not available',
    // 23P01, the backstop constraint: only reached if a function let a double booking through.
    sqlstates: ['23P01'],
    failureReason: 'seats-unavailable',
  },
  'not-enough-seats': { status: 409, title: 'Not enough seats are available together', failureReason: 'not-enough-seats' },
  'area-full': { status: 409, title: 'A standing area has not enough room left', failureReason: 'area-full' },
  'invalid-transition': { status: 409, title: "The booking's status does not allow this", sqlstates: ['BKSTA'] },
  'sales-closed': { status: 409, title: 'The show is not on sale now', sqlstates: ['SALES'] },
  'hold-limit-reached': { status: 409, title: 'Holding more seats would pass a limit', sqlstates: ['HOLDL'] },
  'ticket-already-admitted': { status: 409, title: 'The ticket was already admitted' },
  'ticket-void': { status: 409, title: 'The ticket is void' },
  'payload-too-large': { status: 413, title: 'The request body is too large' },
  'unsupported-media-type': { status: 415, title: 'The request body must be application/json' },
  'unknown-seat': { status: 422, title: 'A seat does not exist in this show', sqlstates: ['SEATX'] },
  'unknown-area': { status: 422, title: 'An area does not exist in this show', sqlstates: ['AREAX'] },
  'invalid-layout': { status: 422, title: 'The seat layout is not consistent', sqlstates: ['LAYOT'] },
  'idempotency-key-reused': { status: 422, title: 'The Idempotency-Key belongs to another request', sqlstates: ['IDKEY'] },
  'ticket-invalid': { status: 422, title: 'The code is not a valid ticket code' },
  'ticket-other-show': { status: 422, title: 'The ticket is for another show' },
  'scan-nonce-reused': { status: 422, title: 'The nonce belongs to another scan' },
  'rate-limited': { status: 429, title: 'Too many requests' },
  'too-many-streams': { status: 429, title: 'Too many event streams from this client' },
  'internal-error': { status: 500, title: 'Something went wrong on our side' },
  'service-unavailable': {
    status: 503,
    title: 'The service is temporarily unavailable',
    // 57014: statement_timeout or a cancel (see notRetryable). Transient:
    // shutdowns, too many connections, lost races, and 55P03, a lock held
    // too long by another transaction (lock_timeout).
    sqlstates: ['57014', '57P01', '57P02', '57P03', '53300', '40001', '40P01', '55P03'],
  },
} as const satisfies Record<string, ProblemKind>;

export type ProblemType = keyof typeof problemTypes;

const kinds: Record<ProblemType, ProblemKind> = problemTypes;
const entries = Object.entries(kinds) as Array<[ProblemType, ProblemKind]>;

/**
 * An answer the client gets as a problem. It is an outcome, not a fault: a
 * lost seat is one in an on-sale's every few requests, and no one reads its
 * stack (an unexpected error is logged as itself), so none is captured.
 */
export class ProblemError extends Error {
  readonly status: number;
  constructor(
    readonly problemType: ProblemType,
    detail: string,
    readonly members: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(detail);
    Error.stackTraceLimit = stackTraceLimit;
    this.name = 'ProblemError';
    this.status = problemTypes[problemType].status;
  }
}

export function showNotFound(id: string): ProblemError {
  return new ProblemError('show-not-found', `There is no show ${id}`, { showId: id });
}

const byFailureReason = new Map(entries.flatMap(([type, kind]) => (kind.failureReason ? [[kind.failureReason, type] as const] : [])));

/** The problem a failed booking is answered as, named by its failure reason. */
export function problemForFailure(reason: string | undefined): ProblemType {
  return byFailureReason.get(reason ?? '') ?? 'seat-unavailable';
}

const bySqlstate = new Map(entries.flatMap(([type, kind]) => (kind.sqlstates ?? []).map((code) => [code, type] as const)));

// Whole classes: 22 is a value the request carried that PostgreSQL cannot
// store (such as a NUL byte in text, 22021); 08 is a lost connection to the database.
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

// A custom code's DETAIL is a JSON object of extension members.
function members(detail: unknown): Record<string, unknown> {
  if (typeof detail !== 'string' || !detail.startsWith('{')) return {};
  try {
    const parsed: unknown = JSON.parse(detail);
    return typeof parsed === 'object' && parsed !== null ? { ...parsed } : {};
  } catch {
    return {};
  }
}

/** The problem a database error with this SQLSTATE is answered as, if any. */
export function problemForSqlstate(code: string, error: Record<string, unknown>): ProblemError | undefined {
  const type = bySqlstate.get(code) ?? sqlstateClasses[code.slice(0, 2)];
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
