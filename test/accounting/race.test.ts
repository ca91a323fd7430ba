// Exact accounting under concurrency: 500 concurrent admissions against a budget that fits
// exactly K of them admit exactly K; counters end equal to the ledger's sum.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { countPromptTokens } from '../../src/core/tokens.ts';
import { api, createUserKey, ledgerRows, startTestSluice, usageWindows, waitFor, type TestSluice } from '../helpers/app.ts';

const CONTENT = 'Count the tokens of this prompt exactly';
const estimate = (maxTokens: number) => countPromptTokens([{ role: 'user', content: CONTENT }]) + maxTokens;

async function settled(app: TestSluice, userId: string, n: number) {
  return waitFor(async () => { const rows = await ledgerRows(app.url, userId); return rows.length === n && rows; }, 30_000, 100);
}

// Users are on the enterprise tier so its in-flight cap (1024) stays above the 500 concurrent requests.
describe('accounting race (embedded limiter)', () => {
  let app: TestSluice;
  // 500 concurrent fetches open up to 500 sockets from 127.0.0.1: lift the per-address cap.
  before(async () => { app = await startTestSluice({ http: { maxConnectionsPerIp: 0 }, sim: { ttftMs: 0, itlMs: 0 }, worker: { concurrency: 32, claimMs: 15_000, maxAttempts: 3, retryBaseMs: 50, requestTimeoutMs: 600_000 } }); });
  after(() => app.stop());

  it('500 concurrent requests, budget fits exactly K=137: exactly K admitted, the rest 429, counters == ledger', async () => {
    const K = 137;
    const per = estimate(16);
    const key = await createUserKey(app.url, { id: 'race-fixed', tier: 'enterprise', quota: { tokens_per_day: K * per, requests_per_day: 100_000, tokens_per_month: 100_000_000, requests_per_month: 100_000 } });
    const call = api(app.url, key);
    const results = await Promise.all(Array.from({ length: 500 }, () =>
      call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens: 16, messages: [{ role: 'user', content: CONTENT }] } })
        .then(async (r) => ({ status: r.status, body: await r.json() as { error?: { code: string } }, headers: r.headers }))));
    const admitted = results.filter((r) => r.status === 202);
    const refused = results.filter((r) => r.status === 429);
    console.log(`race: ${admitted.length} admitted, ${refused.length} refused (K=${K}, estimate=${per})`);
    assert.equal(admitted.length, K);
    assert.equal(refused.length, 500 - K);
    for (const r of refused) {
      assert.equal(r.body.error?.code, 'SLUICE_ERR_QUOTA_EXCEEDED');
      assert.ok(Number(r.headers.get('retry-after')) > 0);
      assert.equal(r.headers.get('x-ratelimit-limit-tokens'), String(K * per));
    }
    const during = await usageWindows(app.url, key);
    assert.equal(during.daily_tokens!.used, K * per, 'reserved exactly K estimates, no overshoot');
    const rows = await settled(app, 'race-fixed', K);
    const ledgerSum = rows.reduce((s, r) => s + r.charged_tokens, 0);
    const after = await usageWindows(app.url, key);
    assert.equal(after.daily_tokens!.used, ledgerSum, 'counters equal the ledger');
    assert.equal(after.monthly_tokens!.used, ledgerSum);
    assert.equal(after.daily_requests!.used, K);
  });

  it('mixed max_tokens: never over the limit, counters == sum of admitted estimates, then == ledger', async () => {
    const limit = 20_000;
    const key = await createUserKey(app.url, { id: 'race-mixed', tier: 'enterprise', quota: { tokens_per_day: limit, requests_per_day: 100_000, tokens_per_month: 100_000_000, requests_per_month: 100_000 } });
    const call = api(app.url, key);
    let seed = 42;
    const rand = () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31; };
    const sizes = Array.from({ length: 500 }, () => 1 + Math.floor(rand() * 200));
    const results = await Promise.all(sizes.map((max_tokens) =>
      call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens, messages: [{ role: 'user', content: CONTENT }] } }).then((r) => ({ status: r.status, max_tokens }))));
    const admitted = results.filter((r) => r.status === 202);
    assert.equal(admitted.length + results.filter((r) => r.status === 429).length, 500, 'every request is admitted or refused with 429');
    const reserved = admitted.reduce((s, r) => s + estimate(r.max_tokens), 0);
    const during = await usageWindows(app.url, key);
    assert.ok(reserved <= limit, `admitted ${reserved} within ${limit}`);
    assert.equal(during.daily_tokens!.used, reserved, 'the counter holds exactly the admitted estimates');
    assert.ok(limit - reserved < Math.max(...results.filter((r) => r.status === 429).map((r) => estimate(r.max_tokens))), 'refusals happened only because the budget was nearly spent');
    const rows = await settled(app, 'race-mixed', admitted.length);
    const ledgerSum = rows.reduce((s, r) => s + r.charged_tokens, 0);
    assert.equal((await usageWindows(app.url, key)).daily_tokens!.used, ledgerSum);
  });

  it('the request-count window: requests_per_day = K admits exactly K', async () => {
    const key = await createUserKey(app.url, { id: 'race-requests', tier: 'enterprise', quota: { requests_per_day: 25, tokens_per_day: 100_000_000, tokens_per_month: 100_000_000, requests_per_month: 100_000 } });
    const call = api(app.url, key);
    const statuses = await Promise.all(Array.from({ length: 120 }, () =>
      call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: 'x' }] } }).then((r) => r.status)));
    assert.equal(statuses.filter((s) => s === 202).length, 25);
    assert.equal(statuses.filter((s) => s === 429).length, 95);
  });
});
