// Several instances of the built service on one database, behind Debian's
// HAProxy on loopback, standing in for a platform's load balancer. Each
// instance and the proxy are children of this process, stopped by their pid.
//
//   npm run cluster -- --instances 3 [--port 8080]
//
// With DATABASE_URL the instances share that database (migrated first, on
// DATABASE_DIRECT_URL when set); without it, a fresh embedded PostgreSQL in
// a temporary directory, deleted at the end.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from '../src/embedded-postgres.js';
import { runMigrations } from '../src/migrate.js';
import { projectRoot } from '../src/paths.js';
import { TicketKeys } from '../src/ticket-codes.js';
import { productionNodeFlags, waitUntilReady } from '../tests/harness/live-service.js';

export const HAPROXY = '/usr/sbin/haproxy';
/** How long a drained instance keeps serving before SIGTERM: requests already on their way arrive. */
const DRAIN_MS = 300;
export const haproxyInstalled = (): boolean => existsSync(HAPROXY);

export interface ClusterOptions {
  instances: number;
  /** The shared database; absent: a fresh embedded PostgreSQL. */
  databaseUrl?: string;
  /** PostgreSQL itself, for LISTEN and migrations, when databaseUrl is a pooler. */
  directUrl?: string;
  /** Apply the migrations before the instances start (default true). */
  migrate?: boolean;
  /** The proxy's port; absent: a free one. */
  port?: number;
  /** Environment of every instance, over the cluster's own. */
  env?: Record<string, string>;
  /**
   * Keep connections to the instances open between requests (HAProxy's
   * http-keep-alive) instead of one per request: cheaper per request, but
   * an idle connection the instance closes may meet a request the proxy
   * just sent on it. Off by default; the benchmark measures both.
   */
  serverKeepAlive?: boolean;
  /** Where the instances' and the proxy's output goes; absent: kept, the last lines, for `output()`. */
  log?: (source: string, line: string) => void;
}

export interface Instance {
  /** The proxy's name for it (i1, i2, ...), which it answers in `X-Instance`. */
  readonly name: string;
  readonly port: number;
  readonly base: string;
  readonly pid: number | undefined;
  readonly running: boolean;
}

export interface Cluster {
  /** The proxy's URL: what clients use. */
  readonly base: string;
  readonly databaseUrl: string;
  readonly adminToken: string;
  readonly metricsToken: string;
  readonly doorToken: string;
  readonly instances: readonly Instance[];
  readonly proxyPid: number | undefined;
  /**
   * Stops an instance and resolves with its exit code. By default as an
   * operator would: the proxy stops sending it requests first (`drain`),
   * then SIGTERM, which finishes what it is serving and ends its streams.
   */
  stopInstance(index: number, options?: { signal?: NodeJS.Signals; drain?: boolean }): Promise<number | null>;
  /** Starts a stopped instance on its port again and waits until the proxy routes to it. */
  startInstance(index: number): Promise<void>;
  /** The proxy's view of each instance: UP, DOWN, MAINT... by name. */
  serverStates(): Promise<Record<string, string>>;
  /** Waits until the proxy reports every running instance UP. */
  waitUntilRouted(timeoutMs?: number): Promise<void>;
  /** The last lines each instance printed (production logs: JSON at LOG_LEVEL). */
  output(): string;
  stop(): Promise<void>;
}

/**
 * The proxy's configuration. Streams are ordinary long HTTP responses, kept
 * alive by the service's heartbeat comments (15 s): the client and server
 * inactivity timeouts must be well above that. One server connection per
 * request (http-server-close): an instance that is shutting down refuses new
 * connections, a clean failure the proxy retries on another instance
 * (redispatch), where a reused idle connection could be closed under a
 * request already sent.
 */
export function haproxyConfig(
  port: number,
  servers: readonly { name: string; port: number }[],
  statsSocket: string,
  serverKeepAlive = false,
): string {
  return [
    'global',
    '  maxconn 4096',
    `  stats socket ${statsSocket} mode 600 level admin`,
    '',
    'defaults',
    '  mode http',
    ...(serverKeepAlive ? ['  option http-keep-alive', '  http-reuse safe'] : ['  option http-server-close']),
    // The client's address for the instances' limits: TRUST_PROXY=1 reads it.
    '  option forwardfor',
    '  option redispatch 1',
    '  retries 3',
    '  timeout connect 2s',
    '  timeout http-request 10s',
    '  timeout http-keep-alive 10s',
    '  timeout queue 5s',
    // Inactivity, not duration: four missed heartbeats end a stream.
    '  timeout client 60s',
    '  timeout server 60s',
    '  timeout tunnel 1h',
    '  timeout client-fin 5s',
    // A health check may be slow on a busy machine; an instance leaves the
    // rotation after 3 failed ones, and a rolling restart drains it first anyway.
    '  timeout check 5s',
    '',
    'frontend api',
    `  bind 127.0.0.1:${port}`,
    '  default_backend instances',
    '',
    'backend instances',
    '  balance roundrobin',
    // Routed only while the instance has its database and migrations.
    '  option httpchk GET /ready',
    '  http-check expect status 200',
    '  default-server inter 1s fastinter 250ms downinter 250ms fall 3 rise 1',
    // Which instance answered: the tests need it, and it says nothing secret.
    '  http-response set-header X-Instance %s',
    ...servers.map((s) => `  server ${s.name} 127.0.0.1:${s.port} check`),
    '',
  ].join('\n');
}

