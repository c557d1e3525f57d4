// A streaming replica for the reads that may be a moment behind: seat maps,
// show listings, a show, and event history. Bookings, their reads, every
// write and LISTEN stay on the primary.
//
// Positions are WAL positions (LSNs). An answer read on the primary is at
// the WAL written when it was read; one read on the replica, at the WAL the
// replica had replayed. Either is at or past everything the answer shows, so
// a server that has replayed that far shows at least as much. Writes answer
// the primary's position after their commit. A client that sends back the
// last position it was given (Consistency-Token) is served by the replica
// only once the replica has replayed that far, otherwise by the primary: it
// never misses its own booking, nor gets an older answer than it had.
import type { Request, Response } from 'express';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import type { ReplicaConfig } from './config.js';
import { problemForSqlstate } from './problem.js';

/** The header that carries a position, in answers and in requests. */
export const CONSISTENCY_TOKEN = 'Consistency-Token';

/**
 * The position of what a statement read, as text: the WAL written on the
 * primary (with synchronous commit, every commit a snapshot sees is
 * written), or the WAL replayed on a standby (a snapshot taken earlier in
 * the statement saw no more).
 */
export const readPosition = 'case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end::text';

/** An LSN such as 0/16B3748 as a number of bytes; undefined for anything else. */
export function parseLsn(text: string | null | undefined): bigint | undefined {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text ?? '');
  if (!match) return undefined;
  return (BigInt(`0x${match[1]}`) << 32n) + BigInt(`0x${match[2]}`);
}

export type ReadTarget = 'primary' | 'replica';
/** Why a read went where it went. */
export type RouteReason = 'current' | 'lagging' | 'unreachable' | 'behind-position' | 'stale-answer' | 'not-found' | 'failed';

// Primary positions kept while the replica is behind them: 10 minutes at the default poll.
const MAX_SAMPLES = 6_000;

/**
 * Watches one replica: how far it has replayed, how far the primary has
 * written, and so its lag in bytes and in seconds. Seconds are measured
 * against the primary's positions as they were sampled: the lag is how long
 * ago the primary had written WAL the replica has still not replayed (0 when
 * it has replayed all the primary had written), so an idle primary never
 * looks like a lagging replica.
 */
export class ReplicaMonitor {
  /** The replica's pool: reads only. */
  readonly pool: pg.Pool;
  /** The highest replay position seen on the replica since it was last lost. */
  replayed: bigint | undefined;
  lagBytes: number | undefined;
  lagSeconds: number | undefined;
  /** The last poll reached the replica, and no read lost it since. */
  reachable = false;
  private samples: { at: number; lsn: bigint }[] = [];
  /** Whether the replica's loss has been logged since it was last reached. */
  private lossLogged = false;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private stopped = false;

  constructor(
    /** Where the primary's position is read: its read pool. */
    private readonly primary: pg.Pool,
    replica: pg.Pool,
    private readonly config: Pick<ReplicaConfig, 'maxLagMs' | 'pollMs'>,
    private readonly logger: Logger,
  ) {
    this.pool = replica;
  }

  /** Polls once, then every pollMs until stopped. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.poll();
    const next = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.polling = this.poll().finally(next);
      }, this.config.pollMs);
      this.timer.unref();
    };
    next();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.polling;
  }

  /** Where a read that needs `position` (if any) may go now, and why. */
  route(position: bigint | undefined): { target: ReadTarget; reason: RouteReason } {
    if (!this.reachable) return { target: 'primary', reason: 'unreachable' };
    if (this.lagSeconds === undefined || this.lagSeconds * 1000 > this.config.maxLagMs) return { target: 'primary', reason: 'lagging' };
    if (position !== undefined && (this.replayed === undefined || this.replayed < position)) return { target: 'primary', reason: 'behind-position' };
    return { target: 'replica', reason: 'current' };
  }

  /** A position a read on the replica reported: it has replayed at least that far. */
  observe(position: bigint | undefined): void {
    if (position !== undefined && (this.replayed === undefined || position > this.replayed)) this.replayed = position;
  }

  /**
   * A read could not reach the replica. Until a poll reaches it again, reads
   * go to the primary; a restarted replica may briefly show less than it
   * had replayed before, so what it had replayed is forgotten.
   */
  lost(reason = 'a read could not reach it'): void {
    if (!this.lossLogged) this.logger.warn({ reason }, 'read replica unreachable: reads go to the primary');
    this.lossLogged = true;
    this.reachable = false;
    this.replayed = undefined;
  }

