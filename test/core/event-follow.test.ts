import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FIRST_LOG_PAGE, followEventRuns, LOG_PAGE, readAll, type FollowOutcome } from '../../src/core/event-follow.ts';
import type { Bus, LogEvent, Subscription } from '../../src/ports/bus.ts';
import {
  completed, memoryHarness, newRequestId, purgeNats, purgeRedis, serviceHarness, sleep, token, waitFor, type BusHarness,
} from '../contracts/bus.contract.ts';
import { serviceSuite, SERVICES } from '../helpers/services.ts';

/** Appends `count` tokens then a terminal event, yielding between appends like a model stream. */
async function produce(bus: Bus, id: string, count: number, from = 1): Promise<void> {
  for (let i = from; i <= count; i++) {
    await bus.append(id, token(`t${i}`));
    if (i % 3 === 0) await sleep(1);
  }
  await bus.append(id, completed());
}

/** One event at a time over followEventRuns, awaiting `onEvent` before the next, as a listener sees them. */
function followEventLog(bus: Bus, id: string, afterSeq: number, onEvent: (e: LogEvent) => void | Promise<void>, opts: { signal: AbortSignal }): Promise<FollowOutcome> {
  return followEventRuns(bus, id, afterSeq, async (run) => {
    for (const e of run) {
      if (opts.signal.aborted) return;
      await onEvent(e);
    }
  }, opts);
}

const seqs = (events: LogEvent[]): number[] => events.map((e) => e.seq);
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A bus whose live channel misbehaves: drops the seqs `drop` says, and delivers everything twice. */
function lossyBus(inner: Bus, drop: (seq: number) => boolean): Bus & { openSubscriptions(): number } {
  let open = 0;
  return {
    append: (id, e) => inner.append(id, e),
    appendMany: (id, events) => inner.appendMany(id, events),
    read: (id, after, limit) => inner.read(id, after, limit),
    terminal: (id) => inner.terminal(id),
    publishControl: (id, s) => inner.publishControl(id, s),
    onControl: (id, fn) => inner.onControl(id, fn),
    close: () => inner.close(),
    openSubscriptions: () => open,
    async subscribe(id, onEvent): Promise<Subscription> {
      const sub = await inner.subscribe(id, (e) => { if (!drop(e.seq)) { onEvent(e); onEvent(e); } });
      open++;
      let closed = false;
      return { close: async () => { if (!closed) { closed = true; open--; } await sub.close(); } };
    },
  };
}

function followSuite(name: string, makeHarness: () => Promise<BusHarness>, suite: { skip?: string } = {}): void {
  describe(`followEventLog over ${name}`, { timeout: 20_000, ...suite }, () => {
    let harness: BusHarness;
    let a: Bus;
    let b: Bus;
    before(async () => { harness = await makeHarness(); a = await harness.open(); b = await harness.open(); });
    after(async () => { await harness?.cleanup(); });

    it('resumes after n while the producer is still appending: n+1..terminal once, in order', async () => {
      const id = newRequestId();
      for (let i = 1; i <= 10; i++) await a.append(id, token(`t${i}`));
      const got: LogEvent[] = [];
      const ac = new AbortController();
      const following = followEventLog(b, id, 5, (e) => { got.push(e); }, { signal: ac.signal });
      await produce(a, id, 60, 11);
      assert.equal(await following, 'terminal');
      assert.deepEqual(seqs(got), range(6, 61));
      assert.equal(got.at(-1)?.type, 'completed');
    });

    it('resumes after the terminal event was appended: the rest, then terminal', async () => {
      const id = newRequestId();
      await produce(a, id, 8);
      const got: LogEvent[] = [];
      const outcome = await followEventLog(b, id, 3, (e) => { got.push(e); }, { signal: new AbortController().signal });
      assert.equal(outcome, 'terminal');
      assert.deepEqual(seqs(got), range(4, 9));
    });

    it('in runs: the history at hand in pages (a small first one), then live bursts, each seq once, none past the terminal', async () => {
      const id = newRequestId();
      for (let i = 1; i <= 10; i++) await a.append(id, token(`t${i}`));
      const runs: LogEvent[][] = [];
      const following = followEventRuns(b, id, 0, (run) => { runs.push([...run]); }, { signal: new AbortController().signal });
      await waitFor(() => runs.length > 0, 'the history run');
      await a.appendMany(id, [token('b1'), token('b2'), token('b3')]);
      await a.appendMany(id, [token('b4'), completed()]);
      assert.equal(await following, 'terminal');
      assert.deepEqual(seqs(runs[0]!), range(1, FIRST_LOG_PAGE), 'the first page of history in one run');
      // The second page may already hold the bursts appended meanwhile.
      assert.deepEqual(seqs(runs[1]!).slice(0, 10 - FIRST_LOG_PAGE), range(FIRST_LOG_PAGE + 1, 10), 'the rest of the history in the next run');
      assert.deepEqual(seqs(runs.flat()), range(1, 15));
      assert.equal(runs.flat().at(-1)?.type, 'completed');
      assert.ok(runs.length <= 7, `${runs.length} runs for 15 events (two of history)`);
    });

    it('continues on another instance after a disconnect with no gap and no duplicate', async () => {
      const id = newRequestId();
      const first: LogEvent[] = [];
      const ac = new AbortController();
      const producing = produce(a, id, 80);
      const firstRun = followEventLog(a, id, 0, (e) => { first.push(e); if (first.length === 15) ac.abort(); }, { signal: ac.signal });
      assert.equal(await firstRun, 'aborted');
      const second: LogEvent[] = [];
      const lastSeen = first.at(-1)?.seq ?? 0;
      const secondRun = followEventLog(b, id, lastSeen, (e) => { second.push(e); }, { signal: new AbortController().signal });
      await producing;
      assert.equal(await secondRun, 'terminal');
      assert.deepEqual(seqs([...first, ...second]), range(1, 81));
    });

    it('awaits a slow consumer and still delivers everything in order', async () => {
      const id = newRequestId();
      const got: number[] = [];
      let busy = false;
      const following = followEventLog(b, id, 0, async (e) => {
        assert.equal(busy, false, 'onEvent is never re-entered');
        busy = true;
        await sleep(3);
        got.push(e.seq);
        busy = false;
      }, { signal: new AbortController().signal });
      await produce(a, id, 30);
      assert.equal(await following, 'terminal');
      assert.deepEqual(got, range(1, 31));
    });

    it('stops on abort, closes its subscription and delivers nothing more', async () => {
      const id = newRequestId();
      const bus = lossyBus(b, () => false);
      const got: number[] = [];
      const ac = new AbortController();
      const following = followEventLog(bus, id, 0, (e) => { got.push(e.seq); }, { signal: ac.signal });
      await a.append(id, token('1'));
      await a.append(id, token('2'));
      await waitFor(() => got.length === 2, 'two events');
      assert.equal(bus.openSubscriptions(), 1);
      ac.abort();
      assert.equal(await following, 'aborted');
      assert.equal(bus.openSubscriptions(), 0);
      await a.append(id, token('3'));
      await sleep(50);
      assert.deepEqual(got, [1, 2]);
      const aborted = new AbortController();
      aborted.abort();
      assert.equal(await followEventLog(bus, id, 0, () => assert.fail('no delivery'), { signal: aborted.signal }), 'aborted');
    });

    it('repairs events the live channel dropped (and ignores its duplicates) from the log', async () => {
      const id = newRequestId();
      const dropped = new Set([2, 3, 7, 12, 13, 14]);
      const bus = lossyBus(b, (seq) => dropped.has(seq));
      const got: LogEvent[] = [];
      const following = followEventLog(bus, id, 0, (e) => { got.push(e); }, { signal: new AbortController().signal });
      // Let the follower finish its (empty) history read so every event has to come live.
      await sleep(30);
      for (let i = 1; i <= 20; i++) { await a.append(id, token(`t${i}`)); await sleep(2); }
      await a.append(id, completed());
      assert.equal(await following, 'terminal');
      assert.deepEqual(seqs(got), range(1, 21));
      assert.equal(bus.openSubscriptions(), 0);
    });

    it('readAll pages through the whole log after a sequence', async () => {
      const id = newRequestId();
      for (let i = 1; i <= 20; i++) await a.append(id, token(`t${i}`));
      assert.deepEqual(seqs(await readAll(b, id, 0, 7)), range(1, 20));
      assert.deepEqual(seqs(await readAll(b, id, 13, 7)), range(14, 20));
      assert.deepEqual(await readAll(b, newRequestId(), 0, 7), []);
    });
  });
}

