// Runs the Queue contract against every adapter: memory always, RabbitMQ and NATS where they run.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { queueContract, type QueueHarness } from './queue.contract.ts';
import { MemoryQueue } from '../../src/adapters/queue/memory.ts';
import { createQueue } from '../../src/adapters/queue/factory.ts';
import { isSluiceError } from '../../src/core/errors.ts';

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
