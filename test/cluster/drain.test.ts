// Graceful drain with real processes: two `all` processes share PostgreSQL, RabbitMQ and Redis.
// The one running the work gets SIGTERM mid-stream (SLUICE_DRAIN_MS 1500):
// - at once its readiness is 503 and a new request gets 503 SLUICE_ERR_DRAINING with Retry-After;
// - a short direct-mode stream started before the signal finishes there, within the grace period;
// - a queued request its worker runs, and a direct-mode stream it runs itself, outlive the grace
//   period: their listeners' streams end without a terminal event, the requests go back to the
//   queue, and the other process's worker continues them. Each client resumes on the other
//   gateway with Last-Event-ID and sees `restart`, then the new attempt's tokens, with no gap
//   and no duplicate; every request completes and is charged once, with no reservation left;
// - the drained process exits 0.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readSse, waitFor, type SseFrame } from '../helpers/app.ts';
import { awaitAllEnded, client, createCluster, dailyUsed, ledgerRows, type Cluster } from '../helpers/cluster.ts';
import type { SluiceProcess } from '../helpers/process.ts';
import { serviceSuite } from '../helpers/services.ts';

const suite = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')), ...(await serviceSuite('rabbitmq')) };

const LONG = 250; // tokens at SIM_ITL_MS 20: ~5 s, past the 1.5 s grace period
const SHORT = 20; // ~0.4 s: finishes within it

const terminal = (f: SseFrame) => f.event === 'completed' || f.event === 'error';
const ids = (frames: SseFrame[]) => frames.filter((f) => f.id !== undefined).map((f) => Number(f.id));
const tokenAttempts = (frames: SseFrame[]) => frames.filter((f) => f.event === 'token').map((f) => (JSON.parse(f.data) as { attempt: number }).attempt);

