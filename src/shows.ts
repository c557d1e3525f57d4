// Shows: list, create, read, and the seat map.
import { Router, type Request, type Response } from 'express';
import type pg from 'pg';
import type { components, operations } from './generated/api.js';
import { callJsonAt, callJsonWithTimeout, statement } from './db.js';
import { decodeCursor, encodeCursor, type PageKey } from './cursor.js';
import { ProblemError, showNotFound } from './problem.js';
import { readPosition, type ReadRouting } from './replica.js';
import { olderThanSeen, type SeatMapBody, type SeatMaps } from './seat-maps.js';

type Show = components['schemas']['Show'];
type ShowDetail = components['schemas']['ShowDetail'];
type NewShow = components['schemas']['NewShow'];
type ListShowsQuery = NonNullable<operations['listShows']['parameters']['query']>;
type ShowPath = operations['getShow']['parameters']['path'];
type SeatsQuery = NonNullable<operations['getShowSeats']['parameters']['query']>;

const listShows = statement('list_shows', `select app.list_shows($1, $2, $3, $4, $5, $6) as result, ${readPosition} as position`);
const createShow = statement('create_show', 'select app.create_show($1) as result');
const getShow = statement('get_show', `select app.show_detail_json($1) as result, ${readPosition} as position`);

/** The versions an If-None-Match header names ("*" matches none: the map always exists). */
function ifNoneMatch(header: string | undefined): string | null {
  if (!header) return null;
  const versions = [...header.matchAll(/(?:W\/)?"([^"]*)"/g)].map((match) => match[1] ?? '');
  return versions.length ? versions.join(',') : null;
}

/**
 * Sends a map's shared bytes, gzipped when the client accepts gzip (the
 * compression middleware leaves a body that already has an encoding alone).
 * With response validation on (development and tests), the validator checks
 * the parsed map inside res.json, which then hands it to res.send: that one
 * send is swapped for the shared bytes, so what was validated is what is sent.
 */
async function sendSeatMap(res: Response, body: SeatMapBody, validate: boolean): Promise<void> {
  const gzip = res.req.acceptsEncodings('gzip') === 'gzip';
  const bytes = gzip ? await body.gzip() : body.json;
  const sendBytes = () => {
    res.type('application/json');
    if (gzip) res.set('Content-Encoding', 'gzip');
    return res.send(bytes);
  };
  if (!validate) {
    sendBytes();
    return;
  }
  const send = res.send;
  res.send = function (this: Response, ...args: Parameters<Response['send']>) {
    res.send = send;
    // Only the validated map is swapped; a problem the validator raised goes out as it is.
    return res.statusCode === 200 ? sendBytes() : send.apply(this, args);
  };
  try {
    res.json(JSON.parse(body.json.toString()));
  } finally {
    res.send = send;
  }
}

export interface ShowRoutesOptions {
  /** Bookings' pool: writes (creating a show). */
  pool: pg.Pool;
  /** Reads that never write (listings, shows, seat maps), on the primary's read pool or the replica. */
  reads: ReadRouting;
  /** Seat maps on the primary's read pool. */
  seatMaps: SeatMaps;
  /** Seat maps on the replica, when there is one. */
  replicaSeatMaps: SeatMaps | undefined;
  validateResponses: boolean;
  /** statement_timeout for creating a show, which may take seconds at the largest layouts. */
  adminStatementTimeoutMs: number;
}

export function showRoutes({ pool, reads, seatMaps, replicaSeatMaps, validateResponses, adminStatementTimeoutMs }: ShowRoutesOptions): Router {
  const router = Router();

  router.get('/api/shows', async (req: Request<object, unknown, unknown, ListShowsQuery>, res) => {
    const { limit = 20, cursor, kind, startsFrom, startsBefore } = req.query;
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    const values = [kind ?? null, startsFrom ?? null, startsBefore ?? null, after?.at ?? null, after?.id ?? null, limit];
    const { result: page, position } = await reads.run(
      reads.needed(req),
      (on) => callJsonAt<{ items: Show[]; next: { startsAt: string; id: string } | null }>(on, listShows, values),
      (answer) => answer.position,
    );
    reads.send(res, position);
    const items = page?.items ?? [];
    const next: PageKey | undefined = page?.next ? { at: page.next.startsAt, id: page.next.id } : undefined;
    res.json(next ? { items, nextCursor: encodeCursor(next) } : { items });
  });

  router.post('/api/shows', async (req: Request<object, unknown, NewShow>, res) => {
    const show = await callJsonWithTimeout<ShowDetail>(pool, createShow, [req.body], adminStatementTimeoutMs);
    if (!show) throw new Error('create_show returned nothing');
    // Its creator may read it at once, wherever reads are served.
    await reads.sendWritePosition(res);
    res.status(201).location(`/api/shows/${show.id}`).json(show);
  });

  router.get('/api/shows/:showId', async (req: Request<ShowPath>, res) => {
    const { result: show, position } = await reads.run(
      reads.needed(req),
      (on) => callJsonAt<ShowDetail>(on, getShow, [req.params.showId]),
      (answer) => answer.position,
      // A show the replica has not replayed yet may well exist.
      (answer) => (answer.result ? false : 'not-found'),
    );
    if (!show) throw showNotFound(req.params.showId);
    reads.send(res, position);
    res.json(show);
  });

  router.get('/api/shows/:showId/seats', async (req: Request<ShowPath, unknown, unknown, SeatsQuery>, res) => {
    const { status, from, to } = req.query;
    const request = {
      showId: req.params.showId,
      status: status ?? null,
      from: from ?? null,
      to: to ?? null,
      ifNoneMatch: ifNoneMatch(req.get('If-None-Match')),
    };
    const map = await reads.run(
      reads.needed(req),
      (_on, target) => (target === 'replica' && replicaSeatMaps ? replicaSeatMaps : seatMaps).read(request),
      (answer) => answer?.position,
      // If-None-Match is a position too: never a map older than the one the client has.
      (answer) => (!answer ? 'not-found' : olderThanSeen(answer.etag, request.ifNoneMatch) ? 'stale-answer' : false),
    );
    if (!map) throw showNotFound(req.params.showId);
    reads.send(res, map.position);
    // Vary on a 304 too: it stands for whichever encoding the client holds.
    res.set({ ETag: `"${map.etag}"`, 'Cache-Control': 'no-cache' }).vary('Accept-Encoding');
    if (map.body === null) {
      res.status(304).end();
      return;
    }
    await sendSeatMap(res, map.body, validateResponses);
  });

  return router;
}
