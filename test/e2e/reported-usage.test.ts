// What a request reports as usage (GET /v1/requests/{id}, its event log) is what it was charged:
// the request row and its ledger row agree, also for a request cancelled before any worker ran it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, readSse, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

interface View { status: string; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null }

const body = { model: 'sim', max_tokens: 8, messages: [{ role: 'user', content: 'a prompt of several words to count' }] };

async function ledgerUsage(app: TestSluice, id: string) {
  const row = await app.store.ledgerRow(id);
  assert.ok(row, 'the request has its ledger row');
  return { prompt_tokens: row.promptTokens, completion_tokens: row.completionTokens, total_tokens: row.promptTokens + row.completionTokens };
}

describe('reported usage equals the ledger', () => {
  describe('a request cancelled while queued', () => {
    // A gateway alone: nothing claims the request, so the cancel finds it queued.
    let app: TestSluice;
    before(async () => { app = await startTestSluice({ role: 'gateway' }); });
    after(() => app.stop());

    it('reports 0 prompt and 0 completion tokens, as its ledger row says', async () => {
      const call = api(app.url);
      const submitted = await call('/v1/requests', { method: 'POST', json: body });
      assert.equal(submitted.status, 202);
      const { request_id: id } = (await submitted.json()) as { request_id: string };
      assert.ok(((await app.store.getRequest(id))?.promptTokens ?? 0) > 0, 'admission counted the prompt');

      const cancelled = (await (await call(`/v1/requests/${id}`, { method: 'DELETE' })).json()) as View;
      assert.equal(cancelled.status, 'cancelled');
      const view = (await (await call(`/v1/requests/${id}`)).json()) as View;
      assert.deepEqual(view.usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });
      assert.deepEqual(view.usage, await ledgerUsage(app, id));
      const row = await app.store.ledgerRow(id);
      assert.equal(row?.chargedTokens, 0);

      const events = await readSse(await call(`/v1/requests/${id}/events`), (f) => f.event === 'error' || f.event === 'completed');
      const last = JSON.parse(events[events.length - 1]!.data) as { status: string; usage: View['usage'] };
      assert.equal(last.status, 'cancelled');
      assert.deepEqual(last.usage, view.usage);
    });
  });

  describe('a completed request', () => {
    let app: TestSluice;
    before(async () => { app = await startTestSluice(); });
    after(() => app.stop());

    it('reports the usage of its ledger row', async () => {
      const call = api(app.url);
      const { request_id: id } = (await (await call('/v1/requests', { method: 'POST', json: body })).json()) as { request_id: string };
      const view = await waitFor(async () => {
        const v = (await (await call(`/v1/requests/${id}`)).json()) as View;
        return v.status === 'completed' && v;
      }, 30_000);
      assert.ok(view.usage && view.usage.prompt_tokens > 0 && view.usage.completion_tokens > 0);
      assert.deepEqual(view.usage, await ledgerUsage(app, id));
    });
  });
});
