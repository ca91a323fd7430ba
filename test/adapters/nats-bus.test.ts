// NATS bus specifics the bus contract cannot see: a replay's JetStream consumers do not outlive it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createBus } from '../../src/adapters/bus/factory.ts';
import type { Bus } from '../../src/ports/bus.ts';
import { natsStreamName, newRequestId, purgeNats, token } from '../contracts/bus.contract.ts';
import { serviceSuite, SERVICES, uniqueName } from '../helpers/services.ts';

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('NATS bus replay', { timeout: 30_000, ...(await serviceSuite('nats')) }, () => {
  const prefix = uniqueName('sluicetestnatsread');
  let bus: Bus;
  before(async () => { bus = await createBus(SERVICES.nats, { ttlSeconds: 60, maxLen: 10_000, prefix }); });
  after(async () => { await bus?.close(); await purgeNats(prefix); });

  it('reads long suffixes in batches and leaves no consumer on the stream', async () => {
    const id = newRequestId();
    const other = newRequestId();
    for (let i = 1; i <= 300; i++) {
      await bus.append(id, token(`t${i}`));
      if (i % 3 === 0) await bus.append(other, token('noise'));
    }
    // Longer than a direct read and than one consumer batch (256), from several positions.
    for (const [after, limit] of [[0, 300], [17, 40], [100, 500], [290, 20]] as const) {
      assert.deepEqual((await bus.read(id, after, limit)).map((e) => e.seq), range(after + 1, Math.min(300, after + limit)), `after ${after}, limit ${limit}`);
    }
    // The reads delete their consumers without waiting: bounded wait for the deletes to land.
    const [{ connect }, { jetstreamManager }] = await Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream')]);
    const nc = await connect({ servers: SERVICES.nats.replace(/^nats:\/\//, '') });
    try {
      const jsm = await jetstreamManager(nc);
      let left = -1;
      for (let waited = 0; waited < 10_000 && left !== 0; waited += 50) {
        left = (await jsm.streams.info(natsStreamName(prefix))).state.consumer_count;
        if (left !== 0) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(left, 0, 'consumers left on the stream');
    } finally {
      await nc.close();
    }
  });
});
