// Runs the Queue contract against every adapter: memory always, RabbitMQ and NATS where they run.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { queueContract, type QueueHarness } from './queue.contract.ts';
import { MemoryQueue } from '../../src/adapters/queue/memory.ts';
import { createQueue } from '../../src/adapters/queue/factory.ts';
import { AmqpQueue } from '../../src/adapters/queue/amqp.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import type { Queue } from '../../src/ports/queue.ts';
import { SERVICES, serviceSuite, uniqueName } from '../helpers/services.ts';

queueContract('memory', async (): Promise<QueueHarness> => {
  // One process: every open() returns the same in-memory queue.
  const q = new MemoryQueue({ retryBaseMs: 10 });
  return { open: async () => q, deadLetterDepth: () => q.deadLetterDepth(), cleanup: () => q.close() };
});

describe('queue factory', () => {
  it('creates a memory queue and refuses unknown schemes with SLUICE_ERR_CONFIG', async () => {
    const q = await createQueue('memory://', { retryBaseMs: 10 });
    assert.ok(q instanceof MemoryQueue);
    await q.close();
    await assert.rejects(createQueue('kafka://x', { retryBaseMs: 10 }), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
  });

  it('keeps dead letters inspectable and backs off exponentially', async () => {
    const q = new MemoryQueue({ retryBaseMs: 20, maxRetryDelayMs: 1000 });
    const seen: number[] = [];
    await q.consume(async (d) => {
      seen.push(Date.now());
      if (d.deliveryCount < 3) await d.retry(); else await d.deadLetter('gave up');
    }, { concurrency: 1 });
    await q.publish({ requestId: 'r', priority: 12 });
    while (q.deadLettered().length === 0) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(q.deadLettered(), [{ requestId: 'r', priority: 9 }]);
    assert.equal(q.deadLetters()[0]!.reason, 'gave up');
    assert.ok(seen[1]! - seen[0]! >= 18 && seen[2]! - seen[1]! >= 38, `gaps ${seen[1]! - seen[0]!}, ${seen[2]! - seen[1]!}`);
    await q.close();
  });
});

const RABBIT = SERVICES.rabbitmq;
queueContract('amqp (RabbitMQ)', async (): Promise<QueueHarness> => {
  const name = uniqueName('sluice_q');
  const opened: Queue[] = [];
  const open = async () => { const q = await AmqpQueue.connect(RABBIT, { name, retryBaseMs: 20, reconnectMaxMs: 500 }); opened.push(q); return q; };
  const admin = await open();
  return {
    open,
    deadLetterDepth: () => admin.deadLetterDepth(),
    crash: (q) => q.close(), // closing the connection without acking is what a crash looks like to the broker
    async cleanup() {
      for (const q of opened) await q.close();
      const amqp = await import('amqplib');
      const conn = await amqp.connect(RABBIT);
      const ch = await conn.createChannel();
      for (const queue of [name, `${name}.dlq`, `${name}.wait.50`, `${name}.wait.20`]) await ch.deleteQueue(queue);
      await conn.close();
    },
  };
}, await serviceSuite('rabbitmq'));
