// Seat maps read once for every concurrent request that asks for the same
// one, and compressed once for every one of them that accepts gzip: forty
// readers of a 50,000-seat map cost one query and one gzip, not forty.
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type pg from 'pg';
import { queryOf, statement } from './db.js';
import { readPosition } from './replica.js';
import { SingleFlight } from './single-flight.js';

const gzipAsync = promisify(gzip);

const seatMap = statement('seat_map', `select etag, body, ${readPosition} as position from app.seat_map($1, $2, $3, $4, $5)`);

export interface SeatMapRequest {
  showId: string;
  status: string | null;
  from: string | null;
  to: string | null;
  /** The versions the client's If-None-Match names, comma-separated. */
  ifNoneMatch: string | null;
}

/** One map's JSON, shared by every request that shared its query. */
export class SeatMapBody {
  private gzipped: Promise<Buffer> | undefined;
  constructor(readonly json: Buffer) {}

  /** Compressed on the first request that accepts gzip, off the event loop; then reused. */
  gzip(): Promise<Buffer> {
    this.gzipped ??= gzipAsync(this.json);
    return this.gzipped;
  }
}

export interface SeatMap {
  etag: string;
  /** Null: the client's copy is current (304). */
  body: SeatMapBody | null;
  /** The WAL position it was read at (replica.ts). */
  position: string | null;
}

/** A version's (newest position, events awaiting one): both only rise as changes commit (app.seat_map_version). */
function committed(version: string): [number, number] | undefined {
  const match = /^(\d+)-(\d+)-\d+$/.exec(version);
  return match ? [Number(match[1]), Number(match[2])] : undefined;
}

/**
 * Whether a map of version `etag` is older than one the client already has
 * (one of the comma-separated If-None-Match versions): its changes are a
 * strict prefix of theirs. Lapsed holds count by each server's clock, not
 * by what committed, so they do not order versions.
 */
export function olderThanSeen(etag: string, ifNoneMatch: string | null): boolean {
  const mine = committed(etag);
  if (!mine || !ifNoneMatch) return false;
  return ifNoneMatch.split(',').some((version) => {
    const theirs = committed(version);
    return theirs !== undefined && (theirs[0] > mine[0] || (theirs[0] === mine[0] && theirs[1] > mine[1]));
  });
}

export class SeatMaps {
  private readonly flights = new SingleFlight<SeatMap | undefined>();

  constructor(readonly pool: pg.Pool) {}

  /** Seat map queries run, and requests that waited for a shared one: for tests. */
  get stats(): { queries: number; waits: number } {
    return { queries: this.flights.runs, waits: this.flights.waits };
  }

  /** The map, or undefined when there is no such show. */
  read(request: SeatMapRequest): Promise<SeatMap | undefined> {
    const { showId, status, from, to, ifNoneMatch } = request;
    return this.flights.run(JSON.stringify([showId, status, from, to, ifNoneMatch]), async () => {
      const { rows } = await this.pool.query<{ etag: string; body: string | null; position: string | null }>(
        queryOf(this.pool, seatMap, [showId, status, from, to, ifNoneMatch]),
      );
      const row = rows[0];
      if (!row) return undefined;
      return { etag: row.etag, body: row.body === null ? null : new SeatMapBody(Buffer.from(row.body)), position: row.position };
    });
  }
}
