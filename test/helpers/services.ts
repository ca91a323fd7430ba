// Real services for adapter tests. A test that needs one runs against it when it is reachable;
// on a newcomer's machine without it the suite is skipped with a visible message, and in CI
// (CI=true) a missing service is a failure, never a skip.
import net from 'node:net';

export const SERVICES = {
  postgres: process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
  redis: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379',
  rabbitmq: process.env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
  nats: process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222',
} as const;
export type ServiceName = keyof typeof SERVICES;

const cache = new Map<ServiceName, Promise<boolean>>();

function reachable(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: u.hostname, port: Number(u.port) });
    const done = (ok: boolean) => { socket.destroy(); resolve(ok); };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Options for `describe(name, await serviceSuite('redis'), …)`: `{}` when the service answers,
 * `{ skip: reason }` (printed by the runner) when it does not; throws under CI=true.
 */
export async function serviceSuite(name: ServiceName): Promise<{ skip?: string }> {
  let probe = cache.get(name);
  if (!probe) { probe = reachable(SERVICES[name]); cache.set(name, probe); }
  if (await probe) return {};
  const reason = `${name} is not reachable at ${SERVICES[name]}`;
  if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: a missing service fails the run)`);
  console.warn(`SKIP: ${reason}; start it to run these tests`);
  return { skip: reason };
}

/** A name unique to this test run, for databases, key prefixes, queues and subjects. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
}

// Cleanup of what a test or benchmark made on the shared services (drivers load lazily).

export async function pgClient(url: string) {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

export const streamBase = (name: string) => name.replace(/[^A-Za-z0-9_-]/g, '_').toUpperCase();

/** Creates a database on the test server; returns its URL. */
/** Creates a database on the shared PostgreSQL, or on the server `adminUrl` names (a private one). */
export async function createDatabase(name: string, adminUrl: string = SERVICES.postgres): Promise<string> {
  const c = await pgClient(adminUrl);
  try { await c.query(`CREATE DATABASE ${name}`); } finally { await c.end(); }
  return withDatabase(adminUrl, name);
}

export async function dropDatabase(name: string, adminUrl: string = SERVICES.postgres): Promise<void> {
  const c = await pgClient(adminUrl);
  try { await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`); } finally { await c.end(); }
}

export async function deleteRedisKeys(pattern: string): Promise<void> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(SERVICES.redis, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally { redis.disconnect(); }
}

export async function deleteAmqpQueues(names: string[]): Promise<void> {
  const amqp = await import('amqplib');
  const conn = await amqp.connect(SERVICES.rabbitmq);
  try {
    const ch = await conn.createChannel();
    for (const q of names) await ch.deleteQueue(q);
  } finally { await conn.close(); }
}

export async function deleteNatsStreams(url: string, streams: string[]): Promise<void> {
  if (streams.length === 0) return;
  const [{ connect }, { jetstreamManager }] = await Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream')]);
  const nc = await connect({ servers: url.replace(/^nats:\/\//, ''), timeout: 2000 });
  try {
    const jsm = await jetstreamManager(nc);
    for (const s of streams) await jsm.streams.delete(s).catch(() => false);
  } finally { await nc.close(); }
}

/** The names one isolated deployment uses on the shared services (its env variables). */
export interface IsolatedNames { QUEUE_NAME: string; BUS_PREFIX: string; LIMITER_PREFIX: string }

export const isolatedNames = (base: string): IsolatedNames => ({ QUEUE_NAME: `${base}.requests`, BUS_PREFIX: base, LIMITER_PREFIX: `${base}:` });

/**
 * Removes what an isolated deployment left on the shared services: its Redis keys (limiter and
 * bus share the prefix), its RabbitMQ queues, its NATS streams. Returns the failures, if any.
 */
export async function removeIsolated(names: IsolatedNames, uses: { queue: 'amqp' | 'nats' | 'memory'; bus: 'redis' | 'nats' | 'memory'; natsUrl?: string }): Promise<unknown[]> {
  const queueStream = streamBase(names.QUEUE_NAME);
  const results = await Promise.allSettled([
    // LIMITER_PREFIX is `${BUS_PREFIX}:`, so one pattern covers the limiter's and the bus's keys.
    deleteRedisKeys(`${names.LIMITER_PREFIX}*`),
    uses.queue === 'amqp' ? deleteAmqpQueues([names.QUEUE_NAME, `${names.QUEUE_NAME}.dlq`]) : Promise.resolve(),
    deleteNatsStreams(uses.natsUrl ?? SERVICES.nats, [
      ...(uses.queue === 'nats' ? [`${queueStream}_JOBS`, `${queueStream}_DLQ`] : []),
      ...(uses.bus === 'nats' ? [`${streamBase(names.BUS_PREFIX)}_EVENTS`] : []),
    ]),
  ]);
  return results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []));
}
