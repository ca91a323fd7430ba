import { busContract, DEFAULT_BUS_OPTIONS, type BusHarness, type BusOptions } from './bus.contract.ts';
import { serviceSuite, SERVICES, uniqueName } from '../helpers/services.ts';
import { MemoryBus } from '../../src/adapters/bus/memory.ts';
import { createBus } from '../../src/adapters/bus/factory.ts';
import type { Bus } from '../../src/ports/bus.ts';

/** Memory buses are per process: the "other instance" of a deployment is the same bus. */
export async function memoryHarness(): Promise<BusHarness> {
  const buses = new Map<string, MemoryBus>();
  return {
    async open(opts) {
      const o: BusOptions = { ...DEFAULT_BUS_OPTIONS, ...opts };
      const key = JSON.stringify(o);
      let bus = buses.get(key);
      if (!bus) { bus = new MemoryBus(o); buses.set(key, bus); }
      return bus;
    },
    async cleanup() { await Promise.all([...buses.values()].map((b) => b.close())); },
  };
}

/** Real backends: every distinct option set gets its own namespace (a NATS stream's max_age is per stream). */
export async function serviceHarness(url: string, purge: (prefix: string) => Promise<void>): Promise<BusHarness> {
  const buses: Bus[] = [];
  const prefixes = new Map<string, string>();
  return {
    async open(opts) {
      const o: BusOptions = { ...DEFAULT_BUS_OPTIONS, ...opts };
      const key = JSON.stringify(o);
      let prefix = prefixes.get(key);
      if (!prefix) { prefix = uniqueName('sluicetest'); prefixes.set(key, prefix); }
      const bus = await createBus(url, { ...o, prefix });
      buses.push(bus);
      return bus;
    },
    async cleanup() {
      await Promise.all(buses.map((b) => b.close()));
      for (const prefix of prefixes.values()) await purge(prefix);
    },
  };
}

export async function purgeRedis(prefix: string): Promise<void> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(SERVICES.redis, { lazyConnect: true });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

export async function purgeNats(prefix: string): Promise<void> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: SERVICES.nats });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(natsStreamName(prefix)).catch(() => false);
  } finally {
    await nc.close();
  }
}

/** The stream name the NATS adapter derives for a prefix when none is given. */
export const natsStreamName = (prefix: string): string => `${prefix.toUpperCase()}_EVENTS`;

busContract('memory', memoryHarness);
busContract('redis', () => serviceHarness(SERVICES.redis, purgeRedis), await serviceSuite('redis'));
busContract('nats', () => serviceHarness(SERVICES.nats, purgeNats), await serviceSuite('nats'));
