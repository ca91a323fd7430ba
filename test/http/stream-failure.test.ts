// An event stream whose bus fails part-way (the log cannot be read: an edge whose leaf node lost
// its hub, a broker outage) is closed, so the client resumes with Last-Event-ID; it is not left
// open with nothing more to come. The resume then gets every token once.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SluiceError } from '../../src/core/errors.ts';
import type { Bus } from '../../src/ports/bus.ts';
import { api, readSse, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

describe('an event stream whose bus fails part-way', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ sim: { ttftMs: 0, itlMs: 20 }, sse: { pingMs: 50 } }); });
  after(() => app.stop());

  it('is closed for the client to resume, and the resume gets every token once', async () => {
    const call = api(app.url);
    const res = await call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens: 60, messages: [{ role: 'user', content: 'hi' }] } });
    const { request_id: id } = (await res.json()) as { request_id: string };
    const bus = app.bus as Bus;
    const read = bus.read.bind(bus);
    let failing = true;
    bus.read = async (requestId, afterSeq, limit) => {
      if (requestId === id && failing) throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'Event bus (NATS) is unavailable');
      return read(requestId, afterSeq, limit);
    };
    let first;
    try {
      first = await readSse(await call(`/v1/requests/${id}/events`, { signal: AbortSignal.timeout(10_000) }));
    } finally {
      failing = false;
      bus.read = read;
    }
    assert.ok(first.some((f) => f.event === 'connected'));
    assert.ok(!first.some((f) => f.event === 'completed' || f.event === 'error'), 'closed, not ended: the request goes on');
    const lastId = Number(first.filter((f) => f.id).at(-1)?.id ?? 0);
    const rest = await readSse(await call(`/v1/requests/${id}/events`, { headers: { 'last-event-id': String(lastId) }, signal: AbortSignal.timeout(10_000) }));
    assert.equal(rest.at(-1)?.event, 'completed');
    const ids = rest.filter((f) => f.event === 'token').map((f) => Number(f.id));
    assert.deepEqual(ids, ids.map((_, i) => lastId + 1 + i));
    const r = await waitFor(async () => { const v = (await (await call(`/v1/requests/${id}`)).json()) as { status: string; usage: { completion_tokens: number } }; return v.status === 'completed' && v; });
    assert.equal(lastId + ids.length, r.usage.completion_tokens);
  });
});
