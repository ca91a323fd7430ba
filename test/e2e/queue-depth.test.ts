// Queue depth at admission and the sweeper, on the memory queue, RabbitMQ and NATS: a gateway
// with no worker behind it, so every accepted request stays queued.
// - A burst of 50 concurrent submits against queueMaxDepth 40 accepts exactly 40 and refuses the
//   rest with 503 SLUICE_ERR_QUEUE_FULL (one gateway: the depth is exact, docs/operations.md).
// - A cancelled queued request frees its place at the next sample, although its job stays in the broker.
// - The sweeper leaves requests that merely wait longer than requeueAfterMs alone (the broker
//   holds their jobs), and publishes, once, a request whose job was never published.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { api, startTestSluice, type TestSluice } from '../helpers/app.ts';
import { isolatedNames, removeIsolated, serviceSuite, SERVICES, uniqueName } from '../helpers/services.ts';

const MAX = 40;
const BURST = 50;
const body = { model: 'sim', max_tokens: 8, messages: [{ role: 'user', content: 'wait in line' }] };

type QueueKind = 'memory' | 'amqp' | 'nats';
const queueUrl = (kind: QueueKind) => (kind === 'memory' ? 'memory://' : kind === 'amqp' ? SERVICES.rabbitmq : SERVICES.nats);
const suiteFor = async (kind: QueueKind) => (kind === 'memory' ? {} : serviceSuite(kind === 'amqp' ? 'rabbitmq' : 'nats'));

for (const kind of ['memory', 'amqp', 'nats'] as const) {
  describe(`queue depth and the sweeper (queue ${kind})`, await suiteFor(kind), () => {
    let app: TestSluice;
    const names = isolatedNames(uniqueName('qd').toLowerCase());
    before(async () => {
      // A gateway only: nothing consumes, so what is accepted stays queued. The sweeper is run by hand.
      app = await startTestSluice({
        role: 'gateway', queueUrl: queueUrl(kind), queueName: names.QUEUE_NAME, queueMaxDepth: MAX,
        queueDepthSampleMs: 60_000, requeueAfterMs: 200,
      });
    });
    after(async () => {
      await app?.stop();
      if (kind !== 'memory') await removeIsolated(names, { queue: kind, bus: 'memory' });
    });

    const submit = () => api(app.url)('/v1/requests', { method: 'POST', json: body });

    it(`a burst of ${BURST} against queueMaxDepth ${MAX} accepts exactly ${MAX}; the rest get 503 QUEUE_FULL`, async () => {
      const responses = await Promise.all(Array.from({ length: BURST }, submit));
      const accepted = responses.filter((r) => r.status === 202);
      const refused = responses.filter((r) => r.status === 503);
      assert.equal(accepted.length, MAX);
      assert.equal(refused.length, BURST - MAX);
      for (const r of refused) {
        assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_QUEUE_FULL');
        assert.equal(r.headers.get('retry-after'), '5');
      }
      assert.equal(await app.store.countQueued(), MAX);
      // The 202 does not wait for the broker's confirm: the jobs arrive just after.
      await app.requests.settlePublishes(5000);
      assert.equal(await app.queue.depth(), MAX, 'one job per accepted request in the broker');
      // Still full after a sample: the sample counts the stored rows instead of the local admissions.
      await app.queueDepth.sample();
      assert.equal(app.queueDepth.depth(), MAX);
      assert.equal((await submit()).status, 503);
    });

    it('cancelled queued requests free their places at the next sample, though their jobs stay in the broker', async () => {
      const queued = await app.store.listRequests({ status: 'queued', limit: 5 });
      assert.equal(queued.length, 5);
      for (const r of queued) assert.equal((await api(app.url)(`/v1/requests/${r.id}`, { method: 'DELETE' })).status, 200);
      assert.equal((await submit()).status, 503, 'not before the next sample');
      await app.queueDepth.sample();
      const more = await Promise.all(Array.from({ length: 8 }, submit));
      assert.equal(more.filter((r) => r.status === 202).length, 5, 'five places freed, five taken');
      assert.equal(await app.store.countQueued(), MAX);
      await app.requests.settlePublishes(5000);
      assert.equal(await app.queue.depth(), MAX + 5, 'the cancelled requests\' jobs wait for a worker to drop them');
      assert.equal(Number((await (await fetch(`${app.url}/metrics`)).text()).match(/^sluice_queue_depth (\d+)/m)?.[1]), MAX - 5, 'the gauge shows the last sample');
    });

    it('the sweeper does not publish requests that merely wait, and publishes a lost one once', async () => {
      const brokerBefore = await app.queue.depth();
      // A request whose gateway died between the insert and the publish (crash point after-insert).
      const lost = (await app.store.insertRequest({
        id: randomUUID(), userId: 'master', keyId: null, model: 'sim', mode: 'queued', payload: { messages: [{ role: 'user', content: 'lost' }], maxTokens: 8 },
        priority: 5, idempotencyKey: null, bodyHash: '', estimatedTokens: 20, promptTokens: 12,
      })).record;
      await new Promise((r) => setTimeout(r, 300)); // every queued request is now older than requeueAfterMs
      assert.deepEqual(await app.sweeper.sweepOnce(), { requeued: 1, reclaimed: 0, settled: 0 });
      assert.equal(await app.queue.depth(), brokerBefore + 1, 'only the lost job was published');
      assert.ok((await app.store.getRequest(lost.id))?.publishedAt instanceof Date);
      assert.deepEqual(await app.sweeper.sweepOnce(), { requeued: 0, reclaimed: 0, settled: 0 }, 'and not again');
      assert.equal(await app.queue.depth(), brokerBefore + 1);
      await app.queueDepth.sample();
      assert.equal(app.queueDepth.depth(), MAX + 1, 'the lost request was queued all along');
    });
  });
}
