// Check-in at the doors: scans one at a time, offline scans uploaded in
// batches, and a show's counts. Codes are verified here (Ed25519, the same
// check a scanner makes offline); what a verified code names is recorded by
// one call of app.check_in, which admits each ticket at most once.
import { randomUUID } from 'node:crypto';
import { Router, type Request } from 'express';
import type pg from 'pg';
import { callJson, statement } from './db.js';
import type { components, operations } from './generated/api.js';
import { ProblemError, showNotFound, type ProblemType } from './problem.js';
import type { CodeCheck, TicketKeys } from './ticket-codes.js';

type Scan = components['schemas']['Scan'];
type ScanBatch = components['schemas']['ScanBatch'];
type ScanResult = components['schemas']['ScanResult'];
type ScanOutcome = components['schemas']['ScanOutcome'];
type ScanBatchResult = components['schemas']['ScanBatchResult'];
type CheckInCounts = components['schemas']['CheckInCounts'];
type CheckInPath = operations['checkInTicket']['parameters']['path'];

const checkIn = statement('check_in', 'select app.check_in($1, $2) as result');
const checkInCounts = statement('check_in_counts', 'select app.check_in_counts($1) as result');

/** Each refusal of a single scan as its problem; `admitted` is a 200. */
const refusals: Record<Exclude<ScanOutcome, 'admitted'>, ProblemType> = {
  'already-admitted': 'ticket-already-admitted',
  void: 'ticket-void',
  'other-show': 'ticket-other-show',
  unknown: 'ticket-not-found',
  invalid: 'ticket-invalid',
  'nonce-reused': 'scan-nonce-reused',
};

const invalidReasons: Record<Extract<CodeCheck, { valid: false }>['reason'], string> = {
  malformed: 'The code is not in the ticket code format',
  'unknown-key': 'The code was signed with a key this service does not know',
  'bad-signature': "The code's signature does not verify",
};

function refusalDetail(result: ScanResult, check: CodeCheck): string {
  const seat = result.seat?.label ?? 'The ticket';
  switch (result.outcome) {
    case 'already-admitted':
      return `${seat} was admitted at ${result.admission?.gate} at ${result.admission?.scannedAt}`;
    case 'void':
      return `${seat} is void: its booking was cancelled`;
    case 'other-show':
      return `${seat} is a ticket of another show`;
    case 'unknown':
      return 'The code names no ticket of this show';
    case 'nonce-reused':
      return 'This nonce was sent before with another ticket';
    default:
      return check.valid ? 'The code is not a valid ticket code' : invalidReasons[check.reason];
  }
}

export function checkInRoutes(pool: pg.Pool, keys: TicketKeys): Router {
  const router = Router();

  /** Verifies each code and records every scan in one call; results in the order given. */
  const record = async (showId: string, scans: Array<Scan & { nonce: string }>) => {
    const checks = scans.map((scan) => keys.verify(scan.code));
    const results = await callJson<ScanResult[]>(pool, checkIn, [
      showId,
      JSON.stringify(
        scans.map((scan, i) => {
          const check = checks[i];
          const ticket = check?.valid ? { showId: check.ticket.showId, bookingId: check.ticket.bookingId, seatId: check.ticket.seatId } : null;
          return { nonce: scan.nonce, gate: scan.gate, scannedAt: scan.scannedAt, ticket };
        }),
      ),
    ]);
    if (!results) throw showNotFound(showId);
    return { results, checks };
  };

  router.post('/api/shows/:showId/check-ins', async (req: Request<CheckInPath, unknown, Scan>, res) => {
    const scan = { ...req.body, nonce: req.body.nonce ?? randomUUID() };
    const { results, checks } = await record(req.params.showId, [scan]);
    const [result] = results;
    const [check] = checks;
    if (!result || !check) throw new Error('check_in answered no result');
    const replayed: Record<string, string> = result.replayed ? { 'Idempotent-Replayed': 'true' } : {};
    if (result.outcome === 'admitted') {
      res.set(replayed).json(result);
      return;
    }
    throw new ProblemError(refusals[result.outcome], refusalDetail(result, check), { ...result }, replayed);
  });

  router.post('/api/shows/:showId/check-ins/batch', async (req: Request<CheckInPath, unknown, ScanBatch>, res) => {
    const { results } = await record(req.params.showId, req.body.scans);
    const fresh = results.filter((result) => !result.replayed);
    const body: ScanBatchResult = {
      results,
      admitted: fresh.filter((result) => result.outcome === 'admitted').length,
      refused: fresh.filter((result) => result.outcome !== 'admitted').length,
      replayed: results.length - fresh.length,
    };
    res.json(body);
  });

  router.get('/api/shows/:showId/check-ins', async (req: Request<CheckInPath>, res) => {
    const counts = await callJson<CheckInCounts>(pool, checkInCounts, [req.params.showId]);
    if (!counts) throw showNotFound(req.params.showId);
    res.json(counts);
  });

  return router;
}
