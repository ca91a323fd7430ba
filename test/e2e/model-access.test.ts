// Model allow-lists and prices through the HTTP API: a tier's list, a key's own list narrowing it,
// the refusal (403 with a stable code, before any quota is touched) on every submit path, the
// filtered model list; and the cost of settled requests in the ledger, /v1/usage, the CSV and
// the metrics.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, ledgerRows, MASTER_KEY, readSse, startTestSluice, usageWindows, type TestSluice } from '../helpers/app.ts';
import { connectWs } from '../helpers/ws-client.ts';

const TIER = { requestsPerDay: 1000, tokensPerDay: 1_000_000, requestsPerMonth: 10_000, tokensPerMonth: 10_000_000, maxTokens: 256, concurrentStreams: 4, priority: 5 };
const PRICE = { inputPerMillion: 2, outputPerMillion: 10 };
const ALL = ['sim', 'priced', 'embed', 'locked'];

interface ApiError { error: { code: string; param: string | null; type: string } }

async function createKey(base: string, user: { id: string; tier: string; models?: string[] }) {
  const call = api(base);
  const u = await call('/admin/users', { method: 'POST', json: { id: user.id, tier: user.tier } });
  assert.equal(u.status, 201);
  const k = await call('/admin/keys', { method: 'POST', json: { user_id: user.id, ...(user.models && { models: user.models }) } });
  assert.equal(k.status, 201, await k.clone().text());
  return (await k.json()) as { key: string; id: string; models: string[] | null; effective_models: string[] | null };
}

const modelIds = async (base: string, key: string) =>
  ((await (await api(base, key)('/v1/models')).json()) as { data: { id: string }[] }).data.map((m) => m.id).sort();

const chat = (model: string, extra: Record<string, unknown> = {}) => ({ model, max_tokens: 6, messages: [{ role: 'user', content: 'count these few words' }], ...extra });

