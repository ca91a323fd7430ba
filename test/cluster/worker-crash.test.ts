// A worker SIGKILLed mid-generation: the request completes on the other worker (after the dead
// worker's claim expires), listeners see `event: restart` and then the new attempt's tokens, and
// the request is settled once, charged what the finished attempt used, with no reservation left.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readSse, waitFor, type SseFrame } from '../helpers/app.ts';
import { client, createCluster, dailyUsed, ledgerRows, type Cluster } from '../helpers/cluster.ts';
import type { SluiceProcess } from '../helpers/process.ts';
import { serviceSuite } from '../helpers/services.ts';

const suite = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')), ...(await serviceSuite('rabbitmq')) };

describe('worker crash mid-generation (queue amqp, bus redis)', suite, () => {
  let cluster: Cluster;
  let gateway: SluiceProcess;
  let workers: SluiceProcess[];
  before(async () => {
    cluster = await createCluster({ queue: 'amqp', bus: 'redis', env: { SIM_ITL_MS: '30' } });
    [gateway, ...workers] = await Promise.all([cluster.start('gateway'), cluster.start('worker'), cluster.start('worker'), cluster.start('ledger')]);
    workers = workers.slice(0, 2);
  });
  after(async () => { await cluster?.cleanup(); });

  it('the request completes on the other worker, restarts once on the stream and is charged once', async () => {
    const user = await cluster.user();
    const api = client(gateway.url, user.key);
    const res = await api.post('/v1/requests', { model: 'sim', max_tokens: 100, messages: [{ role: 'user', content: 'a long answer please' }] });
    assert.equal(res.status, 202);
    const id = ((await res.json()) as { request_id: string }).request_id;

    const frames: SseFrame[] = [];
    const listening = api.call(`/v1/requests/${id}/events`, { signal: AbortSignal.timeout(30_000) })
      .then((r) => readSse(r, (f) => { frames.push(f); return f.event === 'completed' || f.event === 'error'; }));
    await waitFor(async () => frames.filter((f) => f.event === 'token').length >= 10, 15_000);

    const [claim] = await cluster.sql<{ claimed_by: string }>('SELECT claimed_by FROM requests WHERE request_id = $1', [id]);
    const holder = workers.find((w) => claim?.claimed_by.startsWith(`worker-${w.child.pid}-`));
    assert.ok(holder, `claimed by ${claim?.claimed_by}; workers ${workers.map((w) => w.child.pid).join(', ')}`);
    await holder.kill('SIGKILL');

    await listening;
    const restarts = frames.filter((f) => f.event === 'restart');
    assert.equal(restarts.length, 1, 'one restart event');
    assert.equal((JSON.parse(restarts[0]!.data) as { attempt: number }).attempt, 2);
    const at = frames.indexOf(restarts[0]!);
    const attempts = (fs: SseFrame[]) => fs.filter((f) => f.event === 'token').map((f) => (JSON.parse(f.data) as { attempt: number }).attempt);
    assert.ok(attempts(frames.slice(0, at)).length >= 10);
    assert.ok(attempts(frames.slice(0, at)).every((a) => a === 1));
    assert.deepEqual(attempts(frames.slice(at)), Array(100).fill(2), 'the new attempt streams all its tokens');
    const ids = frames.filter((f) => f.id !== undefined).map((f) => Number(f.id));
    assert.deepEqual(ids, ids.map((_, i) => i + 1), 'event ids are the log sequence, without gaps');
    const completed = JSON.parse(frames.at(-1)!.data) as { status: string; attempt: number; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } };
    assert.equal(completed.status, 'completed');
    assert.equal(completed.attempt, 2);
    assert.equal(completed.usage.completion_tokens, 100);

    const view = await api.get<{ status: string; attempt: number; usage: { total_tokens: number } }>(`/v1/requests/${id}`);
    assert.equal(view.status, 'completed');
    assert.equal(view.usage.total_tokens, completed.usage.total_tokens);
    const rows = await ledgerRows(gateway.url, user.id);
    assert.equal(rows.length, 1, 'one ledger row');
    assert.equal(rows[0]!.request_id, id);
    assert.equal(rows[0]!.charged_tokens, completed.usage.total_tokens, 'charged what the finished attempt used');
    // The reservation was replaced by the charge: the windows hold exactly what the ledger says.
    const used = await waitFor(async () => { const u = await dailyUsed(gateway.url, user.key); return u.tokens === rows[0]!.charged_tokens && u; }, 5000, 100)
      .catch(async () => dailyUsed(gateway.url, user.key));
    assert.deepEqual(used, { tokens: rows[0]!.charged_tokens, requests: 1 });
  });
});
