// Capacity-based worker admission: a worker holds as many jobs as the catalogue's capacity (the sum
// of its deployments' maxConcurrency) unless worker.concurrency caps it, and a job whose model has
// every deployment at its maxConcurrency is deferred unclaimed, so it does not hold a slot that
// jobs of other models need. Real router (sim deployments) and real memory queue; store and runner
// are small fakes (the runner calls the router as the attempt runner does).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config.ts';
import { createRouter, type ModelRouter } from '../../src/adapters/model/router.ts';
import { MemoryQueue } from '../../src/adapters/queue/memory.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { MAX_WORKER_SLOTS, Worker, workerSlots } from '../../src/core/worker.ts';
import type { AttemptRunner } from '../../src/core/attempt-runner.ts';
import type { Ledger } from '../../src/core/ledger.ts';
import type { ModelAvailability } from '../../src/ports/model.ts';
import type { Delivery, Job } from '../../src/ports/queue.ts';
import type { RequestRecord, Store } from '../../src/ports/store.ts';
import { waitFor } from '../helpers/app.ts';

const closers: (() => Promise<void>)[] = [];
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}); });

describe('worker slots', () => {
  it('worker.concurrency when set, else the model capacity, bounded by the AMQP prefetch limit', () => {
    assert.equal(workerSlots(8, 2048), 8);
    assert.equal(workerSlots(undefined, 2048), 2048);
    assert.equal(workerSlots(undefined, 10 * 1024 * 1024), MAX_WORKER_SLOTS);
    assert.equal(workerSlots(undefined, undefined), 1024);
    assert.equal(workerSlots(undefined, Number.POSITIVE_INFINITY), 1024);
  });

  it('a worker over the default configuration takes 1,024 jobs at once (the MODEL_URL deployment\'s capacity), not 16', async () => {
    const config = parseConfig({ routing: { probeIntervalMs: 0 } });
    const router = await createRouter({ config, secret: () => undefined, logger: createLogger('silent', 't'), metrics: createMetrics() });
    closers.push(() => router.close());
    const w = new Worker({ config, store: {} as Store, queue: {} as MemoryQueue, runner: {} as AttemptRunner, ledger: {} as Ledger, logger: createLogger('silent', 't'), now: Date.now, model: router });
    assert.equal(w.slots, 1024);
  });
});

/** A worker on a real memory queue and router; runs each claimed job by streaming its model through the router. */
async function rig(catalogue: Record<string, unknown>, worker: Record<string, unknown>) {
  const config = parseConfig({ catalogue, routing: { probeIntervalMs: 0 }, worker: { fairDeferMs: 0, ...worker } });
  const metrics = createMetrics();
  const router: ModelRouter = await createRouter({ config, secret: () => undefined, logger: createLogger('silent', 't'), metrics });
  const queue = new MemoryQueue({ retryBaseMs: 10 });
  const models = new Map<string, string>();
  const events: string[] = [];
  const claims: string[] = [];
  const store = {
    claimRequest: async (id: string) => { claims.push(id); return { state: 'claimed', record: { id, attempt: 1, handoffs: 0, model: models.get(id) } as unknown as RequestRecord }; },
  } as unknown as Store;
  const runner = {
    run: async (record: RequestRecord) => {
      events.push(`start ${record.id}`);
      for await (const chunk of router.stream({ model: record.model, messages: [{ role: 'user', content: 'hi' }], maxTokens: 4 }, new AbortController().signal)) void chunk;
      events.push(`end ${record.id}`);
      return { kind: 'finished' };
    },
  } as unknown as AttemptRunner;
  const w = new Worker({ config, store, queue, runner, ledger: {} as Ledger, logger: createLogger('silent', 't'), metrics, now: Date.now, model: router });
  await w.start();
  closers.push(async () => { await w.stop(); await queue.close(); await router.close(); });
  const publish = async (id: string, model: string, withModel = true) => {
    models.set(id, model);
    const job: Job = { requestId: id, priority: 1, userId: 'u', ...(withModel && { model }) };
    await queue.publish(job);
  };
  const busyDeferrals = async () => (await metrics.busyDeferrals.get()).values.reduce((s, v) => s + v.value, 0);
  return { w, router, queue, publish, events, claims, busyDeferrals };
}

