// The background sweep: records lapsed holds as expired (their seats are
// already free to bookers) and purges idempotency keys past 24 hours.
import type pg from 'pg';
import type { Logger } from 'pino';
import { callJson, statement } from './db.js';

const sweep = statement('sweep', 'select app.sweep() as result');

export interface Sweeper {
  stop(): Promise<void>;
}

export function startSweeper(pool: pg.Pool, intervalMs: number, logger: Logger): Sweeper {
  let running: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    running = callJson<{ expired: number; keysPurged: number }>(pool, sweep, []).then(
      (counts) => {
        if (counts && (counts.expired || counts.keysPurged)) logger.info(counts, 'swept');
      },
      // A sweep that fails (say, the database is restarting) is retried next tick.
      (error: unknown) => logger.warn({ err: error }, 'sweep failed'),
    );
  }, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
