import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { exponentialBackoff, jitteredBackoff } from '../../src/core/backoff.ts';

describe('backoff', () => {
  it('doubles from the base and stops at the cap', () => {
    assert.deepEqual([1, 2, 3, 4].map((a) => exponentialBackoff(a, 100)), [100, 200, 400, 800]);
    assert.equal(exponentialBackoff(0, 100), 100);
    assert.equal(exponentialBackoff(20, 100, 5000), 5000);
    assert.equal(exponentialBackoff(10_000, 1), 60_000, 'huge attempts do not overflow');
  });
  it('jitter stays within [half, full] of the exponential delay', () => {
    for (let i = 0; i < 200; i++) {
      const d = jitteredBackoff(3, 100);
      assert.ok(d >= 200 && d <= 400, String(d));
    }
  });
});
