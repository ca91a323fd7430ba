// Many listeners of one request in one gateway process, end to end: every listener gets every
// token once, in order, over one bus subscription; listeners connecting together share one store
// read of the request (and another user's key still gets 404).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Bus, Subscription } from '../../src/ports/bus.ts';
import type { RequestRecord } from '../../src/ports/store.ts';
import { api, createUserKey, MASTER_KEY, readSse, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

const body = (maxTokens: number) => ({ model: 'sim', max_tokens: maxTokens, messages: [{ role: 'user', content: 'hi' }] });

describe('many listeners of one request in one process', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ sim: { ttftMs: 300, itlMs: 5 } }); });
  after(() => app.stop());

  it('40 SSE listeners: each gets every token once and the end, over one bus subscription', async () => {
    const bus = app.bus as Bus;
    const subscribe = bus.subscribe.bind(bus);
    let subscriptions = 0;
    bus.subscribe = async (id: string, onEvent: Parameters<Bus['subscribe']>[1]): Promise<Subscription> => { if (id === target) subscriptions++; return subscribe(id, onEvent); };
    let target = '';
    try {
      const call = api(app.url);
      ({ request_id: target } = (await (await call('/v1/requests', { method: 'POST', json: body(30) })).json()) as { request_id: string });
      const streams = await Promise.all(Array.from({ length: 40 }, () => call(`/v1/requests/${target}/events`).then((r) => readSse(r))));
      for (const frames of streams) {
        const tokens = frames.filter((f) => f.event === 'token').map((f) => Number(f.id));
        const completed = frames.find((f) => f.event === 'completed');
        assert.ok(completed, 'the stream ends with completed');
        const n = (JSON.parse(completed.data) as { usage: { completion_tokens: number } }).usage.completion_tokens;
        assert.deepEqual(tokens, Array.from({ length: n }, (_, i) => i + 1));
      }
      assert.ok(subscriptions >= 1 && subscriptions <= 2, `${subscriptions} bus subscriptions for 40 listeners (one, or two if the first hub closed before the last listener came)`);
    } finally {
      bus.subscribe = subscribe;
    }
  });

  it("listeners follow through the app's own hubs: one for the request while they listen, none after", async () => {
    const call = api(app.url);
    const { request_id: id } = (await (await call('/v1/requests', { method: 'POST', json: body(100) })).json()) as { request_id: string };
    const streams = Array.from({ length: 3 }, () => call(`/v1/requests/${id}/events`).then((r) => readSse(r)));
    await waitFor(async () => app.hubs.size === 1); // the request followed by one hub of this app
    for (const frames of await Promise.all(streams)) assert.ok(frames.some((f) => f.event === 'completed'));
    await waitFor(async () => app.hubs.size === 0); // the hub closes after its last listener
  });

  it('listeners connecting together share one store read; another user still gets 404', async () => {
    const call = api(app.url);
    const { request_id: id } = (await (await call('/v1/requests', { method: 'POST', json: body(5) })).json()) as { request_id: string };
    const store = app.store;
    const getRequest = store.getRequest.bind(store);
    let reads = 0;
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    store.getRequest = async (rid: string): Promise<RequestRecord | null> => {
      if (rid !== id) return getRequest(rid);
      reads++;
      await held;
      return getRequest(rid);
    };
    try {
      const principal = await app.auth.authenticate(MASTER_KEY);
      const other = await app.auth.authenticate(await createUserKey(app.url, { id: 'fanout-other' }));
      const together = Array.from({ length: 10 }, () => app.requests.getToFollow(principal, id));
      const stranger = app.requests.getToFollow(other, id).then(() => 'found', (e: { code?: string }) => e.code);
      await new Promise((r) => setTimeout(r, 20));
      release();
      const records = await Promise.all(together);
      assert.equal(reads, 1, 'one store read for 11 concurrent callers');
      assert.ok(records.every((r) => r.id === id));
      assert.equal(await stranger, 'SLUICE_ERR_REQUEST_NOT_FOUND');
      // Not a cache: a later call reads again.
      await app.requests.getToFollow(principal, id);
      assert.equal(reads, 2);
    } finally {
      store.getRequest = getRequest;
    }
  });
});
