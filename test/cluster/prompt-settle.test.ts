// A worker SIGKILLed between ending a request in the store and settling it in the limiter (crash
// point 'after-finish'): the reservation (the estimate) must give way to the ledger row's charge
// within seconds, not at the reservation's deadline (request timeout + grace, 10 minutes here),
// and only once. The model stops early (a stop string), so the charge differs from the estimate:
// windows that kept the estimate, or were charged twice, would show it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../helpers/app.ts';
import { client, createCluster, dailyUsed, ledgerRows, type Cluster } from '../helpers/cluster.ts';
import type { SluiceProcess } from '../helpers/process.ts';
import { serviceSuite } from '../helpers/services.ts';

const suite = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')), ...(await serviceSuite('rabbitmq')) };

/** Short answer: the sim ends at its first sentence end, far below max_tokens. */
const shortAnswer = { model: 'sim', max_tokens: 400, stop: ['.'], messages: [{ role: 'user', content: 'one sentence, please' }] };

/** Submits and waits for the crashing worker to die right after ending the request. */
async function submitAndCrash(cluster: Cluster, gateway: SluiceProcess, crashing: SluiceProcess) {
  const user = await cluster.user();
  const api = client(gateway.url, user.key);
  const res = await api.post('/v1/requests', shortAnswer);
  assert.equal(res.status, 202);
  const id = ((await res.json()) as { request_id: string }).request_id;
  const reserved = await dailyUsed(gateway.url, user.key);
  await waitFor(async () => crashing.child.signalCode !== null || crashing.child.exitCode !== null, 30_000, 50);
  assert.equal(crashing.child.signalCode, 'SIGKILL', `the worker died at the crash point:\n${crashing.output()}`);
  const [row] = await ledgerRows(gateway.url, user.id);
  assert.ok(row, 'the request ended in the store before the crash');
  assert.equal(row.request_id, id);
  assert.ok(row.charged_tokens < reserved.tokens, `charge ${row.charged_tokens} differs from the estimate ${reserved.tokens}`);
  return { user, id, reserved, row };
}

/** The windows reach the ledger's charge within seconds and stay there (settled once). */
async function assertSettledOnce(gatewayUrl: string, key: string, charged: number) {
  const expected = { tokens: charged, requests: 1 };
  await waitFor(async () => { const u = await dailyUsed(gatewayUrl, key); return u.tokens === charged && u; }, 15_000, 100)
    .catch(async () => assert.deepEqual(await dailyUsed(gatewayUrl, key), expected, 'settled within seconds'));
  // Several more sweeps (200 ms apart) and redeliveries change nothing.
  await new Promise((r) => setTimeout(r, 2000));
  assert.deepEqual(await dailyUsed(gatewayUrl, key), expected);
}

describe('prompt settlement after a worker dies between finish and settle (queue amqp, limiter redis)', suite, () => {
  let cluster: Cluster;
  let gateway: SluiceProcess;
  before(async () => {
    cluster = await createCluster({ queue: 'amqp', bus: 'redis', env: { SLUICE_RESERVATION_SETTLE_AFTER_MS: '1000' } });
    gateway = await cluster.start('gateway');
  });
  after(async () => { await cluster?.cleanup(); });

  it('the sweeper applies the ledger row\'s charge within seconds, once', async () => {
    const crashing = await cluster.start('worker', { SLUICE_CRASH_POINT: 'after-finish' });
    await cluster.start('ledger');
    const { user, row } = await submitAndCrash(cluster, gateway, crashing);
    await assertSettledOnce(gateway.url, user.key, row.charged_tokens);
  });

  it('a worker that takes over the dead worker\'s job applies the ledger row\'s charge, once', async () => {
    // The ledger of the previous test is still running: stop it, so only the recovering worker can settle.
    await Promise.all(cluster.procs.filter((p) => p !== gateway).map((p) => p.kill('SIGKILL')));
    const crashing = await cluster.start('worker', { SLUICE_CRASH_POINT: 'after-finish' });
    const { user, id, row } = await submitAndCrash(cluster, gateway, crashing);
    // The unacked job goes back to the queue when the dead worker's connection closes.
    await cluster.start('worker');
    await assertSettledOnce(gateway.url, user.key, row.charged_tokens);
    const view = await client(gateway.url, user.key).get<{ status: string }>(`/v1/requests/${id}`);
    assert.equal(view.status, 'completed');
  });
});
