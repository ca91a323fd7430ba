// Crash under attack: while user A floods the gateway with max-size requests as fast as it is
// allowed (its in-flight cap, its stream leases for direct calls), user B of the same tier and
// priority keeps its latency. Embedded default (memory queue), 4 worker slots, a slow model: one
// of A's max-size requests takes ~0.3 s+ (128 tokens at 2 ms), one of B's ~50 ms unloaded.
//
// The bound: each of B's requests completes (submit -> completed, stream:false) within 5 s, or
// within 10x its unloaded latency measured just before when the shared box is slower than that. Why
// it holds: A has at most 8 requests queued or running (free tier maxInFlight), the memory queue
// serves users round-robin within a priority, and the worker keeps A to its share of the slots
// while others wait, so B waits for at most about one of A's running requests (~0.3 s, more on a loaded box).
// Why it failed before: with no in-flight cap and FIFO within a priority, A's loops queue
// requests without bound (the issue saw 96); B's request queues behind them, waiting
// (queued / 4 slots) x ~0.3 s: tens of seconds.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, createUserKey, startTestSluice, type TestSluice } from '../helpers/app.ts';

/** The bound: 5 s, or 10x B's unloaded latency measured just before on the same (maybe loaded) box. */
const MIN_BOUND_MS = 5000;
const BOUND_FACTOR = 10;
/** The free tier with a smaller max_tokens, so one of A's max-size requests takes ~0.3 s, not ~2 s, and more on a loaded box. */
const FREE = { requestsPerDay: 200, tokensPerDay: 100_000, requestsPerMonth: 3_000, tokensPerMonth: 1_000_000, maxTokens: 128, concurrentStreams: 2, priority: 1, maxInFlight: 8 };
const big = { tokens_per_day: 100_000_000, requests_per_day: 1_000_000, tokens_per_month: 1_000_000_000, requests_per_month: 10_000_000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const body = (max_tokens: number) => ({ model: 'sim', max_tokens, messages: [{ role: 'user', content: 'Tell me about rivers' }] });

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

describe('flood: one user cannot starve another', () => {
  let app: TestSluice;
  before(async () => {
    app = await startTestSluice({
      sim: { ttftMs: 20, itlMs: 2 }, tiers: { free: FREE }, defaultTier: 'free',
      worker: { concurrency: 4, claimMs: 15_000, maxAttempts: 3, retryBaseMs: 50, requestTimeoutMs: 60_000 },
    });
  });
  after(() => app.stop());

  it(`B's requests complete within max(${MIN_BOUND_MS} ms, ${BOUND_FACTOR}x unloaded) while A floods`, { timeout: 40_000 }, async () => {
    const keyA = await createUserKey(app.url, { id: 'flooder', tier: 'free', quota: big });
    const keyB = await createUserKey(app.url, { id: 'bystander', tier: 'free', quota: big });
    const [callA, callB] = [api(app.url, keyA), api(app.url, keyB)];
    const timeB = async (): Promise<number> => {
      const t0 = performance.now();
      const res = await callB('/v1/chat/completions', { method: 'POST', json: body(5) });
      assert.equal(res.status, 200, await res.clone().text());
      await res.json();
      return performance.now() - t0;
    };
    const calm = [await timeB(), await timeB(), await timeB()].sort((a, b) => a - b);
    const unloaded = calm[1]!;
    const bound = Math.max(MIN_BOUND_MS, BOUND_FACTOR * unloaded);

    let flooding = true;
    const refusals = new Map<string, number>();
    const accepted = { queued: 0, direct: 0 };
    // Queued submits and direct calls, as fast as the in-flight cap (which direct calls count in too) and the leases allow.
    const attacker = async (mode: 'queued' | 'direct') => {
      while (flooding) {
        const res = mode === 'queued'
          ? await callA('/v1/requests', { method: 'POST', json: body(FREE.maxTokens) })
          : await callA('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': 'direct' }, json: body(FREE.maxTokens) });
        const j = (await res.json().catch(() => ({}))) as { error?: { code: string } };
        if (res.status === 202 || res.status === 200) { accepted[mode]++; continue; }
        refusals.set(j.error?.code ?? String(res.status), (refusals.get(j.error?.code ?? String(res.status)) ?? 0) + 1);
        await sleep(100);
      }
    };
    const attackers = [...Array.from({ length: 10 }, () => attacker('queued')), attacker('direct'), attacker('direct')];
    try {
      await sleep(1500); // let A fill its cap and every worker slot
      const latencies: number[] = [];
      for (let i = 0; i < 6; i++) latencies.push(await timeB());
      const sorted = [...latencies].sort((a, b) => a - b);
      const [p50, max] = [percentile(sorted, 0.5), sorted[sorted.length - 1]!];
      console.log(`flood: B unloaded ${unloaded.toFixed(0)} ms (bound ${bound.toFixed(0)} ms); under flood p50 ${p50.toFixed(0)} ms, max ${max.toFixed(0)} ms over ${latencies.length} requests; ` +
        `A accepted ${accepted.queued} queued + ${accepted.direct} direct, refused ${JSON.stringify(Object.fromEntries(refusals))}`);
      assert.ok((refusals.get('SLUICE_ERR_IN_FLIGHT_LIMIT') ?? 0) > 0, 'A hit its in-flight cap');
      assert.ok(max < bound, `B's slowest request took ${max.toFixed(0)} ms (bound ${bound.toFixed(0)} ms)`);
    } finally {
      flooding = false;
      await Promise.all(attackers);
    }
  });
});
