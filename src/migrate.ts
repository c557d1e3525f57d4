// Applies the committed graphile-migrate migrations, with the settings of
// the project's .gmrc, to the given database.
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import JSON5 from 'json5';
import { migrate, Logger } from 'graphile-migrate';

export const projectRoot = fileURLToPath(new URL('..', import.meta.url));

export async function runMigrations(connectionString: string, log: (message: string) => void): Promise<void> {
  const gmrc: Record<string, unknown> = JSON5.parse(await readFile(`${projectRoot}.gmrc`, 'utf8'));
  const logger = new Logger(() => (_level, message) => log(message));
  await migrate({
    ...gmrc,
    connectionString,
    migrationsFolder: `${projectRoot}db/migrations`,
    logger,
  });
}

/**
 * The newest committed migration as graphile-migrate records it when
 * applied ("000006.sql": the number without the message), which a ready
 * database has applied.
 */
export function latestMigration(): string {
  const numbers = readdirSync(`${projectRoot}db/migrations/committed`)
    .map((file) => /^(\d+)-.*\.sql$/.exec(file)?.[1])
    .filter((number): number is string => number !== undefined);
  return `${numbers.sort().at(-1) ?? ''}.sql`;
}
