// Shows: list, create, read, and the seat map.
import { Router, type Request } from 'express';
import type pg from 'pg';
import type { components, operations } from './generated/api.js';
import { callJson, statement } from './db.js';
import { decodeCursor, encodeCursor, type ShowKey } from './cursor.js';
import { ProblemError } from './problem.js';

type Show = components['schemas']['Show'];
type ShowDetail = components['schemas']['ShowDetail'];
type SeatMap = components['schemas']['SeatMap'];
type NewShow = components['schemas']['NewShow'];
type ListShowsQuery = NonNullable<operations['listShows']['parameters']['query']>;
type ShowPath = operations['getShow']['parameters']['path'];
type SeatsQuery = NonNullable<operations['getShowSeats']['parameters']['query']>;

const listShows = statement('list_shows', 'select app.list_shows($1, $2, $3, $4, $5, $6) as result');
const createShow = statement('create_show', 'select app.create_show($1) as result');
const getShow = statement('get_show', 'select app.show_detail_json($1) as result');
const getShowSeats = statement('get_show_seats', 'select app.show_seats($1, $2, $3, $4) as result');

function showNotFound(id: string): ProblemError {
  return new ProblemError('show-not-found', `There is no show ${id}`, { showId: id });
}

export function showRoutes(pool: pg.Pool): Router {
  const router = Router();

  router.get('/api/shows', async (req: Request<object, unknown, unknown, ListShowsQuery>, res) => {
    const { limit = 20, cursor, kind, startsFrom, startsBefore } = req.query;
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    const page = await callJson<{ items: Show[]; next: ShowKey | null }>(pool, listShows, [
      kind ?? null,
      startsFrom ?? null,
      startsBefore ?? null,
      after?.startsAt ?? null,
      after?.id ?? null,
      limit,
    ]);
    const items = page?.items ?? [];
    res.json(page?.next ? { items, nextCursor: encodeCursor(page.next) } : { items });
  });

  router.post('/api/shows', async (req: Request<object, unknown, NewShow>, res) => {
    const show = await callJson<ShowDetail>(pool, createShow, [req.body]);
    if (!show) throw new Error('create_show returned nothing');
    res.status(201).location(`/api/shows/${show.id}`).json(show);
  });

  router.get('/api/shows/:showId', async (req: Request<ShowPath>, res) => {
    const show = await callJson<ShowDetail>(pool, getShow, [req.params.showId]);
    if (!show) throw showNotFound(req.params.showId);
    res.json(show);
  });

  router.get('/api/shows/:showId/seats', async (req: Request<ShowPath, unknown, unknown, SeatsQuery>, res) => {
    const { status, from, to } = req.query;
    const seats = await callJson<SeatMap>(pool, getShowSeats, [req.params.showId, status ?? null, from ?? null, to ?? null]);
    if (!seats) throw showNotFound(req.params.showId);
    res.json(seats);
  });

  return router;
}
