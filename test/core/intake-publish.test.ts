// Intake's publish (core/requests.ts): a queued submission answers once its row is stored, without
// waiting for the queue's confirm; the confirm then stamps published_at. Unconfirmed publishes are
// bounded (past the bound a submission waits for its own), a failed one leaves the row to the
// sweeper, and shutdown waits for them for a bounded time. Real PGlite store, a queue whose
// confirms the test releases one by one.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { MemoryLimiter } from '../../src/adapters/limiter/memory.ts';
import { MemoryBus } from '../../src/adapters/bus/memory.ts';
import { createStore } from '../../src/adapters/store/factory.ts';
import { parseConfig } from '../../src/config.ts';
import type { Admission, Admitted } from '../../src/core/admission.ts';
import type { AttemptRunner } from '../../src/core/attempt-runner.ts';
import type { EffectiveLimits, Principal } from '../../src/core/auth.ts';
import { parseChatBody } from '../../src/core/chat-request.ts';
import { createLogger } from '../../src/core/logger.ts';
import { RequestService } from '../../src/core/requests.ts';
import type { Consumer, Job, Queue } from '../../src/ports/queue.ts';
import type { Store } from '../../src/ports/store.ts';

/** A queue whose publishes wait until the test confirms (or fails) them, in any order. */
class HeldQueue implements Queue {
  readonly fairDequeue = false;
  readonly held = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  readonly started: string[] = [];
  publish(job: Job): Promise<void> {
    this.started.push(job.requestId);
    return new Promise<void>((resolve, reject) => { this.held.set(job.requestId, { resolve, reject }); });
  }
  confirm(id: string): void { this.take(id).resolve(); }
  fail(id: string): void { this.take(id).reject(new Error('broker said no')); }
  private take(id: string) {
    const h = this.held.get(id);
    if (!h) throw new Error(`no publish of ${id} is waiting`);
    this.held.delete(id);
    return h;
  }
  consume(): Promise<Consumer> { throw new Error('not used'); }
  async depth(): Promise<number> { return this.held.size; }
  async close(): Promise<void> {}
}

const principal: Principal = { userId: 'intake-user', keyId: null, admin: false, unlimited: true, tier: 'default', limits: {} as EffectiveLimits, models: null };
const input = parseChatBody({ model: 'sim', max_tokens: 8, messages: [{ role: 'user', content: 'hello' }] });

/** Admission reduced to what submit needs of it: this test is about what happens after it. */
const admission = {
  admit: async (): Promise<Admitted> => ({
    payload: { messages: input.messages, maxTokens: 8 }, promptTokens: 3, estimatedTokens: 11, priority: 0, degraded: false, headers: {}, reserved: false,
  }),
} as unknown as Admission;

const tick = () => new Promise((r) => setImmediate(r));
/** Whether a promise has settled by now (after letting pending I/O callbacks run). */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => { done = true; }, () => { done = true; });
  for (let i = 0; i < 5; i++) await tick();
  return done;
}

async function waitFor(fn: () => Promise<boolean>, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('intake: the 202 does not wait for the queue confirm', () => {
  let store: Store;
  before(async () => { store = await createStore('pglite://memory', { migrate: true }); });
  after(async () => { await store?.close(); });

  function service(queue: Queue, maxUnconfirmedPublishes?: number): RequestService {
    const config = parseConfig({ logLevel: 'silent', masterKey: 'sk-test-master-key-0123456789', databaseUrl: 'pglite://memory' });
    return new RequestService({
      config, store, queue, bus: new MemoryBus({ ttlSeconds: 60, maxLen: 1000 }), limiter: new MemoryLimiter(), admission, runner: {} as AttemptRunner,
      logger: createLogger('silent', 'gateway'), ...(maxUnconfirmedPublishes !== undefined && { maxUnconfirmedPublishes }),
    });
  }

  it('answers once the row is stored, before the confirm; the confirm then stamps published_at', async () => {
    const queue = new HeldQueue();
    const requests = service(queue);
    const { record, created } = await requests.submit(principal, input, { mode: 'queued' });
    assert.equal(created, true);
    // Stored before the answer, its publish already started, not confirmed.
    const stored = await store.getRequest(record.id);
    assert.equal(stored?.status, 'queued');
    assert.equal(stored?.publishedAt, null);
    assert.deepEqual(queue.started, [record.id]);
    assert.equal(requests.unconfirmedPublishes, 1);

    queue.confirm(record.id);
    await waitFor(async () => (await store.getRequest(record.id))?.publishedAt instanceof Date);
    assert.equal(requests.unconfirmedPublishes, 0);
  });

  it('past the bound, a submission waits for its own publish (and only for it)', async () => {
    const queue = new HeldQueue();
    const requests = service(queue, 2);
    const a = await requests.submit(principal, input, { mode: 'queued' });
    const b = await requests.submit(principal, input, { mode: 'queued' });
    assert.equal(requests.unconfirmedPublishes, 2);
    const third = requests.submit(principal, input, { mode: 'queued' });
    await waitFor(async () => queue.started.length === 3);
    const c = queue.started[2]!;
    assert.equal(await settled(third), false, 'the third waits: two publishes are already unconfirmed');
    // Confirming another one does not release it: it waits for its own publish.
    queue.confirm(a.record.id);
    assert.equal(await settled(third), false);
    queue.confirm(c);
    assert.equal((await third).record.id, c);
    queue.confirm(b.record.id);
    await waitFor(async () => requests.unconfirmedPublishes === 0);
  });

  it('a failed publish still answers; the row stays unpublished, for the sweeper', async () => {
    const queue = new HeldQueue();
    const requests = service(queue);
    const { record } = await requests.submit(principal, input, { mode: 'queued' });
    queue.fail(record.id);
    await waitFor(async () => requests.unconfirmedPublishes === 0);
    assert.equal((await store.getRequest(record.id))?.publishedAt, null);
    const lost = await store.listUnpublished({ createdBefore: new Date(Date.now() + 60_000), limit: 1000 });
    assert.ok(lost.some((r) => r.id === record.id), 'the sweeper finds it');
  });

  it('settlePublishes waits for the unconfirmed publishes, and no longer than its timeout', async () => {
    const queue = new HeldQueue();
    const requests = service(queue);
    const { record } = await requests.submit(principal, input, { mode: 'queued' });
    const settling = requests.settlePublishes(10_000);
    assert.equal(await settled(settling), false, 'a publish is still unconfirmed');
    queue.confirm(record.id);
    await settling;
    assert.equal(requests.unconfirmedPublishes, 0);

    const other = await requests.submit(principal, input, { mode: 'queued' });
    const t0 = Date.now();
    await requests.settlePublishes(50);
    assert.ok(Date.now() - t0 < 2000, 'gave up after its timeout');
    assert.equal(requests.unconfirmedPublishes, 1);
    queue.confirm(other.record.id);
    await waitFor(async () => requests.unconfirmedPublishes === 0);
  });

  it('an idempotent replay answers with the stored row and publishes nothing again', async () => {
    const queue = new HeldQueue();
    const requests = service(queue);
    const key = `k-${randomUUID()}`;
    const first = await requests.submit(principal, input, { mode: 'queued', idempotencyKey: key });
    const again = await requests.submit(principal, input, { mode: 'queued', idempotencyKey: key });
    assert.equal(again.created, false);
    assert.equal(again.record.id, first.record.id);
    assert.deepEqual(queue.started, [first.record.id]);
    queue.confirm(first.record.id);
    await waitFor(async () => requests.unconfirmedPublishes === 0);
  });
});
