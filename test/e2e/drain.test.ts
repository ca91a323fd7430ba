// Draining one process (the hand-off to another is in test/cluster/drain.test.ts): what each kind
// of client gets, and what the requests look like in the store once handed off.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, readSse, startTestSluice, waitFor, type SseFrame } from '../helpers/app.ts';
import { connectWs } from '../helpers/ws-client.ts';

const chat = (n: number, extra: Record<string, unknown> = {}) => ({ model: 'sim', max_tokens: n, messages: [{ role: 'user', content: 'drain me' }], ...extra });

describe('draining one process', () => {
  it('with nothing in flight, it does not wait for the grace period', { timeout: 30_000 }, async () => {
    const app = await startTestSluice();
    try {
      await app.drain(10 * 60_000);
      assert.equal((await fetch(`${app.url}/readyz`)).status, 503);
    } finally { await app.stop(); }
  });

  it('refuses new work at once; hands off what outlives the grace period, unended, unbilled and ready for another process', async () => {
    const app = await startTestSluice({ sim: { ttftMs: 0, itlMs: 20 } });
    try {
      const call = api(app.url);
      // A queued request run by this process's worker, followed over SSE and over a WebSocket.
      const posted = await call('/v1/requests', { method: 'POST', json: chat(400) });
      const queuedId = ((await posted.json()) as { request_id: string }).request_id;
      const sseFrames: SseFrame[] = [];
      const sse = call(`/v1/requests/${queuedId}/events`).then((r) => readSse(r, (f) => { sseFrames.push(f); return false; }));
      const ws = await connectWs(app.url, { key: app.masterKey });
      ws.send({ type: 'resume', request_id: queuedId, after: 0 });
      // A direct-mode OpenAI stream and a direct-mode non-streaming call, both run by this gateway.
      const streamed = await call('/v1/chat/completions', { method: 'POST', json: chat(400, { stream: true }), headers: { 'x-sluice-mode': 'direct' } });
      const streamedId = streamed.headers.get('x-request-id')!;
      const chunks: SseFrame[] = [];
      const openaiStream = readSse(streamed, (f) => { chunks.push(f); return false; });
      const waiting = call('/v1/chat/completions', { method: 'POST', json: chat(400), headers: { 'x-sluice-mode': 'direct' } });
      await waitFor(async () => sseFrames.filter((f) => f.event === 'token').length >= 5 && chunks.length >= 5 && ws.messages.some((m) => m.type === 'token'));

      const drained = app.drain(500);
      assert.equal((await fetch(`${app.url}/readyz`)).status, 503);
      assert.deepEqual(await (await fetch(`${app.url}/readyz`)).json(), { ok: false, checks: { draining: 'yes' } });
      const refused = await call('/v1/chat/completions', { method: 'POST', json: chat(5) });
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get('retry-after'), '1');
      assert.equal(refused.headers.get('connection'), 'close');
      assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_DRAINING');
      ws.send({ type: 'submit', id: 'late', request: chat(5) });
      assert.equal((await ws.next((m) => m.type === 'error' && m.id === 'late')).error.code, 'SLUICE_ERR_DRAINING');
      assert.equal((await fetch(`${app.url}/metrics`)).status, 200, 'metrics still answer');
      await drained;

      // Native SSE: the stream just ends, without a terminal event (EventSource reconnects).
      await sse;
      assert.ok(sseFrames.some((f) => f.event === 'token'));
      assert.ok(!sseFrames.some((f) => f.event === 'completed' || f.event === 'error'));
      // OpenAI format: an error chunk naming where to resume, and no [DONE].
      await openaiStream;
      const last = JSON.parse(chunks.at(-1)!.data) as { error: { code: string; message: string } };
      assert.equal(last.error.code, 'SLUICE_ERR_DRAINING');
      const lastId = chunks.filter((f) => f.id !== undefined).at(-1)!.id;
      assert.ok(last.error.message.includes(`/v1/requests/${streamedId}/events?format=openai with Last-Event-ID: ${lastId}`), last.error.message);
      assert.ok(!chunks.some((f) => f.data === '[DONE]'));
      // Non-streaming: 503 naming the request.
      const answer = await waiting;
      assert.equal(answer.status, 503);
      const waitingId = answer.headers.get('x-request-id');
      assert.ok(waitingId);
      assert.ok(((await answer.json()) as { error: { message: string } }).error.message.includes(`/v1/requests/${waitingId}`));
      // WebSocket: closed with 1012.
      assert.equal((await ws.closed).code, 1012);

      // In the store: none ended, none charged; each claim given back, so another process takes it at once.
      for (const id of [queuedId, streamedId, waitingId]) {
        const r = (await app.store.getRequest(id))!;
        assert.equal(r.status, 'running', id);
        assert.equal(r.attempt, 1);
        assert.equal(r.handoffs, 1, 'a hand-off, not a spent attempt');
        assert.ok(r.claimExpiresAt!.getTime() <= Date.now(), 'claim given back');
        assert.ok(r.publishedAt instanceof Date, 'a job for it is in the queue');
        assert.equal(await app.store.ledgerRow(id), null, 'not settled');
      }
    } finally { await app.stop(); }
  });
});
