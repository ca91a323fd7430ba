// POST /v1/embeddings: OpenAI's shape, authenticated and allowed like chat, and accounted like it:
// one request and the input tokens against every window, one request row and one ledger row,
// a failure refunded, a model that does not serve embeddings refused before anything is reserved.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, createUserKey, startTestSluice, usageWindows, type TestSluice, type UsageWindow } from '../helpers/app.ts';
import { countTextTokens } from '../../src/core/tokens.ts';

const PRICE = { inputPerMillion: 0.5, outputPerMillion: 0 };
/** The catalogue, its embeddings model served by `sim://` with these options (failure injection, pacing). */
const catalogueWith = (embedUrl = 'sim://') => ({
  embed: { deployments: [{ url: embedUrl }], kinds: ['embeddings'], price: PRICE },
  'chat-only': { deployments: [{ url: 'sim://' }], kinds: ['chat'] },
  other: { deployments: [{ url: 'sim://' }] },
});

interface Embeddings { object: string; model: string; data: { object: string; index: number; embedding: number[] | string }[]; usage: { prompt_tokens: number; total_tokens: number } }
interface ApiError { error: { code: string; param: string | null } }

const used = (w: Record<string, UsageWindow>) => Object.fromEntries(Object.entries(w).map(([k, v]) => [k, v.used]));

