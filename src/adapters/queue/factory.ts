// Picks the queue adapter from the URL scheme. Broker drivers are imported lazily so the embedded
// default (memory://) never loads amqplib or the NATS client.
import type { Queue } from '../../ports/queue.ts';
import { SluiceError } from '../../core/errors.ts';
import { urlScheme } from '../url-scheme.ts';

export interface QueueFactoryOptions {
  /** Queue name (RabbitMQ queue, NATS subject prefix and stream name); default 'sluice.requests'. */
  name?: string;
  /** Base of the default exponential retry backoff. */
  retryBaseMs: number;
  /** Cap of the default retry backoff; default 60 s. */
  maxRetryDelayMs?: number;
  /** NATS only: how long a delivery may stay unacked (without heartbeat) before redelivery. */
  ackWaitMs?: number;
  /** Brokers: how long the first connection may take (default 5 s). */
  connectTimeoutMs?: number;
}

export const DEFAULT_QUEUE_NAME = 'sluice.requests';
/** The schemes createQueue accepts (checked before start-up opens anything). */
export const QUEUE_SCHEMES = ['memory', 'amqp', 'amqps', 'nats'] as const;

export async function createQueue(url: string, opts: QueueFactoryOptions): Promise<Queue> {
  const name = opts.name ?? DEFAULT_QUEUE_NAME;
  const scheme = urlScheme(url);
  switch (scheme) {
    case 'memory': {
      const { MemoryQueue } = await import('./memory.ts');
      return new MemoryQueue({ retryBaseMs: opts.retryBaseMs, maxRetryDelayMs: opts.maxRetryDelayMs });
    }
    case 'amqp':
    case 'amqps': {
      const { AmqpQueue } = await import('./amqp.ts');
      return AmqpQueue.connect(url, { name, retryBaseMs: opts.retryBaseMs, maxRetryDelayMs: opts.maxRetryDelayMs, connectTimeoutMs: opts.connectTimeoutMs });
    }
    case 'nats': {
      const { NatsQueue } = await import('./nats.ts');
      return NatsQueue.connect(url, { name, retryBaseMs: opts.retryBaseMs, maxRetryDelayMs: opts.maxRetryDelayMs, ackWaitMs: opts.ackWaitMs, connectTimeoutMs: opts.connectTimeoutMs });
    }
    default:
      throw new SluiceError('SLUICE_ERR_CONFIG', `unsupported queue URL scheme "${scheme}:" (use memory:, amqp:, amqps: or nats:)`);
  }
}
