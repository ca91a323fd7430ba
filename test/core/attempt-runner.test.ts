// The attempt runner counts what reached the log: a burst that an adapter appended only in part
// (PartialAppendError, as NATS can) is still produced, stored and billed for its logged tokens.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SluiceError } from '../../src/core/errors.ts';
import { PartialAppendError, type EventBody } from '../../src/ports/bus.ts';
import { api, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

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
});
