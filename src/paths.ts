// Where the project's files are, and which migration this version ships,
// without loading the migration tool itself.
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const projectRoot = fileURLToPath(new URL('..', import.meta.url));

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