describe('POST /v1/embeddings', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ catalogue: catalogueWith() }); });
  after(() => app.stop());

  it('answers in OpenAI\'s shape and is accounted once: one request and the input tokens in every window, one ledger row', async () => {
    const key = await createUserKey(app.url, { id: 'embedder' });
    const input = ['The river was quiet this morning.', 'A second, different input']
    const tokens = input.reduce((n, s) => n + countTextTokens(s), 0);
    const before = used(await usageWindows(app.url, key));
    const res = await api(app.url, key)('/v1/embeddings', { method: 'POST', json: { model: 'embed', input } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as Embeddings;
    assert.equal(body.object, 'list');
    assert.equal(body.model, 'embed');
    assert.deepEqual(body.data.map((d) => [d.object, d.index]), [['embedding', 0], ['embedding', 1]]);
    for (const d of body.data) {
      assert.ok(Array.isArray(d.embedding) && d.embedding.length === 256, 'the simulator\'s default dimensions');
      assert.ok(Math.abs(Math.hypot(...(d.embedding as number[])) - 1) < 1e-9, 'unit vectors');
    }
    assert.notDeepEqual(body.data[0]!.embedding, body.data[1]!.embedding);
    assert.deepEqual(body.usage, { prompt_tokens: tokens, total_tokens: tokens });
    assert.ok(res.headers.get('x-ratelimit-remaining-tokens'));

    const after = used(await usageWindows(app.url, key));
    assert.deepEqual(after, {
      daily_requests: before.daily_requests! + 1, monthly_requests: before.monthly_requests! + 1,
      daily_tokens: before.daily_tokens! + tokens, monthly_tokens: before.monthly_tokens! + tokens,
    });

    const id = res.headers.get('x-request-id')!;
    const record = await app.store.getRequest(id);
    assert.equal(record?.status, 'completed');
    assert.equal(record?.mode, 'direct');
    assert.equal(record?.output, null);
    assert.deepEqual(record?.payload.embedding, { input });
    const rows = await app.store.usageRows({ from: new Date(0), to: new Date(Date.now() + 60_000), userId: 'embedder' });
    assert.equal(rows.length, 1, 'one ledger row');
    assert.deepEqual([rows[0]!.requestId, rows[0]!.promptTokens, rows[0]!.completionTokens, rows[0]!.chargedTokens, rows[0]!.chargedRequests], [id, tokens, 0, tokens, 1]);
    assert.equal(rows[0]!.costUsd, tokens * PRICE.inputPerMillion / 1e6);

    const view = (await (await api(app.url, key)(`/v1/requests/${id}`)).json()) as { status: string };
    assert.equal(view.status, 'completed');
  });

  it('takes one string, base64 encoding and dimensions', async () => {
    const res = await api(app.url)('/v1/embeddings', { method: 'POST', json: { model: 'embed', input: 'one text', encoding_format: 'base64', dimensions: 4, user: 'end-user-1' } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as Embeddings;
    assert.equal(body.data.length, 1);
    const bytes = Buffer.from(body.data[0]!.embedding as string, 'base64');
    assert.equal(bytes.length, 4 * 4, 'four little-endian float32');
    const floats = Array.from({ length: 4 }, (_, i) => bytes.readFloatLE(i * 4));
    assert.ok(Math.abs(Math.hypot(...floats) - 1) < 1e-6);
  });

  it('refuses bad bodies with a 400 naming the field', async () => {
    const cases: [unknown, string, string | null][] = [
      [{ model: 'embed', input: [1, 2, 3] }, 'SLUICE_ERR_VALIDATION', 'input'],
      [{ model: 'embed', input: [[1, 2], [3]] }, 'SLUICE_ERR_VALIDATION', 'input'],
      [{ model: 'embed', input: '' }, 'SLUICE_ERR_VALIDATION', 'input'],
      [{ model: 'embed', input: [] }, 'SLUICE_ERR_VALIDATION', 'input'],
      [{ model: 'embed', input: Array.from({ length: 2049 }, () => 'x') }, 'SLUICE_ERR_VALIDATION', 'input'],
      [{ model: 'embed' }, 'SLUICE_ERR_VALIDATION', 'input'],
      [{ input: 'x' }, 'SLUICE_ERR_VALIDATION', 'model'],
      [{ model: 'embed', input: 'x', encoding_format: 'int8' }, 'SLUICE_ERR_VALIDATION', 'encoding_format'],
      [{ model: 'embed', input: 'x', dimensions: 0 }, 'SLUICE_ERR_VALIDATION', 'dimensions'],
      [{ model: 'embed', input: 'x', top_k: 3 }, 'SLUICE_ERR_VALIDATION', 'top_k'],
      [{ model: 'embed', input: 'a\u0000b' }, 'SLUICE_ERR_INVALID_TEXT', 'input'],
      [['not an object'], 'SLUICE_ERR_VALIDATION', null],
    ];
    for (const [json, code, param] of cases) {
      const res = await api(app.url)('/v1/embeddings', { method: 'POST', json });
      assert.equal(res.status, 400, JSON.stringify(json).slice(0, 60));
      const body = (await res.json()) as ApiError;
      assert.equal(body.error.code, code, JSON.stringify(json).slice(0, 60));
      if (param === null) assert.equal(body.error.param, null);
      else assert.match(body.error.param ?? '', new RegExp(`^${param}`), JSON.stringify(json).slice(0, 60));
    }
  });

  it('refuses a model that serves only chat (400), an unknown one (404) and one the key may not use (403), leaving no trace', async () => {
    const key = await createUserKey(app.url, { id: 'embed-refused' });
    const call = api(app.url, key);
    const before = used(await usageWindows(app.url, key));
    const kind = await call('/v1/embeddings', { method: 'POST', json: { model: 'chat-only', input: 'x' } });
    assert.equal(kind.status, 400);
    assert.equal(((await kind.json()) as ApiError).error.code, 'SLUICE_ERR_WRONG_MODEL_KIND');
    const unknown = await call('/v1/embeddings', { method: 'POST', json: { model: 'nope', input: 'x' } });
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as ApiError).error.code, 'SLUICE_ERR_UNKNOWN_MODEL');
    assert.deepEqual(used(await usageWindows(app.url, key)), before);

    await api(app.url)('/admin/users', { method: 'POST', json: { id: 'embed-narrow', tier: 'pro' } });
    const k = await api(app.url)('/admin/keys', { method: 'POST', json: { user_id: 'embed-narrow', models: ['other'] } });
    const narrow = ((await k.json()) as { key: string }).key;
    const refused = await api(app.url, narrow)('/v1/embeddings', { method: 'POST', json: { model: 'embed', input: 'x' } });
    assert.equal(refused.status, 403);
    assert.equal(((await refused.json()) as ApiError).error.code, 'SLUICE_ERR_MODEL_NOT_ALLOWED');
    assert.deepEqual(await app.store.usageRows({ from: new Date(0), to: new Date(Date.now() + 60_000), userId: 'embed-refused' }), []);
  });

  it('refuses input larger than a whole token window with a 429, reserving nothing', async () => {
    const key = await createUserKey(app.url, { id: 'embed-small', quota: { tokens_per_day: 5 } });
    const res = await api(app.url, key)('/v1/embeddings', { method: 'POST', json: { model: 'embed', input: 'a sentence of many more than five tokens, surely' } });
    assert.equal(res.status, 429);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'SLUICE_ERR_QUOTA_EXCEEDED');
    assert.match(body.error.message, /its input/);
    assert.equal((await usageWindows(app.url, key)).daily_tokens?.used, 0);
  });

  it('an embeddings request that reaches a worker (its gateway stopped) is failed and refunded, not run', async () => {
    const { record } = await app.store.insertRequest({
      id: crypto.randomUUID(), userId: 'orphan-user', keyId: null, model: 'embed', mode: 'direct',
      payload: { messages: [], maxTokens: 0, embedding: { input: ['left behind'] } }, priority: 1, idempotencyKey: null,
      bodyHash: '', estimatedTokens: 3, promptTokens: 3,
    });
    await app.requests.enqueue(record);
    const ended = await waitForEnd(app, record.id);
    assert.equal(ended.status, 'failed');
    assert.equal(ended.error?.code, 'SLUICE_ERR_UNAVAILABLE');
    const row = await app.store.ledgerRow(record.id);
    assert.deepEqual([row?.chargedTokens, row?.chargedRequests, row?.costUsd], [0, 0, 0]);
  });
});

