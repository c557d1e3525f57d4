// A process that exits without stopping its embedded PostgreSQL (a test run
// stopped with Ctrl-C) leaves no server running, and no data directory
// behind unless it was to be kept.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../src/paths.js';

/** Gone, or exited and waiting to be reaped by init (a zombie). */
function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }
}

/** Signalled on exit, the server stops in its own time (a fast shutdown): up to 10 s. */
async function stopped(pid: number): Promise<boolean> {
  for (let i = 0; i < 100 && !gone(pid); i++) await sleep(100);
  return gone(pid);
}

/** A folder for a data directory, which the postgres user can enter (mkdtemp makes it private). */
async function scratch(): Promise<string> {
  const parent = await mkdtemp(path.join(tmpdir(), 'booking-exit-'));
  await chmod(parent, 0o755);
  return parent;
}

/** Starts a cluster in a child that then exits; returns the postmaster's pid. */
function startAndExit(dataDir: string, keep: boolean): number {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'tests/harness/embedded-exit.ts', dataDir, ...(keep ? ['persistent'] : [])], {
    cwd: projectRoot,
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(run.status, run.stderr).toBe(0);
  const pid = Number.parseInt(run.stdout, 10);
  expect(pid).toBeGreaterThan(0);
  return pid;
}

describe('an embedded PostgreSQL whose process exits without stopping it', () => {
  it('is stopped, and its data directory removed when it was not to be kept', async () => {
    const parent = await scratch();
    const dataDir = path.join(parent, 'data');
    try {
      const pid = startAndExit(dataDir, false);
      // The process waited for it to stop, then removed its files.
      expect(gone(pid)).toBe(true);
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('is stopped, and its data directory kept when it was to be kept', async () => {
    const parent = await scratch();
    const dataDir = path.join(parent, 'data');
    try {
      const pid = startAndExit(dataDir, true);
      expect(await stopped(pid)).toBe(true);
      expect(existsSync(path.join(dataDir, 'PG_VERSION'))).toBe(true);
      expect(existsSync(path.join(dataDir, 'postmaster.pid'))).toBe(false);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});
