// The attempt runner counts what reached the log: a burst that an adapter appended only in part
// (PartialAppendError, as NATS can) is still produced, stored and billed for its logged tokens.
// Its latency metrics follow the model's reads: a burst's gap is shared by its tokens.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { AttemptRunner } from '../../src/core/attempt-runner.ts';
import { SluiceError } from '../../src/core/errors.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { PartialAppendError, type EventBody } from '../../src/ports/bus.ts';
import type { ModelBackend, ModelChunk } from '../../src/ports/model.ts';
import { api, MASTER_KEY, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';
import { parseChatBody } from '../../src/core/chat-request.ts';

describe('AttemptRunner', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ sim: { ttftMs: 0, itlMs: 0 }, worker: { maxAttempts: 1 } }); });
  after(() => app.stop());

  it('counts the tokens of a burst that was logged only in part before the bus failed', async () => {
    const bus = app.bus;
    const appendMany = bus.appendMany.bind(bus);
    let failed = false;
    // The first burst of tokens: two of them reach the log, then the bus fails.
    bus.appendMany = async (requestId: string, events: readonly EventBody[]) => {
      if (failed || events.length < 3 || events[0]!.type !== 'token') return appendMany(requestId, events);
      failed = true;
      const logged = await appendMany(requestId, events.slice(0, 2));
      throw new PartialAppendError(logged, { cause: new SluiceError('SLUICE_ERR_UNAVAILABLE', 'Event bus is unavailable') });
    };
    try {
      const call = api(app.url);
      const { request_id } = (await (await call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] } })).json()) as { request_id: string };
      const record = await waitFor(async () => { const r = await app.store.getRequest(request_id); return r && r.status !== 'queued' && r.status !== 'running' ? r : undefined; });
      const logged = (await app.bus.read(request_id, 0)).flatMap((e) => (e.type === 'token' ? [e.text] : []));
      assert.equal(failed, true);
      assert.equal(record.status, 'failed');
      assert.equal(logged.length, 2);
      assert.equal(record.completionTokens, 2, 'the two logged tokens were produced');
      assert.equal(record.result, logged.join(''));
    } finally {
      bus.appendMany = appendMany;
    }
  });

  it('observes time to first token once, then each later read\'s gap shared by its tokens', async () => {
    let clock = Date.now();
    // Reads of 1, 4 and 2 tokens; the model's clock moves 40 ms before the second and 10 ms before the third.
    const model: ModelBackend = {
      async *stream(): AsyncGenerator<ModelChunk> {
        clock += 25;
        yield { type: 'tokens', texts: ['a'] };
        clock += 40;
        yield { type: 'tokens', texts: ['b', 'c', 'd', 'e'] };
        clock += 10;
        yield { type: 'tokens', texts: ['f', 'g'] };
        yield { type: 'usage', promptTokens: 3, completionTokens: 7, finishReason: 'stop' };
      },
      models: async () => ['sim'],
      close: async () => {},
    };
    const metrics = createMetrics();
    const runner = new AttemptRunner({ config: app.config, store: app.store, bus: app.bus, model, ledger: app.ledger, metrics, logger: app.logger, now: () => clock });
    const { record } = await app.store.insertRequest({
      id: randomUUID(), userId: 'master', keyId: null, model: 'sim', mode: 'direct', payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 7 },
      priority: 0, idempotencyKey: null, bodyHash: '', estimatedTokens: 10, promptTokens: 3,
    }, { workerId: 'test', claimMs: 60_000 });
    assert.equal((await runner.run(record, 'test')).kind, 'finished');

    const values = async (name: string) => (await metrics.registry.getSingleMetric(name)!.get()).values as { value: number; metricName?: string }[];
    const ttftCount = (await values('sluice_time_to_first_token_seconds')).find((v) => v.metricName?.endsWith('_count'));
    assert.equal(ttftCount?.value, 1);
    const itl = await values('sluice_inter_token_seconds');
    const count = itl.find((v) => v.metricName?.endsWith('_count'))?.value;
    const sum = itl.find((v) => v.metricName?.endsWith('_sum'))?.value ?? NaN;
    assert.equal(count, 2, 'one observation per read after the first');
    assert.ok(Math.abs(sum - (0.040 / 4 + 0.010 / 2)) < 1e-9, `sum ${sum}`);
    assert.equal((await app.store.getRequest(record.id))?.result, 'abcdefg');
  });

  it('a direct request whose client left before the attempt began is cancelled unbilled, without calling the model', async () => {
    const principal = await app.auth.authenticate(MASTER_KEY);
    const input = parseChatBody({ model: 'sim', max_tokens: 20, stream: true, messages: [{ role: 'user', content: 'gone already' }] });
    const { record } = await app.requests.submit(principal, input, { mode: 'direct' });
    const stream = app.model.stream.bind(app.model);
    let calls = 0;
    app.model.stream = (req, signal) => { calls++; return stream(req, signal); };
    try {
      const gone = new AbortController();
      gone.abort();
      const ended = await app.requests.runDirect(record, gone.signal);
      assert.equal(ended?.status, 'cancelled');
      assert.equal(calls, 0, 'the model was not called');
      assert.equal(ended?.promptTokens, 0, 'a prompt the model never saw is not billed');
    } finally {
      app.model.stream = stream;
    }
  });
});

