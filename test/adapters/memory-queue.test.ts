// The in-memory queue under a deep backlog: highest priority first, FIFO within a priority, every
// job once, also across the points where its FIFOs drop their consumed prefix.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryQueue } from '../../src/adapters/queue/memory.ts';
import type { Job } from '../../src/ports/queue.ts';

describe('MemoryQueue backlog', () => {
  it('delivers 5,000 waiting jobs by priority, then in publish order, each once', async () => {
    const queue = new MemoryQueue({ retryBaseMs: 10 });
    const published: Job[] = [];
    for (let i = 0; i < 5000; i++) {
      const job = { requestId: `r${i}`, priority: i % 7 === 0 ? 9 : i % 3 === 0 ? 5 : 0 };
      published.push(job);
      await queue.publish(job);
    }
    assert.equal(await queue.depth(), 5000);
    const got: string[] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => { done = r; });
    const consumer = await queue.consume(async (d) => { got.push(d.job.requestId); await d.ack(); if (got.length === 5000) done(); }, { concurrency: 1 });
    await all;
    const expected = [9, 5, 0].flatMap((p) => published.filter((j) => j.priority === p).map((j) => j.requestId));
    assert.deepEqual(got, expected);
    assert.equal(await queue.depth(), 0);
    await consumer.close();
    await queue.close();
  });
});
