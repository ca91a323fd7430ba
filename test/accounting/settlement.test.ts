// Settlement and the rules around it: idempotent settle, cut streams billed for what the model
// produced, stream leases, status polls that cost no quota, and accounting's bad input.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SluiceError } from '../../src/core/errors.ts';
import { api, createUserKey, ledgerRows, readSse, startTestSluice, usageWindows, waitFor, type TestSluice } from '../helpers/app.ts';

const chat = (max_tokens: number, extra: Record<string, unknown> = {}) => ({ model: 'sim', max_tokens, messages: [{ role: 'user', content: 'Tell me about rivers' }], ...extra });
const big = { tokens_per_day: 10_000_000, requests_per_day: 100_000, tokens_per_month: 100_000_000, requests_per_month: 1_000_000 };

describe('settlement', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ sim: { ttftMs: 0, itlMs: 8 }, statusRateLimit: { limit: 30, windowMs: 60_000 } }); });
  after(() => app.stop());

  it('the same settle delivered 3 times changes counters once (duplicate jobs, replayed settle)', async () => {
    const key = await createUserKey(app.url, { id: 'idem-settle', quota: big });
    const call = api(app.url, key);
    const { request_id } = (await (await call('/v1/requests', { method: 'POST', json: chat(5) })).json()) as { request_id: string };
    await waitFor(async () => (await ledgerRows(app.url, 'idem-settle')).length === 1);
    const before = await usageWindows(app.url, key);
    // The queue redelivers the job three more times; the ledger is asked to settle three more times.
    for (let i = 0; i < 3; i++) await app.queue.publish({ requestId: request_id, priority: 5 });
    const record = (await app.store.getRequest(request_id))!;
    const again = await Promise.all([1, 2, 3].map(() => app.ledger.settle(record, { status: 'completed', attempt: null, result: 'x', finishReason: 'stop', usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 }, error: null })));
    assert.deepEqual(again, [null, null, null]);
    assert.equal(await app.limiter.settle(request_id, { tokens: 0, requests: 0 }), 'already-settled');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await ledgerRows(app.url, 'idem-settle')).length, 1);
    const afterwards = await usageWindows(app.url, key);
    assert.equal(afterwards.daily_tokens!.used, before.daily_tokens!.used);
    assert.equal(afterwards.daily_requests!.used, 1);
  });

  it('a request whose row could not be stored leaves no trace: its retry with the same Idempotency-Key is reserved and charged', async () => {
    const key = await createUserKey(app.url, { id: 'insert-fails', quota: big });
    const call = api(app.url, key);
    const insert = app.store.insertRequest.bind(app.store);
    let failed = false;
    app.store.insertRequest = async (...args) => {
      if (failed) return insert(...args);
      failed = true;
      throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'store down for a moment');
    };
    try {
      const headers = { 'idempotency-key': 'retry-after-store-failure' };
      const first = await call('/v1/requests', { method: 'POST', json: chat(5), headers });
      assert.equal(first.status, 503);
      const nothing = await usageWindows(app.url, key);
      assert.equal(nothing.daily_requests!.used, 0, 'the refused request holds nothing');
      const retry = await call('/v1/requests', { method: 'POST', json: chat(5), headers });
      assert.equal(retry.status, 202);
      const { request_id } = (await retry.json()) as { request_id: string };
      const [row] = await waitFor(async () => { const rows = await ledgerRows(app.url, 'insert-fails'); return rows.length === 1 && rows; });
      assert.equal(row!.request_id, request_id);
      // The limiter settles just after the ledger row is written.
      const charged = await waitFor(async () => { const w = await usageWindows(app.url, key); return w.daily_tokens!.used === row!.charged_tokens && w; });
      assert.equal(charged.daily_requests!.used, 1, 'the retry counts against the quota');
    } finally {
      app.store.insertRequest = insert;
    }
  });

  it('a request whose insert committed while the store reported errors keeps its hold, is found by the sweeper and charged', async () => {
    // Its own gateway: the sweeper republishes an unpublished queued row after 100 ms, not 30 s.
    const own = await startTestSluice({ requeueAfterMs: 100 });
    try {
      const key = await createUserKey(own.url, { id: 'insert-unsure', quota: big });
      const insert = own.store.insertRequest.bind(own.store);
      const get = own.store.getRequest.bind(own.store);
      let id = '';
      let flapping = true;
      // The insert commits, then the connection drops before the answer; the check that follows fails too.
      own.store.insertRequest = async (r, claim) => {
        const done = await insert(r, claim);
        if (!flapping) return done;
        id = r.id;
        throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'connection lost after commit');
      };
      own.store.getRequest = async (rid) => {
        if (flapping && rid === id) { flapping = false; throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'still down'); }
        return get(rid);
      };
      const res = await api(own.url, key)('/v1/requests', { method: 'POST', json: chat(5) });
      assert.equal(res.status, 503);
      assert.ok(id, 'the insert ran');
      // Held (or already charged, if the sweeper was quick): never 0.
      assert.equal((await usageWindows(own.url, key)).daily_requests!.used, 1, 'the hold stays while the store cannot say');
      const [row] = await waitFor(async () => { const rows = await ledgerRows(own.url, 'insert-unsure'); return rows.length === 1 && rows; });
      assert.equal(row!.request_id, id);
      // The limiter settles just after the ledger row is written.
      const charged = await waitFor(async () => { const w = await usageWindows(own.url, key); return w.daily_tokens!.used === row!.charged_tokens && w; });
      assert.equal(charged.daily_requests!.used, 1, 'the reservation was replaced by the charge');
    } finally {
      await own.stop();
    }
  });

  it('a cut stream (direct mode) is charged the tokens the model produced, not 0 and not max_tokens', async () => {
    const key = await createUserKey(app.url, { id: 'cut-stream', quota: big });
    const ac = new AbortController();
    const res = await api(app.url, key)('/v1/chat/completions', { method: 'POST', json: chat(400, { stream: true }), headers: { 'x-sluice-mode': 'direct' }, signal: ac.signal });
    const id = res.headers.get('x-request-id')!;
    const reader = res.body!.getReader();
    let seen = 0;
    while (seen < 10) { const { value } = await reader.read(); seen += (new TextDecoder().decode(value).match(/"content"/g) ?? []).length; }
    ac.abort();
    const row = await waitFor(async () => (await ledgerRows(app.url, 'cut-stream'))[0]);
    const produced = (await app.bus.read(id, 0)).filter((e) => e.type === 'token').length;
    assert.equal(row.status, 'cancelled');
    assert.equal(row.completion_tokens, produced, 'charged what the model produced');
    assert.ok(produced >= 10 && produced < 400, `produced ${produced}`);
    assert.equal(row.charged_tokens, row.prompt_tokens + produced);
    assert.equal((await usageWindows(app.url, key)).daily_tokens!.used, row.charged_tokens, 'reservation replaced by the charge');
  });

  it('a cancelled queued request is charged what it produced; the counters follow', async () => {
    const key = await createUserKey(app.url, { id: 'cancel-charge', quota: big });
    const call = api(app.url, key);
    const { request_id } = (await (await call('/v1/requests', { method: 'POST', json: chat(400) })).json()) as { request_id: string };
    await waitFor(async () => (await (await call(`/v1/requests/${request_id}`)).json()).status === 'running');
    await new Promise((r) => setTimeout(r, 80));
    const cancelled = (await (await call(`/v1/requests/${request_id}`, { method: 'DELETE' })).json()) as { status: string; usage: { completion_tokens: number; total_tokens: number } };
    assert.equal(cancelled.status, 'cancelled');
    assert.ok(cancelled.usage.completion_tokens > 0 && cancelled.usage.completion_tokens < 400);
    assert.equal((await usageWindows(app.url, key)).daily_tokens!.used, cancelled.usage.total_tokens);
  });

  it("GET /v1/usage lists the month's settled requests newest first, as the ledger has them", async () => {
    const key = await createUserKey(app.url, { id: 'recent-usage', quota: big });
    const call = api(app.url, key);
    for (let i = 0; i < 3; i++) {
      await call('/v1/requests', { method: 'POST', json: chat(3) });
      await waitFor(async () => (await ledgerRows(app.url, 'recent-usage')).length === i + 1);
    }
    const ledger = await ledgerRows(app.url, 'recent-usage');
    const usage = (await (await call('/v1/usage')).json()) as { recent: { request_id: string; charged_tokens: number }[] };
    assert.deepEqual(usage.recent.map((r) => r.request_id), ledger.map((r) => r.request_id).reverse());
    assert.deepEqual(usage.recent.map((r) => r.charged_tokens), ledger.map((r) => r.charged_tokens).reverse());
  });

  it('concurrent-stream limit: a lease per live stream; the 429 names the limit; released at the end', async () => {
    const key = await createUserKey(app.url, { id: 'leases', quota: { ...big, concurrent_streams: 1 } });
    const call = api(app.url, key);
    const first = await call('/v1/chat/completions', { method: 'POST', json: chat(40, { stream: true }) });
    assert.equal(first.status, 200);
    const second = await call('/v1/chat/completions', { method: 'POST', json: chat(40, { stream: true }) });
    assert.equal(second.status, 429);
    const err = (await second.json()) as { error: { code: string; message: string } };
    assert.equal(err.error.code, 'SLUICE_ERR_STREAM_LIMIT');
    assert.match(err.error.message, /1 of 1/);
    assert.deepEqual((await usageWindows(app.url, key)).daily_requests!.used, 1, 'the refused stream reserved nothing');
    await readSse(first);
    const third = await call('/v1/chat/completions', { method: 'POST', json: chat(4, { stream: true }) });
    assert.equal(third.status, 200, 'the lease was released when the first stream ended');
    await readSse(third);
  });

  it('status polls never spend request quota, and have their own rate limit', async () => {
    const key = await createUserKey(app.url, { id: 'polls', quota: { ...big, requests_per_day: 1 } });
    const call = api(app.url, key);
    const { request_id } = (await (await call('/v1/requests', { method: 'POST', json: chat(2) })).json()) as { request_id: string };
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) statuses.push((await call(`/v1/requests/${request_id}`)).status);
    assert.deepEqual(statuses.slice(0, 30), Array(30).fill(200));
    assert.equal(statuses[30], 429);
    const limited = await call(`/v1/requests/${request_id}`);
    assert.equal(((await limited.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_RATE_LIMITED');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal((await usageWindows(app.url, key)).daily_requests!.used, 1, 'polls did not count as requests');
  });

  it('refusal leaves no counter changed and carries Retry-After and x-ratelimit headers', async () => {
    const key = await createUserKey(app.url, { id: 'headers', quota: { ...big, requests_per_day: 2 } });
    const call = api(app.url, key);
    const ok = await call('/v1/requests', { method: 'POST', json: chat(3) });
    assert.equal(ok.status, 202);
    for (const h of ['limit', 'remaining', 'reset']) for (const m of ['requests', 'tokens']) assert.ok(ok.headers.get(`x-ratelimit-${h}-${m}`), `x-ratelimit-${h}-${m}`);
    assert.equal(ok.headers.get('x-ratelimit-remaining-requests'), '1');
    await call('/v1/requests', { method: 'POST', json: chat(3) });
    const before = await usageWindows(app.url, key);
    const refused = await call('/v1/requests', { method: 'POST', json: chat(3) });
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('x-ratelimit-remaining-requests'), '0');
    assert.ok(Number(refused.headers.get('retry-after')) > 0);
    const afterwards = await usageWindows(app.url, key);
    assert.equal(afterwards.daily_requests!.used, before.daily_requests!.used);
    assert.equal(afterwards.daily_tokens!.used, before.daily_tokens!.used);
  });

  it('max_tokens above the tier limit -> 422 SLUICE_ERR_MAX_TOKENS_TOO_LARGE', async () => {
    const key = await createUserKey(app.url, { id: 'max-tokens', tier: 'free' });
    const res = await api(app.url, key)('/v1/requests', { method: 'POST', json: chat(5000) });
    assert.equal(res.status, 422);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_MAX_TOKENS_TOO_LARGE');
  });
});

