import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createBus } from '../../src/adapters/bus/factory.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import { busContract, memoryHarness, serviceHarness, purgeRedis, purgeNats } from './bus.contract.ts';
import { serviceSuite, SERVICES } from '../helpers/services.ts';

busContract('memory', memoryHarness);
busContract('redis', () => serviceHarness(SERVICES.redis, purgeRedis), await serviceSuite('redis'));
busContract('nats', () => serviceHarness(SERVICES.nats, purgeNats), await serviceSuite('nats'));

describe('createBus', () => {
  it('refuses an unknown scheme with SLUICE_ERR_CONFIG', async () => {
    await assert.rejects(createBus('kafka://localhost:9092', { ttlSeconds: 60, maxLen: 100 }), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
    await assert.rejects(createBus('no-scheme-here', { ttlSeconds: 60, maxLen: 100 }), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
  });

  it('opens an in-process bus for memory://', async () => {
    const bus = await createBus('memory://', { ttlSeconds: 60, maxLen: 100 });
    assert.equal((await bus.append('r1', { type: 'token', attempt: 1, text: 'x' })).seq, 1);
    await bus.close();
  });

  it('reports an unreachable Redis as SLUICE_ERR_UNAVAILABLE', async () => {
    await assert.rejects(createBus('redis://127.0.0.1:1', { ttlSeconds: 60, maxLen: 100 }), (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE'));
  });
});
