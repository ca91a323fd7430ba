// Drain's count of the responses being served: idle once every tracked one closed (those tracked
// while waiting included), false after the grace period otherwise.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { Drain } from '../../src/core/drain.ts';

describe('drain: tracked responses', () => {
  it('is idle at once with nothing tracked', async () => {
    const drain = new Drain();
    assert.equal(drain.active, 0);
    assert.equal(await drain.idle(10_000), true);
  });

  it('waits for every tracked response to close, including one tracked while it waits', async () => {
    const drain = new Drain();
    const [a, b, c] = [new EventEmitter(), new EventEmitter(), new EventEmitter()];
    drain.track(a);
    drain.track(b);
    assert.equal(drain.active, 2);
    let settled: boolean | undefined;
    const idle = drain.idle(10_000).then((v) => { settled = v; return v; });
    a.emit('close');
    drain.track(c);
    b.emit('close');
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, undefined, 'c is still open');
    c.emit('close');
    c.emit('close'); // a second close counts once
    assert.equal(await idle, true);
    assert.equal(drain.active, 0);
  });

  it('answers false after the grace period, and true later once the last one closes', async () => {
    const drain = new Drain();
    const slow = new EventEmitter();
    drain.track(slow);
    assert.equal(await drain.idle(20), false);
    assert.equal(drain.active, 1);
    const again = drain.idle(10_000);
    slow.emit('close');
    assert.equal(await again, true);
  });
});

describe('drain: the hand-off signal', () => {
  it('takes a listener per running attempt without a MaxListenersExceededWarning, and aborts them all', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => { if (w.name === 'MaxListenersExceededWarning') warnings.push(w); };
    process.on('warning', onWarning);
    try {
      const drain = new Drain();
      let aborted = 0;
      for (let i = 0; i < 50; i++) drain.handoff.addEventListener('abort', () => { aborted++; }, { once: true });
      drain.begin();
      drain.handOff();
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
      assert.equal(aborted, 50);
      assert.deepEqual(warnings.map((w) => w.message), []);
    } finally {
      process.off('warning', onWarning);
    }
  });
});
