// The Redis bus and logs written before the `:end` marker existed (by a process of the previous
// version, during a rolling upgrade): such a log still ends with its terminal event, and the bus
// must say so, or a repair (a redelivered job, a resume past the end) appends a second one.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createBus } from '../../src/adapters/bus/factory.ts';
import type { Bus } from '../../src/ports/bus.ts';
import { serviceSuite, SERVICES } from '../helpers/services.ts';

describe('Redis bus: a log ended before the :end marker', await serviceSuite('redis'), () => {
  const prefix = `test-oldlog-${randomUUID().slice(0, 8)}`;
  let bus: Bus;
  let redis: Redis;
  before(async () => {
    bus = await createBus(SERVICES.redis, { ttlSeconds: 60, maxLen: 1000, prefix });
    redis = new Redis(SERVICES.redis);
  });
  after(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await bus.close();
  });

  it('reads the terminal event from the log itself', async () => {
    const id = randomUUID();
    await bus.appendMany(id, [{ type: 'token', attempt: 1, text: 'a' }, { type: 'completed', attempt: 1, finishReason: 'stop', usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 } }]);
    // What the previous version left: the same log, without the marker.
    await redis.del(`${prefix}:events:{${id}}:end`);
    const terminal = await bus.terminal(id);
    assert.equal(terminal?.type, 'completed');
    assert.equal(terminal?.seq, 2);
    assert.equal(await bus.terminal(randomUUID()), undefined, 'no log, no terminal event');
  });

  it('a log whose last event is not terminal has none', async () => {
    const id = randomUUID();
    await bus.append(id, { type: 'token', attempt: 1, text: 'a' });
    assert.equal(await bus.terminal(id), undefined);
  });
});
