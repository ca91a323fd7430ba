// The in-process limiter remembers settled request ids only for SETTLED_TTL_MS: long enough that
// a late reserve of a settled id is a duplicate, short enough that sustained traffic cannot grow
// the map without bound.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryLimiter } from '../../src/adapters/limiter/memory.ts';
import { SETTLED_TTL_MS } from '../../src/adapters/limiter/keys.ts';
import type { WindowLimit } from '../../src/ports/limiter.ts';

describe('MemoryLimiter settled ids', () => {
  it('keeps settled ids minutes, not days', () => {
    assert.ok(SETTLED_TTL_MS <= 3_600_000, `SETTLED_TTL_MS is ${SETTLED_TTL_MS} ms`);
  });

  it('treats a reserve of a settled id as a duplicate within SETTLED_TTL_MS, and forgets it after', async () => {
    const t0 = Date.UTC(2026, 10, 21, 12);
    let now = t0;
    const limiter = new MemoryLimiter({ now: () => now });
    const windows: WindowLimit[] = [{ window: 'daily', metric: 'tokens', limit: 1_000_000, period: '2026-11-21', resetAt: now + 12 * 3_600_000 }];
    const reserve = (requestId: string) => limiter.reserve({ requestId, userId: 'u', tokens: 10, windows, deadlineAt: now + 60_000 });

    for (let i = 0; i < 100; i++) {
      assert.equal((await reserve(`r${i}`)).ok, true);
      assert.equal(await limiter.settle(`r${i}`, { tokens: 7, requests: 1 }), 'settled');
      now += 1000;
    }
    assert.deepEqual(await reserve('r0'), { ok: true, duplicate: true, windows: [{ ...windows[0]!, used: 700, remaining: 1_000_000 - 700 }] });
    assert.equal(await limiter.settle('r99', { tokens: 7, requests: 1 }), 'already-settled');

    // Half way through the ids' lifetimes' ends, a housekeeping pass forgets r0..r49 and keeps r50..r99.
    now = t0 + SETTLED_TTL_MS + 49_500;
    assert.equal(await limiter.settle('r0', { tokens: 7, requests: 1 }), 'unknown');
    assert.equal(await limiter.settle('r49', { tokens: 7, requests: 1 }), 'unknown');
    assert.equal(await limiter.settle('r50', { tokens: 7, requests: 1 }), 'already-settled');
    assert.equal(await limiter.settle('r99', { tokens: 7, requests: 1 }), 'already-settled');
    // A forgotten id can be reserved again; that is the price of the bound, and why it is minutes.
    const again = await reserve('r0');
    assert.ok(again.ok && !again.duplicate);
    await limiter.close();
  });
});
