// The Limiter contract: every adapter must pass it. `factory` returns two limiters sharing one
// state (two clients of one Redis; the same object for the per-process limiter), so races are
// run across instances where there can be more than one.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Limiter, Metric, ReserveInput, ReserveResult, WindowKind, WindowLimit, WindowState } from '../../src/ports/limiter.ts';

export interface LimiterPair { a: Limiter; b: Limiter; close(): Promise<void> }

type Limits = Partial<Record<`${WindowKind}:${Metric}`, number>>;
const LARGE = 1_000_000_000;
const DAY = '2026-11-21';
const NEXT_DAY = '2026-11-22';
const MONTH = '2026-11';

function windows(limits: Limits = {}, day = DAY): WindowLimit[] {
  // Far in the future so no counter expires during a test, whatever the wall clock says.
  const resetAt = Date.now() + 86_400_000;
  const w = (window: WindowKind, metric: Metric): WindowLimit =>
    ({ window, metric, limit: limits[`${window}:${metric}`] ?? LARGE, period: window === 'daily' ? day : MONTH, resetAt });
  return [w('daily', 'requests'), w('daily', 'tokens'), w('monthly', 'requests'), w('monthly', 'tokens')];
}

function request(userId: string, tokens: number, ws: WindowLimit[], deadlineAt = Date.now() + 3_600_000): ReserveInput {
  return { requestId: randomUUID(), userId, tokens, windows: ws, deadlineAt };
}

const user = () => `u-${randomUUID()}`;

/** The window a refusal names; fails if the result is not a window refusal. */
function exceededOf(r: ReserveResult): WindowState {
  assert.ok(!r.ok && r.reason === 'window', `expected a window refusal, got ${JSON.stringify(r)}`);
  return r.exceeded;
}

/** Counters in the fixed order of windows(): daily requests, daily tokens, monthly requests, monthly tokens. */
async function used(l: Limiter, userId: string, ws: WindowLimit[]): Promise<number[]> {
  return (await l.usage(userId, ws)).map((s) => s.used);
}

