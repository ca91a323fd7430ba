// Picks the limiter from the URL scheme; the Redis driver is loaded only when a redis URL asks for it.
import { SluiceError } from '../../core/errors.ts';
import { urlScheme } from '../url-scheme.ts';
import type { Limiter } from '../../ports/limiter.ts';
import { MemoryLimiter } from './memory.ts';
import { ResilientLimiter, type FailurePolicy } from './fallback.ts';

export interface LimiterOptions {
  /** Prepended to every key, to share one Redis between deployments or test runs. */
  prefix?: string;
  failurePolicy?: FailurePolicy;
  onDegraded?: (reason: string) => void;
  onRecovered?: () => void;
}

/** The schemes createLimiter accepts (checked before start-up opens anything). */
export const LIMITER_SCHEMES = ['memory', 'redis', 'rediss'] as const;

export async function createLimiter(url: string, opts: LimiterOptions = {}): Promise<Limiter> {
  const scheme = urlScheme(url);
  switch (scheme) {
    case 'memory':
      return new MemoryLimiter({ prefix: opts.prefix });
    case 'redis':
    case 'rediss': {
      const { RedisLimiter } = await import('./redis.ts');
      const redis = await RedisLimiter.connect(url, { prefix: opts.prefix });
      return new ResilientLimiter(redis, {
        policy: opts.failurePolicy ?? 'fallback', onDegraded: opts.onDegraded, onRecovered: opts.onRecovered,
        local: new MemoryLimiter({ prefix: opts.prefix }),
      });
    }
    default:
      throw new SluiceError('SLUICE_ERR_CONFIG', `LIMITER_URL scheme "${scheme || url.slice(0, 16)}" is not one of memory:, redis:, rediss:`);
  }
}
