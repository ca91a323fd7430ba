// Per-user limits that no delivery mode sidesteps: direct calls hold a stream lease for the whole
// call (streaming or not), and a user's queued + running requests are capped by tier (maxInFlight).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, createUserKey, startTestSluice, usageWindows, waitFor, type TestSluice } from '../helpers/app.ts';

const chat = (max_tokens: number, extra: Record<string, unknown> = {}) => ({ model: 'sim', max_tokens, messages: [{ role: 'user', content: 'Tell me about rivers' }], ...extra });
const big = { tokens_per_day: 10_000_000, requests_per_day: 100_000, tokens_per_month: 100_000_000, requests_per_month: 1_000_000 };
interface ErrorBody { error: { code: string; message: string } }

describe('per-user limits across delivery modes', () => {
  let app: TestSluice;
  // A slow first token keeps each call open long enough that three overlap on a loaded machine.
  before(async () => { app = await startTestSluice({ sim: { ttftMs: 1500, itlMs: 2 } }); });
  after(() => app.stop());

  it('direct mode with stream:false holds a stream lease: the third concurrent call of a free user is refused', async () => {
    const key = await createUserKey(app.url, { id: 'direct-free', tier: 'free', quota: big });
    const call = api(app.url, key);
    const direct = () => call('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': 'direct' }, json: chat(4) });
    const responses = await Promise.all([direct(), direct(), direct()]);
    const statuses = responses.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 429], 'free tier has 2 concurrent streams');
    const refused = responses.find((r) => r.status === 429)!;
    assert.equal(((await refused.json()) as ErrorBody).error.code, 'SLUICE_ERR_STREAM_LIMIT');
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    for (const r of responses) if (r.status === 200) assert.equal(((await r.json()) as { object: string }).object, 'chat.completion');
    assert.equal((await usageWindows(app.url, key)).daily_requests!.used, 2, 'the refused call reserved nothing');
    // The leases were released when the calls ended.
    const again = await direct();
    assert.equal(again.status, 200);
    await again.json();
  });

  it('queued mode with stream:false takes no lease: three concurrent calls all wait and complete', async () => {
    const key = await createUserKey(app.url, { id: 'queued-free', tier: 'free', quota: big });
    const call = api(app.url, key);
    const queued = () => call('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': 'queued' }, json: chat(4) });
    const responses = await Promise.all([queued(), queued(), queued()]);
    assert.deepEqual(responses.map((r) => r.status), [200, 200, 200]);
    await Promise.all(responses.map((r) => r.json()));
  });

  it('a free user with 8 requests queued or running is refused the 9th with SLUICE_ERR_IN_FLIGHT_LIMIT', async () => {
    const key = await createUserKey(app.url, { id: 'in-flight-free', tier: 'free', quota: big });
    const call = api(app.url, key);
    const submit = () => call('/v1/requests', { method: 'POST', json: chat(4) });
    const accepted: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await submit();
      assert.equal(r.status, 202);
      accepted.push(((await r.json()) as { request_id: string }).request_id);
    }
    const refused = await submit();
    assert.equal(refused.status, 429);
    const body = (await refused.json()) as ErrorBody;
    assert.equal(body.error.code, 'SLUICE_ERR_IN_FLIGHT_LIMIT');
    assert.match(body.error.message, /8/);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    assert.equal((await usageWindows(app.url, key)).daily_requests!.used, 8, 'the refusal reserved nothing');
    const metrics = await (await api(app.url)('/metrics')).text();
    assert.match(metrics, /sluice_quota_rejections_total\{reason="in_flight"\} [1-9]/);
    // Settlement frees the slots: once the first request completes, a new one is accepted.
    await waitFor(async () => {
      const j = (await (await call(`/v1/requests/${accepted[0]}`)).json()) as { status: string };
      return j.status === 'completed';
    }, 30_000, 100);
    assert.equal((await submit()).status, 202);
  });

  it('the master key has no in-flight cap', async () => {
    const call = api(app.url);
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await call('/v1/requests', { method: 'POST', json: chat(2) })).status);
    assert.deepEqual(statuses, Array(12).fill(202));
  });
});