describe('worker: capacity-based admission', () => {
  it('a job whose model is full is deferred unclaimed; a job of another model behind it runs at once', async () => {
    // Two slots (capped), the slow model takes one call at a time. Without the deferral slow-2 would
    // hold the second slot waiting for slow-1, and fast-1 would wait for both.
    const r = await rig({
      slow: { deployments: [{ url: 'sim://?ttft_ms=400&itl_ms=1', maxConcurrency: 1 }] },
      fast: { deployments: [{ url: 'sim://?ttft_ms=0&itl_ms=0', maxConcurrency: 4 }] },
    }, { concurrency: 2, busyDeferMs: 20 });
    assert.equal(r.w.slots, 2);
    await r.publish('slow-1', 'slow');
    await waitFor(async () => r.events.includes('start slow-1'));
    await r.publish('slow-2', 'slow');
    await r.publish('slow-3', 'slow');
    await r.publish('fast-1', 'fast');
    await waitFor(async () => r.events.includes('end fast-1'), 5_000);
    const claimedThen = [...r.claims];
    assert.ok(!r.events.includes('end slow-1'), `fast-1 finished while slow-1 still ran: ${r.events.join(', ')}`);
    assert.ok(await r.busyDeferrals() >= 2, 'slow-2 and slow-3 were deferred');
    assert.deepEqual(claimedThen, ['slow-1', 'fast-1'], 'a deferred job is not claimed while its model is full');
    await waitFor(async () => ['slow-1', 'slow-2', 'slow-3'].every((id) => r.events.includes(`end ${id}`)), 10_000);
    // Every job claimed exactly once: deferrals spend no attempt.
    assert.deepEqual([...r.claims].sort(), ['fast-1', 'slow-1', 'slow-2', 'slow-3']);
    assert.equal(r.w.active, 0);
  });

  it('the router bounds concurrent calls to maxConcurrency even when the worker holds more jobs', async () => {
    const r = await rig({ m: { deployments: [{ url: 'sim://?ttft_ms=50&itl_ms=5', maxConcurrency: 3 }] } }, { busyDeferMs: 5 });
    assert.equal(r.w.slots, 3, 'slots default to the capacity');
    let peak = 0;
    const timer = setInterval(() => { peak = Math.max(peak, r.router.health().deployments['m#1']!.outstanding); }, 2);
    for (let i = 0; i < 12; i++) await r.publish(`j${i}`, 'm');
    await waitFor(async () => r.events.filter((e) => e.startsWith('end ')).length === 12, 10_000);
    clearInterval(timer);
    assert.equal(peak, 3);
  });

  it('a job without a model (published before jobs named one) and a model whose circuits are open are not deferred', async () => {
    const config = parseConfig({ worker: { concurrency: 2, fairDeferMs: 0 } });
    let answer: ModelAvailability = { ok: false, reason: 'unavailable', retryAfterS: 5 };
    const claims: string[] = [];
    const store = { claimRequest: async (id: string) => { claims.push(id); return { state: 'missing' }; } } as unknown as Store;
    const w = new Worker({
      config, store, queue: {} as MemoryQueue, runner: {} as AttemptRunner, ledger: {} as Ledger, logger: createLogger('silent', 't'), now: Date.now,
      model: { availability: () => answer, capacity: () => 10 },
    });
    const outcomes: string[] = [];
    const delivery = (job: Job): Delivery => ({
      job, deliveryCount: 3,
      ack: async () => { outcomes.push(`ack ${job.requestId}`); },
      retry: async (ms) => { outcomes.push(`retry ${job.requestId} ${ms}`); },
      deadLetter: async () => {}, heartbeat: async () => {},
    });
    await w.handle(delivery({ requestId: 'open-circuits', priority: 1, model: 'm' }));
    answer = { ok: false, reason: 'busy', retryAfterS: 1 };
    await w.handle(delivery({ requestId: 'no-model', priority: 1 }));
    await w.handle(delivery({ requestId: 'busy', priority: 1, model: 'm' }));
    assert.deepEqual(claims, ['open-circuits', 'no-model']);
    // The third delivery of a busy job: busyDeferMs (100) doubled twice.
    assert.deepEqual(outcomes, ['ack open-circuits', 'ack no-model', 'retry busy 400']);
  });
});