describe('accounting bad input', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice(); });
  after(() => app.stop());
  const code = async (res: Response) => ((await res.json()) as { error: { code: string } }).error.code;

  it('unknown tier -> 400 SLUICE_ERR_UNKNOWN_TIER (create and update)', async () => {
    const admin = api(app.url);
    const res = await admin('/admin/users', { method: 'POST', json: { id: 'tierless', tier: 'platinum' } });
    assert.equal(res.status, 400);
    assert.equal(await code(res), 'SLUICE_ERR_UNKNOWN_TIER');
    await admin('/admin/users', { method: 'POST', json: { id: 'tiered', tier: 'free' } });
    const upd = await admin('/admin/users/tiered', { method: 'PATCH', json: { tier: 'gold' } });
    assert.equal(upd.status, 400);
    assert.equal(await code(upd), 'SLUICE_ERR_UNKNOWN_TIER');
  });

  it('negative limits -> 400 SLUICE_ERR_VALIDATION naming the field; unknown user -> 404', async () => {
    const admin = api(app.url);
    await admin('/admin/users', { method: 'POST', json: { id: 'neg', tier: 'free' } });
    const res = await admin('/admin/quotas/neg', { method: 'PUT', json: { tokens_per_day: -5 } });
    assert.equal(res.status, 400);
    const j = (await res.json()) as { error: { code: string; param: string } };
    assert.equal(j.error.code, 'SLUICE_ERR_VALIDATION');
    assert.equal(j.error.param, 'tokens_per_day');
    const missing = await admin('/admin/quotas/nobody', { method: 'PUT', json: { tokens_per_day: 5 } });
    assert.equal(missing.status, 404);
    assert.equal(await code(missing), 'SLUICE_ERR_UNKNOWN_USER');
    const dup = await admin('/admin/users', { method: 'POST', json: { id: 'neg', tier: 'free' } });
    assert.equal(dup.status, 409);
    assert.equal(await code(dup), 'SLUICE_ERR_USER_EXISTS');
  });

  it('revoked key -> 401 SLUICE_ERR_REVOKED_API_KEY; deactivated user -> 403 SLUICE_ERR_USER_INACTIVE', async () => {
    const admin = api(app.url);
    const key = await createUserKey(app.url, { id: 'revokee' });
    assert.equal((await api(app.url, key)('/v1/models')).status, 200);
    const keys = (await (await admin('/admin/keys?user_id=revokee')).json()) as { data: { id: string }[] };
    assert.equal((await admin(`/admin/keys/${keys.data[0]!.id}`, { method: 'DELETE' })).status, 200);
    const revoked = await api(app.url, key)('/v1/models');
    assert.equal(revoked.status, 401);
    assert.equal(await code(revoked), 'SLUICE_ERR_REVOKED_API_KEY');

    const key2 = await createUserKey(app.url, { id: 'sleeper' });
    assert.equal((await admin('/admin/users/sleeper', { method: 'PATCH', json: { active: false } })).status, 200);
    const inactive = await api(app.url, key2)('/v1/models');
    assert.equal(inactive.status, 403);
    assert.equal(await code(inactive), 'SLUICE_ERR_USER_INACTIVE');
  });

  it('admin route with a user key -> 403 SLUICE_ERR_ADMIN_REQUIRED; keys are shown once, stored hashed', async () => {
    const key = await createUserKey(app.url, { id: 'plain' });
    const res = await api(app.url, key)('/admin/users');
    assert.equal(res.status, 403);
    assert.equal(await code(res), 'SLUICE_ERR_ADMIN_REQUIRED');
    const listed = JSON.stringify(await (await api(app.url)('/admin/keys?user_id=plain')).json());
    assert.ok(!listed.includes(key), 'the key is never shown again');
    assert.ok(!listed.includes(key.slice(12)), 'not even its secret part');
  });

  it("another key's request id is 404, not 403", async () => {
    const alice = await createUserKey(app.url, { id: 'alice' });
    const bob = await createUserKey(app.url, { id: 'bob' });
    const { request_id } = (await (await api(app.url, alice)('/v1/requests', { method: 'POST', json: chat(2) })).json()) as { request_id: string };
    for (const [path, method] of [[`/v1/requests/${request_id}`, 'GET'], [`/v1/requests/${request_id}/events`, 'GET'], [`/v1/requests/${request_id}`, 'DELETE']] as const) {
      const res = await api(app.url, bob)(path, { method });
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal(await code(res), 'SLUICE_ERR_REQUEST_NOT_FOUND');
    }
    assert.equal((await api(app.url, alice)(`/v1/requests/${request_id}`)).status, 200);
  });
});