/** One command on the proxy's stats socket. */
function haproxyCommand(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const client = connect(socket);
    let text = '';
    client.setEncoding('utf8');
    client.on('data', (chunk: string) => (text += chunk));
    client.on('end', () => resolve(text));
    client.on('error', reject);
    client.end(`${command}\n`);
  });
}

/** Keeps the last `max` characters of a child's output. */
function tail(max = 200_000): { push(line: string): void; text(): string } {
  let text = '';
  return {
    push(line) {
      text = (text + line).slice(-max);
    },
    text: () => text,
  };
}

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  if (!haproxyInstalled()) throw new Error(`${HAPROXY} is missing (apt-get install haproxy)`);
  if (!Number.isInteger(options.instances) || options.instances < 1) throw new Error('instances: a whole number of at least 1');
  const dir = await mkdtemp(path.join(tmpdir(), 'booking-cluster-'));
  const cleanups: (() => Promise<void>)[] = [async () => rm(dir, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const step of cleanups.splice(0).reverse()) await step().catch(() => {});
  };
  const outputs = new Map<string, ReturnType<typeof tail>>();
  const log =
    options.log ??
    ((source: string, line: string) => {
      const kept = outputs.get(source) ?? tail();
      outputs.set(source, kept);
      kept.push(line);
    });
  try {
    let databaseUrl = options.databaseUrl;
    let database: EmbeddedDatabase | undefined;
    if (!databaseUrl) {
      // A directory of its own: as root, the postgres user must enter it.
      const dataDir = await mkdtemp(path.join(tmpdir(), 'booking-cluster-pg-'));
      cleanups.push(async () => rm(dataDir, { recursive: true, force: true }));
      database = await startEmbeddedPostgres({ dataDir, persistent: false, maxConnections: 300 });
      const started = database;
      cleanups.push(() => started.stop());
      await database.createDatabase('booking_cluster');
      databaseUrl = database.url('booking_cluster');
    }
    const directUrl = options.directUrl ?? databaseUrl;
    // Once, before any instance starts, as a deploy's pre-deploy step does.
    if (options.migrate ?? true) await runMigrations(directUrl, () => {});

    const adminToken = options.env?.ADMIN_TOKEN ?? randomBytes(18).toString('base64url');
    const metricsToken = options.env?.METRICS_TOKEN ?? randomBytes(18).toString('base64url');
    const doorToken = options.env?.DOOR_TOKEN ?? randomBytes(18).toString('base64url');
    // Every instance signs tickets with one key, as a deployment's would.
    const ticketSigningKey = options.env?.TICKET_SIGNING_KEY ?? TicketKeys.generatePem();
    const env: Record<string, string> = {
      NODE_ENV: 'production',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      MIGRATE_ON_START: 'false',
      TRUST_PROXY: '1',
      DATABASE_URL: databaseUrl,
      DATABASE_DIRECT_URL: directUrl,
      ADMIN_TOKEN: adminToken,
      METRICS_TOKEN: metricsToken,
      DOOR_TOKEN: doorToken,
      TICKET_SIGNING_KEY: ticketSigningKey,
      ...options.env,
    };

    interface Member {
      name: string;
      port: number;
      child: ChildProcess | undefined;
    }
    const members: Member[] = [];
    for (let i = 1; i <= options.instances; i++) members.push({ name: `i${i}`, port: await freePort(), child: undefined });

    const launch = async (member: Member) => {
      const child = spawn(process.execPath, [...productionNodeFlags(), `${projectRoot}dist/main.js`], {
        env: { ...process.env, ...env, PORT: String(member.port) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      for (const stream of [child.stdout, child.stderr]) {
        stream?.setEncoding('utf8');
        stream?.on('data', (chunk: string) => log(member.name, chunk));
      }
      member.child = child;
      try {
        await waitUntilReady(`http://127.0.0.1:${member.port}`, child, 60_000);
      } catch (error) {
        const said = outputs.get(member.name)?.text().slice(-2_000) ?? '';
        throw new Error(`${member.name} on port ${member.port}: ${error instanceof Error ? error.message : String(error)}\n${said}`);
      }
    };
    const terminate = async (member: Member, signal: NodeJS.Signals): Promise<number | null> => {
      const child = member.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill(signal);
      return exited;
    };
    cleanups.push(async () => {
      await Promise.all(members.map((member) => terminate(member, 'SIGTERM')));
    });
    // Should this process exit without stopping the cluster, its children
    // must not outlive it ('exit' handlers must be synchronous).
    const orphans = () => {
      for (const child of [...members.map((m) => m.child), proxyChild]) {
        if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    };
    let proxyChild: ChildProcess | undefined;
    process.once('exit', orphans);
    cleanups.push(async () => {
      process.removeListener('exit', orphans);
    });
    if (!existsSync(`${projectRoot}dist/main.js`)) throw new Error('dist/main.js is missing: npm run build');
    await Promise.all(members.map(launch));

    const port = options.port ?? (await freePort());
    const statsSocket = path.join(dir, 'haproxy.sock');
    const configFile = path.join(dir, 'haproxy.cfg');
    await writeFile(configFile, haproxyConfig(port, members, statsSocket, options.serverKeepAlive));
    // -db: in the foreground, a child of ours, stopped by its pid.
    const proxy = spawn(HAPROXY, ['-db', '-f', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    proxyChild = proxy;
    for (const stream of [proxy.stdout, proxy.stderr]) {
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => log('haproxy', chunk));
    }
    const proxyExited = new Promise<void>((resolve) => proxy.once('exit', () => resolve()));
    cleanups.push(async () => {
      if (proxy.exitCode === null && proxy.signalCode === null) {
        proxy.kill('SIGTERM');
        await proxyExited;
      }
    });

    const serverStates = async (): Promise<Record<string, string>> => {
      const csv = await haproxyCommand(statsSocket, 'show stat');
      const lines = csv.split('\n');
      const header = (lines[0] ?? '').replace(/^# /, '').split(',');
      const [px, sv, st] = ['pxname', 'svname', 'status'].map((name) => header.indexOf(name));
      const states: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const cells = line.split(',');
        if (cells[px ?? -1] === 'instances' && /^i\d+$/.test(cells[sv ?? -1] ?? '')) states[cells[sv ?? -1] ?? ''] = cells[st ?? -1] ?? '';
      }
      return states;
    };
    const waitUntilRouted = async (timeoutMs = 30_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (proxy.exitCode !== null) throw new Error(`haproxy exited: ${outputs.get('haproxy')?.text() ?? ''}`);
        const states = await serverStates().catch(() => ({}) as Record<string, string>);
        const running = members.filter((m) => m.child && m.child.exitCode === null && m.child.signalCode === null);
        if (running.length && running.every((m) => states[m.name] === 'UP')) return;
        if (Date.now() > deadline) throw new Error(`the proxy does not route to every instance: ${JSON.stringify(states)}`);
        await sleep(100);
      }
    };
    await waitUntilRouted();

    const view = (member: Member): Instance => ({
      name: member.name,
      port: member.port,
      base: `http://127.0.0.1:${member.port}`,
      get pid() {
        return member.child?.pid;
      },
      get running() {
        return !!member.child && member.child.exitCode === null && member.child.signalCode === null;
      },
    });
    const memberAt = (index: number): Member => {
      const member = members[index];
      if (!member) throw new Error(`no instance ${index}`);
      return member;
    };
    return {
      base: `http://127.0.0.1:${port}`,
      databaseUrl,
      adminToken,
      metricsToken,
      doorToken,
      instances: members.map(view),
      proxyPid: proxy.pid,
      async stopInstance(index, { signal = 'SIGTERM', drain = true } = {}) {
        const member = memberAt(index);
        if (drain) {
          // Maintenance: no new request goes to it. A connection the kernel
          // accepted but the instance had not yet taken when it stopped
          // listening would be reset, and its request answered 502.
          await haproxyCommand(statsSocket, `set server instances/${member.name} state maint`);
          await sleep(DRAIN_MS);
        }
        return terminate(member, signal);
      },
      async startInstance(index) {
        const member = memberAt(index);
        if (member.child && member.child.exitCode === null && member.child.signalCode === null) return;
        await launch(member);
        await haproxyCommand(statsSocket, `set server instances/${member.name} state ready`);
        await waitUntilRouted();
      },
      serverStates,
      waitUntilRouted,
      output: () => [...outputs].map(([source, kept]) => `--- ${source}\n${kept.text()}`).join('\n'),
      stop: cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

// As a script: start, print where everything is, run until SIGINT or SIGTERM.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: { instances: { type: 'string', default: '3' }, port: { type: 'string' } },
  });
  const cluster = await startCluster({
    instances: Number(values.instances),
    ...(values.port ? { port: Number(values.port) } : {}),
    ...(process.env.DATABASE_URL ? { databaseUrl: process.env.DATABASE_URL } : {}),
    ...(process.env.DATABASE_DIRECT_URL ? { directUrl: process.env.DATABASE_DIRECT_URL } : {}),
    log: (source, text) => {
      for (const line of text.split('\n')) if (line) process.stdout.write(`[${source}] ${line}\n`);
    },
  });
  process.stdout.write(
    [
      `proxy: ${cluster.base} (roundrobin; X-Instance names the instance that answered)`,
      ...cluster.instances.map((i) => `  ${i.name}: ${i.base} (pid ${i.pid})`),
      `ADMIN_TOKEN=${cluster.adminToken}`,
      `METRICS_TOKEN=${cluster.metricsToken}`,
      `DOOR_TOKEN=${cluster.doorToken}`,
      'Ctrl-C stops the proxy, the instances and (when embedded) the database.',
      '',
    ].join('\n'),
  );
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await cluster.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}
