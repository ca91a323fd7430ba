// Accounting across time and failures: window rollover at the configured zone's midnight
// (injected clock), refunds of failed requests, restarts that rebuild the windows from the ledger,
// and reservations reclaimed by the sweeper after their deadline.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config.ts';
import { startSluice } from '../../src/app.ts';
import { periodsAt, windowLimits } from '../../src/core/quota-windows.ts';
import { MASTER_KEY, api, createUserKey, ledgerRows, startTestSluice, usageWindows, waitFor, type TestSluice } from '../helpers/app.ts';
import { freePort, spawnSluice, type SluiceProcess } from '../helpers/process.ts';

const chat = (max_tokens: number) => ({ model: 'sim', max_tokens, messages: [{ role: 'user', content: 'hello' }] });

describe('window rollover (injected clock)', () => {
  let app: TestSluice;
  // 30 s before the next midnight in New York. (Counters expire by the real clock, as Redis keys
  // do, so the injected clock runs ahead of the real one, never behind it.)
  const midnight = periodsAt(Date.now(), 'America/New_York').daily.resetAt;
  const monthEnds = periodsAt(midnight - 1, 'America/New_York').monthly.resetAt === midnight;
  let now = midnight - 30_000;
  before(async () => { app = await startTestSluice({ timeZone: 'America/New_York' }, { now: () => now }); });
  after(() => app.stop());

  it("daily counters reset at the zone's midnight; monthly ones keep counting", async () => {
    const key = await createUserKey(app.url, { id: 'clock', quota: { requests_per_day: 2, requests_per_month: 3, tokens_per_day: 1_000_000, tokens_per_month: 10_000_000 } });
    const call = api(app.url, key);
    const post = () => call('/v1/requests', { method: 'POST', json: chat(2) });
    assert.equal((await post()).status, 202);
    assert.equal((await post()).status, 202);
    const refused = await post();
    assert.equal(refused.status, 429);
    const retry = Number(refused.headers.get('retry-after'));
    assert.ok(retry > 0 && retry <= 30, `resets at local midnight, ${retry}s away`);
    now += 31_000; // 00:00:01 local, a new day
    assert.equal((await post()).status, 202, 'a new daily window');
    if (monthEnds) return; // tonight also starts a new month: the monthly check needs another night
    const monthly = await post();
    assert.equal(monthly.status, 429, 'the monthly window still counts 3');
    assert.match(((await monthly.json()) as { error: { message: string } }).error.message, /monthly requests/);
  });
});

