// Run under `node --import tsx`: starts an embedded PostgreSQL on the data
// directory given as the first argument (kept when the second is
// `persistent`), prints the postmaster's pid, and exits without stopping it,
// as a test run stopped with Ctrl-C does.
import { readFileSync } from 'node:fs';
import { startEmbeddedPostgres } from '../../src/embedded-postgres.js';

const [dataDir, keep] = process.argv.slice(2);
if (!dataDir) throw new Error('usage: embedded-exit.ts DATA_DIR [persistent]');
await startEmbeddedPostgres({ dataDir, persistent: keep === 'persistent' });
process.stdout.write(readFileSync(`${dataDir}/postmaster.pid`, 'utf8').split('\n')[0] ?? '');
process.exit(0);
