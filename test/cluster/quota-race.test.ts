// Two gateway processes admitting concurrently against one Redis limiter: a user whose daily
// token budget fits exactly K requests gets exactly K admissions out of hundreds of concurrent
// POSTs, the rest 429 SLUICE_ERR_QUOTA_EXCEEDED, and once they have run the limiter's counters
// equal the ledger's charged sum (zero overshoot).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { awaitAllEnded, client, createCluster, dailyUsed, ledgerRows, type Cluster } from '../helpers/cluster.ts';
import type { SluiceProcess } from '../helpers/process.ts';
import { serviceSuite } from '../helpers/services.ts';

const suite = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')), ...(await serviceSuite('nats')) };
const K = 25;
const N = 400;

describe('quota race across two gateways (limiter redis, queue nats)', suite, () => {
  let cluster: Cluster;
  let gateways: SluiceProcess[];
  before(async () => {
    cluster = await createCluster({ queue: 'nats', bus: 'redis' });
    gateways = await Promise.all([cluster.start('gateway'), cluster.start('gateway')]);
  });
  after(async () => { await cluster?.cleanup(); });

  it(`exactly ${K} of ${N} concurrent requests are admitted; counters equal the ledger`, async () => {
    const body = { model: 'sim', max_tokens: 20, messages: [{ role: 'user', content: 'count me once' }] };
    // No worker runs yet, so a probe's reservation (its estimate: prompt with template + max_tokens) stays visible.
    const probe = await cluster.user();
    assert.equal((await client(gateways[0]!.url, probe.key).post('/v1/requests', body)).status, 202);
    const estimate = (await dailyUsed(gateways[0]!.url, probe.key)).tokens;
    assert.ok(estimate > body.max_tokens, `estimate ${estimate}`);

    const limit = K * estimate;
    // Enterprise: its in-flight cap (1024) stays above N, so only the token window refuses.
    const user = await cluster.user({ tier: 'enterprise', quota: { tokens_per_day: limit, requests_per_day: 100_000 } });
    const responses = await Promise.all(Array.from({ length: N }, async (_, i) => {
      const res = await client(gateways[i % 2]!.url, user.key).post('/v1/requests', body);
      return { status: res.status, body: (await res.json()) as { error?: { code: string } } };
    }));
    const accepted = responses.filter((r) => r.status === 202);
    const refused = responses.filter((r) => r.status === 429);
    assert.equal(accepted.length, K, `admitted ${accepted.length}`);
    assert.equal(refused.length, N - K, `statuses: ${[...new Set(responses.map((r) => r.status))].join(', ')}`);
    assert.ok(refused.every((r) => r.body.error?.code === 'SLUICE_ERR_QUOTA_EXCEEDED'));
    assert.deepEqual(await dailyUsed(gateways[1]!.url, user.key), { tokens: limit, requests: K }, 'reservations fill the budget exactly');

    await cluster.start('worker');
    const ended = await awaitAllEnded(gateways[0]!.url, user.id, K, 30_000);
    assert.equal(ended.length, K);
    assert.ok(ended.every((r) => r.status === 'completed'));
    const rows = await ledgerRows(gateways[0]!.url, user.id);
    assert.equal(rows.length, K);
    const charged = rows.reduce((s, r) => s + r.charged_tokens, 0);
    const used = await dailyUsed(gateways[1]!.url, user.key);
    assert.deepEqual(used, { tokens: charged, requests: K }, 'the limiter holds exactly what the ledger charged');
    assert.ok(used.tokens <= limit, `overshoot: ${used.tokens} > ${limit}`);
  });
});
