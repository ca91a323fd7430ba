// A gateway SIGKILLed between the store insert and the queue publish: the client sees its POST
// fail, the ledger process's sweeper publishes the orphaned request again, and it completes
// exactly once; a replay of the same Idempotency-Key on another gateway finds that request.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { awaitAllEnded, client, createCluster, dailyUsed, ledgerRows, type Cluster } from '../helpers/cluster.ts';
import type { SluiceProcess } from '../helpers/process.ts';
import { serviceSuite } from '../helpers/services.ts';

const suite = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')), ...(await serviceSuite('nats')) };

describe('gateway crash between insert and publish (queue nats, bus redis)', suite, () => {
  let cluster: Cluster;
  let crashing: SluiceProcess;
  let survivor: SluiceProcess;
  before(async () => {
    cluster = await createCluster({ queue: 'nats', bus: 'redis' });
    [crashing, survivor] = await Promise.all([
      cluster.start('gateway', { SLUICE_CRASH_POINT: 'after-insert' }), cluster.start('gateway'), cluster.start('worker'), cluster.start('ledger'),
    ]);
  });
  after(async () => { await cluster?.cleanup(); });

  it('the sweeper re-enqueues the orphaned request; it completes once and a replay finds it', async () => {
    const user = await cluster.user();
    const body = { model: 'sim', max_tokens: 12, messages: [{ role: 'user', content: 'survive the crash' }] };
    const headers = { 'idempotency-key': 'crash-1' };
    await assert.rejects(client(crashing.url, user.key).post('/v1/requests', body, headers), 'the POST fails: the gateway died before answering');
    await crashing.kill(); // already dead; waits for the exit
    assert.equal(crashing.child.signalCode, 'SIGKILL');

    const [orphan] = await awaitAllEnded(survivor.url, user.id, 1, 20_000);
    assert.equal(orphan!.status, 'completed', 'the request the dead gateway inserted was run');
    assert.equal(orphan!.attempt, 1, 'run once');

    const replay = await client(survivor.url, user.key).post('/v1/requests', body, headers);
    assert.equal(replay.status, 202);
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    const view = (await replay.json()) as { request_id: string; status: string };
    assert.equal(view.request_id, orphan!.request_id, 'the replay maps to the same request');
    assert.equal(view.status, 'completed');

    const list = await awaitAllEnded(survivor.url, user.id, 1);
    assert.equal(list.length, 1, 'no second request');
    const rows = await ledgerRows(survivor.url, user.id);
    assert.equal(rows.length, 1, 'settled once');
    assert.equal(rows[0]!.request_id, orphan!.request_id);
    assert.deepEqual(await dailyUsed(survivor.url, user.key), { tokens: rows[0]!.charged_tokens, requests: 1 }, 'the dead gateway\'s reservation became the charge');
  });
});
