// Applies the committed graphile-migrate migrations, with the settings of
// the project's .gmrc, to the given database, and the rate limit store's own.
import { readFile } from 'node:fs/promises';
import JSON5 from 'json5';
import { migrate, Logger } from 'graphile-migrate';

import { projectRoot } from './paths.js';
import { prepareRateLimitStore } from './rate-limits.js';

export async function runMigrations(connectionString: string, log: (message: string) => void): Promise<void> {
  const gmrc: Record<string, unknown> = JSON5.parse(await readFile(`${projectRoot}.gmrc`, 'utf8'));
  const logger = new Logger(() => (_level, message) => log(message));
  await migrate({
    ...gmrc,
    connectionString,
    migrationsFolder: `${projectRoot}db/migrations`,
    logger,
  });
  await prepareRateLimitStore(connectionString, log);
}
