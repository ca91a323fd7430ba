// The Queue contract: every adapter (memory, RabbitMQ, NATS JetStream) passes these cases.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Delivery, Queue } from '../../src/ports/queue.ts';

export interface QueueHarness {
  /** A connection to the queue under test; every call of one harness reaches the same queue. */
  open(): Promise<Queue>;
  /** Jobs in the dead-letter destination. */
  deadLetterDepth(): Promise<number>;
  /** Drops a connection the way a crash would: in-flight deliveries are not settled. */
  crash?(q: Queue): Promise<void>;
  /** Closes what it opened and removes broker-side queues and streams. */
  cleanup(): Promise<void>;
}

export type HarnessFactory = () => Promise<QueueHarness>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Deliveries seen by a consumer, with a way to wait for the n-th. */
function recorder() {
  const seen: { d: Delivery; at: number }[] = [];
  return {
    seen,
    handler: async (d: Delivery) => { seen.push({ d, at: Date.now() }); },
    async wait(n: number, what = `${n} deliveries`, timeoutMs = 5000): Promise<Delivery> {
      await eventually(() => seen.length >= n, what, timeoutMs);
      return seen[n - 1]!.d;
    },
  };
}

async function withHarness(factory: HarnessFactory, body: (h: QueueHarness) => Promise<void>): Promise<void> {
  const h = await factory();
  try { await body(h); } finally { await h.cleanup(); }
}

