import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FollowHubs, type HubOutcome } from '../../src/core/follow-hub.ts';
import type { Bus, LogEvent, Subscription } from '../../src/ports/bus.ts';
import {
  completed, memoryHarness, newRequestId, purgeRedis, serviceHarness, sleep, token, waitFor, type BusHarness,
} from '../contracts/bus.contract.ts';
import { serviceSuite, SERVICES } from '../helpers/services.ts';

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Appends `count` tokens then a terminal event, yielding now and then like a model stream. */
async function produce(bus: Bus, id: string, count: number, from = 1): Promise<void> {
  for (let i = from; i <= count; i++) {
    await bus.append(id, token(`t${i}`));
    if (i % 3 === 0) await sleep(1);
  }
  await bus.append(id, completed());
}

/** Counts subscriptions and reads; the live channel may drop seqs (`drop`) and delivers everything twice. */
function countingBus(inner: Bus, drop: (seq: number) => boolean = () => false): Bus & { subscribes: number; open: number; reads: number } {
  const bus = {
    subscribes: 0, open: 0, reads: 0,
    append: (id: string, e: Parameters<Bus['append']>[1]) => inner.append(id, e),
    appendMany: (id: string, events: Parameters<Bus['appendMany']>[1]) => inner.appendMany(id, events),
    read: (id: string, afterSeq: number, limit: number) => { bus.reads++; return inner.read(id, afterSeq, limit); },
    terminal: (id: string) => inner.terminal(id),
    publishControl: (id: string, s: Parameters<Bus['publishControl']>[1]) => inner.publishControl(id, s),
    onControl: (id: string, fn: Parameters<Bus['onControl']>[1]) => inner.onControl(id, fn),
    close: () => inner.close(),
    async subscribe(id: string, onEvent: (e: LogEvent) => void): Promise<Subscription> {
      bus.subscribes++;
      const sub = await inner.subscribe(id, (e) => { if (!drop(e.seq)) { onEvent(e); onEvent(e); } });
      bus.open++;
      let closed = false;
      return { close: async () => { if (!closed) { closed = true; bus.open--; } await sub.close(); } };
    },
  };
  return bus as typeof bus & Bus;
}

interface Seen { seqs: number[]; outcome?: HubOutcome }

/** A listener: records every seq it is handed; `slowMs` makes it await that long per run. */
function listen(hubs: FollowHubs, id: string, afterSeq: number, signal: AbortSignal, slowMs = 0): { seen: Seen; done: Promise<HubOutcome> } {
  const seen: Seen = { seqs: [] };
  const done = hubs.follow(id, afterSeq, async (run) => {
    for (const e of run) seen.seqs.push(e.seq);
    if (slowMs) await sleep(slowMs);
  }, { signals: [signal] }).then((o) => { seen.outcome = o; return o; });
  return { seen, done };
}