  async poll(): Promise<void> {
    const now = Date.now();
    try {
      const { rows } = await this.primary.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn');
      const lsn = parseLsn(rows[0]?.lsn);
      if (lsn !== undefined) this.samples.push({ at: now, lsn });
      // Bounded through a long outage; the oldest stays, as it dates the lag.
      if (this.samples.length > MAX_SAMPLES) this.samples.splice(1, 1);
    } catch {
      // The primary's own trouble shows elsewhere; the lag is measured from the samples there are.
    }
    let replay: bigint | undefined;
    try {
      const { rows } = await this.pool.query<{ lsn: string | null; standby: boolean }>(
        'select pg_last_wal_replay_lsn()::text as lsn, pg_is_in_recovery() as standby',
      );
      replay = parseLsn(rows[0]?.lsn);
      if (!rows[0]?.standby || replay === undefined) throw new Error('DATABASE_REPLICA_URL is not a standby in recovery');
    } catch (error) {
      this.lost(error instanceof Error ? error.message : String(error));
      return;
    }
    if (!this.reachable) this.logger.info('read replica reachable');
    this.reachable = true;
    this.lossLogged = false;
    this.observe(replay);
    const replayed = this.replayed ?? replay;
    // Samples the replica has replayed past say nothing more; the newest stays, for the bytes.
    const behind = this.samples.filter((sample) => sample.lsn > replayed);
    const newest = this.samples.at(-1);
    this.samples = behind.length ? behind : newest ? [newest] : [];
    this.lagSeconds = behind[0] ? (now - behind[0].at) / 1000 : 0;
    this.lagBytes = newest && newest.lsn > replayed ? Number(newest.lsn - replayed) : 0;
  }
}

/** Whether a replica's error is a lost connection (no SQLSTATE, class 08, or a server going away). */
function connectionLost(error: unknown): boolean {
  const code = typeof error === 'object' && error !== null && 'code' in error ? error.code : undefined;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03';
}

/**
 * An error that is the database's answer to the request itself (a stop that
 * does not exist, a value it cannot take): the primary would answer the same.
 */
function answerToRequest(error: unknown): boolean {
  if (typeof error !== 'object' || error === null || !('code' in error) || typeof error.code !== 'string') return false;
  const problem = problemForSqlstate(error.code, { ...error });
  return problem !== undefined && problem.problemType !== 'service-unavailable';
}

/**
 * Runs reads on the replica when it may serve them, on the primary's read
 * pool otherwise. Without a replica every read goes to the primary.
 */
export class ReadRouting {
  constructor(
    private readonly primary: pg.Pool,
    private readonly replica: ReplicaMonitor | undefined,
    private readonly counted?: Counter<'served_by' | 'reason'>,
  ) {}

  /** Answers carry their position only when a replica may serve reads. */
  get enabled(): boolean {
    return this.replica !== undefined;
  }

  /** The position a request names (Consistency-Token): what its client has already been given. */
  needed(req: Pick<Request, 'get'>): bigint | undefined {
    return parseLsn(req.get(CONSISTENCY_TOKEN));
  }

  /** Hands the client the position of its answer, when reads may come from a replica. */
  send(res: Response, position: string | null | undefined): void {
    if (this.enabled && position) res.set(CONSISTENCY_TOKEN, position);
  }

  /**
   * After a change committed, hands out the primary's position: a replica
   * that has replayed this far shows the change. A change that committed is
   * answered even when its position cannot be read then: that client's next
   * read is only as fresh as the lag bound.
   */
  async sendWritePosition(res: Response): Promise<void> {
    if (!this.enabled) return;
    try {
      this.send(res, await writePosition(this.primary));
    } catch (error) {
      res.req.log.warn({ err: error }, 'no consistency token: the primary\'s position could not be read after the commit');
    }
  }

  /**
   * `read` on the chosen pool. An answer from the replica that `stale`
   * rejects (the client has seen more, or the replica lacks what was asked
   * for), or a replica that fails, is asked again of the primary.
   * `positionOf` gives the position an answer was read at.
   */
  async run<T>(
    needed: bigint | undefined,
    read: (pool: pg.Pool, target: ReadTarget) => Promise<T>,
    positionOf: (answer: T) => string | null | undefined,
    stale: (answer: T) => 'stale-answer' | 'not-found' | false = () => false,
  ): Promise<T> {
    const replica = this.replica;
    if (!replica) return read(this.primary, 'primary');
    const { target, reason } = replica.route(needed);
    if (target === 'replica') {
      let answer: T;
      try {
        answer = await read(replica.pool, 'replica');
      } catch (error) {
        if (answerToRequest(error)) {
          this.counted?.inc({ served_by: 'replica', reason });
          throw error;
        }
        if (connectionLost(error)) replica.lost(error instanceof Error ? error.message : String(error));
        return this.onPrimary(read, 'failed');
      }
      replica.observe(parseLsn(positionOf(answer)));
      const refused = stale(answer);
      if (refused) return this.onPrimary(read, refused);
      this.counted?.inc({ served_by: 'replica', reason });
      return answer;
    }
    return this.onPrimary(read, reason);
  }

  private onPrimary<T>(read: (pool: pg.Pool, target: ReadTarget) => Promise<T>, reason: RouteReason): Promise<T> {
    this.counted?.inc({ served_by: 'primary', reason });
    return read(this.primary, 'primary');
  }
}

/** The primary's position after a write committed: a replica that has replayed it shows the write. */
async function writePosition(pool: pg.Pool): Promise<string | undefined> {
  const { rows } = await pool.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn');
  return rows[0]?.lsn;
}
