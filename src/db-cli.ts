// `npm run db -- <graphile-migrate command>`: runs the graphile-migrate CLI
// against the embedded development database, with its shadow and root
// connections set, e.g. `npm run db -- watch --once` or `npm run db -- commit -m "…"`.
import { spawn } from 'node:child_process';
import { startEmbeddedPostgres } from './embedded-postgres.js';
import { projectRoot } from './paths.js';

const db = await startEmbeddedPostgres({ dataDir: `${projectRoot}.data/postgres`, persistent: true });
let code = 1;
try {
  await db.createDatabase('booking');
  await db.createDatabase('booking_shadow');
  code = await new Promise<number>((resolve) => {
    const child = spawn(`${projectRoot}node_modules/.bin/graphile-migrate`, process.argv.slice(2), {
      cwd: projectRoot,
      stdio: 'inherit',
      env: {
        ...process.env,
        DATABASE_URL: db.url('booking'),
        SHADOW_DATABASE_URL: db.url('booking_shadow'),
        ROOT_DATABASE_URL: db.url('postgres'),
      },
    });
    child.on('exit', (status) => resolve(status ?? 1));
  });
} finally {
  await db.stop();
}
process.exit(code);
