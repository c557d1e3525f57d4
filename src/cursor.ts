// Opaque page cursors: the (instant, id) key of the last item of a page.
import { ProblemError } from './problem.js';

export interface PageKey {
  /** The instant the page is ordered by (a show's start, a booking's creation). */
  at: string;
  id: string;
}

export function encodeCursor(key: PageKey): string {
  return Buffer.from(JSON.stringify({ s: key.at, i: key.id })).toString('base64url');
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function decodeCursor(cursor: string): PageKey {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  if (typeof parsed === 'object' && parsed !== null && 's' in parsed && 'i' in parsed) {
    const { s, i } = parsed;
    if (typeof s === 'string' && typeof i === 'string' && UUID.test(i) && !Number.isNaN(Date.parse(s))) {
      return { at: s, id: i };
    }
  }
  throw new ProblemError('invalid-cursor', 'The cursor is not one this service gave out', {
    errors: [{ name: 'query.cursor', reason: 'is not a cursor from a previous page' }],
  });
}