/** A bus that records the `limit` of each read. */
function pageSpy(inner: Bus): Bus & { limits: (number | undefined)[] } {
  const limits: (number | undefined)[] = [];
  return {
    append: (id, e) => inner.append(id, e),
    appendMany: (id, events) => inner.appendMany(id, events),
    read: (id, after, limit) => { limits.push(limit); return inner.read(id, after, limit); },
    terminal: (id) => inner.terminal(id),
    subscribe: (id, onEvent) => inner.subscribe(id, onEvent),
    publishControl: (id, s) => inner.publishControl(id, s),
    onControl: (id, fn) => inner.onControl(id, fn),
    close: () => inner.close(),
    limits,
  };
}

describe('followEventRuns history paging', { timeout: 20_000 }, () => {
  // Issue #17: a resume waited for a whole LOG_PAGE before its first event, which on NATS costs
  // one message per event; the first page is small and the later ones full.
  it('reads a small first page, then full pages of LOG_PAGE, and delivers the whole log once', async () => {
    const harness = await memoryHarness();
    try {
      const bus = pageSpy(await harness.open());
      const id = newRequestId();
      const total = 2 * LOG_PAGE + 200;
      for (let i = 1; i < total; i++) await bus.append(id, token(`t${i}`));
      await bus.append(id, completed());
      const runs: number[] = [];
      const got: LogEvent[] = [];
      const outcome = await followEventRuns(bus, id, 0, (run) => { runs.push(run.length); got.push(...run); }, { signal: new AbortController().signal });
      assert.equal(outcome, 'terminal');
      assert.deepEqual(seqs(got), range(1, total));
      assert.ok(FIRST_LOG_PAGE <= 16, `first page of ${FIRST_LOG_PAGE}`);
      assert.equal(bus.limits[0], FIRST_LOG_PAGE);
      assert.equal(runs[0], FIRST_LOG_PAGE, 'the first event arrives with the first small page');
      // A long replay reads in full pages after the first (one more read than pages of LOG_PAGE alone).
      assert.deepEqual(bus.limits, [FIRST_LOG_PAGE, LOG_PAGE, LOG_PAGE, LOG_PAGE]);
    } finally {
      await harness.cleanup();
    }
  });
});

followSuite('memory', memoryHarness);
followSuite('redis', () => serviceHarness(SERVICES.redis, purgeRedis), await serviceSuite('redis'));
followSuite('nats', () => serviceHarness(SERVICES.nats, purgeNats), await serviceSuite('nats'));
