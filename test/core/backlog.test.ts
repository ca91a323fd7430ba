// The ledger's backlog gauges: the oldest queued request's age and the reservations open past
// their deadline, sampled from the store and the limiter (real in-memory limiter, PGlite store).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { MemoryLimiter } from '../../src/adapters/limiter/memory.ts';
import { createStore } from '../../src/adapters/store/factory.ts';
import { BacklogGauges } from '../../src/core/backlog.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import type { Store } from '../../src/ports/store.ts';

const gauge = async (m: ReturnType<typeof createMetrics>, name: string) => (await m.registry.getSingleMetric(name)!.get()).values[0]?.value;

describe('backlog gauges', () => {
  let store: Store;
  before(async () => { store = await createStore('pglite://memory', { migrate: true }); });
  after(async () => { await store?.close(); });

  it('report the oldest queued request and the overdue reservations', async () => {
    const metrics = createMetrics();
    const limiter = new MemoryLimiter();
    let t = Date.now();
    const gauges = new BacklogGauges({ store, limiter, metrics, logger: createLogger('silent', 'ledger'), now: () => t, intervalMs: 1000 });

    await gauges.sampleOnce();
    assert.equal(await gauge(metrics, 'sluice_queue_oldest_age_seconds'), 0);
    assert.equal(await gauge(metrics, 'sluice_settlement_backlog'), 0);

    const { record } = await store.insertRequest({
      id: randomUUID(), userId: 'u', keyId: null, model: 'sim', mode: 'queued', payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 4 },
      priority: 1, idempotencyKey: null, bodyHash: '', estimatedTokens: 10, promptTokens: 6,
    });
    const windows = [{ window: 'daily' as const, metric: 'tokens' as const, limit: 1000, period: 'p', resetAt: t + 86_400_000 }];
    await limiter.reserve({ requestId: 'r1', userId: 'u', tokens: 10, windows, deadlineAt: t + 60_000 });
    await limiter.reserve({ requestId: 'r2', userId: 'u', tokens: 10, windows, deadlineAt: t + 120_000 });

    t = record.createdAt.getTime() + 90_000;
    await gauges.sampleOnce();
    assert.equal(await gauge(metrics, 'sluice_queue_oldest_age_seconds'), 90);
    assert.equal(await gauge(metrics, 'sluice_settlement_backlog'), 1, 'r1 is past its deadline, r2 not yet');

    await store.claimRequest(record.id, 'w', 60_000);
    await limiter.settle('r1', { tokens: 10, requests: 1 });
    await gauges.sampleOnce();
    assert.equal(await gauge(metrics, 'sluice_queue_oldest_age_seconds'), 0);
    assert.equal(await gauge(metrics, 'sluice_settlement_backlog'), 0);
  });
});
