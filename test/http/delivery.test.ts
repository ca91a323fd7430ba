// Delivering an ended request whose log goes away while it is being read (the TTL, or the memory
// bus's bound on events kept): the listener gets the stored result, and no new log is started.
// And end to end: with a small bound, a resume of an old request gets its stored answer.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { MemoryBus } from '../../src/adapters/bus/memory.ts';
import { deliverEvents } from '../../src/http/delivery.ts';
import type { GatewayDeps } from '../../src/http/gateway-deps.ts';
import type { LogEvent } from '../../src/ports/bus.ts';
import { api, readSse, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

const body = (maxTokens: number) => ({ model: 'sim', max_tokens: maxTokens, messages: [{ role: 'user', content: 'hi' }] });

describe('delivery of an ended request whose log goes away', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ sim: { ttftMs: 0, itlMs: 0 }, eventLog: { ttlSeconds: 3600, maxLen: 10_000, memoryMaxEvents: 1000 }, sse: { pingMs: 10 } }); });
  after(() => app.stop());

  const completedRequest = async (maxTokens: number): Promise<string> => {
    const call = api(app.url);
    const { request_id } = (await (await call('/v1/requests', { method: 'POST', json: body(maxTokens) })).json()) as { request_id: string };
    await waitFor(async () => (await (await call(`/v1/requests/${request_id}`)).json()).status === 'completed');
    return request_id;
  };

  it('gets the stored result when the log vanishes between two pages, and starts no new log', async () => {
    const id = await completedRequest(20);
    const record = (await app.store.getRequest(id))!;
    const bus = app.bus as MemoryBus & { read: MemoryBus['read'] };
    const read = bus.read.bind(bus);
    // The first page comes back without the terminal event; then the log is gone.
    let first = true;
    bus.read = async (requestId, afterSeq, limit) => {
      if (requestId !== id || !first) return read(requestId, afterSeq, limit);
      first = false;
      const page = (await read(requestId, afterSeq, limit)).filter((e) => e.type === 'token');
      (bus as unknown as { drop(id: string, log: unknown): void }).drop(id, (bus as unknown as { logs: Map<string, unknown> }).logs.get(id));
      return page;
    };
    try {
      const sent: LogEvent[] = [];
      const deps = { bus: app.bus, runner: app.runner, config: app.config } as unknown as GatewayDeps;
      const end = await deliverEvents(deps, record, 0, new AbortController().signal, (events) => { sent.push(...events); });
      assert.equal(end, 'stored');
      assert.equal(sent.length, 0, 'nothing half-delivered: the stored answer follows');
      assert.deepEqual(await read(id, 0), [], 'no terminal event was appended to start a new log');
    } finally {
      bus.read = read;
    }
  });

  it('end to end: under a small bound, an old request resumes from the store, a recent one from its log', async () => {
    const call = api(app.url);
    const old = await completedRequest(300);
    for (let i = 0; i < 4; i++) await completedRequest(300);
    const oldFrames = await readSse(await call(`/v1/requests/${old}/events`));
    const stored = JSON.parse(oldFrames.at(-1)!.data);
    assert.equal(oldFrames.at(-1)!.event, 'completed');
    assert.equal(stored.replayed_from, 'store');
    assert.equal(stored.usage.completion_tokens, 300);

    const recent = await completedRequest(300);
    const frames = await readSse(await call(`/v1/requests/${recent}/events`));
    assert.equal(frames.filter((f) => f.event === 'token').length, 300);
    assert.equal(frames.at(-1)!.event, 'completed');
  });

  it('a listener of a request that ended without a log gets the stored result, and no log is started', async () => {
    // A request row nobody runs (no job published), then ended in the store with no event ever
    // logged: a crash between the settle and the terminal append of a request that produced nothing.
    const id = crypto.randomUUID();
    await app.store.insertRequest({
      id, userId: 'master', keyId: null, model: 'sim', mode: 'queued', payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 5 },
      priority: 0, idempotencyKey: null, bodyHash: '', estimatedTokens: 6, promptTokens: 1,
    });
    const listening = readSse(await api(app.url)(`/v1/requests/${id}/events`));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await app.store.finishRequest(id, {
      status: 'cancelled', attempt: null, result: '', finishReason: 'cancelled', usage: { promptTokens: 0, completionTokens: 0, totalTokens: 0 },
      error: { code: 'SLUICE_ERR_CANCELLED', message: 'Request was cancelled' }, chargedTokens: 0, chargedRequests: 0,
    }), true);
    const frames = await listening;
    const last = frames.at(-1)!;
    assert.equal(last.event, 'error');
    assert.equal(JSON.parse(last.data).replayed_from, 'store');
    assert.equal(JSON.parse(last.data).status, 'cancelled');
    assert.deepEqual(await app.bus.read(id, 0), []);
  });
});

