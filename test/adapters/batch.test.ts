// Statement batching (src/adapters/store/batch.ts): calls made in one event-loop turn share one
// statement, a key never appears twice in one batch, a bad row fails only its own call, and a
// failure that may have committed is not run again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batcher } from '../../src/adapters/store/batch.ts';

interface Call { key: string; value: number }

function recorder(opts: { inFlight?: number; failOn?: (c: Call) => boolean; retryAlone?: boolean } = {}) {
  const batches: Call[][] = [];
  const batcher = new Batcher<Call, string>({
    inFlight: opts.inFlight ?? 1,
    maxSize: 4,
    key: (c) => c.key,
    retryAlone: () => opts.retryAlone ?? true,
    many: async (calls) => {
      batches.push([...calls]);
      await new Promise((r) => setTimeout(r, 5));
      const bad = calls.find((c) => opts.failOn?.(c));
      if (bad) throw new Error(`bad row ${bad.key}`);
      return calls.map((c) => `${c.key}=${c.value}`);
    },
  });
  return { batcher, batches };
}

test('calls made in the same turn run as one batch, up to maxSize, in order', async () => {
  const { batcher, batches } = recorder();
  const results = await Promise.all([1, 2, 3, 4, 5, 6].map((v) => batcher.run({ key: `k${v}`, value: v })));
  assert.deepEqual(results, ['k1=1', 'k2=2', 'k3=3', 'k4=4', 'k5=5', 'k6=6']);
  assert.deepEqual(batches.map((b) => b.map((c) => c.value)), [[1, 2, 3, 4], [5, 6]]);
});

test('calls made while a batch runs wait and then share the next batch', async () => {
  const { batcher, batches } = recorder();
  const first = batcher.run({ key: 'a', value: 1 });
  await new Promise((r) => setImmediate(r));
  assert.equal(batches.length, 1);
  const later = [2, 3].map((v) => batcher.run({ key: `k${v}`, value: v }));
  await Promise.all([first, ...later]);
  assert.deepEqual(batches.map((b) => b.map((c) => c.value)), [[1], [2, 3]]);
});

test('two calls with the same key never share a batch', async () => {
  const { batcher, batches } = recorder();
  const results = await Promise.all([
    batcher.run({ key: 'same', value: 1 }), batcher.run({ key: 'other', value: 2 }), batcher.run({ key: 'same', value: 3 }),
  ]);
  assert.deepEqual(results, ['same=1', 'other=2', 'same=3']);
  for (const b of batches) assert.equal(new Set(b.map((c) => c.key)).size, b.length);
  assert.deepEqual(batches.map((b) => b.map((c) => c.value)), [[1, 2], [3]]);
});

test('a failed batch is run again call by call, so only the bad call fails', async () => {
  const { batcher, batches } = recorder({ failOn: (c) => c.key === 'bad' });
  const settled = await Promise.allSettled(['x', 'bad', 'y'].map((key, i) => batcher.run({ key, value: i })));
  assert.deepEqual(settled.map((s) => s.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.match(String((settled[1] as PromiseRejectedResult).reason), /bad row bad/);
  assert.deepEqual(batches.map((b) => b.map((c) => c.key)), [['x', 'bad', 'y'], ['x'], ['bad'], ['y']]);
});

test('a failure that may have committed fails every call without running any again', async () => {
  const { batcher, batches } = recorder({ failOn: (c) => c.key === 'bad', retryAlone: false });
  const settled = await Promise.allSettled(['x', 'bad'].map((key, i) => batcher.run({ key, value: i })));
  assert.deepEqual(settled.map((s) => s.status), ['rejected', 'rejected']);
  assert.equal(batches.length, 1);
});

test('inFlight batches run at once; the rest wait', async () => {
  const { batcher, batches } = recorder({ inFlight: 2 });
  const first = batcher.run({ key: 'a', value: 1 });
  await new Promise((r) => setImmediate(r));
  const second = batcher.run({ key: 'b', value: 2 });
  await new Promise((r) => setImmediate(r));
  // The second batch started while the first was still running.
  assert.equal(batches.length, 2);
  await Promise.all([first, second]);
});

test('an idle batcher runs a lone call in the turn it was made, with no timer to wait for', async () => {
  const { batcher, batches } = recorder();
  const lone = batcher.run({ key: 'a', value: 1 });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(batches.map((b) => b.map((c) => c.value)), [[1]]);
  assert.equal(await lone, 'a=1');
});

test('a batch takes at most maxSize calls however many wait; the rest keep their order', async () => {
  const { batcher, batches } = recorder();
  const results = await Promise.all(Array.from({ length: 10 }, (_, v) => batcher.run({ key: `k${v}`, value: v })));
  assert.deepEqual(results, Array.from({ length: 10 }, (_, v) => `k${v}=${v}`));
  assert.ok(batches.every((b) => b.length <= 4));
  assert.deepEqual(batches.flat().map((c) => c.value), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('close answers every call already made, then refuses new ones without running them', async () => {
  const { batcher, batches } = recorder();
  const running = batcher.run({ key: 'a', value: 1 });
  await new Promise((r) => setImmediate(r));
  const queued = [2, 3].map((v) => batcher.run({ key: `k${v}`, value: v }));
  assert.equal(batcher.pending, 3);
  let closed = false;
  const closing = batcher.close(() => new Error('store closed')).then(() => { closed = true; });
  await new Promise((r) => setImmediate(r));
  assert.equal(closed, false, 'calls are still unanswered');
  await assert.rejects(batcher.run({ key: 'late', value: 9 }), /store closed/);
  assert.deepEqual(await Promise.all([running, ...queued]), ['a=1', 'k2=2', 'k3=3']);
  await closing;
  assert.equal(batcher.pending, 0);
  assert.deepEqual(batches.map((b) => b.map((c) => c.value)), [[1], [2, 3]], 'the late call never ran');
});

test('close of an idle batcher resolves at once; a failing call is still answered with its own error', async () => {
  const idle = recorder();
  await idle.batcher.close(() => new Error('closed'));
  const { batcher } = recorder({ failOn: (c) => c.key === 'bad' });
  const calls = ['x', 'bad'].map((key, i) => batcher.run({ key, value: i }));
  await batcher.close(() => new Error('closed'));
  const settled = await Promise.allSettled(calls);
  assert.deepEqual(settled.map((s) => s.status), ['fulfilled', 'rejected']);
  assert.match(String((settled[1] as PromiseRejectedResult).reason), /bad row bad/);
});
