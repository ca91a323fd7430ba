import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { limiterContract } from './limiter.contract.ts';
import { deleteRedisKeys, SERVICES, serviceSuite, uniqueName } from '../helpers/services.ts';
import { MemoryLimiter } from '../../src/adapters/limiter/memory.ts';
import { RedisLimiter } from '../../src/adapters/limiter/redis.ts';
import { ResilientLimiter, type ProbedLimiter } from '../../src/adapters/limiter/fallback.ts';
import { createLimiter } from '../../src/adapters/limiter/factory.ts';
import { SluiceError, isSluiceError } from '../../src/core/errors.ts';
import type { Limiter, WindowLimit } from '../../src/ports/limiter.ts';

limiterContract('memory', async () => {
  const l = new MemoryLimiter();
  return { a: l, b: l, close: () => l.close() };
}, { durable: false });

const redisSuite = await serviceSuite('redis');

const deleteKeys = (prefix: string): Promise<void> => deleteRedisKeys(`${prefix}*`);

limiterContract('redis', async () => {
  const prefix = `${uniqueName('limiter')}:`;
  // Two independent clients over one Redis, as two gateway processes would be.
  const a = await createLimiter(SERVICES.redis, { prefix, failurePolicy: 'refuse' });
  const b = await RedisLimiter.connect(SERVICES.redis, { prefix });
  return { a, b, close: async () => { await a.close(); await b.close(); await deleteKeys(prefix); } };
}, { durable: true, skip: redisSuite.skip });

const windows = (): WindowLimit[] => [{ window: 'daily', metric: 'tokens', limit: 1000, period: '2026-11-21', resetAt: Date.now() + 86_400_000 }];
const reserve = (l: Limiter, tokens = 10) =>
  l.reserve({ requestId: randomUUID(), userId: 'u', tokens, windows: windows(), deadlineAt: Date.now() + 60_000 });

describe('limiter factory', () => {
  it('memory:// gives a per-process limiter', async () => {
    const l = await createLimiter('memory://');
    assert.ok(l instanceof MemoryLimiter);
    assert.equal(l.durable, false);
    await l.close();
  });

  it('an unknown scheme is a configuration error', async () => {
    await assert.rejects(createLimiter('postgres://x'), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
  });
});

describe('limiter when Redis is unreachable', () => {
  const closing: Limiter[] = [];
  after(async () => { await Promise.all(closing.map((l) => l.close())); });

  it("'fallback' admits from a per-process limiter and reports the outage once", async () => {
    const reasons: string[] = [];
    const l = await createLimiter('redis://127.0.0.1:1', { failurePolicy: 'fallback', onDegraded: (r) => reasons.push(r) });
    closing.push(l);
    assert.ok(l instanceof ResilientLimiter);
    const first = await reserve(l, 600);
    assert.equal(first.ok, true);
    assert.equal((await reserve(l, 600)).ok, false, 'the fallback still enforces limits');
    assert.equal(l.degraded, true);
    assert.equal(reasons.length, 1);
  });

  it("'refuse' fails fast with SLUICE_ERR_LIMITER_UNAVAILABLE", async () => {
    const l = await createLimiter('redis://127.0.0.1:1', { failurePolicy: 'refuse' });
    closing.push(l);
    const started = Date.now();
    await assert.rejects(reserve(l), (e) => isSluiceError(e, 'SLUICE_ERR_LIMITER_UNAVAILABLE') && e.status === 503);
    await assert.rejects(l.hit('k', 1, 1000), (e) => isSluiceError(e, 'SLUICE_ERR_LIMITER_UNAVAILABLE'));
    assert.ok(Date.now() - started < 2000);
    assert.equal((l as ResilientLimiter).degraded, true);
  });
});

/** A durable limiter whose connection can be cut and restored by the test. */
class FlakyLimiter extends MemoryLimiter implements ProbedLimiter {
  down = false;
  override readonly durable = false;
  private check(): void {
    if (this.down) throw new SluiceError('SLUICE_ERR_LIMITER_UNAVAILABLE', undefined, undefined, { cause: new Error('connection refused') });
  }
  async ping(): Promise<void> { this.check(); }
  override async reserve(...args: Parameters<MemoryLimiter['reserve']>) { this.check(); return super.reserve(...args); }
  override async settle(...args: Parameters<MemoryLimiter['settle']>) { this.check(); return super.settle(...args); }
  override async release(...args: Parameters<MemoryLimiter['release']>) { this.check(); return super.release(...args); }
}

describe('ResilientLimiter', () => {
  it('goes back to the durable limiter when it answers again and settles outage reservations locally', async () => {
    const durable = new FlakyLimiter();
    const events: string[] = [];
    const l = new ResilientLimiter(durable, {
      policy: 'fallback', probeIntervalMs: 20,
      onDegraded: () => events.push('degraded'), onRecovered: () => events.push('recovered'),
    });
    durable.down = true;
    const during = await reserve(l, 100);
    const duringId = during.ok ? (await l.expired(Date.now() + 120_000, 10))[0]?.requestId : undefined;
    await reserve(l, 100);
    assert.equal(l.degraded, true);
    durable.down = false;
    await sleep(100);
    assert.equal(l.degraded, false);
    assert.deepEqual(events, ['degraded', 'recovered']);

    const after = await reserve(l, 100);
    assert.ok(after.ok);
    assert.equal(after.windows[0]?.used, 100, 'served by the durable limiter again, which saw none of the outage');
    assert.ok(duringId);
    assert.equal(await l.settle(duringId, { tokens: 0, requests: 0 }), 'settled');
    await l.close();
  });

  it('releases a reservation where it was taken: locally for one from the outage, durably otherwise', async () => {
    const durable = new FlakyLimiter();
    const l = new ResilientLimiter(durable, { policy: 'fallback', probeIntervalMs: 20 });
    const ws = windows();
    const before = { requestId: randomUUID(), userId: 'u', tokens: 10, windows: ws, deadlineAt: Date.now() + 60_000 };
    assert.ok((await l.reserve(before)).ok);
    durable.down = true;
    const during = { ...before, requestId: randomUUID(), tokens: 20 };
    assert.ok((await l.reserve(during)).ok);
    durable.down = false;
    await sleep(100);
    assert.equal(l.degraded, false);
    assert.equal(await l.release(during.requestId), true, 'the outage reservation is released where it was taken');
    assert.equal(await l.release(before.requestId), true);
    assert.equal((await durable.usage('u', ws))[0]?.used, 0);
    const again = await l.reserve(during);
    assert.ok(again.ok && !again.duplicate, 'a released id reserves again');
    await l.close();
  });

  it('does not treat other failures as an outage', async () => {
    const durable = new FlakyLimiter();
    const l = new ResilientLimiter(durable, { policy: 'fallback' });
    await assert.rejects(l.settle(randomUUID(), { tokens: -1, requests: 1 }), (e) => isSluiceError(e, 'SLUICE_ERR_INTERNAL'));
    assert.equal(l.degraded, false);
    await l.close();
  });
});