function hubSuite(name: string, makeHarness: () => Promise<BusHarness>, suite: { skip?: string } = {}): void {
  describe(`FollowHubs over ${name}`, { timeout: 30_000, ...suite }, () => {
    let harness: BusHarness;
    let raw: Bus;
    before(async () => { harness = await makeHarness(); raw = await harness.open(); });
    after(async () => { await harness?.cleanup(); });

    it('fans one subscription out to 50 listeners: each gets every seq once, in order, then the end', async () => {
      const bus = countingBus(raw);
      const hubs = new FollowHubs(bus);
      const id = newRequestId();
      const ac = new AbortController();
      const ls = Array.from({ length: 50 }, () => listen(hubs, id, 0, ac.signal));
      await sleep(20);
      await produce(bus, id, 40);
      const outcomes = await Promise.all(ls.map((l) => l.done));
      for (const [i, l] of ls.entries()) assert.deepEqual(l.seen.seqs, range(1, 41), `listener ${i}`);
      assert.deepEqual(new Set(outcomes), new Set(['terminal']));
      assert.equal(bus.subscribes, 1, 'one bus subscription for the 50 listeners');
      assert.ok(bus.reads <= 4, `history read once by the hub, not per listener (${bus.reads} reads)`);
      await waitFor(() => bus.open === 0 && hubs.size === 0, 'the hub to close after its last listener');
    });

    it('listeners joining at any position get exactly what follows it; one past the end gets the terminal event', async () => {
      const bus = countingBus(raw);
      const hubs = new FollowHubs(bus, 4);
      const id = newRequestId();
      const ac = new AbortController();
      await produce(bus, id, 10);
      // A second request still running: listeners join at different points while it streams.
      const live = newRequestId();
      for (let i = 1; i <= 20; i++) await bus.append(live, token(`a${i}`));
      const a = listen(hubs, live, 0, ac.signal);
      await waitFor(() => a.seen.seqs.length === 20, 'the first listener to catch up');
      const b = listen(hubs, live, 3, ac.signal); // behind the hub's tail: reads its own history
      const c = listen(hubs, live, 18, ac.signal);
      const d = listen(hubs, live, 25, ac.signal); // ahead of the log
      const producing = produce(bus, live, 30, 21);
      await producing;
      await Promise.all([a.done, b.done, c.done, d.done]);
      assert.deepEqual(a.seen.seqs, range(1, 31));
      assert.deepEqual(b.seen.seqs, range(4, 31));
      assert.deepEqual(c.seen.seqs, range(19, 31));
      assert.deepEqual(d.seen.seqs, range(26, 31));
      // Past the end of an ended log: the terminal event again, and 'terminal'.
      const e = listen(hubs, id, 50, ac.signal);
      assert.equal(await e.done, 'terminal');
      assert.deepEqual(e.seen.seqs, [11]);
    });

    it('a slow listener that falls off the tail reads the log and still misses and repeats nothing', async () => {
      const bus = countingBus(raw);
      const hubs = new FollowHubs(bus, 3);
      const id = newRequestId();
      const ac = new AbortController();
      const fast = listen(hubs, id, 0, ac.signal);
      const slow = listen(hubs, id, 0, ac.signal, 15);
      await sleep(10);
      await produce(bus, id, 60);
      await Promise.all([fast.done, slow.done]);
      assert.deepEqual(fast.seen.seqs, range(1, 61));
      assert.deepEqual(slow.seen.seqs, range(1, 61));
    });

    it('a live channel that drops and duplicates events: every listener still gets each seq once', async () => {
      const bus = countingBus(raw, (seq) => seq % 4 === 0);
      const hubs = new FollowHubs(bus, 8);
      const id = newRequestId();
      const ac = new AbortController();
      const ls = Array.from({ length: 10 }, (_, i) => listen(hubs, id, i % 3, ac.signal));
      await sleep(10);
      await produce(bus, id, 50);
      await Promise.all(ls.map((l) => l.done));
      for (const [i, l] of ls.entries()) assert.deepEqual(l.seen.seqs, range((i % 3) + 1, 51), `listener ${i}`);
    });

    it('one listener leaving does not disturb the others; the last one leaving closes the subscription', async () => {
      const bus = countingBus(raw);
      const hubs = new FollowHubs(bus);
      const id = newRequestId();
      const leaving = new AbortController();
      const staying = new AbortController();
      const gone = listen(hubs, id, 0, leaving.signal);
      const stays = listen(hubs, id, 0, staying.signal);
      for (let i = 1; i <= 5; i++) await bus.append(id, token(`t${i}`));
      await waitFor(() => gone.seen.seqs.length === 5, 'five tokens');
      leaving.abort();
      assert.equal(await gone.done, 'aborted');
      assert.equal(bus.open, 1, 'the subscription stays for the other listener');
      await produce(bus, id, 9, 6);
      assert.equal(await stays.done, 'terminal');
      assert.deepEqual(stays.seen.seqs, range(1, 10));
      await waitFor(() => bus.open === 0 && hubs.size === 0, 'the subscription to close');
      // A listener after the hub closed gets a new one, and the log from its position.
      const late = listen(hubs, id, 7, new AbortController().signal);
      assert.equal(await late.done, 'terminal');
      assert.deepEqual(late.seen.seqs, [8, 9, 10]);
    });

    it('a live channel that loses the last events of a log (its terminal event too): the watchdog reads the log and every listener ends', async () => {
      // What a NATS reconnect or slow-consumer cut does to a stream that ends meanwhile: nothing
      // later arrives to reveal the gap, and the watch finds the request ended with its log intact.
      const bus = countingBus(raw, (seq) => seq >= 9);
      const hubs = new FollowHubs(bus);
      const id = newRequestId();
      const ac = new AbortController();
      const watch = { everyMs: 20, gone: async () => false };
      const seen: number[][] = [[], []];
      const done = seen.map((s) => hubs.follow(id, 0, (run) => { for (const e of run) s.push(e.seq); }, { signals: [ac.signal], watch }));
      await sleep(10);
      await produce(bus, id, 10);
      // The watchdog's timer does not hold the process open (a server does): this test must.
      const keepAlive = setInterval(() => {}, 1000);
      let outcomes: HubOutcome[] | undefined;
      void Promise.all(done).then((o) => { outcomes = o; });
      try { await waitFor(() => outcomes !== undefined, 'every listener to end'); } finally { clearInterval(keepAlive); ac.abort(); }
      assert.deepEqual(outcomes, ['terminal', 'terminal']);
      for (const s of seen) assert.deepEqual(s, range(1, 11));
    });

    it("the request's watch runs once per request, not per listener, and ends its listeners with 'gone'", async () => {
      const hubs = new FollowHubs(raw);
      const id = newRequestId();
      let checks = 0;
      let isGone = false;
      const watch = { everyMs: 20, gone: async () => { checks++; return isGone; } };
      const ac = new AbortController();
      const seen = Array.from({ length: 20 }, () => hubs.follow(id, 0, () => {}, { signals: [ac.signal], watch }));
      await waitFor(() => checks >= 1, 'a first check');
      await sleep(100);
      // A watch per listener would have made 20 checks per interval.
      assert.ok(checks <= 10, `one watch for 20 listeners: ${checks} checks in ~120 ms`);
      isGone = true;
      // The watch's timer does not hold the process open (a server does): this test must.
      const keepAlive = setInterval(() => {}, 1000);
      try { assert.deepEqual(new Set(await Promise.all(seen)), new Set(['gone'])); } finally { clearInterval(keepAlive); }
    });
  });
}

hubSuite('memory', memoryHarness);
hubSuite('redis', () => serviceHarness(SERVICES.redis, purgeRedis), await serviceSuite('redis'));
