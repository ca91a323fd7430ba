// The queue broker restarts while 100 requests wait in it (no worker running): the jobs survive
// (durable queue / file-backed stream), the gateway reconnects, and once workers start every
// request completes and is settled exactly once.
//
// RabbitMQ: `rabbitmqctl stop_app && start_app` restarts the machine's shared broker, so a test
// that started a process during the outage would find nothing listening on 5672 (a CI run once
// failed exactly so, in drain.test.ts). The runner therefore runs this file alone, after the
// others (the marker line below). NATS: a private nats-server on a free port with its own store
// directory, so restarting it disturbs no other test.
// sluice-test: exclusive
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from '../helpers/app.ts';
import { awaitAllEnded, client, createCluster, dailyUsed, ledgerRows, type Cluster } from '../helpers/cluster.ts';
import { freePort, startNatsServer, type SluiceProcess } from '../helpers/process.ts';
import { SERVICES, serviceSuite } from '../helpers/services.ts';

const run = promisify(execFile);
const COUNT = 100;
const body = (i: number) => ({ model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: `job ${i}` }] });

async function submitAll(url: string, key: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < n; start += 20) {
    const batch = await Promise.all(Array.from({ length: Math.min(20, n - start) }, async (_, j) => {
      const res = await client(url, key).post('/v1/requests', body(start + j));
      assert.equal(res.status, 202, await res.clone().text());
      return ((await res.json()) as { request_id: string }).request_id;
    }));
    ids.push(...batch);
  }
  return ids;
}

/** After the restart: every request completed, one ledger row each, counters equal the ledger. */
async function assertAllSettledOnce(cluster: Cluster, gateway: SluiceProcess, user: { id: string; key: string }, ids: string[]): Promise<void> {
  await Promise.all([cluster.start('worker'), cluster.start('worker')]);
  const ended = await awaitAllEnded(gateway.url, user.id, ids.length, 45_000);
  assert.equal(ended.length, ids.length);
  assert.deepEqual(ended.filter((r) => r.status !== 'completed'), []);
  assert.deepEqual(new Set(ended.map((r) => r.request_id)), new Set(ids));
  const rows = await ledgerRows(gateway.url, user.id);
  assert.equal(rows.length, ids.length, 'one ledger row per request');
  assert.equal(new Set(rows.map((r) => r.request_id)).size, ids.length, 'none settled twice');
  const charged = rows.reduce((s, r) => s + r.charged_tokens, 0);
  assert.deepEqual(await dailyUsed(gateway.url, user.key), { tokens: charged, requests: ids.length });
}

const rabbitSuite = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')), ...(await serviceSuite('rabbitmq')) };

describe('RabbitMQ restarts with 100 requests queued', rabbitSuite, () => {
  let cluster: Cluster;
  let gateway: SluiceProcess;
  before(async () => {
    // No ledger: the sweeper would re-publish queued requests and hide a lost job.
    cluster = await createCluster({ queue: 'amqp', bus: 'redis' });
    gateway = await cluster.start('gateway');
  });
  after(async () => { await cluster?.cleanup(); });

  it('all requests complete once after stop_app/start_app', async (t) => {
    try { await run('rabbitmqctl', ['status'], { timeout: 15_000 }); } catch (e) { t.skip(`rabbitmqctl unusable here: ${(e as Error).message}`); return; }
    const user = await cluster.user({ tier: 'enterprise' }); // in-flight cap 1024 > COUNT queued at once
    const ids = await submitAll(gateway.url, user.key, COUNT);
    assert.equal(await amqpDepth(cluster.queueName), COUNT);

    await run('rabbitmqctl', ['stop_app'], { timeout: 30_000 });
    await run('rabbitmqctl', ['start_app'], { timeout: 60_000 });
    await run('rabbitmqctl', ['await_startup'], { timeout: 60_000 });
    assert.equal(await waitFor(() => amqpDepth(cluster.queueName).catch(() => null), 20_000, 250), COUNT, 'the durable queue kept every job');

    // The gateway reconnected: a request submitted after the restart is published too.
    ids.push(...await waitFor(() => submitAll(gateway.url, user.key, 1).catch(() => null), 20_000, 250));
    await assertAllSettledOnce(cluster, gateway, user, ids);
  });
});

async function amqpDepth(queue: string): Promise<number> {
  const amqp = await import('amqplib');
  const conn = await amqp.connect(SERVICES.rabbitmq);
  try { return (await (await conn.createChannel()).checkQueue(queue)).messageCount; } finally { await conn.close(); }
}

const natsSuite = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')), ...(await serviceSuite('nats')) };

describe('private nats-server restarts with 100 requests queued', natsSuite, () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-nats-'));
  let port: number;
  let server: ChildProcess | undefined;
  let cluster: Cluster;
  let gateway: SluiceProcess;
  const startServer = () => startNatsServer(port, dir);
  before(async () => {
    port = await freePort();
    server = await startServer();
    cluster = await createCluster({ queue: 'nats', bus: 'redis', natsUrl: `nats://127.0.0.1:${port}` });
    gateway = await cluster.start('gateway');
  });
  after(async () => {
    await cluster?.cleanup();
    server?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('all requests complete once after the server restarts', async () => {
    const user = await cluster.user({ tier: 'enterprise' }); // in-flight cap 1024 > COUNT queued at once
    const ids = await submitAll(gateway.url, user.key, COUNT);
    const stopped = new Promise((r) => server!.once('exit', r));
    server!.kill('SIGTERM');
    await stopped;
    server = await startServer();
    ids.push(...await waitFor(() => submitAll(gateway.url, user.key, 1).catch(() => null), 20_000, 250));
    await assertAllSettledOnce(cluster, gateway, user, ids);
  });
});

