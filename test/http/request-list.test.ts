// The API the console reads, on a real gateway: a caller's own requests in pages (GET
// /v1/requests), the admin request list's filters and cursor, and the usage answer's daily totals
// and reserved share of each window.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, createUserKey, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

interface Row { request_id: string; status: string; model: string; user_id?: string }
interface PageBody { object: string; data: Row[]; has_more: boolean; next_before: string | null }
interface ErrBody { error: { code: string; param: string | null } }

describe('request lists and usage for the console', () => {
  let app: TestSluice;
  let alice: ReturnType<typeof api>;
  let bob: ReturnType<typeof api>;
  const aliceIds: string[] = [];
  let bobId = '';

  const submit = async (call: ReturnType<typeof api>, content: string) => {
    const res = await call('/v1/requests', { method: 'POST', json: { model: 'sim', messages: [{ role: 'user', content }], max_tokens: 4 } });
    assert.equal(res.status, 202);
    return ((await res.json()) as Row).request_id;
  };
  const ended = (call: ReturnType<typeof api>, id: string) => waitFor(async () => {
    const r = (await (await call(`/v1/requests/${id}`)).json()) as Row;
    return ['completed', 'failed', 'cancelled'].includes(r.status) && r;
  });

  before(async () => {
    app = await startTestSluice({ statusRateLimit: { limit: 10_000, windowMs: 1000 } });
    alice = api(app.url, await createUserKey(app.url, { id: 'list-alice' }));
    bob = api(app.url, await createUserKey(app.url, { id: 'list-bob' }));
    for (let i = 0; i < 5; i++) aliceIds.push(await submit(alice, `hello ${i}`));
    bobId = await submit(bob, 'bob');
    for (const id of aliceIds) await ended(alice, id);
    await ended(bob, bobId);
  });
  after(async () => { await app?.stop(); });

  it('GET /v1/requests lists only the caller\'s own requests, newest first, in pages that join without gap or repeat', async () => {
    const all = (await (await alice('/v1/requests?limit=100')).json()) as PageBody;
    assert.equal(all.object, 'list');
    assert.deepEqual(all.data.map((r) => r.request_id), [...aliceIds].reverse());
    assert.equal(all.has_more, false);
    assert.equal(all.next_before, null);
    assert.ok(!all.data.some((r) => r.request_id === bobId));
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await alice(`/v1/requests?limit=2${cursor ? `&before=${cursor}` : ''}`);
      assert.equal(res.status, 200);
      const page = (await res.json()) as PageBody;
      seen.push(...page.data.map((r) => r.request_id));
      assert.equal(page.has_more, page.next_before !== null);
      cursor = page.next_before;
      pages++;
    } while (cursor);
    assert.equal(pages, 3);
    assert.deepEqual(seen, all.data.map((r) => r.request_id));
    const defaultPage = (await (await bob('/v1/requests')).json()) as PageBody;
    assert.deepEqual(defaultPage.data.map((r) => r.request_id), [bobId]);
  });

  it('filters the caller\'s list by status and model', async () => {
    const completed = (await (await alice('/v1/requests?status=completed&model=sim')).json()) as PageBody;
    assert.equal(completed.data.length, 5);
    assert.deepEqual((await (await alice('/v1/requests?status=queued')).json() as PageBody).data, []);
    assert.deepEqual((await (await alice('/v1/requests?model=other-model')).json() as PageBody).data, []);
  });

  it('refuses a bad limit, status or cursor with SLUICE_ERR_VALIDATION, and another user\'s request as a cursor', async () => {
    for (const q of ['limit=0', 'limit=101', 'limit=abc', 'limit=1&limit=2', 'status=done', 'before=', `before=${'x'.repeat(201)}`, 'before=no-such-request', `before=${bobId}`]) {
      const res = await alice(`/v1/requests?${q}`);
      assert.equal(res.status, 400, q);
      assert.equal(((await res.json()) as ErrBody).error.code, 'SLUICE_ERR_VALIDATION', q);
    }
    const nul = await alice('/v1/requests?model=%00');
    assert.equal(nul.status, 400);
    assert.equal((await api(app.url, '')('/v1/requests')).status, 401);
  });

  it('the admin list filters by user, status and model and pages with a cursor', async () => {
    const admin = api(app.url);
    const byUser = (await (await admin('/admin/requests?user_id=list-alice&limit=3')).json()) as PageBody;
    assert.deepEqual(byUser.data.map((r) => r.request_id), [...aliceIds].reverse().slice(0, 3));
    assert.ok(byUser.data.every((r) => r.user_id === 'list-alice'));
    assert.equal(byUser.has_more, true);
    const rest = (await (await admin(`/admin/requests?user_id=list-alice&limit=3&before=${byUser.next_before}`)).json()) as PageBody;
    assert.deepEqual(rest.data.map((r) => r.request_id), [...aliceIds].reverse().slice(3));
    assert.equal(rest.has_more, false);
    const bobs = (await (await admin('/admin/requests?model=sim&status=completed&limit=1000')).json()) as PageBody;
    assert.ok(bobs.data.some((r) => r.request_id === bobId) && bobs.data.every((r) => r.model === 'sim' && r.status === 'completed'));
    assert.deepEqual(((await (await admin('/admin/requests?model=nothing')).json()) as PageBody).data, []);
    const bad = await admin('/admin/requests?before=no-such-request');
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as ErrBody).error.param, 'before');
  });

  it('GET /v1/usage has tokens per day for the month and each window\'s reserved share', async () => {
    const usage = (await (await alice('/v1/usage')).json()) as {
      time_zone: string; daily: { day: string; requests: number; tokens: number }[];
      windows: { window: string; metric: string; used: number; reserved: number }[]; recent: { charged_tokens: number }[];
    };
    const today = new Intl.DateTimeFormat('en-CA', { timeZone: usage.time_zone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date());
    assert.equal(usage.daily.length, 1);
    assert.equal(usage.daily[0]!.day, today);
    assert.equal(usage.daily[0]!.requests, 5);
    assert.equal(usage.daily[0]!.tokens, usage.recent.reduce((a, r) => a + r.charged_tokens, 0));
    // Everything settled: nothing is reserved, and the counters equal the ledger.
    for (const w of usage.windows) {
      assert.equal(w.reserved, 0, `${w.window} ${w.metric}`);
      assert.equal(w.used, w.metric === 'requests' ? 5 : usage.daily[0]!.tokens, `${w.window} ${w.metric}`);
    }
    assert.equal((usage as unknown as { streams_in_use: number }).streams_in_use, 0);
    const asAdmin = (await (await api(app.url)('/admin/users/list-bob/usage')).json()) as { daily: { requests: number }[] };
    assert.equal(asAdmin.daily[0]!.requests, 1);
  });

  it('while a request streams, its window share is reserved and its stream slot is in use', async () => {
    const slow = await startTestSluice({ sim: { ttftMs: 0, itlMs: 50 } });
    try {
      const key = await createUserKey(slow.url, { id: 'list-streamer' });
      const call = api(slow.url, key);
      const ctl = new AbortController();
      const res = await call('/v1/chat/completions', { method: 'POST', signal: ctl.signal, json: { model: 'sim', stream: true, messages: [{ role: 'user', content: 'hi' }], max_tokens: 40 } });
      assert.equal(res.status, 200);
      const reader = res.body!.getReader();
      await reader.read();
      const usage = (await (await call('/v1/usage')).json()) as { streams_in_use: number; windows: { window: string; metric: string; used: number; reserved: number }[] };
      assert.equal(usage.streams_in_use, 1);
      const tokens = usage.windows.find((w) => w.window === 'daily' && w.metric === 'tokens')!;
      assert.ok(tokens.reserved > 0 && tokens.reserved === tokens.used, JSON.stringify(tokens));
      const requests = usage.windows.find((w) => w.window === 'daily' && w.metric === 'requests')!;
      assert.deepEqual([requests.used, requests.reserved], [1, 1]);
      // The listener goes; the request runs on to its end on the worker, then settles.
      ctl.abort();
      await reader.cancel().catch(() => {});
      const after = await waitFor(async () => {
        const u = (await (await call('/v1/usage')).json()) as { streams_in_use: number; windows: { window: string; metric: string; used: number; reserved: number }[] };
        return u.streams_in_use === 0 && u.windows.every((w) => w.reserved === 0) && u;
      }, 30_000);
      assert.ok(after.windows.find((w) => w.window === 'daily' && w.metric === 'tokens')!.used > 0);
    } finally {
      await slow.stop();
    }
  });
});
