// `npm run test:isolation`: the booking races at the database level, in
// PostgreSQL's own style. pg_isolation_regress (Debian's postgresql-client)
// runs db/isolation/specs against a freshly migrated embedded database and
// compares each interleaving's output with db/isolation/expected.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/embedded-postgres.js';
import { runMigrations } from '../../src/migrate.js';
import { projectRoot } from '../../src/paths.js';

const REGRESS = '/usr/lib/postgresql/15/lib/pgxs/src/test/isolation/pg_isolation_regress';
if (!existsSync(REGRESS)) {
  console.error(`${REGRESS} not found: apt-get install postgresql-client-15`);
  process.exit(1);
}
const here = `${projectRoot}db/isolation`;
const specs = (await readdir(`${here}/specs`)).filter((f) => f.endsWith('.spec')).map((f) => f.replace(/\.spec$/, '')).sort();
const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-isolation-pg-'));
const outputDir = await mkdtemp(path.join(tmpdir(), 'booking-isolation-out-'));
const db = await startEmbeddedPostgres({ dataDir, persistent: false });
let code = 1;
try {
  await db.createDatabase('booking_isolation');
  const url = db.url('booking_isolation');
  await runMigrations(url, () => {});
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(await readFile(`${here}/helpers.sql`, 'utf8'));
  await client.end();
  const { port } = new URL(url);
  code = await new Promise<number>((resolve) => {
    const child = spawn(
      REGRESS,
      ['--use-existing', '--host=127.0.0.1', `--port=${port}`, '--user=postgres', '--dbname=booking_isolation',
        `--inputdir=${here}`, `--outputdir=${outputDir}`, ...specs],
      { stdio: 'inherit', env: { ...process.env, PGPASSWORD: 'postgres', PGTZ: 'UTC' } },
    );
    child.on('exit', (status) => resolve(status ?? 1));
  });
  if (code !== 0 && existsSync(`${outputDir}/regression.diffs`)) {
    process.stdout.write(await readFile(`${outputDir}/regression.diffs`, 'utf8'));
    console.log(`actual outputs: ${outputDir}/results`);
  } else {
    await rm(outputDir, { recursive: true, force: true });
  }
} finally {
  await db.stop();
  await rm(dataDir, { recursive: true, force: true });
}
process.exit(code);
