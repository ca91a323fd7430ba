// Picks the Bus adapter from the URL scheme; drivers load only when their scheme is chosen.
import { SluiceError } from '../../core/errors.ts';
import type { Bus } from '../../ports/bus.ts';

export interface BusFactoryOptions { ttlSeconds: number; maxLen: number; prefix?: string }

const DEFAULT_PREFIX = 'sluice';

/** memory:, redis:/rediss:, nats: (`nats://host:4222?stream=NAME` overrides the stream name). */
export async function createBus(url: string, opts: BusFactoryOptions): Promise<Bus> {
  const scheme = schemeOf(url);
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  switch (scheme) {
    case 'memory': {
      const { MemoryBus } = await import('./memory.ts');
      return new MemoryBus({ ttlSeconds: opts.ttlSeconds, maxLen: opts.maxLen });
    }
    case 'redis':
    case 'rediss': {
      const { createRedisBus } = await import('./redis.ts');
      return createRedisBus(url, { ttlSeconds: opts.ttlSeconds, maxLen: opts.maxLen, prefix });
    }
    case 'nats': {
      const { createNatsBus } = await import('./nats.ts');
      return createNatsBus(url, { ttlSeconds: opts.ttlSeconds, maxLen: opts.maxLen, prefix });
    }
    default:
      throw new SluiceError('SLUICE_ERR_CONFIG', `Unsupported bus URL scheme "${scheme}:" (use memory:, redis:, rediss: or nats:)`, { param: 'busUrl' });
  }
}

function schemeOf(url: string): string {
  const match = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  if (!match?.[1]) throw new SluiceError('SLUICE_ERR_CONFIG', `Bus URL "${url}" has no scheme`, { param: 'busUrl' });
  return match[1].toLowerCase();
}