export function queueContract(name: string, factory: HarnessFactory, suite: { skip?: string } = {}): void {
  describe(`Queue contract: ${name}`, suite, () => {
    it('delivers a published job with deliveryCount 1', () => withHarness(factory, async (h) => {
      const q = await h.open();
      await q.publish({ requestId: 'r-1', priority: 3 });
      const rec = recorder();
      await q.consume(rec.handler, { concurrency: 1 });
      const d = await rec.wait(1);
      assert.deepEqual(d.job, { requestId: 'r-1', priority: 3 });
      assert.equal(d.deliveryCount, 1);
      await d.ack();
    }));

    it('never redelivers an acked job', () => withHarness(factory, async (h) => {
      const q = await h.open();
      const rec = recorder();
      await q.consume(async (d) => { await rec.handler(d); await d.ack(); }, { concurrency: 2 });
      await q.publish({ requestId: 'once', priority: 0 });
      await rec.wait(1);
      await sleep(300);
      assert.equal(rec.seen.length, 1);
      assert.equal(await q.depth(), 0);
    }));

    it('spreads 50 jobs over 2 consumers, each delivered exactly once', () => withHarness(factory, async (h) => {
      const [q1, q2] = [await h.open(), await h.open()];
      const counts = new Map<string, number>();
      const perConsumer = [0, 0];
      const handler = (i: number) => async (d: Delivery) => {
        perConsumer[i]!++;
        counts.set(d.job.requestId, (counts.get(d.job.requestId) ?? 0) + 1);
        await sleep(2);
        await d.ack();
      };
      await q1.consume(handler(0), { concurrency: 4 });
      await q2.consume(handler(1), { concurrency: 4 });
      await Promise.all(Array.from({ length: 50 }, (_, i) => q1.publish({ requestId: `job-${i}`, priority: i % 10 })));
      await eventually(() => counts.size === 50, '50 distinct jobs', 10_000);
      await sleep(200);
      assert.equal([...counts.values()].reduce((a, b) => a + b, 0), 50, 'no job delivered twice');
      assert.ok(perConsumer[0]! > 0 && perConsumer[1]! > 0, `both consumers got work: ${perConsumer.join('/')}`);
    }));

    it('redelivers after retry(delay) with deliveryCount 2', () => withHarness(factory, async (h) => {
      const q = await h.open();
      const rec = recorder();
      await q.consume(rec.handler, { concurrency: 1 });
      await q.publish({ requestId: 'again', priority: 5 });
      const first = await rec.wait(1);
      const retriedAt = Date.now();
      await first.retry(50);
      const second = await rec.wait(2, 'the retried job');
      assert.ok(rec.seen[1]!.at - retriedAt >= 45, `redelivered after ${rec.seen[1]!.at - retriedAt} ms`);
      assert.equal(second.job.requestId, 'again');
      assert.equal(second.deliveryCount, 2);
      await second.ack();
    }));

    it('dead-letters a job: never redelivered, visible in the dead-letter destination', () => withHarness(factory, async (h) => {
      const q = await h.open();
      const rec = recorder();
      await q.consume(rec.handler, { concurrency: 1 });
      await q.publish({ requestId: 'doomed', priority: 2 });
      const d = await rec.wait(1);
      await d.deadLetter('model rejected the request');
      await eventually(async () => (await h.deadLetterDepth()) === 1, 'one dead letter');
      await sleep(300);
      assert.equal(rec.seen.length, 1);
      assert.equal(await q.depth(), 0);
    }));

    it('hands the unacked jobs of a closed consumer to another consumer', () => withHarness(factory, async (h) => {
      const [q1, q2] = [await h.open(), await h.open()];
      const first = recorder();
      const c1 = await q1.consume(first.handler, { concurrency: 1 });
      await q1.publish({ requestId: 'orphan', priority: 4 });
      const d1 = await first.wait(1);
      const second = recorder();
      await q2.consume(second.handler, { concurrency: 1 });
      await c1.close();
      const d2 = await second.wait(1, 'the orphaned job');
      assert.equal(d2.job.requestId, 'orphan');
      assert.equal(d2.deliveryCount, 2);
      await d1.ack().catch(() => undefined); // a late ack from the closed consumer must not lose the job
      await d2.ack();
      await sleep(200);
      assert.equal(first.seen.length + second.seen.length, 2);
    }));

    it('a paused consumer takes no new job, still settles the ones in flight, and its unsettled ones return on close', () => withHarness(factory, async (h) => {
      const [q1, q2] = [await h.open(), await h.open()];
      const first = recorder();
      const c1 = await q1.consume(first.handler, { concurrency: 4 });
      await q1.publish({ requestId: 'kept', priority: 4 });
      await q1.publish({ requestId: 'handed-back', priority: 4 });
      await first.wait(2);
      await c1.pause();
      const kept = first.seen.find((s) => s.d.job.requestId === 'kept')!.d;
      await kept.ack(); // settled after the pause: never delivered again
      await q1.publish({ requestId: 'later', priority: 4 });
      await sleep(200);
      assert.equal(first.seen.length, 2, 'nothing new reaches a paused consumer');
      // The unsettled one may come back before the close where the broker has an ack deadline (NATS ack_wait).
      const second = recorder();
      await q2.consume(async (d) => { await second.handler(d); await d.ack(); }, { concurrency: 4 });
      await second.wait(1, 'the job published after the pause');
      await c1.close(); // the unsettled one goes back to the queue
      await second.wait(2, 'the unsettled job of the paused consumer');
      await sleep(300);
      assert.deepEqual(second.seen.map((x) => x.d.job.requestId).sort(), ['handed-back', 'later']);
      assert.equal(first.seen.length, 2);
    }));

    it('redelivers the jobs of a crashed connection', async (t) => {
      const probe = await factory();
      if (!probe.crash) { await probe.cleanup(); t.skip('no separate connection to crash in this adapter'); return; }
      await withHarness(async () => probe, async (h) => {
        const [q1, q2] = [await h.open(), await h.open()];
        const first = recorder();
        await q1.consume(first.handler, { concurrency: 1 });
        await q1.publish({ requestId: 'crashed', priority: 4 });
        await first.wait(1);
        await h.crash!(q1);
        const second = recorder();
        await q2.consume(second.handler, { concurrency: 1 });
        const d = await second.wait(1, 'the job of the crashed connection', 10_000);
        assert.equal(d.job.requestId, 'crashed');
        assert.ok(d.deliveryCount >= 2, `deliveryCount ${d.deliveryCount}`);
        await d.ack();
      });
    });

    it('delivers higher priority first, FIFO within a priority', () => withHarness(factory, async (h) => {
      const q = await h.open();
      for (const [requestId, priority] of [['low-a', 1], ['low-b', 1], ['high', 9], ['mid', 5]] as const) {
        await q.publish({ requestId, priority });
      }
      await eventually(async () => (await q.depth()) === 4, 'depth 4');
      const order: string[] = [];
      await q.consume(async (d) => { order.push(d.job.requestId); await d.ack(); }, { concurrency: 1 });
      await eventually(() => order.length === 4, '4 deliveries');
      assert.deepEqual(order, ['high', 'mid', 'low-a', 'low-b']);
    }));

    it('a job keeps its userId through publish, retry and delivery; a job without one has none', () => withHarness(factory, async (h) => {
      const q = await h.open();
      const rec = recorder();
      await q.consume(rec.handler, { concurrency: 2 });
      await q.publish({ requestId: 'owned', priority: 3, userId: 'user-a' });
      await q.publish({ requestId: 'legacy', priority: 3 });
      await rec.wait(2);
      const byId = new Map(rec.seen.map(({ d }) => [d.job.requestId, d]));
      assert.deepEqual(byId.get('owned')!.job, { requestId: 'owned', priority: 3, userId: 'user-a' });
      assert.deepEqual(byId.get('legacy')!.job, { requestId: 'legacy', priority: 3 });
      await byId.get('owned')!.retry(20);
      const again = await rec.wait(3, 'the retried job');
      assert.deepEqual(again.job, { requestId: 'owned', priority: 3, userId: 'user-a' });
      await Promise.all([again.ack(), byId.get('legacy')!.ack()]);
    }));

    it('fair dequeue (where promised): round-robin over users within a priority, FIFO per user', async (t) => {
      const probe = await factory();
      const q = await probe.open();
      if (!q.fairDequeue) { await probe.cleanup(); t.skip('FIFO within a priority: the worker defers for fairness'); return; }
      await withHarness(async () => probe, async () => {
        const jobs: [string, string, number][] = [
          ['a1', 'a', 1], ['a2', 'a', 1], ['a3', 'a', 1], ['a4', 'a', 1], ['b1', 'b', 1], ['b2', 'b', 1], ['c1', 'c', 1], ['high', 'a', 9],
        ];
        for (const [requestId, userId, priority] of jobs) await q.publish({ requestId, userId, priority });
        await eventually(async () => (await q.depth()) === jobs.length, `depth ${jobs.length}`);
        const order: string[] = [];
        await q.consume(async (d) => { order.push(d.job.requestId); await d.ack(); }, { concurrency: 1 });
        await eventually(() => order.length === jobs.length, `${jobs.length} deliveries`);
        assert.deepEqual(order, ['high', 'a1', 'b1', 'c1', 'a2', 'b2', 'a3', 'a4']);
      });
    });

    it('depth() counts waiting jobs, not jobs in flight', () => withHarness(factory, async (h) => {
      const q = await h.open();
      assert.equal(await q.depth(), 0);
      for (let i = 0; i < 3; i++) await q.publish({ requestId: `d-${i}`, priority: 0 });
      await eventually(async () => (await q.depth()) === 3, 'depth 3');
      const rec = recorder();
      await q.consume(rec.handler, { concurrency: 1 });
      await rec.wait(1);
      await eventually(async () => (await q.depth()) === 2, 'depth 2 with one in flight');
      await rec.seen[0]!.d.ack();
      await rec.wait(2);
      await eventually(async () => (await q.depth()) === 1, 'depth 1');
    }));

    it('never has more than `concurrency` unacked deliveries in flight', () => withHarness(factory, async (h) => {
      const q = await h.open();
      let inFlight = 0;
      let peak = 0;
      let done = 0;
      await q.consume(async (d) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        // Settle later, outside the handler: the limit is on unacked deliveries, not running handlers.
        setTimeout(() => { void d.ack().then(() => { inFlight--; done++; }); }, 40);
      }, { concurrency: 3 });
      for (let i = 0; i < 12; i++) await q.publish({ requestId: `c-${i}`, priority: 0 });
      await eventually(() => done === 12, '12 acks', 10_000);
      assert.equal(peak, 3);
    }));
  });
}
