// Picks the Bus adapter from the URL scheme; drivers load only when their scheme is chosen.
import { SluiceError } from '../../core/errors.ts';
import { urlScheme } from '../url-scheme.ts';
import type { Bus } from '../../ports/bus.ts';

export interface BusFactoryOptions {
  ttlSeconds: number;
  maxLen: number;
  /** The in-process bus's bound on events kept over all logs (memory: only). */
  memoryMaxEvents?: number;
  prefix?: string;
  /** Redis, NATS: how long the first connection may take (default 5 s). */
  connectTimeoutMs?: number;
  /** NATS: the JetStream domain that holds the stream (`?domain=` in the URL wins). */
  natsDomain?: string;
  /** NATS: 'use' when another deployment owns the stream (an edge): created if missing, never reconfigured. */
  streamOwnership?: 'own' | 'use';
  /** NATS: read the log's last event of a followed request quiet this long (0 = off); see NatsBusOptions. */
  idleProbeMs?: number;
}

const DEFAULT_PREFIX = 'sluice';
/** The schemes createBus accepts (checked before start-up opens anything). */
export const BUS_SCHEMES = ['memory', 'redis', 'rediss', 'nats'] as const;

/** memory:, redis:/rediss:, nats: (`nats://host:4222?stream=NAME` overrides the stream name, `&domain=hub` reaches it through a JetStream domain). */
export async function createBus(url: string, opts: BusFactoryOptions): Promise<Bus> {
  const scheme = urlScheme(url);
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  switch (scheme) {
    case 'memory': {
      const { MemoryBus } = await import('./memory.ts');
      return new MemoryBus({ ttlSeconds: opts.ttlSeconds, maxLen: opts.maxLen, maxEvents: opts.memoryMaxEvents });
    }
    case 'redis':
    case 'rediss': {
      const { createRedisBus } = await import('./redis.ts');
      return createRedisBus(url, { ttlSeconds: opts.ttlSeconds, maxLen: opts.maxLen, prefix, ...(opts.connectTimeoutMs !== undefined && { connectTimeoutMs: opts.connectTimeoutMs }) });
    }
    case 'nats': {
      const { createNatsBus } = await import('./nats.ts');
      return createNatsBus(url, {
        ttlSeconds: opts.ttlSeconds, maxLen: opts.maxLen, prefix,
        ...(opts.connectTimeoutMs !== undefined && { connectTimeoutMs: opts.connectTimeoutMs }),
        ...(opts.natsDomain !== undefined && { domain: opts.natsDomain }),
        ...(opts.streamOwnership !== undefined && { streamOwnership: opts.streamOwnership }),
        ...(opts.idleProbeMs !== undefined && { idleProbeMs: opts.idleProbeMs }),
      });
    }
    default:
      throw new SluiceError('SLUICE_ERR_CONFIG', `Unsupported bus URL scheme "${scheme || url.slice(0, 16)}" (use memory:, redis:, rediss: or nats:)`, { param: 'busUrl' });
  }
}
