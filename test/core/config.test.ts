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
    assert.equal(c.pgliteThread, 'main');
  });

  it('model-call capacity: 1024 per deployment by default, the worker sized from it unless WORKER_CONCURRENCY caps it', () => {
    const c = loadConfig({ ...NO_FILE });
    assert.equal(c.routing.maxConcurrency, 1024);
    assert.equal(c.worker.concurrency, undefined, 'no fixed per-worker constant: the catalogue capacity decides');
    assert.equal(c.worker.busyDeferMs, 100);
    const set = loadConfig({ ...NO_FILE, SLUICE_MAX_CONCURRENCY: '64', WORKER_CONCURRENCY: '8', WORKER_BUSY_DEFER_MS: '25' });
    assert.deepEqual([set.routing.maxConcurrency, set.worker.concurrency, set.worker.busyDeferMs], [64, 8, 25]);
    assert.throws(() => loadConfig({ ...NO_FILE, SLUICE_MAX_CONCURRENCY: '0' }), isConfigError(/routing\.maxConcurrency/));
  });

  it('SLUICE_PGLITE_THREAD puts the embedded store on the main thread or in a worker thread; nothing else', () => {
    assert.equal(loadConfig({ SLUICE_PGLITE_THREAD: 'worker' }).pgliteThread, 'worker');
    assert.equal(loadConfig({ SLUICE_PGLITE_THREAD: 'main' }).pgliteThread, 'main');
    assert.throws(() => loadConfig({ SLUICE_PGLITE_THREAD: 'both' }), isConfigError(/pgliteThread/));
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
  describe('the model catalogue', () => {
    it('SLUICE_MODELS: id=url#model@KEY_ENV;options, an id repeated adds a deployment, fallbacks in order', () => {
      const c = loadConfig({
        ...NO_FILE,
        SLUICE_MODELS: ' llama=http://vllm-a:8000/v1#meta-llama/Llama-3.1-8B;weight=2;max=64 , llama=http://vllm-b:8000/v1#meta-llama/Llama-3.1-8B;id=vllm-b,'
          + 'gpt=https://api.openai.com/v1#gpt-4o-mini@OPENAI_API_KEY;fallback=llama;passthrough=true,local=sim://?ttft_ms=0',
      });
      assert.deepEqual(Object.keys(c.catalogue), ['llama', 'gpt', 'local']);
      const [a, b] = c.catalogue.llama!.deployments;
      assert.deepEqual({ id: a!.id, url: a!.url, model: a!.model, weight: a!.weight, max: a!.maxConcurrency }, { id: 'llama#1', url: 'http://vllm-a:8000/v1', model: 'meta-llama/Llama-3.1-8B', weight: 2, max: 64 });
      assert.deepEqual({ id: b!.id, weight: b!.weight, passthrough: b!.passthrough }, { id: 'vllm-b', weight: 1, passthrough: false });
      const gpt = c.catalogue.gpt!;
      assert.deepEqual({ url: gpt.deployments[0]!.url, model: gpt.deployments[0]!.model, key: gpt.deployments[0]!.apiKeyEnv, passthrough: gpt.deployments[0]!.passthrough }, { url: 'https://api.openai.com/v1', model: 'gpt-4o-mini', key: 'OPENAI_API_KEY', passthrough: true });
      assert.deepEqual(gpt.fallbacks, ['llama']);
      assert.deepEqual({ url: c.catalogue.local!.deployments[0]!.url, model: c.catalogue.local!.deployments[0]!.model }, { url: 'sim://?ttft_ms=0', model: undefined });
      assert.deepEqual(c.catalogue.local!.kinds, ['chat']);
    });

    it('SLUICE_MODELS mistakes are refused with the entry and the reason', () => {
      const bad = (value: string, re: RegExp) => assert.throws(() => loadConfig({ ...NO_FILE, SLUICE_MODELS: value }), isConfigError(re), value);
      bad('llama', /entry 1 \("llama"\): expected <model id>=<url>/);
      bad('a=sim://,=http://x/v1', /entry 2/);
      bad('a=', /no URL/);
      bad('a=http://x/v1#', /nothing after "#"/);
      bad('a=http://x/v1;weight=0', /weight=0 must be a positive number/);
      bad('a=http://x/v1;max=1.5', /max=1.5 must be a positive integer/);
      bad('a=http://x/v1;colour=blue', /unknown option "colour"/);
      bad('a=http://x/v1;passthrough=yes', /passthrough=yes must be true or false/);
      bad('a=http://x/v1;fallback=b', /catalogue\.a\.fallbacks: "b" is not a model of the catalogue/);
      bad('a=ftp://x/v1', /scheme "ftp:" is not supported/);
      bad('a=http://user:secret@x/v1', /credentials do not belong in the URL/);
      bad('a=not a url', /is not a valid URL/);
      bad(' , ', /names no model/);
    });

    it('SLUICE_CATALOGUE (JSON) replaces the file\'s catalogue; both forms at once are refused', () => {
      const dir = mkdtempSync(join(tmpdir(), 'sluice-cfg-'));
      const file = join(dir, 'sluice.config.json');
      writeFileSync(file, JSON.stringify({ catalogue: { old: { deployments: [{ url: 'sim://' }] } } }));
      assert.deepEqual(Object.keys(loadConfig({ SLUICE_CONFIG: file }).catalogue), ['old']);
      const c = loadConfig({ SLUICE_CONFIG: file, SLUICE_CATALOGUE: JSON.stringify({ emb: { deployments: [{ url: 'http://tei:8080/v1' }], kinds: ['embeddings'], price: { inputPerMillion: 0.02, outputPerMillion: 0 } } }) });
      assert.deepEqual(Object.keys(c.catalogue), ['emb']);
      assert.deepEqual(c.catalogue.emb!.kinds, ['embeddings']);
      assert.equal(c.catalogue.emb!.deployments[0]!.id, 'emb#1');
      assert.throws(() => loadConfig({ ...NO_FILE, SLUICE_CATALOGUE: '{nope' }), isConfigError(/SLUICE_CATALOGUE is not valid JSON/));
      assert.throws(() => loadConfig({ ...NO_FILE, SLUICE_CATALOGUE: '{}', SLUICE_MODELS: 'a=sim://' }), isConfigError(/not both/));
    });

    it('refuses duplicate deployment ids, self and repeated fallbacks, empty deployments and __proto__ as a model id', () => {
      const d = (id?: string) => ({ url: 'sim://', ...(id && { id }) });
      assert.throws(() => parseConfig({ catalogue: { a: { deployments: [d('x')] }, b: { deployments: [d('x')] } } }), isConfigError(/deployment id "x" is already used by catalogue\.a\.deployments\.0/));
      assert.throws(() => parseConfig({ catalogue: { a: { deployments: [d('b#1')] }, b: { deployments: [d()] } } }), isConfigError(/"b#1" is already used/));
      assert.throws(() => parseConfig({ catalogue: { a: { deployments: [d()], fallbacks: ['a'] } } }), isConfigError(/cannot fall back to itself/));
      assert.throws(() => parseConfig({ catalogue: { a: { deployments: [d()], fallbacks: ['b', 'b'] }, b: { deployments: [d()] } } }), isConfigError(/"b" is listed twice/));
      assert.throws(() => parseConfig({ catalogue: { a: { deployments: [] } } }), isConfigError(/catalogue\.a\.deployments/));
      assert.throws(() => parseConfig(JSON.parse('{"catalogue": {"__proto__": {"deployments": [{"url": "sim://"}]}}}')), isConfigError(/catalogue\.__proto__/));
      assert.throws(() => loadConfig({ ...NO_FILE, SLUICE_MODELS: 'constructor=sim://' }), isConfigError(/cannot be a model id/));
    });

    it('routing settings: defaults and environment', () => {
      assert.deepEqual({ ...parseConfig({}).routing }, { failureThreshold: 5, coolDownMs: 10_000, probeIntervalMs: 30_000, probeTimeoutMs: 5_000, busyRetryAfterS: 1, maxConcurrency: 1024 });
      const c = loadConfig({ ...NO_FILE, SLUICE_CIRCUIT_FAILURES: '3', SLUICE_CIRCUIT_COOL_DOWN_MS: '2000', SLUICE_PROBE_INTERVAL_MS: '0', SLUICE_PROBE_TIMEOUT_MS: '1000' });
      assert.deepEqual([c.routing.failureThreshold, c.routing.coolDownMs, c.routing.probeIntervalMs, c.routing.probeTimeoutMs], [3, 2000, 0, 1000]);
      assert.throws(() => loadConfig({ ...NO_FILE, SLUICE_CIRCUIT_FAILURES: '0' }), isConfigError(/routing\.failureThreshold/));
    });
  });
  it("role edge: the origin's shared store, limiter and queue, a NATS bus (leaf node, domain), queued delivery", () => {
    const shared = { ...NO_FILE, SLUICE_ROLE: 'edge', DATABASE_URL: 'postgres://db/sluice', LIMITER_URL: 'redis://redis:6379', QUEUE_URL: 'amqp://mq', BUS_URL: 'nats://leaf:4222?domain=hub' };
    const c = loadConfig(shared);
    assert.equal(c.role, 'edge');
    assert.equal(c.busIdleProbeMs, undefined, 'the edge default (2 s) is applied where the bus is opened');
    assert.equal(loadConfig({ ...shared, BUS_DOMAIN: 'hub', BUS_IDLE_PROBE_MS: '750' }).busIdleProbeMs, 750);
    assert.equal(loadConfig({ ...shared, BUS_DOMAIN: 'hub' }).busDomain, 'hub');
    assert.throws(() => loadConfig({ ...shared, DATABASE_URL: undefined }), isConfigError(/role edge: DATABASE_URL/));
    assert.throws(() => loadConfig({ ...shared, LIMITER_URL: 'memory://', QUEUE_URL: 'memory://' }), isConfigError(/LIMITER_URL, QUEUE_URL/));
    assert.throws(() => loadConfig({ ...shared, BUS_URL: 'redis://redis:6379' }), isConfigError(/BUS_URL must be nats/));
    assert.throws(() => loadConfig({ ...shared, SLUICE_DELIVERY_MODE: 'direct' }), isConfigError(/must be queued/));
    assert.throws(() => loadConfig({ ...shared, BUS_DOMAIN: 'a.b' }), isConfigError(/busDomain/));
  });
});
