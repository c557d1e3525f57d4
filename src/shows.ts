// Shows: list, create, read, and the seat map.
import { Router, type Request, type Response } from 'express';
import type pg from 'pg';
import type { components, operations } from './generated/api.js';
import { callJson, statement } from './db.js';
import { decodeCursor, encodeCursor, type PageKey } from './cursor.js';
import { ProblemError } from './problem.js';

type Show = components['schemas']['Show'];
type ShowDetail = components['schemas']['ShowDetail'];
type NewShow = components['schemas']['NewShow'];
type ListShowsQuery = NonNullable<operations['listShows']['parameters']['query']>;
type ShowPath = operations['getShow']['parameters']['path'];
type SeatsQuery = NonNullable<operations['getShowSeats']['parameters']['query']>;

const listShows = statement('list_shows', 'select app.list_shows($1, $2, $3, $4, $5, $6) as result');
const createShow = statement('create_show', 'select app.create_show($1) as result');
const getShow = statement('get_show', 'select app.show_detail_json($1) as result');
const seatMap = statement('seat_map', 'select etag, body from app.seat_map($1, $2, $3, $4, $5)');

export function showNotFound(id: string): ProblemError {
  return new ProblemError('show-not-found', `There is no show ${id}`, { showId: id });
}

/** The versions an If-None-Match header names ("*" matches none: the map always exists). */
function ifNoneMatch(header: string | undefined): string | null {
  if (!header) return null;
  const versions = [...header.matchAll(/(?:W\/)?"([^"]*)"/g)].map((match) => match[1] ?? '');
  return versions.length ? versions.join(',') : null;
}

/**
 * Sends JSON text the database built, as it is. With response validation on
 * (development and tests) it is parsed so the validator can check it.
 */
function sendJsonText(res: Response, text: string, validate: boolean): void {
  if (validate) res.json(JSON.parse(text));
  else res.type('application/json').send(text);
}

export function showRoutes(pool: pg.Pool, validateResponses: boolean): Router {
  const router = Router();

  router.get('/api/shows', async (req: Request<object, unknown, unknown, ListShowsQuery>, res) => {
    const { limit = 20, cursor, kind, startsFrom, startsBefore } = req.query;
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    const page = await callJson<{ items: Show[]; next: { startsAt: string; id: string } | null }>(pool, listShows, [
      kind ?? null,
      startsFrom ?? null,
      startsBefore ?? null,
      after?.at ?? null,
      after?.id ?? null,
      limit,
    ]);
    const items = page?.items ?? [];
    const next: PageKey | undefined = page?.next ? { at: page.next.startsAt, id: page.next.id } : undefined;
    res.json(next ? { items, nextCursor: encodeCursor(next) } : { items });
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
    const { rows } = await pool.query<{ etag: string; body: string | null }>({
      ...seatMap,
      values: [req.params.showId, status ?? null, from ?? null, to ?? null, ifNoneMatch(req.get('If-None-Match'))],
    });
    const map = rows[0];
    if (!map) throw showNotFound(req.params.showId);
    res.set({ ETag: `"${map.etag}"`, 'Cache-Control': 'no-cache' });
    if (map.body === null) {
      res.status(304).end();
      return;
    }
    sendJsonText(res, map.body, validateResponses);
  });

  return router;
}
