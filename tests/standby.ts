// A primary and a hot standby made from it by pg_basebackup -R, from
// Debian's PostgreSQL 15, in a temporary directory on free loopback ports.
// As root, everything runs as the postgres user. Each server is started and
// stopped by pg_ctl on its own data directory (its postmaster.pid).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './harness/pgbouncer.js';

export const PG15 = '/usr/lib/postgresql/15/bin';
export const standbyToolsInstalled = (): boolean => ['initdb', 'pg_ctl', 'pg_basebackup'].every((tool) => existsSync(path.join(PG15, tool)));

export interface ReplicatedPair {
  /** postgres://postgres@127.0.0.1:<port>/booking on the primary. */
  primaryUrl: string;
  /** The same database on the standby. */
  replicaUrl: string;
  /** Runs SQL on the standby as the superuser (pg_wal_replay_pause and the like). */
  onReplica(sql: string): Promise<pg.QueryResult>;
  /** Waits until the standby has replayed everything the primary has written now. */
  caughtUp(timeoutMs?: number): Promise<void>;
  stopReplica(): Promise<void>;
  startReplica(): Promise<void>;
  stop(): Promise<void>;
}

// The postgres user, when we are root: initdb and postgres refuse to run as root.
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres']).toString().trim());
  return { uid: id('-u'), gid: id('-g') };
}

function run(tool: string, args: string[], user: { uid: number; gid: number } | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(path.join(PG15, tool), args, { ...user, timeout: 120_000, cwd: tmpdir() }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`${tool} failed: ${stderr.trim() || error.message}`));
      else resolve();
    });
  });
}

async function query(url: string, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

export async function startReplicatedPair(): Promise<ReplicatedPair> {
  const user = runAs();
  const dir = await mkdtemp(path.join(tmpdir(), 'booking-replica-'));
  await chmod(dir, 0o700);
  if (user) await chown(dir, user.uid, user.gid);
  const primaryDir = path.join(dir, 'primary');
  const standbyDir = path.join(dir, 'standby');
  const [primaryPort, standbyPort] = [await freePort(), await freePort()];
  const started: string[] = [];
  const pgCtl = (dataDir: string, ...args: string[]) => run('pg_ctl', ['-D', dataDir, '-w', '-t', '60', ...args], user);
  const startServer = async (dataDir: string) => {
    await pgCtl(dataDir, '-l', path.join(dir, `${path.basename(dataDir)}.log`), 'start');
    if (!started.includes(dataDir)) started.push(dataDir);
  };
  const stopServer = (dataDir: string) => pgCtl(dataDir, '-m', 'fast', 'stop');
  try {
    await run('initdb', ['-D', primaryDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], user);
    await appendFile(
      path.join(primaryDir, 'postgresql.conf'),
      [
        '',
        "listen_addresses = '127.0.0.1'",
        `port = ${primaryPort}`,
        `unix_socket_directories = '${dir}'`,
        'wal_level = replica',
        'max_wal_senders = 4',
        'max_connections = 80',
        'shared_buffers = 32MB',
        // A test cluster: durability on disk is not what is tested; commits still wait for WAL writes.
        'fsync = off',
        'hot_standby = on',
        '',
      ].join('\n'),
    );
    await startServer(primaryDir);
    const admin = `postgres://postgres@127.0.0.1:${primaryPort}/postgres`;
    await query(admin, 'create database booking');
    await run('pg_basebackup', ['-h', '127.0.0.1', '-p', String(primaryPort), '-U', 'postgres', '-D', standbyDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync'], user);
    await appendFile(path.join(standbyDir, 'postgresql.conf'), `\nport = ${standbyPort}\n`);
    await startServer(standbyDir);
  } catch (error) {
    for (const dataDir of started.reverse()) await stopServer(dataDir).catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const primaryUrl = `postgres://postgres@127.0.0.1:${primaryPort}/booking`;
  const replicaUrl = `postgres://postgres@127.0.0.1:${standbyPort}/booking`;
  let replicaRunning = true;
  return {
    primaryUrl,
    replicaUrl,
    onReplica: (sql) => query(replicaUrl, sql),
    async caughtUp(timeoutMs = 30_000) {
      const { rows } = await query(primaryUrl, 'select pg_current_wal_lsn() as lsn');
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const replayed = await query(replicaUrl, `select pg_last_wal_replay_lsn() >= '${String(rows[0].lsn)}'::pg_lsn as done`);
        if (replayed.rows[0]?.done) return;
        if (Date.now() > deadline) throw new Error('the standby did not catch up');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async stopReplica() {
      await stopServer(standbyDir);
      replicaRunning = false;
    },
    async startReplica() {
      await startServer(standbyDir);
      replicaRunning = true;
    },
    async stop() {
      if (replicaRunning) await stopServer(standbyDir).catch(() => {});
      await stopServer(primaryDir).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}
