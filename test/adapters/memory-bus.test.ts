// The in-memory bus keeps its logs in the heap: past its bound on events kept, the logs of ended
// requests are dropped, least recently ended or read first; the logs of running requests, and of
// requests somebody is subscribed to, are kept.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBus } from '../../src/adapters/bus/memory.ts';
import { completed, token } from '../contracts/bus.contract.ts';

const tokens = (n: number) => Array.from({ length: n }, (_, i) => token(`t${i}`));

describe('MemoryBus bound on events kept', () => {
  it('drops the logs of the requests that ended first once the bound is passed', async () => {
    const bus = new MemoryBus({ ttlSeconds: 3600, maxLen: 10_000, maxEvents: 1000 });
    // Three requests of 300 tokens + terminal end in the order b, a, c; 903 events: under the bound.
    for (const id of ['a', 'b', 'c']) await bus.appendMany(id, tokens(300));
    await bus.append('b', completed());
    await bus.append('a', completed());
    await bus.append('c', completed());
    assert.equal(bus.keptEvents, 903);
    // A running request appends 200 more: 1,103 > 1,000, so b (the first to end) goes, only b.
    await bus.appendMany('running', tokens(200));
    assert.equal((await bus.read('b', 0)).length, 0);
    assert.equal((await bus.read('a', 0)).length, 301);
    assert.equal((await bus.read('c', 0)).length, 301);
    assert.equal(bus.keptEvents, 802);
    // 250 more: a goes next.
    await bus.appendMany('running', tokens(250));
    assert.equal((await bus.read('a', 0)).length, 0);
    assert.equal(bus.keptEvents, 751);
    // Now the running request ends too, after c: over the bound again, c goes before it.
    await bus.append('running', completed());
    await bus.appendMany('z', tokens(300));
    assert.equal((await bus.read('c', 0)).length, 0);
    assert.equal((await bus.read('running', 0)).length, 451);
    assert.equal(bus.keptEvents, 751);
    await bus.close();
  });

  it('never drops the log of a running request, even over the bound', async () => {
    const bus = new MemoryBus({ ttlSeconds: 3600, maxLen: 10_000, maxEvents: 1000 });
    await bus.appendMany('x', tokens(800));
    await bus.appendMany('y', tokens(800));
    assert.equal((await bus.read('x', 0)).length, 800);
    assert.equal((await bus.read('y', 0)).length, 800);
    assert.equal(bus.keptEvents, 1600);
    // Once x ends its log is the one that can go, and goes; y keeps all of its tokens.
    await bus.append('x', completed());
    assert.equal((await bus.read('x', 0)).length, 0);
    assert.equal((await bus.read('y', 0)).length, 800);
    assert.equal(bus.keptEvents, 800);
    // A log appended to again after it was dropped starts again from sequence 1: dropped is expired.
    const [e] = await bus.appendMany('x', [token('late')]);
    assert.equal(e!.seq, 1);
    await bus.close();
  });

  it('counts what the TTL and the per-log length trim away', async () => {
    let now = 1_000_000;
    const realNow = Date.now;
    Date.now = () => now;
    try {
      const bus = new MemoryBus({ ttlSeconds: 10, maxLen: 100, maxEvents: 1000 });
      await bus.appendMany('long', tokens(150));
      assert.equal(bus.keptEvents, 100);
      await bus.appendMany('short', tokens(5));
      assert.equal(bus.keptEvents, 105);
      now += 11_000;
      assert.equal((await bus.read('long', 0)).length, 0);
      assert.equal(bus.keptEvents, 5);
      await bus.close();
    } finally {
      Date.now = realNow;
    }
  });

  it('keeps an ended log while somebody is subscribed to it, and drops it once they leave', async () => {
    const bus = new MemoryBus({ ttlSeconds: 3600, maxEvents: 1000, maxLen: 10_000 });
    await bus.appendMany('watched', tokens(600));
    const sub = await bus.subscribe('watched', () => {});
    await bus.append('watched', completed());
    await bus.appendMany('other', tokens(600));
    assert.equal((await bus.read('watched', 0)).length, 601, 'a listener part-way through it keeps it');
    await sub.close();
    await bus.appendMany('other', tokens(1));
    assert.equal((await bus.read('watched', 0)).length, 0);
    assert.equal((await bus.read('other', 0)).length, 601);
    await bus.close();
  });

  it('drops the least recently read ended log first: a reader paging through a log keeps it', async () => {
    const bus = new MemoryBus({ ttlSeconds: 3600, maxEvents: 1000, maxLen: 10_000 });
    for (const id of ['old', 'young']) { await bus.appendMany(id, tokens(300)); await bus.append(id, completed()); }
    // A resume pages through the older log: it is now the more recently used of the two.
    assert.equal((await bus.read('old', 0, 100)).length, 100);
    await bus.appendMany('running', tokens(500));
    assert.equal((await bus.read('young', 0)).length, 0);
    assert.equal((await bus.read('old', 100)).length, 201);
    await bus.close();
  });
});