describe('refunds and restarts (embedded)', () => {
  it('a failed request (model keeps failing) is refunded: nothing charged', async () => {
    const app = await startTestSluice({ modelUrl: 'sim://?fail_rate=1', worker: { concurrency: 4, claimMs: 15_000, maxAttempts: 2, retryBaseMs: 10, requestTimeoutMs: 600_000 } });
    try {
      const key = await createUserKey(app.url, { id: 'refund', quota: { tokens_per_day: 1_000_000, requests_per_day: 100, tokens_per_month: 10_000_000, requests_per_month: 1000 } });
      const call = api(app.url, key);
      const { request_id } = (await (await call('/v1/requests', { method: 'POST', json: chat(20) })).json()) as { request_id: string };
      const r = await waitFor(async () => { const x = (await (await call(`/v1/requests/${request_id}`)).json()) as { status: string; attempt: number; error: { code: string } }; return x.status === 'failed' && x; });
      assert.equal(r.attempt, 2, 'retried once before failing');
      assert.equal(r.error.code, 'SLUICE_ERR_MODEL_TRANSIENT');
      const w = await usageWindows(app.url, key);
      assert.equal(w.daily_tokens!.used, 0);
      assert.equal(w.daily_requests!.used, 0);
      const [row] = await ledgerRows(app.url, 'refund');
      assert.equal(row!.status, 'failed');
      assert.equal(row!.charged_tokens, 0);
    } finally { await app.stop(); }
  });

  it('a restart rebuilds the windows from the ledger: never a free quota reset', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-rebuild-'));
    const config = parseConfig({ port: 0, dataDir: dir, databaseUrl: `pglite://${join(dir, 'db')}`, logLevel: 'silent', masterKey: MASTER_KEY, sim: { ttftMs: 0, itlMs: 0 } });
    let app = await startSluice(config);
    try {
      const key = await createUserKey(app.url!, { id: 'rebuild', quota: { tokens_per_day: 1_000_000, requests_per_day: 100, tokens_per_month: 10_000_000, requests_per_month: 1000 } });
      for (let i = 0; i < 3; i++) await api(app.url!, key)('/v1/chat/completions', { method: 'POST', json: chat(7) });
      const before = await usageWindows(app.url!, key);
      assert.equal(before.daily_requests!.used, 3);
      await app.close();
      app = await startSluice(config);
      const afterwards = await usageWindows(app.url!, key);
      assert.equal(afterwards.daily_requests!.used, 3);
      assert.equal(afterwards.daily_tokens!.used, before.daily_tokens!.used);
      assert.equal(afterwards.monthly_tokens!.used, before.monthly_tokens!.used);
    } finally { await app.close(); rmSync(dir, { recursive: true, force: true }); }
  });

  it('kill -9 with 50 reservations outstanding: after restart, remaining = limit - settled usage', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-leak-'));
    const port = await freePort();
    const env = { SLUICE_DATA_DIR: dir, DATABASE_URL: `pglite://${join(dir, 'db')}`, SLUICE_MASTER_KEY: MASTER_KEY, SIM_TTFT_MS: '0', SIM_ITL_MS: '20', WORKER_CONCURRENCY: '5' };
    let proc: SluiceProcess = await spawnSluice(['start'], env, { port });
    try {
      const limit = 100_000;
      const key = await createUserKey(proc.url, { id: 'leak', quota: { tokens_per_day: limit, requests_per_day: 1000, tokens_per_month: 10_000_000, requests_per_month: 10_000 } });
      const call = api(proc.url, key);
      await Promise.all(Array.from({ length: 50 }, () => call('/v1/requests', { method: 'POST', json: chat(30) }).then((r) => assert.equal(r.status, 202))));
      const outstanding = await usageWindows(proc.url, key);
      assert.ok(outstanding.daily_tokens!.used > 0);
      await proc.kill('SIGKILL');
      proc = await spawnSluice(['start'], env, { port });
      const rows = await waitFor(async () => { const r = await ledgerRows(proc.url, 'leak'); return r.length === 50 && r; }, 30_000, 200);
      const settled = rows.reduce((s, r) => s + r.charged_tokens, 0);
      const w = await usageWindows(proc.url, key);
      assert.equal(w.daily_tokens!.used, settled);
      assert.equal(w.daily_tokens!.remaining, limit - settled);
      assert.equal(w.daily_requests!.used, 50);
    } finally { await proc.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); }
  });

  it('the sweeper reclaims a reservation whose request never reached the store, after its deadline', async () => {
    const app = await startTestSluice({ sweepIntervalMs: 100_000 });
    try {
      const t = Date.now();
      const windows = windowLimits({ requestsPerDay: 10, tokensPerDay: 1000, requestsPerMonth: 10, tokensPerMonth: 1000 }, t, 'UTC');
      // A gateway reserved, then died before inserting the request row.
      const requestId = crypto.randomUUID();
      const r = await app.limiter.reserve({ requestId, userId: 'ghost', tokens: 400, windows, deadlineAt: t - 1 });
      assert.equal(r.ok, true);
      assert.equal((await app.limiter.usage('ghost', windows)).find((w) => w.metric === 'tokens' && w.window === 'daily')!.used, 400);
      const swept = await app.sweeper.sweepOnce();
      assert.equal(swept.reclaimed, 1);
      const after = await app.limiter.usage('ghost', windows);
      assert.deepEqual(after.map((w) => w.used), [0, 0, 0, 0]);
      // Released, not refunded: a retry of the same Idempotency-Key (the same id) reserves anew.
      const retry = await app.limiter.reserve({ requestId, userId: 'ghost', tokens: 400, windows, deadlineAt: t + 60_000 });
      assert.ok(retry.ok && !retry.duplicate);
    } finally { await app.stop(); }
  });

  it("the sweeper settles an ended request's leftover reservation at what its ledger row charged", async () => {
    const app = await startTestSluice({ sweepIntervalMs: 100_000 });
    try {
      const t = Date.now();
      const windows = windowLimits({ requestsPerDay: 10, tokensPerDay: 1000, requestsPerMonth: 10, tokensPerMonth: 1000 }, t, 'UTC');
      const ended = async (userId: string, charged: { tokens: number; requests: 0 | 1 }, status: 'completed' | 'cancelled') => {
        const id = crypto.randomUUID();
        assert.equal((await app.limiter.reserve({ requestId: id, userId, tokens: 400, windows, deadlineAt: t - 1 })).ok, true);
        await app.store.insertRequest({
          id, userId, keyId: null, model: 'sim', mode: 'queued', payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 390 },
          priority: 0, idempotencyKey: null, bodyHash: 'h', estimatedTokens: 400, promptTokens: 10,
        });
        // Claimed (so started), then ended; the limiter's settle never ran (an outage, a crash).
        assert.equal((await app.store.claimRequest(id, 'w', 60_000)).state, 'claimed');
        const completion = status === 'completed' ? charged.tokens - 10 : 0;
        assert.equal(await app.store.finishRequest(id, {
          status, attempt: 1, result: '', finishReason: status === 'completed' ? 'stop' : 'cancelled',
          usage: { promptTokens: status === 'completed' ? 10 : 0, completionTokens: completion, totalTokens: charged.tokens }, error: null,
          chargedTokens: charged.tokens, chargedRequests: charged.requests,
        }), true);
      };
      // Cancelled after its claim but before the model ran: the runner charged nothing.
      await ended('cancelled-early', { tokens: 0, requests: 0 }, 'cancelled');
      await ended('completed-late', { tokens: 25, requests: 1 }, 'completed');
      assert.equal((await app.sweeper.sweepOnce()).reclaimed, 2);
      assert.deepEqual((await app.limiter.usage('cancelled-early', windows)).map((w) => w.used), [0, 0, 0, 0]);
      const completed = await app.limiter.usage('completed-late', windows);
      assert.deepEqual(completed.filter((w) => w.window === 'daily').map((w) => [w.metric, w.used]), [['requests', 1], ['tokens', 25]]);
    } finally { await app.stop(); }
  });

  it("the sweeper settles an ended request's open reservation with its ledger row within seconds, not at the deadline", async () => {
    let clock = Date.now();
    const app = await startTestSluice({ sweepIntervalMs: 100_000, reservationSettleAfterMs: 5000 }, { now: () => clock });
    try {
      const t = clock;
      const deadlineAt = t + app.config.worker.requestTimeoutMs + app.config.reservationGraceMs;
      const windows = windowLimits({ requestsPerDay: 10, tokensPerDay: 1000, requestsPerMonth: 10, tokensPerMonth: 1000 }, t, 'UTC');
      const dailyTokens = async (userId: string) => (await app.limiter.usage(userId, windows)).find((w) => w.metric === 'tokens' && w.window === 'daily')!.used;
      const stored = async (userId: string) => {
        const id = crypto.randomUUID();
        assert.equal((await app.limiter.reserve({ requestId: id, userId, tokens: 400, windows, deadlineAt })).ok, true);
        await app.store.insertRequest({
          id, userId, keyId: null, model: 'sim', mode: 'queued', payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 390 },
          priority: 0, idempotencyKey: null, bodyHash: 'h', estimatedTokens: 400, promptTokens: 10,
        });
        assert.equal((await app.store.claimRequest(id, 'w', 60_000)).state, 'claimed');
        return id;
      };
      const ended = await stored('ended');
      await stored('running');
      // The worker ended the request (ledger row: 25 tokens), then died before the limiter's settle.
      assert.equal(await app.store.finishRequest(ended, {
        status: 'completed', attempt: 1, result: 'x', finishReason: 'stop', usage: { promptTokens: 10, completionTokens: 15, totalTokens: 25 }, error: null,
        chargedTokens: 25, chargedRequests: 1,
      }), true);
      clock = t + 1000;
      assert.equal((await app.sweeper.sweepOnce()).settled, 0, 'younger than reservationSettleAfterMs: its own settle may still be on the way');
      assert.equal(await dailyTokens('ended'), 400);
      clock = t + 6000;
      assert.deepEqual(await app.sweeper.sweepOnce(), { requeued: 0, reclaimed: 0, settled: 1 });
      assert.equal(await dailyTokens('ended'), 25, 'the ledger row\'s charge, not the estimate');
      assert.equal(await dailyTokens('running'), 400, 'a running request keeps its reservation');
      assert.deepEqual(await app.sweeper.sweepOnce(), { requeued: 0, reclaimed: 0, settled: 0 });
      assert.equal(await dailyTokens('ended'), 25, 'settled once');
    } finally { await app.stop(); }
  });
});
