// The cost of a settled request: its usage at the catalogue price of its public model id, written
// with its ledger row once, 0 for a refund, null for an unpriced model; and the spend metric's
// user label, bounded so that a large user base cannot grow it without limit.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createStore } from '../../src/adapters/store/factory.ts';
import { MemoryLimiter } from '../../src/adapters/limiter/memory.ts';
import { Ledger, usageOf, type Ending } from '../../src/core/ledger.ts';
import { createLogger } from '../../src/core/logger.ts';
import { boundedUserLabel, createMetrics } from '../../src/core/metrics.ts';
import { costOf, priceOf } from '../../src/core/pricing.ts';
import { effectiveModels } from '../../src/core/model-access.ts';
import { parseConfig } from '../../src/config.ts';
import type { Store } from '../../src/ports/store.ts';

const config = parseConfig({
  catalogue: {
    priced: { deployments: [{ url: 'sim://' }], price: { inputPerMillion: 3, outputPerMillion: 15 } },
    unpriced: { deployments: [{ url: 'sim://' }] },
  },
});

describe('pricing', () => {
  it('prices a catalogue model and nothing else', () => {
    assert.deepEqual(priceOf(config.catalogue, 'priced'), { inputPerMillion: 3, outputPerMillion: 15 });
    assert.equal(priceOf(config.catalogue, 'unpriced'), undefined);
    assert.equal(priceOf(config.catalogue, 'elsewhere'), undefined);
    assert.equal(priceOf(config.catalogue, 'constructor'), undefined, 'only own entries');
  });

  it('costs prompt at the input price and completion at the output price; a refund 0; unpriced null', () => {
    const price = { inputPerMillion: 3, outputPerMillion: 15 };
    assert.equal(costOf(price, { promptTokens: 1_000_000, completionTokens: 0 }, true), 3);
    assert.equal(costOf(price, { promptTokens: 2_000, completionTokens: 1_000 }, true), (2_000 * 3 + 1_000 * 15) / 1e6);
    assert.equal(costOf(price, { promptTokens: 2_000, completionTokens: 1_000 }, false), 0);
    assert.equal(costOf(undefined, { promptTokens: 2_000, completionTokens: 1_000 }, true), null);
  });
});

describe('model allow-lists', () => {
  it('a key\'s list narrows its tier\'s and never widens it', () => {
    assert.equal(effectiveModels(undefined, null), null, 'neither: every model');
    assert.deepEqual(effectiveModels(['a', 'b'], null), new Set(['a', 'b']));
    assert.deepEqual(effectiveModels(undefined, ['c']), new Set(['c']));
    assert.deepEqual(effectiveModels(['a', 'b'], ['b', 'c']), new Set(['b']));
    assert.deepEqual(effectiveModels(['a'], ['c']), new Set(), 'nothing in common: no model');
  });
});

describe('the ledger prices what it settles', () => {
  let store: Store;
  const metrics = createMetrics({ spendUsers: 1 });
  let ledger: Ledger;
  before(async () => {
    store = await createStore('pglite://memory', { migrate: true });
    ledger = new Ledger({ store, limiter: new MemoryLimiter(), metrics, logger: createLogger('silent', 'test'), priceOf: (m) => priceOf(config.catalogue, m) });
  });
  after(() => store.close());

  const request = async (model: string, userId = 'u-cost') => (await store.insertRequest({
    id: randomUUID(), userId, keyId: null, model, mode: 'queued',
    payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 8 }, priority: 1, idempotencyKey: null,
    bodyHash: '', estimatedTokens: 10, promptTokens: 2,
  })).record;
  const completed = (prompt: number, completion: number, extra: Partial<Ending> = {}): Ending => ({
    status: 'completed', attempt: null, result: 'x', finishReason: 'stop', usage: usageOf(prompt, completion), error: null, ...extra,
  });

  it('stores the cost of a priced model and the deployment that served it, once', async () => {
    const r = await request('priced');
    const output = { choices: [], usageSource: 'reported' as const, served: { deployment: 'priced#0', model: 'upstream' } };
    assert.equal((await ledger.settle(r, completed(1_000, 200, { output })))?.status, 'completed');
    assert.equal(await ledger.settle(r, completed(5_000, 5_000)), null, 'settles once');
    const row = await store.ledgerRow(r.id);
    assert.equal(row?.costUsd, (1_000 * 3 + 200 * 15) / 1e6);
    assert.equal(row?.deployment, 'priced#0');
  });

  it('takes the deployment an ending names (an embeddings request has no output)', async () => {
    const r = await request('priced');
    await ledger.settle(r, completed(10, 0, { deployment: 'embed-gpu' }));
    assert.equal((await store.ledgerRow(r.id))?.deployment, 'embed-gpu');
  });

  it('costs a refunded request 0 and an unpriced model null', async () => {
    const failed = await request('priced');
    await ledger.settle(failed, { status: 'failed', attempt: null, result: '', finishReason: 'error', usage: usageOf(2, 5), error: { code: 'SLUICE_ERR_MODEL_PERMANENT', message: 'no' } });
    assert.equal((await store.ledgerRow(failed.id))?.costUsd, 0);
    const unpriced = await request('unpriced');
    await ledger.settle(unpriced, completed(100, 100));
    assert.equal((await store.ledgerRow(unpriced.id))?.costUsd, null);
  });

  it('counts spend per model and user in the metrics, past the user bound as "other"', async () => {
    const a = await request('priced', 'first-user');
    await ledger.settle(a, completed(1_000_000, 0));
    const b = await request('priced', 'second-user');
    await ledger.settle(b, completed(0, 1_000_000));
    const values = (await metrics.spend.get()).values;
    const spendOf = (user: string) => values.find((v) => v.labels.model === 'priced' && v.labels.user === user)?.value;
    // u-cost settled first in this suite and took the one named slot.
    assert.equal(spendOf('first-user'), undefined);
    assert.equal(spendOf('other'), 3 + 15);
    assert.ok((spendOf('u-cost') ?? 0) > 0);
  });
});

describe('boundedUserLabel', () => {
  it('names the first users and folds the rest into "other", stably', () => {
    const label = boundedUserLabel(2);
    assert.deepEqual(['a', 'b', 'c', 'a', 'd', 'b'].map(label), ['a', 'b', 'other', 'a', 'other', 'b']);
    assert.equal(boundedUserLabel(0)('a'), 'other');
  });
});
