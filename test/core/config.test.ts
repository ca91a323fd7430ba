// Configuration: environment over file over defaults, validated into SLUICE_ERR_CONFIG, frozen.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfig } from '../../src/config.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import { Authenticator } from '../../src/core/auth.ts';
import type { Store } from '../../src/ports/store.ts';

const NO_FILE = { SLUICE_CONFIG: undefined } as NodeJS.ProcessEnv;
const isConfigError = (re: RegExp) => (e: unknown) => isSluiceError(e, 'SLUICE_ERR_CONFIG') && re.test((e as Error).message);

describe('configuration', () => {
  it('defaults to the embedded deployment', () => {
    const c = loadConfig({ ...NO_FILE });
    assert.equal(c.databaseUrl, 'pglite://./.sluice/db');
    assert.equal(c.queueUrl, 'memory://');
    assert.equal(c.modelUrl, 'sim://');
    assert.equal(c.deliveryMode, 'queued');
    assert.equal(c.bodyLimitBytes, 1024 * 1024);
    assert.equal(c.migrateOnStart, true);
  });

  it('reads the environment, nested fields included, and freezes the result', () => {
    const c = loadConfig({ PORT: '9999', QUEUE_URL: 'amqp://x', SIM_ITL_MS: '7', SLUICE_MIGRATE: 'false', MODEL_NAMES: 'a, b' });
    assert.equal(c.port, 9999);
    assert.equal(c.queueUrl, 'amqp://x');
    assert.equal(c.sim.itlMs, 7);
    assert.equal(c.sim.ttftMs, 20, 'siblings keep their defaults');
    assert.equal(c.migrateOnStart, false);
    assert.deepEqual(c.models, ['a', 'b']);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.sim) && Object.isFrozen(c.tiers.free));
  });

  it('the environment wins over the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-cfg-'));
    const file = join(dir, 'sluice.config.json');
    writeFileSync(file, JSON.stringify({ port: 7000, deliveryMode: 'direct', tiers: { gold: { requestsPerDay: 1, tokensPerDay: 2, requestsPerMonth: 3, tokensPerMonth: 4, maxTokens: 5, concurrentStreams: 6, priority: 7 } }, defaultTier: 'gold' }));
    const c = loadConfig({ SLUICE_CONFIG: file, PORT: '7001' });
    assert.equal(c.port, 7001);
    assert.equal(c.deliveryMode, 'direct');
    assert.deepEqual(Object.keys(c.tiers), ['gold']);
  });

  it('tiers get maxInFlight: built-in defaults, a given value, 8 per stream for other tiers; a bad one is refused', () => {
    const defaults = parseConfig({});
    assert.deepEqual([defaults.tiers.free!.maxInFlight, defaults.tiers.pro!.maxInFlight, defaults.tiers.enterprise!.maxInFlight], [8, 64, 1024]);
    const tier = { requestsPerDay: 1, tokensPerDay: 2, requestsPerMonth: 3, tokensPerMonth: 4, maxTokens: 5, concurrentStreams: 3, priority: 1 };
    const c = parseConfig({ tiers: { free: tier, gold: tier, silver: { ...tier, maxInFlight: 5 } } });
    assert.deepEqual([c.tiers.free!.maxInFlight, c.tiers.gold!.maxInFlight, c.tiers.silver!.maxInFlight], [8, 24, 5]);
    assert.throws(() => parseConfig({ tiers: { free: { ...tier, maxInFlight: 0 } } }), isConfigError(/maxInFlight/));
    // Every live stream is a request in flight: a cap below the stream limit could never be reached.
    assert.throws(() => parseConfig({ tiers: { free: { ...tier, maxInFlight: 2 } } }), isConfigError(/maxInFlight \(2\) must be at least concurrentStreams \(3\)/));
  });

  it('a per-user stream limit raised above the tier\'s maxInFlight raises the in-flight cap with it', () => {
    const config = parseConfig({});
    const auth = new Authenticator({} as Store, config, 'sk-test-master-key-0123456789');
    const o = { userId: 'u', requestsPerDay: null, tokensPerDay: null, requestsPerMonth: null, tokensPerMonth: null, maxTokens: null, concurrentStreams: 20, priority: null };
    assert.equal(auth.effectiveLimits('free', o).maxInFlight, 20);
    assert.equal(auth.effectiveLimits('free', { ...o, concurrentStreams: 4 }).maxInFlight, 8);
  });

  it('rejects bad values with SLUICE_ERR_CONFIG naming the field', () => {
    assert.throws(() => loadConfig({ PORT: 'eighty' }), isConfigError(/port/));
    assert.throws(() => loadConfig({ SLUICE_DELIVERY_MODE: 'sometimes' }), isConfigError(/deliveryMode/));
    assert.throws(() => loadConfig({ SLUICE_TIME_ZONE: 'Mars/Olympus' }), isConfigError(/timeZone/));
    assert.throws(() => loadConfig({ SLUICE_DEFAULT_TIER: 'gold' }), isConfigError(/defaultTier/));
    assert.throws(() => loadConfig({ SLUICE_MASTER_KEY: 'short' }), isConfigError(/masterKey/));
    assert.throws(() => parseConfig({ tiers: { free: { requestsPerDay: -1, tokensPerDay: 1, requestsPerMonth: 1, tokensPerMonth: 1, maxTokens: 1, concurrentStreams: 1, priority: 1 } } }), isConfigError(/requestsPerDay/));
    assert.throws(() => loadConfig({ SLUICE_CONFIG: '/nonexistent/sluice.json' }), isConfigError(/does not exist/));
  });

  it('refuses tier names that are not plain lower-case names, and built-in property names as tiers or default tier', () => {
    const t = { requestsPerDay: 1, tokensPerDay: 1, requestsPerMonth: 1, tokensPerMonth: 1, maxTokens: 1, concurrentStreams: 1, priority: 1 };
    const fromJson = JSON.parse(`{"tiers": {"__proto__": ${JSON.stringify(t)}, "free": ${JSON.stringify(t)}}}`) as unknown;
    assert.throws(() => parseConfig(fromJson), isConfigError(/tiers\.__proto__/));
    assert.throws(() => parseConfig({ tiers: { constructor: t, free: t } }), isConfigError(/tiers\.constructor: .*built-in/));
    assert.throws(() => parseConfig({ tiers: { 'Gold Plus': t, free: t } }), isConfigError(/tiers\.Gold Plus: a tier name/));
    for (const name of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) {
      assert.throws(() => parseConfig({ defaultTier: name }), isConfigError(/defaultTier/), name);
    }
    assert.deepEqual(Object.keys(parseConfig({ tiers: { 'gold_2-x': t }, defaultTier: 'gold_2-x' }).tiers), ['gold_2-x']);
  });
  it('keeps the default store under the data directory, unless DATABASE_URL says otherwise', () => {
    assert.equal(loadConfig({ ...NO_FILE }).databaseUrl, 'pglite://./.sluice/db');
    const a = loadConfig({ ...NO_FILE, SLUICE_DATA_DIR: '/srv/sluice-a' });
    const b = loadConfig({ ...NO_FILE, SLUICE_DATA_DIR: '/srv/sluice-b/' });
    assert.equal(a.databaseUrl, 'pglite:///srv/sluice-a/db');
    assert.equal(b.databaseUrl, 'pglite:///srv/sluice-b/db');
    assert.equal(parseConfig({ dataDir: 'relative/dir' }).databaseUrl, 'pglite://relative/dir/db');
    assert.equal(loadConfig({ ...NO_FILE, SLUICE_DATA_DIR: '/srv/a', DATABASE_URL: 'postgres://db/x' }).databaseUrl, 'postgres://db/x');
    assert.equal(parseConfig({ dataDir: '/srv/a', databaseUrl: 'pglite://memory' }).databaseUrl, 'pglite://memory');
  });
});