describe('model allow-lists and prices', () => {
  let app: TestSluice;
  before(async () => {
    app = await startTestSluice({
      catalogue: {
        sim: { deployments: [{ url: 'sim://' }] },
        locked: { deployments: [{ url: 'sim://' }] },
        priced: { deployments: [{ url: 'sim://' }], price: PRICE },
        embed: { deployments: [{ url: 'sim://' }], kinds: ['embeddings'] },
      },
      tiers: { pro: TIER, basic: { ...TIER, models: ['sim', 'priced', 'embed'] } },
      defaultTier: 'pro',
    });
  });
  after(() => app.stop());

  describe('allow-lists', () => {
    it('a tier\'s list: the key lists and uses only those models; another is refused with 403 naming model, and no quota moves', async () => {
      const { key, models, effective_models } = await createKey(app.url, { id: 'basic-user', tier: 'basic' });
      assert.equal(models, null);
      assert.deepEqual(effective_models, ['sim', 'priced', 'embed']);
      assert.deepEqual(await modelIds(app.url, key), ['embed', 'priced', 'sim']);
      const call = api(app.url, key);
      const before = await usageWindows(app.url, key);
      for (const model of ['locked', 'no-such-model']) {
        const res = await call('/v1/chat/completions', { method: 'POST', json: chat(model) });
        assert.equal(res.status, 403, `${model}: refused alike, whether it exists or not`);
        const body = (await res.json()) as ApiError;
        assert.equal(body.error.code, 'SLUICE_ERR_MODEL_NOT_ALLOWED');
        assert.equal(body.error.param, 'model');
        assert.equal(body.error.type, 'permission_error');
        const queued = await call('/v1/requests', { method: 'POST', json: chat(model) });
        assert.equal(queued.status, 403);
      }
      assert.deepEqual(await usageWindows(app.url, key), before, 'a refusal leaves no trace in any counter');
      assert.equal((await call('/v1/models/locked')).status, 404, 'a model the key may not use is as unknown as one that does not exist');
      assert.equal(((await (await call('/v1/models/locked')).json()) as ApiError).error.code, 'SLUICE_ERR_UNKNOWN_MODEL');
      assert.equal((await call('/v1/models/priced')).status, 200);
      assert.equal((await call('/v1/chat/completions', { method: 'POST', json: chat('sim') })).status, 200);
    });

    it('a key\'s own list narrows its tier\'s and never widens it', async () => {
      const { key, models, effective_models } = await createKey(app.url, { id: 'narrow-user', tier: 'basic', models: ['priced', 'locked', 'priced'] });
      assert.deepEqual(models, ['priced', 'locked'], 'stored once each');
      assert.deepEqual(effective_models, ['priced'], 'locked is outside the tier');
      assert.deepEqual(await modelIds(app.url, key), ['priced']);
      const call = api(app.url, key);
      assert.equal((await call('/v1/chat/completions', { method: 'POST', json: chat('locked') })).status, 403);
      assert.equal((await call('/v1/chat/completions', { method: 'POST', json: chat('sim') })).status, 403);
      assert.equal((await call('/v1/chat/completions', { method: 'POST', json: chat('priced') })).status, 200);
      // A tier without a list: the key's list alone.
      const pro = await createKey(app.url, { id: 'pro-user', tier: 'pro', models: ['locked'] });
      assert.deepEqual(await modelIds(app.url, pro.key), ['locked']);
      const listed = (await (await api(app.url)('/admin/keys?user_id=narrow-user')).json()) as { data: { models: string[] | null }[] };
      assert.deepEqual(listed.data.map((k) => k.models), [['priced', 'locked']]);
    });

    it('the master key sees and uses every model', async () => {
      assert.deepEqual(await modelIds(app.url, MASTER_KEY), [...ALL].sort());
      assert.equal((await api(app.url)('/v1/chat/completions', { method: 'POST', json: chat('locked') })).status, 200);
    });

    it('a WebSocket submit and POST /chat go through the same admission', async () => {
      const { key } = await createKey(app.url, { id: 'ws-user', tier: 'basic', models: ['priced'] });
      const c = await connectWs(app.url, { key });
      c.send({ type: 'submit', id: 'refused', request: chat('sim') });
      const e = await c.next((m) => m.type === 'error' && m.id === 'refused');
      assert.equal(e.error.code, 'SLUICE_ERR_MODEL_NOT_ALLOWED');
      assert.equal(e.error.param, 'model');
      c.send({ type: 'submit', id: 'ok', request: chat('priced') });
      const accepted = await c.next((m) => m.type === 'accepted' && m.id === 'ok');
      await c.next((m) => m.type === 'completed' && m.request_id === accepted.request_id);
      c.close();

      const call = api(app.url, key);
      const refused = await call('/chat', { method: 'POST', json: { message: 'hi', model: 'sim' } });
      assert.equal(refused.status, 403);
      assert.equal(((await refused.json()) as ApiError).error.code, 'SLUICE_ERR_MODEL_NOT_ALLOWED');
      // Without a model, /chat takes the first one the key may use.
      const res = await call('/chat', { method: 'POST', json: { message: 'hi', max_tokens: 4 } });
      assert.equal(res.status, 200);
      const frames = await readSse(res, (f) => f.event === 'completed' || f.event === 'error');
      assert.equal(JSON.parse(frames.find((f) => f.event === 'connected')!.data).model, 'priced');
      assert.equal(frames.at(-1)?.event, 'completed');
    });

    it('a chat request to a model that serves only embeddings is a 400 with a stable code', async () => {
      const res = await api(app.url)('/v1/chat/completions', { method: 'POST', json: chat('embed') });
      assert.equal(res.status, 400);
      const body = (await res.json()) as ApiError;
      assert.equal(body.error.code, 'SLUICE_ERR_WRONG_MODEL_KIND');
      assert.equal(body.error.param, 'model');
    });

    it('the admin API refuses a malformed model list with a 400 naming models', async () => {
      await api(app.url)('/admin/users', { method: 'POST', json: { id: 'bad-list', tier: 'pro' } });
      for (const models of [[], [1], 'sim', [''], Array.from({ length: 257 }, (_, i) => `m${i}`)]) {
        const res = await api(app.url)('/admin/keys', { method: 'POST', json: { user_id: 'bad-list', models } });
        assert.equal(res.status, 400, JSON.stringify(models).slice(0, 40));
        const body = (await res.json()) as ApiError;
        assert.equal(body.error.code, 'SLUICE_ERR_VALIDATION');
        assert.match(body.error.param ?? '', /^models/);
      }
    });
  });

  describe('prices and cost', () => {
    it('stores the cost of every settled request of a priced model, null for an unpriced one; /v1/usage, the CSV and the metrics report it', async () => {
      const { key } = await createKey(app.url, { id: 'payer', tier: 'pro' });
      const call = api(app.url, key);
      const ids: Record<string, string[]> = { priced: [], sim: [] };
      for (const [model, mode] of [['priced', 'direct'], ['priced', 'queued'], ['sim', 'direct']] as const) {
        const res = await call('/v1/chat/completions', { method: 'POST', json: chat(model, { sluice_mode: mode }) });
        assert.equal(res.status, 200);
        ids[model]!.push(res.headers.get('x-request-id')!);
      }
      let pricedCost = 0;
      for (const id of ids.priced!) {
        const row = await app.store.ledgerRow(id);
        assert.ok(row && row.promptTokens > 0 && row.completionTokens > 0);
        const expected = (row.promptTokens * PRICE.inputPerMillion + row.completionTokens * PRICE.outputPerMillion) / 1e6;
        assert.equal(row.costUsd, expected);
        pricedCost += expected;
      }
      assert.equal((await app.store.ledgerRow(ids.sim![0]!))?.costUsd, null);

      const usage = (await (await call('/v1/usage')).json()) as {
        spend: { currency: string; total_usd: number; models: { model: string; requests: number; cost_usd: number | null }[] };
        recent: { request_id: string; cost_usd: number | null; deployment: string | null }[];
      };
      assert.equal(usage.spend.currency, 'USD');
      assert.ok(Math.abs(usage.spend.total_usd - pricedCost) < 1e-9);
      assert.deepEqual(usage.spend.models.map((m) => [m.model, m.requests, m.cost_usd === null]), [['priced', 2, false], ['sim', 1, true]]);
      assert.ok(Math.abs(usage.spend.models[0]!.cost_usd! - pricedCost) < 1e-9);
      const recentPriced = usage.recent.find((r) => r.request_id === ids.priced![0]);
      assert.ok(recentPriced?.cost_usd && recentPriced.cost_usd > 0);
      assert.equal(usage.recent.find((r) => r.request_id === ids.sim![0])?.cost_usd, null);

      const csv = await (await api(app.url)('/admin/usage.csv?user_id=payer')).text();
      assert.ok(csv.split('\n')[0]!.endsWith(',cost_usd,deployment'));
      const rows = await ledgerRows(app.url, 'payer');
      const cost = (id: string) => (rows.find((r) => r.request_id === id) as unknown as { cost_usd: string }).cost_usd;
      assert.equal(Number(cost(ids.priced![0]!)), (await app.store.ledgerRow(ids.priced![0]!))?.costUsd);
      assert.doesNotMatch(cost(ids.priced![0]!), /e/, 'plain decimal notation');
      assert.equal(cost(ids.sim![0]!), '', 'unpriced: empty');

      const metrics = await (await fetch(`${app.url}/metrics`)).text();
      const line = metrics.split('\n').find((l) => l.startsWith('sluice_spend_usd_total{') && l.includes('model="priced"') && l.includes('user="payer"'));
      assert.ok(line, 'spend per model and user');
      assert.ok(Math.abs(Number(line.split(' ').at(-1)) - pricedCost) < 1e-9);
      assert.ok(!metrics.split('\n').some((l) => l.startsWith('sluice_spend_usd_total{') && l.includes('model="sim"')), 'no spend for an unpriced model');
    });
  });
});