describe('graceful drain on SIGTERM (queue amqp, bus redis, two processes)', suite, () => {
  let cluster: Cluster;
  let procs: SluiceProcess[];
  before(async () => {
    cluster = await createCluster({ queue: 'amqp', bus: 'redis', env: { SIM_ITL_MS: '20', SLUICE_DRAIN_MS: '1500', WORKER_CLAIM_MS: '3000' } });
    procs = await Promise.all([cluster.start('all'), cluster.start('all')]);
  });
  after(async () => { await cluster?.cleanup(); });

  /** Follows a request's native events on `url` after `lastId` until the stream ends (by its end or the gateway's). */
  const follow = (url: string, key: string, id: string, lastId: number, into: SseFrame[]) => client(url, key)
    .call(`/v1/requests/${id}/events`, { headers: { 'last-event-id': String(lastId) }, signal: AbortSignal.timeout(60_000) })
    .then((res) => { assert.equal(res.status, 200); return readSse(res, (f) => { into.push(f); return terminal(f); }); });

  it('finishes what fits in the grace period, hands the rest to the other process, and the clients resume there', async () => {
    const user = await cluster.user({ tier: 'pro' });
    const [first] = procs as [SluiceProcess, SluiceProcess];
    const body = (n: number, what: string) => ({ model: 'sim', max_tokens: n, messages: [{ role: 'user', content: what }] });

    // A queued request; the process whose worker claims it is the one drained.
    const posted = await client(first.url, user.key).post('/v1/requests', body(LONG, 'queued, long'));
    assert.equal(posted.status, 202);
    const queuedId = ((await posted.json()) as { request_id: string }).request_id;
    const claimedBy = await waitFor(async () => (await cluster.sql<{ claimed_by: string | null }>('SELECT claimed_by FROM requests WHERE request_id = $1', [queuedId]))[0]?.claimed_by, 15_000);
    const drained = procs.find((p) => claimedBy.startsWith(`worker-${p.child.pid}-`));
    assert.ok(drained, `claimed by ${claimedBy}`);
    const other = procs.find((p) => p !== drained)!;
    const api = client(drained.url, user.key);

    // Its listener on the drained gateway, a long direct-mode stream there, and a short one.
    const queuedFrames: SseFrame[] = [];
    const queuedStream = follow(drained.url, user.key, queuedId, 0, queuedFrames);
    const directFrames: SseFrame[] = [];
    const directRes = await api.call('/chat', { method: 'POST', json: { message: 'direct, long', max_tokens: LONG }, headers: { 'x-sluice-mode': 'direct' } });
    assert.equal(directRes.status, 200);
    const directId = directRes.headers.get('x-request-id')!;
    const directStream = readSse(directRes, (f) => { directFrames.push(f); return terminal(f); });
    await waitFor(async () => tokenAttempts(queuedFrames).length >= 10 && tokenAttempts(directFrames).length >= 10, 15_000);
    const shortFrames: SseFrame[] = [];
    const shortRes = await api.call('/chat', { method: 'POST', json: { message: 'direct, short', max_tokens: SHORT }, headers: { 'x-sluice-mode': 'direct' } });
    const shortStream = readSse(shortRes, (f) => { shortFrames.push(f); return terminal(f); });
    await waitFor(async () => tokenAttempts(shortFrames).length >= 1, 10_000);

    const exited = new Promise<number | null>((resolve) => drained.child.once('exit', (code) => resolve(code)));
    drained.child.kill('SIGTERM');

    // Draining: not ready, and new work is refused with a Retry-After.
    await waitFor(async () => (await fetch(`${drained.url}/readyz`)).status === 503, 5000, 20);
    const refused = await api.post('/v1/requests', body(5, 'too late'));
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_DRAINING');
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.equal((await fetch(`${other.url}/readyz`)).status, 200, 'the other process is ready');

    // The short stream finished on the drained process, within the grace period.
    await shortStream;
    assert.equal(shortFrames.at(-1)?.event, 'completed');
    assert.deepEqual(tokenAttempts(shortFrames), Array(SHORT).fill(1), 'no restart');

    // The long ones were cut without a terminal event (so the clients reconnect) ...
    await Promise.all([queuedStream, directStream]);
    for (const frames of [queuedFrames, directFrames]) {
      assert.ok(!frames.some(terminal), 'no terminal event from the drained gateway');
      assert.ok(tokenAttempts(frames).length < LONG, 'cut before the end');
    }
    assert.equal(await exited, 0, `the drained process exits 0:\n${drained.output().slice(-2000)}`);

    // ... and resume on the other gateway, where its worker continues them.
    for (const [id, frames] of [[queuedId, queuedFrames], [directId, directFrames]] as const) {
      const lastId = ids(frames).at(-1)!;
      const resumed: SseFrame[] = [];
      await follow(other.url, user.key, id, lastId, resumed);
      const all = [...frames.filter((f) => f.id !== undefined), ...resumed.filter((f) => f.id !== undefined)];
      assert.deepEqual(ids(all), ids(all).map((_, i) => i + 1), `${id}: every sequence once, no gap, no duplicate`);
      const restarts = resumed.filter((f) => f.event === 'restart');
      assert.equal(restarts.length, 1, `${id}: the client sees one restart`);
      assert.equal((JSON.parse(restarts[0]!.data) as { attempt: number }).attempt, 2);
      assert.deepEqual(tokenAttempts(resumed.slice(resumed.indexOf(restarts[0]!))), Array(LONG).fill(2), `${id}: the new attempt's tokens, all of them`);
      const done = JSON.parse(resumed.at(-1)!.data) as { status: string; usage: { completion_tokens: number } };
      assert.equal(resumed.at(-1)!.event, 'completed');
      assert.equal(done.status, 'completed');
      assert.equal(done.usage.completion_tokens, LONG);
    }

    // Every request completed and was charged once; the windows hold exactly the ledger's charges.
    const ended = await awaitAllEnded(other.url, user.id, 3);
    assert.deepEqual(ended.map((r) => r.status), ['completed', 'completed', 'completed']);
    const handed = await cluster.sql<{ request_id: string; attempt: number; handoffs: number }>('SELECT request_id, attempt, handoffs FROM requests WHERE request_id = ANY($1) ORDER BY request_id', [[queuedId, directId]]);
    assert.deepEqual(handed.map((r) => [r.attempt, r.handoffs]), [[2, 1], [2, 1]], 'the hand-off is counted as such, not as a spent attempt');
    const rows = await ledgerRows(other.url, user.id);
    assert.equal(rows.length, 3, 'one ledger row per request');
    assert.deepEqual(new Set(rows.map((r) => r.request_id)).size, 3);
    const charged = rows.reduce((sum, r) => sum + r.charged_tokens, 0);
    const used = await waitFor(async () => { const u = await dailyUsed(other.url, user.key); return u.tokens === charged && u; }, 10_000, 100)
      .catch(async () => dailyUsed(other.url, user.key));
    assert.deepEqual(used, { tokens: charged, requests: 3 }, 'no reservation left open');
  });
});
