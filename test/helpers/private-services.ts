// A PostgreSQL and a Redis of a test's own, for suites that must not touch the machine's shared
// services (the edge test: issue #16 asks that it start its own servers). Each server runs from
// its binary on free ports with its files in a temp dir; stop() kills it and removes the dir.
// PostgreSQL refuses to run as root: as root, initdb and postgres run with the `postgres` user's ids.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './process.ts';

const run = promisify(execFile);

export interface PrivateServer {
  /** The URL a client connects with (PostgreSQL: the `postgres` database, to create others in). */
  url: string;
  stop(): Promise<void>;
}

/** The PostgreSQL binaries: PG_BIN, else the newest /usr/lib/postgresql/<version>/bin. */
export function postgresBin(): string | undefined {
  if (process.env.PG_BIN) return existsSync(join(process.env.PG_BIN, 'initdb')) ? process.env.PG_BIN : undefined;
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] && join(base, versions[0], 'bin');
}

export const REDIS_SERVER = process.env.REDIS_SERVER_BIN ?? '/usr/bin/redis-server';

/** Test options for a suite that starts its own PostgreSQL and Redis: skipped without the binaries, failed under CI=true. */
export function privateServicesSuite(): { skip?: string } {
  const missing = [...(postgresBin() ? [] : ['PostgreSQL (initdb, postgres; PG_BIN)']), ...(existsSync(REDIS_SERVER) ? [] : [`redis-server at ${REDIS_SERVER} (REDIS_SERVER_BIN)`])];
  if (missing.length === 0) return {};
  const reason = `not installed: ${missing.join(', ')}`;
  if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: a missing server fails the run)`);
  console.warn(`SKIP: ${reason}`);
  return { skip: reason };
}

const asRoot = () => userInfo().uid === 0;

export async function startPrivatePostgres(): Promise<PrivateServer> {
  const bin = postgresBin();
  if (!bin) throw new Error('PostgreSQL binaries not found (PG_BIN)');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-pg-'));
  let ids: { uid: number; gid: number } | Record<string, never> = {};
  if (asRoot()) {
    ids = { uid: Number((await run('id', ['-u', 'postgres'])).stdout.trim()), gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()) };
    chownSync(dir, ids.uid, ids.gid);
  }
  const data = join(dir, 'data');
  let child: ChildProcess | undefined;
  const stop = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      // SIGQUIT: immediate shutdown, the postmaster takes its backends with it; SIGKILL if it lingers.
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => child!.kill('SIGKILL'), 5_000);
        child!.once('exit', () => { clearTimeout(force); resolve(); });
        child!.kill('SIGQUIT');
      });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await run(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync'], { ...ids, cwd: dir });
    const port = await freePort();
    // A throwaway server: no fsync, its socket in its own dir, TCP on loopback only.
    child = spawn(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200'], { ...ids, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (c) => { out += c; });
    child.stderr!.on('data', (c) => { out += c; });
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    await waitUntilAnswers(port, () => child!.exitCode !== null && `postgres exited:\n${out}`);
    // The port answers a moment before the server accepts queries.
    const { default: pg } = await import('pg');
    const deadline = Date.now() + 10_000;
    for (;;) {
      const c = new pg.Client({ connectionString: url });
      try { await c.connect(); await c.query('SELECT 1'); await c.end(); break; } catch (e) {
        await c.end().catch(() => {});
        if (Date.now() > deadline) throw new Error(`postgres did not accept queries: ${String(e)}\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return { url, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

export async function startPrivateRedis(): Promise<PrivateServer> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-redis-'));
  const port = await freePort();
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c) => { out += c; });
  child.stderr!.on('data', (c) => { out += c; });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) await new Promise<void>((resolve) => { child.once('exit', () => resolve()); child.kill('SIGKILL'); });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitUntilAnswers(port, () => child.exitCode !== null && `redis-server exited:\n${out}`);
  } catch (e) {
    await stop();
    throw e;
  }
  return { url: `redis://127.0.0.1:${port}`, stop };
}

async function waitUntilAnswers(port: number, exited: () => string | false, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const gone = exited();
    if (gone) throw new Error(gone);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing answers on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
