// A Sluice deployment of real processes over the real services, isolated per test: its own
// PostgreSQL database, queue name, bus prefix (Redis keys, NATS subjects and stream) and limiter
// key prefix, all removed again by cleanup().
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore } from '../../src/adapters/store/factory.ts';
import { MASTER_KEY, api, createUserKey, usageWindows, waitFor } from './app.ts';
import { spawnSluice, START_TIMEOUT_MS, type SluiceProcess } from './process.ts';
import { createDatabase, dropDatabase, isolatedNames, pgClient, removeIsolated, SERVICES, uniqueName } from './services.ts';

export type Role = 'gateway' | 'worker' | 'ledger' | 'all' | 'edge';

export interface ClusterOptions {
  queue: 'amqp' | 'nats';
  bus: 'redis' | 'nats';
  /** Overrides of the service URLs (a private nats-server). */
  natsUrl?: string;
  /**
   * A private PostgreSQL (its admin URL: the cluster's database is created there) and Redis
   * (limiter, and bus when bus is 'redis') instead of the machine's shared ones; needs queue
   * 'nats' and a private natsUrl. Cleanup leaves them alone: their owner stops them whole.
   */
  privateServices?: { postgres: string; redis: string };
  env?: Record<string, string>;
}

export interface Cluster {
  env: Record<string, string>;
  databaseUrl: string;
  queueName: string;
  procs: SluiceProcess[];
  /** Starts one process; resolves once a gateway answers /healthz, or any other role printed its banner. */
  start(role: Role, env?: Record<string, string>): Promise<SluiceProcess>;
  /** Creates a user (with tier and quota override) and returns an API key for it. */
  user(opts?: { tier?: string; quota?: Record<string, number> }): Promise<{ id: string; key: string }>;
  /** Runs one SQL query against this cluster's database. */
  sql<T>(text: string, params?: unknown[]): Promise<T[]>;
  cleanup(): Promise<void>;
}

export async function createCluster(opts: ClusterOptions): Promise<Cluster> {
  const base = uniqueName('sc').toLowerCase();
  const own = opts.privateServices;
  // Cleanup removes nothing from shared services then: everything must be private.
  if (own && (opts.queue !== 'nats' || !opts.natsUrl)) throw new Error('privateServices: queue on NATS with a private natsUrl too');
  const databaseUrl = await createDatabase(base, own?.postgres);
  // Migrate once here, so the processes started next do not all race to do it.
  await (await createStore(databaseUrl, { migrate: true })).close();

  const dir = mkdtempSync(join(tmpdir(), 'sluice-cluster-'));
  const nats = opts.natsUrl ?? SERVICES.nats;
  const names = isolatedNames(base);
  const queueName = names.QUEUE_NAME;
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    LIMITER_URL: own?.redis ?? SERVICES.redis,
    QUEUE_URL: opts.queue === 'amqp' ? SERVICES.rabbitmq : nats,
    BUS_URL: opts.bus === 'redis' ? own?.redis ?? SERVICES.redis : nats,
    ...names,
    SLUICE_MASTER_KEY: MASTER_KEY, SLUICE_DATA_DIR: dir, LOG_LEVEL: 'warn',
    WORKER_CLAIM_MS: '1500', WORKER_RETRY_BASE_MS: '50', SIM_TTFT_MS: '0', SIM_ITL_MS: '2',
    SLUICE_SWEEP_INTERVAL_MS: '200', SLUICE_REQUEUE_AFTER_MS: '1000', SLUICE_RESERVATION_GRACE_MS: '0',
    ...opts.env,
  };
  const procs: SluiceProcess[] = [];
  let gatewayUrl: string | undefined;

  const cluster: Cluster = {
    env, databaseUrl, queueName, procs,
    async start(role, extra = {}) {
      const gateway = role === 'gateway' || role === 'all' || role === 'edge';
      const proc = await spawnSluice(['start', '--role', role], { ...env, ...extra }, gateway ? {} : { waitPath: null });
      procs.push(proc);
      if (gateway) gatewayUrl ??= proc.url;
      else {
        await waitFor(async () => {
          if (proc.child.exitCode !== null) throw new Error(`sluice ${role} exited:\n${proc.output()}`);
          return proc.output().includes(`Sluice ${role} started`);
        }, START_TIMEOUT_MS, 50);
      }
      return proc;
    },
    async user({ tier = 'free', quota } = {}) {
      if (!gatewayUrl) throw new Error('start a gateway first');
      const id = uniqueName('u');
      return { id, key: await createUserKey(gatewayUrl, { id, tier, ...(quota && { quota }) }) };
    },
    async sql<T>(text: string, params: unknown[] = []) {
      const c = await pgClient(databaseUrl);
      try { return (await c.query(text, params)).rows as T[]; } finally { await c.end(); }
    },
    async cleanup() {
      await Promise.all(procs.map((p) => p.kill('SIGKILL')));
      rmSync(dir, { recursive: true, force: true });
      if (own) return;
      const [dropped, removed] = await Promise.allSettled([dropDatabase(base), removeIsolated(names, { queue: opts.queue, bus: opts.bus, natsUrl: nats })]);
      const failures = [...(dropped.status === 'rejected' ? [dropped.reason] : []), ...(removed.status === 'fulfilled' ? removed.value : [removed.reason])];
      for (const f of failures) console.warn(`cluster cleanup: ${String(f)}`);
    },
  };
  return cluster;
}

/** fetch helpers bound to a gateway and a key. */
export function client(url: string, key: string) {
  const call = api(url, key);
  return {
    call,
    post: (path: string, json: unknown, headers: Record<string, string> = {}) => call(path, { method: 'POST', json, headers }),
    async get<T>(path: string): Promise<T> {
      const res = await call(path);
      if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as T;
    },
  };
}

export { ledgerRows, type LedgerRow } from './app.ts';

/** The caller's daily windows (GET /v1/usage): tokens and requests used, reservations included. */
export async function dailyUsed(gatewayUrl: string, key: string): Promise<{ tokens: number; requests: number }> {
  const w = await usageWindows(gatewayUrl, key);
  return { tokens: w.daily_tokens?.used ?? NaN, requests: w.daily_requests?.used ?? NaN };
}

/** Waits until every listed request of the user has ended; returns the admin view of them. */
export async function awaitAllEnded(gatewayUrl: string, userId: string, count: number, timeoutMs = 30_000): Promise<{ request_id: string; status: string; attempt: number }[]> {
  return waitFor(async () => {
    const res = await api(gatewayUrl)(`/admin/requests?user_id=${encodeURIComponent(userId)}&limit=1000`);
    const list = ((await res.json()) as { data: { request_id: string; status: string; attempt: number }[] }).data;
    return list.length >= count && list.every((r) => ['completed', 'failed', 'cancelled'].includes(r.status)) && list;
  }, timeoutMs, 200);
}