/** Deterministic pseudo-random numbers, so a failing race can be replayed. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function limiterContract(name: string, factory: () => Promise<LimiterPair>, opts: { durable: boolean; skip?: string }): void {
  describe(`Limiter contract: ${name}`, { skip: opts.skip }, () => {
    let pair: LimiterPair;
    let a: Limiter;
    let b: Limiter;
    before(async () => { pair = await factory(); a = pair.a; b = pair.b; });
    after(async () => { await pair?.close(); });

    it('reports whether its state survives a restart', () => {
      assert.equal(a.durable, opts.durable);
    });

    it('reserve charges 1 request and the tokens in every window and reports the states', async () => {
      const u = user();
      const ws = windows({ 'daily:tokens': 1000 });
      const r = await a.reserve(request(u, 300, ws));
      assert.equal(r.ok, true);
      assert.equal(r.ok && r.duplicate, false);
      assert.deepEqual(r.windows.map((s) => [s.window, s.metric, s.period, s.used]), [
        ['daily', 'requests', DAY, 1], ['daily', 'tokens', DAY, 300], ['monthly', 'requests', MONTH, 1], ['monthly', 'tokens', MONTH, 300],
      ]);
      assert.equal(r.windows[1]?.remaining, 700);
      assert.equal(r.windows[1]?.resetAt, ws[1]?.resetAt);
      assert.deepEqual(await used(b, u, ws), [1, 300, 1, 300]);
    });

    it('a duplicate request id changes nothing, before and after settlement', async () => {
      const u = user();
      const ws = windows();
      const req = request(u, 50, ws);
      await a.reserve(req);
      const dup = await b.reserve(req);
      assert.equal(dup.ok && dup.duplicate, true);
      assert.deepEqual(await used(a, u, ws), [1, 50, 1, 50]);
      // The id is global: another user cannot reserve under it either.
      const other = user();
      const stolen = await a.reserve({ ...req, userId: other });
      assert.equal(stolen.ok && stolen.duplicate, true);
      assert.deepEqual(await used(a, other, ws), [0, 0, 0, 0]);
      assert.equal(await a.settle(req.requestId, { tokens: 20, requests: 1 }), 'settled');
      const late = await a.reserve(req);
      assert.equal(late.ok && late.duplicate, true);
      assert.deepEqual(await used(a, u, ws), [1, 20, 1, 20]);
    });

    it('a refusal names the window that did not fit and changes no counter', async () => {
      const u = user();
      const ws = windows({ 'monthly:tokens': 500 });
      assert.equal((await a.reserve(request(u, 400, ws))).ok, true);
      const r = await a.reserve(request(u, 200, ws));
      assert.equal(r.ok, false);
      const exceeded = exceededOf(r);
      assert.deepEqual([exceeded.window, exceeded.metric, exceeded.used, exceeded.remaining], ['monthly', 'tokens', 400, 100]);
      assert.deepEqual(r.windows.map((s) => s.used), [1, 400, 1, 400]);
      assert.deepEqual(await used(a, u, ws), [1, 400, 1, 400]);
      // A smaller one that fits is still admitted.
      assert.equal((await a.reserve(request(u, 100, ws))).ok, true);
    });

    it('race: 500 concurrent reserves against a budget of exactly K admit exactly K', async () => {
      const K = 137;
      const u = user();
      const ws = windows({ 'daily:tokens': K * 100 });
      const results = await Promise.all(Array.from({ length: 500 }, (_, i) => (i % 2 ? a : b).reserve(request(u, 100, ws))));
      assert.equal(results.filter((r) => r.ok).length, K);
      for (const r of results) if (!r.ok) assert.equal(exceededOf(r).metric, 'tokens');
      assert.deepEqual(await used(a, u, ws), [K, K * 100, K, K * 100]);
    });

    it('race: the request-count window admits exactly requestsPerDay', async () => {
      const K = 137;
      const u = user();
      const ws = windows({ 'daily:requests': K });
      const results = await Promise.all(Array.from({ length: 500 }, (_, i) => (i % 2 ? a : b).reserve(request(u, 7, ws))));
      assert.equal(results.filter((r) => r.ok).length, K);
      for (const r of results) if (!r.ok) { const e = exceededOf(r); assert.deepEqual([e.window, e.metric, e.used], ['daily', 'requests', K]); }
      assert.deepEqual(await used(a, u, ws), [K, K * 7, K, K * 7]);
    });

    it('race: mixed amounts never overshoot and the counter is exactly the admitted sum', async () => {
      const limit = 20_000;
      const u = user();
      const ws = windows({ 'daily:tokens': limit });
      const random = seeded(42);
      const amounts = Array.from({ length: 500 }, () => 1 + Math.floor(random() * 500));
      const results: ReserveResult[] = await Promise.all(amounts.map((n, i) => (i % 2 ? a : b).reserve(request(u, n, ws))));
      const admitted = amounts.filter((_, i) => results[i]?.ok);
      const total = admitted.reduce((s, n) => s + n, 0);
      const [requests, tokens] = await used(a, u, ws);
      assert.equal(tokens, total);
      assert.equal(requests, admitted.length);
      assert.ok(tokens! <= limit);
      assert.ok(admitted.length > 0 && admitted.length < 500);
      for (const [i, r] of results.entries()) {
        if (r.ok) continue;
        // Refused only because it did not fit the usage at that moment, which never exceeds the end state.
        const exceeded = exceededOf(r);
        assert.equal(exceeded.metric, 'tokens');
        assert.ok(exceeded.used + amounts[i]! > limit, `refused ${amounts[i]} at used ${exceeded.used}`);
        assert.ok(exceeded.used <= tokens!);
      }
    });

    it('in-flight cap: reserve refuses at maxInFlight open reservations, changing nothing; settle, release and a refund free a slot', async () => {
      const u = user();
      const ws = windows();
      const capped = (tokens = 10) => ({ ...request(u, tokens, ws), maxInFlight: 2 });
      const first = capped();
      const second = capped();
      assert.equal((await a.reserve(first)).ok, true);
      assert.equal((await b.reserve(second)).ok, true);
      // A duplicate of an open reservation opens nothing and is not refused.
      const dup = await b.reserve(first);
      assert.equal(dup.ok && dup.duplicate, true);
      const refused = await a.reserve(capped());
      assert.ok(!refused.ok && refused.reason === 'in_flight', JSON.stringify(refused));
      assert.deepEqual(refused.inFlight, { open: 2, limit: 2 });
      assert.deepEqual(await used(a, u, ws), [2, 20, 2, 20], 'the refusal changed no counter');
      // Another user is not affected by this user's cap.
      assert.equal((await a.reserve({ ...request(user(), 10, ws), maxInFlight: 2 })).ok, true);
      // No cap given: the open reservations still count, but nothing refuses.
      assert.equal((await b.reserve(request(u, 10, ws))).ok, true);
      assert.equal((await a.reserve(capped())).ok, false, 'three open now');
      assert.equal(await a.settle(first.requestId, { tokens: 5, requests: 1 }), 'settled');
      assert.equal((await a.reserve(capped())).ok, false, 'still two open after one settle');
      assert.equal(await b.release(second.requestId), true);
      const third = capped();
      assert.equal((await b.reserve(third)).ok, true, 'a release freed a slot');
      assert.equal((await a.reserve(capped())).ok, false);
      assert.equal(await b.settle(third.requestId, { tokens: 0, requests: 0 }), 'settled');
      assert.equal((await a.reserve(capped())).ok, true, 'a refund freed a slot');
      // A settled id replayed is a duplicate: it reopens nothing.
      assert.equal((await a.reserve({ ...first, maxInFlight: 2 })).ok, true);
      assert.equal((await a.reserve(capped())).ok, false);
    });

    it('in-flight cap: a reservation reclaimed by the sweeper (expired, then released) frees its slot', async () => {
      const u = user();
      const ws = windows();
      const past = Date.now() - 1000;
      const stale = { ...request(u, 10, ws, past), maxInFlight: 1 };
      assert.equal((await a.reserve(stale)).ok, true);
      assert.equal((await b.reserve({ ...request(u, 10, ws), maxInFlight: 1 })).ok, false);
      const expired = await a.expired(Date.now(), 1000);
      assert.ok(expired.some((r) => r.requestId === stale.requestId));
      assert.equal(await b.release(stale.requestId), true);
      assert.equal((await a.reserve({ ...request(u, 10, ws), maxInFlight: 1 })).ok, true);
    });

    it('race: 200 concurrent reserves with maxInFlight K admit exactly K', async () => {
      const K = 13;
      const u = user();
      const ws = windows();
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).reserve({ ...request(u, 1, ws), maxInFlight: K })));
      assert.equal(results.filter((r) => r.ok).length, K);
      for (const r of results) if (!r.ok) assert.equal(r.reason, 'in_flight');
      assert.deepEqual(await used(a, u, ws), [K, K, K, K]);
    });

    it('settle applies actual - reserved in all four windows, exactly once', async () => {
      const u = user();
      const ws = windows();
      const low = request(u, 100, ws);
      const high = request(u, 100, ws);
      await a.reserve(low);
      await a.reserve(high);
      assert.deepEqual(await used(a, u, ws), [2, 200, 2, 200]);
      assert.equal(await a.settle(low.requestId, { tokens: 40, requests: 1 }), 'settled');
      assert.deepEqual(await used(a, u, ws), [2, 140, 2, 140]);
      const again = await Promise.all([b.settle(low.requestId, { tokens: 40, requests: 1 }), a.settle(low.requestId, { tokens: 40, requests: 1 })]);
      assert.deepEqual(again, ['already-settled', 'already-settled']);
      assert.deepEqual(await used(a, u, ws), [2, 140, 2, 140]);
      assert.equal(await b.settle(high.requestId, { tokens: 250, requests: 1 }), 'settled');
      assert.deepEqual(await used(a, u, ws), [2, 290, 2, 290]);
    });

    it('concurrent duplicate settles change the counters once', async () => {
      const u = user();
      const ws = windows();
      const req = request(u, 100, ws);
      await a.reserve(req);
      const outcomes = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).settle(req.requestId, { tokens: 10, requests: 1 })));
      assert.equal(outcomes.filter((o) => o === 'settled').length, 1);
      assert.equal(outcomes.filter((o) => o === 'already-settled').length, 9);
      assert.deepEqual(await used(a, u, ws), [1, 10, 1, 10]);
    });

    it('a refund (settle 0/0) returns the tokens and the request', async () => {
      const u = user();
      const ws = windows({ 'daily:requests': 1 });
      const first = request(u, 300, ws);
      assert.equal((await a.reserve(first)).ok, true);
      assert.equal((await a.reserve(request(u, 1, ws))).ok, false);
      assert.equal(await a.settle(first.requestId, { tokens: 0, requests: 0 }), 'settled');
      assert.deepEqual(await used(a, u, ws), [0, 0, 0, 0]);
      assert.equal((await a.reserve(request(u, 1, ws))).ok, true);
    });

    it('release takes a reservation back without a settled mark: the same id reserves again', async () => {
      const u = user();
      const ws = windows({ 'daily:requests': 1 });
      const r = request(u, 300, ws);
      assert.equal((await a.reserve(r)).ok, true);
      assert.equal(await b.release(r.requestId), true);
      assert.deepEqual(await used(a, u, ws), [0, 0, 0, 0]);
      const again = await a.reserve(r);
      assert.ok(again.ok && !again.duplicate, 'a released id is not a duplicate');
      assert.deepEqual(await used(a, u, ws), [1, 300, 1, 300]);
      // Once settled, there is nothing to release, and nothing changes.
      assert.equal(await a.settle(r.requestId, { tokens: 120, requests: 1 }), 'settled');
      assert.equal(await b.release(r.requestId), false);
      assert.equal(await a.release(randomUUID()), false);
      assert.deepEqual(await used(a, u, ws), [1, 120, 1, 120]);
      const dup = await a.reserve(r);
      assert.ok(dup.ok && dup.duplicate, 'a settled id stays a duplicate');
    });

    it('settle of an unknown request id is unknown', async () => {
      assert.equal(await a.settle(randomUUID(), { tokens: 1, requests: 1 }), 'unknown');
      assert.equal(await a.extend(randomUUID(), Date.now()), false);
    });

    it('expired lists unsettled reservations past their deadline; extend moves the deadline', async () => {
      const u = user();
      const ws = windows();
      const now = Date.now();
      const late = request(u, 10, ws, now - 1000);
      const settled = request(u, 10, ws, now - 500);
      const pending = request(u, 10, ws, now + 60_000);
      for (const r of [late, settled, pending]) await a.reserve(r);
      await a.settle(settled.requestId, { tokens: 5, requests: 1 });
      const mine = (list: { requestId: string }[]) => list.map((r) => r.requestId).filter((id) => [late, settled, pending].some((r) => r.requestId === id));

      const found = await b.expired(now, 1000);
      assert.deepEqual(mine(found), [late.requestId]);
      assert.deepEqual(found.find((r) => r.requestId === late.requestId),
        { requestId: late.requestId, userId: u, tokens: 10, windows: ws, deadlineAt: now - 1000 });
      assert.ok((await a.expired(now, 1)).length <= 1);

      assert.equal(await b.extend(late.requestId, now + 30_000), true);
      assert.deepEqual(mine(await a.expired(now, 1000)), []);
      assert.deepEqual(mine(await a.expired(now + 120_000, 1000)).sort(), [late.requestId, pending.requestId].sort());
      assert.equal(await a.extend(settled.requestId, now + 30_000), false);
    });

    it('leases: at most `limit` at once, release frees a slot, fences strictly increase', async () => {
      const u = user();
      const first = await a.acquireLease(u, 'l1', 2, 10_000);
      const second = await b.acquireLease(u, 'l2', 2, 10_000);
      assert.ok(first.ok && second.ok);
      assert.ok(second.fence > first.fence);
      assert.deepEqual(await a.acquireLease(u, 'l3', 2, 10_000), { ok: false, active: 2, limit: 2 });
      await b.releaseLease(u, 'l1');
      const third = await a.acquireLease(u, 'l3', 2, 10_000);
      assert.ok(third.ok);
      assert.ok(third.fence > second.fence);
      // Another user's slots are separate.
      assert.equal((await a.acquireLease(user(), 'l1', 2, 10_000)).ok, true);
    });

    it('leases: activeLeases counts the live slots of one user, seen from every instance', async () => {
      const u = user();
      assert.equal(await a.activeLeases(u), 0);
      await a.acquireLease(u, 'c1', 5, 10_000);
      await b.acquireLease(u, 'c2', 5, 10_000);
      await a.acquireLease(u, 'c2', 5, 10_000); // the same lease again holds one slot
      await a.acquireLease(user(), 'c1', 5, 10_000);
      assert.equal(await a.activeLeases(u), 2);
      assert.equal(await b.activeLeases(u), 2);
      await b.releaseLease(u, 'c1');
      assert.equal(await a.activeLeases(u), 1);
      await a.acquireLease(u, 'short', 5, 300);
      assert.equal(await b.activeLeases(u), 2);
      await sleep(400);
      assert.equal(await b.activeLeases(u), 1, 'an expired lease is not counted');
    });

    it('leases: an unrefreshed lease expires after its TTL; a refreshed one keeps its slot', async () => {
      const u = user();
      assert.equal((await a.acquireLease(u, 'stale', 1, 300)).ok, true);
      assert.equal((await a.acquireLease(u, 'other', 1, 300)).ok, false);
      await sleep(400);
      assert.equal(await b.refreshLease(u, 'stale', 300), false);
      assert.equal((await a.acquireLease(u, 'kept', 1, 300)).ok, true);
      await sleep(200);
      assert.equal(await a.refreshLease(u, 'kept', 300), true);
      await sleep(200);
      // 400 ms after acquiring but only 200 ms after the refresh: still held.
      assert.deepEqual(await b.acquireLease(u, 'other', 1, 300), { ok: false, active: 1, limit: 1 });
    });

    it('hit: a fixed window admits `limit` hits, then refuses until it ends', async () => {
      const key = `poll:${randomUUID()}`;
      for (let i = 0; i < 3; i++) assert.equal((await (i % 2 ? a : b).hit(key, 3, 500)).ok, true);
      const refused = await a.hit(key, 3, 500);
      assert.equal(refused.ok, false);
      assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= 500, `retryAfterMs ${refused.retryAfterMs}`);
      assert.equal((await a.hit(`poll:${randomUUID()}`, 3, 500)).ok, true);
      await sleep(refused.retryAfterMs + 50);
      assert.deepEqual(await b.hit(key, 3, 500), { ok: true, retryAfterMs: 0 });
    });

    it('window rollover: a settle after midnight adjusts the day the reservation was made in', async () => {
      const u = user();
      const day1 = windows({}, DAY);
      const day2 = windows({}, NEXT_DAY);
      const old = request(u, 100, day1);
      await a.reserve(old);
      await a.reserve(request(u, 30, day2));
      assert.deepEqual(await used(a, u, day1), [1, 100, 2, 130]);
      assert.equal(await b.settle(old.requestId, { tokens: 60, requests: 1 }), 'settled');
      assert.deepEqual(await used(a, u, day1), [1, 60, 2, 90]);
      assert.deepEqual(await used(a, u, day2), [1, 30, 2, 90]);
    });

    it('restoreUsage adds settled usage to the counters without a reservation', async () => {
      const u = user();
      const ws = windows({ 'daily:tokens': 1000 });
      await a.restoreUsage(u, ws, { tokens: 900, requests: 3 });
      await a.restoreUsage(u, ws, { tokens: 50, requests: 1 });
      assert.deepEqual(await used(b, u, ws), [4, 950, 4, 950]);
      assert.equal((await a.reserve(request(u, 51, ws))).ok, false);
      assert.equal((await a.reserve(request(u, 50, ws))).ok, true);
    });
  });
}
