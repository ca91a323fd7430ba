// Admin input is validated before it reaches the store: tier names are looked up as configured
// tiers only (never as properties every object has), quota numbers are bounded to what their
// columns hold, and usage/list queries are bounded. Each case is a 400 with a stable code, never a 500.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateApiKey } from '../../src/core/api-keys.ts';
import { api, createUserKey, startTestSluice, type TestSluice } from '../helpers/app.ts';

const BUILT_IN_NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'];

describe('admin input', () => {
  let app: TestSluice;
  let call: ReturnType<typeof api>;
  before(async () => { app = await startTestSluice(); call = api(app.url); });
  after(() => app.stop());

  async function expectError(res: Response, code: string, param?: string): Promise<void> {
    const text = await res.text();
    assert.equal(res.status, 400, text);
    const j = JSON.parse(text) as { error: { code: string; param: string | null } };
    assert.equal(j.error.code, code, text);
    if (param !== undefined) assert.equal(j.error.param, param, text);
  }

  it('a tier named like a built-in object property is unknown on create and on patch', async () => {
    for (const tier of BUILT_IN_NAMES) {
      await expectError(await call('/admin/users', { method: 'POST', json: { id: `u-${tier.replaceAll('_', '')}`, tier } }), 'SLUICE_ERR_UNKNOWN_TIER', 'tier');
    }
    assert.equal((await call('/admin/users', { method: 'POST', json: { id: 'patched', tier: 'free' } })).status, 201);
    for (const tier of BUILT_IN_NAMES) {
      await expectError(await call('/admin/users/patched', { method: 'PATCH', json: { tier } }), 'SLUICE_ERR_UNKNOWN_TIER', 'tier');
    }
    const u = (await (await call('/admin/users/patched')).json()) as { tier: string };
    assert.equal(u.tier, 'free');
  });

  it('a user created with a configured tier works end to end', async () => {
    const key = await createUserKey(app.url, { id: 'tiered', tier: 'pro' });
    const res = await api(app.url, key)('/v1/chat/completions', { method: 'POST', json: { model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(res.status, 200, await res.clone().text());
    const usage = (await (await api(app.url, key)('/v1/usage')).json()) as { tier: string; limits: { max_tokens: number } };
    assert.equal(usage.tier, 'pro');
    assert.equal(usage.limits.max_tokens, app.config.tiers.pro?.maxTokens);
  });

  it('a user whose stored tier is a built-in property name (stored before this check) gets the default tier, not a 500', async () => {
    for (const tier of ['constructor', 'toString']) {
      const id = `legacy-${tier}`;
      await app.store.createUser({ id, tier });
      const { key, hash, prefix } = generateApiKey();
      await app.store.createApiKey({ id: `key-${id}`, userId: id, hash, prefix, admin: false });
      const res = await api(app.url, key)('/v1/chat/completions', { method: 'POST', json: { model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] } });
      assert.equal(res.status, 200, await res.clone().text());
      const q = (await (await call(`/admin/quotas/${id}`)).json()) as { effective: { maxTokens: number } };
      assert.equal(q.effective.maxTokens, app.config.tiers[app.config.defaultTier]?.maxTokens);
    }
  });

  it('quota override numbers beyond their columns -> 400 SLUICE_ERR_VALIDATION naming the field', async () => {
    assert.equal((await call('/admin/users', { method: 'POST', json: { id: 'quoted', tier: 'free' } })).status, 201);
    const put = (body: Record<string, number>) => call('/admin/quotas/quoted', { method: 'PUT', json: body });
    await expectError(await put({ max_tokens: 1e15 }), 'SLUICE_ERR_VALIDATION', 'max_tokens');
    await expectError(await put({ max_tokens: 2 ** 31 }), 'SLUICE_ERR_VALIDATION', 'max_tokens');
    await expectError(await put({ concurrent_streams: 2 ** 31 }), 'SLUICE_ERR_VALIDATION', 'concurrent_streams');
    for (const field of ['requests_per_day', 'tokens_per_day', 'requests_per_month', 'tokens_per_month']) {
      await expectError(await put({ [field]: 2 ** 53 }), 'SLUICE_ERR_VALIDATION', field);
      await expectError(await put({ [field]: 1e300 }), 'SLUICE_ERR_VALIDATION', field);
    }
    await expectError(await put({ priority: 10 }), 'SLUICE_ERR_VALIDATION', 'priority');
    // The largest values the columns hold are accepted and read back exactly.
    const ok = await put({ max_tokens: 2 ** 31 - 1, concurrent_streams: 2 ** 31 - 1, tokens_per_month: Number.MAX_SAFE_INTEGER, priority: 9 });
    assert.equal(ok.status, 200, await ok.clone().text());
    const got = (await (await call('/admin/quotas/quoted')).json()) as { override: Record<string, number> };
    assert.equal(got.override.max_tokens, 2 ** 31 - 1);
    assert.equal(got.override.tokens_per_month, Number.MAX_SAFE_INTEGER);
  });

  it('usage.csv dates outside 1970..9999 -> 400 naming the parameter; in range -> 200', async () => {
    await expectError(await call('/admin/usage.csv?to=%2B275760-09-13'), 'SLUICE_ERR_VALIDATION', 'to');
    await expectError(await call('/admin/usage.csv?to=20000-01-01'), 'SLUICE_ERR_VALIDATION', 'to');
    await expectError(await call('/admin/usage.csv?from=-000001-01-01&to=2020-01-01'), 'SLUICE_ERR_VALIDATION', 'from');
    await expectError(await call('/admin/usage.csv?from=1969-12-31&to=2020-01-01'), 'SLUICE_ERR_VALIDATION', 'from');
    await expectError(await call('/admin/usage.csv?from=yesterday'), 'SLUICE_ERR_VALIDATION', 'from');
    await expectError(await call('/admin/usage.csv?to=2020-01-01&to=2021-01-01'), 'SLUICE_ERR_VALIDATION', 'to');
    const far = await call('/admin/usage.csv?from=2000-01-01&to=9999-12-31');
    assert.equal(far.status, 200, await far.clone().text());
    assert.match(await far.text(), /^request_id,/);
  });

  it('/admin/requests: limit must be an integer 1..1000; repeated parameters are refused', async () => {
    for (const limit of ['abc', '0', '1001', '1e3', '-1', '2.5', '']) {
      await expectError(await call(`/admin/requests?limit=${limit}`), 'SLUICE_ERR_VALIDATION', 'limit');
    }
    await expectError(await call('/admin/requests?status=bogus'), 'SLUICE_ERR_VALIDATION', 'status');
    await expectError(await call('/admin/requests?user_id=a&user_id=b'), 'SLUICE_ERR_VALIDATION', 'user_id');
    await expectError(await call('/admin/keys?user_id=a&user_id=b'), 'SLUICE_ERR_VALIDATION', 'user_id');
    const res = await call('/admin/requests?limit=1000&status=completed');
    assert.equal(res.status, 200, await res.clone().text());
  });
});
