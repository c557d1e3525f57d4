// Best-available bookers who ask at the same moment share one ranking of
// the show. Ranking is most of a best-available booking's cost in the
// database (every block of free seats near the front-centre, sorted), and
// in an on-sale dozens of bookers ask for the same show within the time one
// ranking takes: each used to rank it again, and then all reached for the
// same best block and walked down the list past each other's seats.
//
// app.best_candidates ranks once and returns the blocks a run of bookers
// would take one after another, best first, none sharing a seat. The
// bookers that share it each take their place in order of arrival and try
// the blocks from there (pick_best_seats), so the first gets the best and
// the tenth the tenth best, as if they had come one by one. A booker never
// shares a ranking that started before it arrived (SingleFlight's rule):
// one that asks alone gets a ranking of the show as it finds it.
import type pg from 'pg';
import type { components } from './generated/api.js';
import { callJson, statement } from './db.js';
import { SingleFlight } from './single-flight.js';

type NewBooking = components['schemas']['NewBooking'];

const bestCandidates = statement('best_candidates', 'select app.best_candidates($1, $2, $3, $4, $5, $6, $7) as result');

/**
 * How many of the shared blocks one booker is handed, from its place on:
 * enough to step past a few taken by other bookers (named seats, other
 * quantities); a booker who runs out ranks the show itself.
 */
const BLOCKS_PER_BOOKER = 32;

interface Ranking {
  /** Blocks of seat ids, best first; bigint ids arrive as strings. */
  blocks: string[][];
  /** Places handed out so far. */
  handedOut: number;
}

export class BestAvailableRankings {
  private readonly flights = new SingleFlight<Ranking | undefined>();

  constructor(private readonly pool: pg.Pool) {}

  /** Rankings run so far: for tests. */
  get runs(): number {
    return this.flights.runs;
  }

  /**
   * This booker's blocks, from its place among the sharers on (so the
   * booking function starts at the first of them); undefined when the
   * request is not best available or could not be ranked (an unknown show
   * or stop): the booking function then ranks, or refuses, itself.
   */
  async place(request: NewBooking): Promise<string[][] | undefined> {
    if (request.quantity === undefined || request.areas?.length) return undefined;
    const args = [
      request.showId,
      request.quantity,
      request.section ?? null,
      request.category ?? null,
      request.maxPrice ?? null,
      request.fromStop ?? null,
      request.toStop ?? null,
    ];
    const ranking = await this.flights
      .run(JSON.stringify(args), async () => {
        const blocks = await callJson<string[][]>(this.pool, bestCandidates, args);
        return blocks ? { blocks, handedOut: 0 } : undefined;
      })
      .catch(() => undefined);
    if (!ranking) return undefined;
    const from = ranking.handedOut;
    ranking.handedOut += 1;
    const candidates = ranking.blocks.slice(from, from + BLOCKS_PER_BOOKER);
    return candidates.length ? candidates : undefined;
  }
}