async function waitForEnd(app: TestSluice, id: string) {
  for (let i = 0; i < 400; i++) {
    const r = await app.store.getRequest(id);
    if (r && (r.status === 'completed' || r.status === 'failed' || r.status === 'cancelled')) return r;
    await new Promise((ok) => setTimeout(ok, 25));
  }
  throw new Error(`request ${id} did not end`);
}

async function waitForRows(app: TestSluice, userId: string) {
  for (let i = 0; i < 400; i++) {
    const rows = await app.store.usageRows({ from: new Date(0), to: new Date(Date.now() + 60_000), userId });
    if (rows.length > 0) return rows;
    await new Promise((ok) => setTimeout(ok, 25));
  }
  throw new Error(`no ledger row for ${userId}`);
}

describe('POST /v1/embeddings when the backend fails', () => {
  it('a permanent failure is a 502 and refunded: the windows end where they began, one ledger row charging nothing', async () => {
    const app = await startTestSluice({ catalogue: catalogueWith('sim://?fail_rate=1&fail_kind=permanent') });
    try {
      const key = await createUserKey(app.url, { id: 'embed-fails' });
      const before = used(await usageWindows(app.url, key));
      const res = await api(app.url, key)('/v1/embeddings', { method: 'POST', json: { model: 'embed', input: ['x y z'] } });
      assert.equal(res.status, 502);
      assert.equal(((await res.json()) as ApiError).error.code, 'SLUICE_ERR_MODEL_PERMANENT');
      assert.deepEqual(used(await usageWindows(app.url, key)), before);
      const rows = await app.store.usageRows({ from: new Date(0), to: new Date(Date.now() + 60_000), userId: 'embed-fails' });
      assert.equal(rows.length, 1);
      assert.deepEqual([rows[0]!.status, rows[0]!.chargedTokens, rows[0]!.chargedRequests, rows[0]!.costUsd], ['failed', 0, 0, 0]);
    } finally { await app.stop(); }
  });

  it('a transient failure is retried in the gateway; the request is charged once', async () => {
    const app = await startTestSluice({ catalogue: catalogueWith('sim://?fail_rate=1&fail_count=1'), worker: { maxAttempts: 2, retryBaseMs: 10 } });
    try {
      const key = await createUserKey(app.url, { id: 'embed-retry' });
      const res = await api(app.url, key)('/v1/embeddings', { method: 'POST', json: { model: 'embed', input: 'retry me' } });
      assert.equal(res.status, 200);
      const id = res.headers.get('x-request-id')!;
      assert.equal((await app.store.getRequest(id))?.attempt, 2);
      const tokens = countTextTokens('retry me');
      assert.equal((await usageWindows(app.url, key)).daily_tokens?.used, tokens);
      assert.equal((await usageWindows(app.url, key)).daily_requests?.used, 1);
      assert.equal((await app.store.usageRows({ from: new Date(0), to: new Date(Date.now() + 60_000), userId: 'embed-retry' })).length, 1);
    } finally { await app.stop(); }
  });

  it('a caller that goes away mid-call cancels it: the input is charged (the backend had it), once, and no reservation stays open', async () => {
    const app = await startTestSluice({ catalogue: catalogueWith('sim://?ttft_ms=5000') });
    try {
      const key = await createUserKey(app.url, { id: 'embed-gone' });
      const ac = new AbortController();
      const call = api(app.url, key)('/v1/embeddings', { method: 'POST', json: { model: 'embed', input: 'leaving early' }, signal: ac.signal });
      await new Promise((ok) => setTimeout(ok, 300));
      ac.abort();
      await assert.rejects(call);
      const rows = await waitForRows(app, 'embed-gone');
      const tokens = countTextTokens('leaving early');
      assert.deepEqual([rows[0]!.status, rows[0]!.chargedTokens, rows[0]!.chargedRequests], ['cancelled', tokens, 1]);
      const w = await usageWindows(app.url, key);
      assert.deepEqual([w.daily_tokens?.used, w.daily_requests?.used], [tokens, 1]);
      assert.deepEqual(await app.limiter.expired(Number.MAX_SAFE_INTEGER, 10), [], 'settled: no open reservation');
    } finally { await app.stop(); }
  });

  it('a backend that does not serve embeddings is a 501 with a stable code, before anything is reserved', async () => {
    const app = await startTestSluice({ catalogue: catalogueWith() });
    try {
      // A backend without the optional method, as the port allows.
      Object.defineProperty(app.model, 'embed', { value: undefined });
      const key = await createUserKey(app.url, { id: 'embed-none' });
      const res = await api(app.url, key)('/v1/embeddings', { method: 'POST', json: { model: 'embed', input: 'x' } });
      assert.equal(res.status, 501);
      assert.equal(((await res.json()) as ApiError).error.code, 'SLUICE_ERR_EMBEDDINGS_UNSUPPORTED');
      assert.equal((await usageWindows(app.url, key)).daily_requests?.used, 0);
    } finally { await app.stop(); }
  });
});
