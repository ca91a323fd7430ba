// The worker's fair sharing: a job whose user already holds its share of the worker's slots
// while other jobs wait is deferred (retried after fairDeferMs) before any claim, so no attempt
// is spent; a user alone, or an empty queue, never causes a deferral.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config.ts';
import { createLogger } from '../../src/core/logger.ts';
import { Worker } from '../../src/core/worker.ts';
import type { AttemptRunner } from '../../src/core/attempt-runner.ts';
import type { Ledger } from '../../src/core/ledger.ts';
import type { Delivery, Job, Queue } from '../../src/ports/queue.ts';
import type { RequestRecord, Store } from '../../src/ports/store.ts';

interface FakeDelivery extends Delivery { outcome: 'pending' | 'acked' | { retriedAfter: number | undefined } }

function delivery(job: Job): FakeDelivery {
  const d: FakeDelivery = {
    job, deliveryCount: 1, outcome: 'pending',
    ack: async () => { d.outcome = 'acked'; },
    retry: async (delayMs) => { d.outcome = { retriedAfter: delayMs }; },
    deadLetter: async () => { throw new Error('not expected'); },
    heartbeat: async () => {},
  };
  return d;
}

/** A worker over fakes: every claim succeeds, every run blocks until `finishAll`. */
function harness(opts: { concurrency: number; depth: number; fairDeferMs?: number }) {
  const config = parseConfig({ worker: { concurrency: opts.concurrency, fairDeferMs: opts.fairDeferMs ?? 50, fairWindowMs: 60_000 } });
  const state = { depth: opts.depth, claims: [] as string[] };
  const blocked: (() => void)[] = [];
  const store = {
    claimRequest: async (id: string) => { state.claims.push(id); return { state: 'claimed', record: { id, attempt: 1 } as RequestRecord }; },
  } as unknown as Store;
  const runner = {
    run: () => new Promise((resolve) => { blocked.push(() => resolve({ kind: 'finished' })); }),
  } as unknown as AttemptRunner;
  const queue = { fairDequeue: false, depth: async () => state.depth } as unknown as Queue;
  const ledger = {} as Ledger;
  const worker = new Worker({ config, store, queue, runner, ledger, logger: createLogger('silent', 'worker'), now: Date.now });
  /** Hands a job to the worker; resolves once it either started running (claimed) or was settled. */
  const give = async (requestId: string, userId: string): Promise<FakeDelivery> => {
    const d = delivery({ requestId, priority: 1, userId });
    const handled = worker.handle(d);
    while (d.outcome === 'pending' && !state.claims.includes(requestId)) await new Promise((r) => setImmediate(r));
    void handled;
    return d;
  };
  const finishAll = () => { for (const f of blocked.splice(0)) f(); };
  return { give, state, finishAll };
}

describe('worker fair sharing', () => {
  it('defers a job of a user at its share while jobs wait; the deferral spends no attempt (no claim)', async () => {
    const h = harness({ concurrency: 4, depth: 5 });
    const b1 = await h.give('b1', 'b');
    const [a1, a2] = [await h.give('a1', 'a'), await h.give('a2', 'a')];
    // Two users lately: a share of 4 / 2 = 2 slots each. A holds 2, jobs wait: a3 is deferred.
    const a3 = await h.give('a3', 'a');
    assert.deepEqual(a3.outcome, { retriedAfter: 50 });
    assert.ok(!h.state.claims.includes('a3'), 'a deferred job is not claimed, so no attempt is counted');
    // B is under its share: its next job runs at once.
    const b2 = await h.give('b2', 'b');
    assert.equal(b2.outcome, 'pending');
    assert.deepEqual(h.state.claims, ['b1', 'a1', 'a2', 'b2']);
    h.finishAll();
    for (const d of [b1, a1, a2, b2]) while (d.outcome === 'pending') await new Promise((r) => setImmediate(r));
    assert.equal(a1.outcome, 'acked');
    // Its slots released, A's next job runs again.
    const a4 = await h.give('a4', 'a');
    assert.equal(a4.outcome, 'pending');
    assert.ok(h.state.claims.includes('a4'));
    h.finishAll();
  });

  it('never defers a user alone (share = every slot) nor when no job waits', async () => {
    const alone = harness({ concurrency: 3, depth: 10 });
    for (const id of ['a1', 'a2', 'a3']) assert.equal((await alone.give(id, 'a')).outcome, 'pending');
    assert.deepEqual(alone.state.claims, ['a1', 'a2', 'a3']);
    alone.finishAll();

    const idle = harness({ concurrency: 2, depth: 0 });
    await idle.give('b1', 'b');
    for (const id of ['a1', 'a2']) assert.equal((await idle.give(id, 'a')).outcome, 'pending', 'nothing waits: no deferral');
    idle.finishAll();
  });

  it('fairDeferMs 0 turns deferral off', async () => {
    const off = harness({ concurrency: 2, depth: 10, fairDeferMs: 0 });
    await off.give('b1', 'b');
    for (const id of ['a1', 'a2']) assert.equal((await off.give(id, 'a')).outcome, 'pending');
    off.finishAll();
  });
});
