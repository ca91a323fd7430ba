// What a model produced is stored even when PostgreSQL could not hold it as it is: a NUL or an
// unpaired surrogate in an answer used to fail finishRequest, which the attempt read as a
// transient model failure, retried, and finally dead-lettered: the answer lost, the tokens unbilled.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createStore } from '../../src/adapters/store/factory.ts';
import { MemoryLimiter } from '../../src/adapters/limiter/memory.ts';
import { Ledger, usageOf } from '../../src/core/ledger.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { toStorableText } from '../../src/core/text.ts';
import type { Store } from '../../src/ports/store.ts';

describe('the ledger stores what a model produced', () => {
  let store: Store;
  before(async () => { store = await createStore('pglite://memory', { migrate: true }); });
  after(() => store.close());

  it('an answer with a NUL and halves of a surrogate pair is finished, with U+FFFD in their place', async () => {
    const { record } = await store.insertRequest({
      id: randomUUID(), userId: 'u-text', keyId: null, model: 'sim', mode: 'queued',
      payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 8 }, priority: 1, idempotencyKey: null,
      bodyHash: '', estimatedTokens: 10, promptTokens: 2,
    });
    const ledger = new Ledger({ store, limiter: new MemoryLimiter(), metrics: createMetrics(), logger: createLogger('silent', 'test') });
    const produced = 'a\u0000b\ud83dc\ude00d😀';
    const first = await ledger.settle(record, { status: 'completed', attempt: null, result: produced, finishReason: 'stop', usage: usageOf(2, 6), error: null });
    const stored = await store.getRequest(record.id);
    assert.deepEqual({ ...first, completedAt: null }, { ...stored, completedAt: null }, 'the ended record is the stored one, text replaced as stored');
    assert.equal(stored?.status, 'completed');
    assert.equal(stored?.result, 'a\uFFFDb\uFFFDc\uFFFDd😀');
    assert.equal((await store.ledgerRow(record.id))?.completionTokens, 6, 'billed as produced');
  });

  it('leaves storable text as it is', () => {
    assert.equal(toStorableText('plain 😀 text'), 'plain 😀 text');
  });
});
