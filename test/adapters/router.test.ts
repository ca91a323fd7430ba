// The model router against real HTTP upstreams (test/helpers/upstream.ts, on 127.0.0.1): balancing
// by weight, capacity, circuits, failover to deployments and fallback models, bearer keys, probes.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config.ts';
import { createRouter, type ModelRouter } from '../../src/adapters/model/router.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics, type Metrics } from '../../src/core/metrics.ts';
import { ModelError, type ModelChunk, type ModelRequest } from '../../src/ports/model.ts';
import { freePort } from '../helpers/process.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import { waitFor } from '../helpers/app.ts';

const upstreams: Upstream[] = [];
const routers: ModelRouter[] = [];
after(async () => {
  await Promise.allSettled(routers.map((r) => r.close()));
  await Promise.allSettled(upstreams.map((u) => u.kill()));
});

async function upstream(...args: Parameters<typeof startUpstream>): Promise<Upstream> {
  const u = await startUpstream(...args);
  upstreams.push(u);
  return u;
}

async function router(catalogue: Record<string, unknown>, routing: Record<string, unknown> = {}, env: Record<string, string> = {}) {
  const config = parseConfig({ catalogue, routing: { probeIntervalMs: 0, ...routing } });
  const lines: string[] = [];
  const logger = createLogger('info', 'test', { write: (s: string) => { lines.push(s); } });
  const metrics = createMetrics();
  const r = await createRouter({ config, secret: (n) => env[n], logger, metrics });
  routers.push(r);
  return { r, lines, metrics };
}

const req = (model: string, maxTokens = 3): ModelRequest => ({ model, messages: [{ role: 'user', content: 'hi' }], maxTokens });

async function collect(stream: AsyncIterable<ModelChunk>): Promise<ModelChunk[]> {
  const out: ModelChunk[] = [];
  for await (const c of stream) out.push(c);
  return out;
}

function served(chunks: ModelChunk[]): { deployment: string; model: string } | undefined {
  const last = chunks.at(-1);
  return last?.type === 'usage' ? last.served : undefined;
}

async function counterTotal(metrics: Metrics, name: 'deploymentFailovers' | 'deploymentRequests', labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metrics[name].get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x)).reduce((s, v) => s + v.value, 0);
}

describe('model router: balancing and capacity', () => {
  it('one call at a time spreads by weight (3:1), and each deployment is sent its own model name', async () => {
    const a = await upstream();
    const b = await upstream();
    const { r } = await router({ m: { deployments: [{ url: a.url, model: 'model-a', weight: 3 }, { url: b.url, model: 'model-b', weight: 1 }] } });
    const names: string[] = [];
    for (let i = 0; i < 40; i++) names.push(served(await collect(r.stream(req('m'), new AbortController().signal)))!.deployment);
    assert.equal(names.filter((n) => n === 'm#1').length, 30);
    assert.equal(names.filter((n) => n === 'm#2').length, 10);
    assert.ok(a.seen.every((s) => s.model === 'model-a') && b.seen.every((s) => s.model === 'model-b'));
  });

  it('concurrent calls go to the fewest outstanding per weight (2:1 gives 4 and 2 of 6)', async () => {
    const a = await upstream({ behaviour: { kind: 'hold' } });
    const b = await upstream({ behaviour: { kind: 'hold' } });
    const { r } = await router({ m: { deployments: [{ url: a.url, weight: 2 }, { url: b.url, weight: 1 }] } });
    const calls = Array.from({ length: 6 }, () => collect(r.stream(req('m'), new AbortController().signal)));
    await waitFor(async () => a.seen.length + b.seen.length === 6);
    assert.deepEqual([a.seen.length, b.seen.length], [4, 2]);
    assert.deepEqual([r.health().deployments['m#1']!.outstanding, r.health().deployments['m#2']!.outstanding], [4, 2]);
    a.release(); b.release();
    await Promise.all(calls);
    assert.equal(r.health().deployments['m#1']!.outstanding, 0);
  });

  it('a deployment at maxConcurrency is skipped, whatever its weight', async () => {
    const a = await upstream({ behaviour: { kind: 'hold' } });
    const b = await upstream({ behaviour: { kind: 'hold' } });
    const { r } = await router({ m: { deployments: [{ url: a.url, weight: 10, maxConcurrency: 1 }, { url: b.url, weight: 1 }] } });
    const calls = Array.from({ length: 3 }, () => collect(r.stream(req('m'), new AbortController().signal)));
    await waitFor(async () => a.seen.length + b.seen.length === 3);
    assert.deepEqual([a.seen.length, b.seen.length], [1, 2]);
    a.release(); b.release();
    await Promise.all(calls);
  });

  it('when every deployment is full, a call waits for room (availability says busy), and an aborted wait leaves nothing held', async () => {
    const a = await upstream({ behaviour: { kind: 'hold' } });
    const b = await upstream({ behaviour: { kind: 'hold' } });
    const { r } = await router({ m: { deployments: [{ url: a.url, maxConcurrency: 1 }, { url: b.url, maxConcurrency: 1 }] } }, { busyRetryAfterS: 2 });
    const first = [collect(r.stream(req('m'), new AbortController().signal)), collect(r.stream(req('m'), new AbortController().signal))];
    await waitFor(async () => a.seen.length + b.seen.length === 2);
    assert.deepEqual(r.availability('m'), { ok: false, reason: 'busy', retryAfterS: 2 });

    const waiting = collect(r.stream(req('m'), new AbortController().signal));
    const giveUp = new AbortController();
    const abandoned = collect(r.stream(req('m'), giveUp.signal));
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(a.seen.length + b.seen.length, 2, 'nothing past the capacity reached an upstream');
    giveUp.abort();
    assert.deepEqual(await abandoned, [], 'an aborted wait ends without a chunk');

    a.behaviour = { kind: 'ok' };
    b.behaviour = { kind: 'ok' };
    a.release(); b.release();
    await Promise.all(first);
    const chunks = await waiting;
    assert.ok(served(chunks), 'the waiting call ran once a slot was free');
    assert.equal(a.seen.length + b.seen.length, 3, 'the aborted call never reached an upstream');
    assert.deepEqual(r.availability('m'), { ok: true });
    assert.deepEqual(Object.values(r.health().deployments).map((d) => d.outstanding), [0, 0]);
  });
});

describe('model router: capacity from configuration', () => {
  it('a deployment without maxConcurrency takes routing.maxConcurrency calls at once, each on its own connection (the pool is sized from it, past the old 256)', async () => {
    const a = await upstream({ behaviour: { kind: 'hold' } });
    const { r } = await router({ m: { deployments: [{ url: a.url }] } }, { maxConcurrency: 300 });
    assert.equal(r.health().deployments['m#1']!.maxConcurrency, 300);
    assert.equal(r.capacity(), 300);
    const calls = Array.from({ length: 300 }, () => collect(r.stream(req('m'), new AbortController().signal)));
    // Every call reaches the upstream at once: none waits for a pooled connection.
    await waitFor(async () => a.open() === 300, 10_000);
    assert.equal(r.availability('m').ok, false, 'full: a further call would wait (direct mode refuses it)');
    a.release();
    await Promise.all(calls);
    assert.equal(r.health().deployments['m#1']!.outstanding, 0);
  });

  it('availability() only looks: checking before each call (direct mode, the worker) does not shift the round robin', async () => {
    const a = await upstream();
    const b = await upstream();
    const { r } = await router({ m: { deployments: [{ url: a.url }, { url: b.url }] } });
    for (let i = 0; i < 6; i++) {
      assert.equal(r.availability('m').ok, true);
      await collect(r.stream(req('m'), new AbortController().signal));
    }
    assert.deepEqual([a.seen.length, b.seen.length], [3, 3]);
  });

  it('a deployment\'s own maxConcurrency wins; capacity() is the sum over every deployment', async () => {
    const { r } = await router({
      a: { deployments: [{ url: 'sim://', maxConcurrency: 2 }, { url: 'sim://' }] },
      b: { deployments: [{ url: 'sim://', maxConcurrency: 5 }] },
    }, { maxConcurrency: 7 });
    assert.deepEqual(Object.values(r.health().deployments).map((d) => d.maxConcurrency), [2, 7, 5]);
    assert.equal(r.capacity(), 14);
  });

  it('the MODEL_URL shorthand is bounded by routing.maxConcurrency too (it was unbounded)', async () => {
    const a = await upstream({ behaviour: { kind: 'hold' } });
    const config = parseConfig({ modelUrl: a.url, routing: { probeIntervalMs: 0, maxConcurrency: 4 } });
    const r = await createRouter({ config, secret: () => undefined, logger: createLogger('silent', 'test'), metrics: createMetrics() });
    routers.push(r);
    assert.equal(r.capacity(), 4);
    const ac = new AbortController();
    const calls = Array.from({ length: 5 }, () => collect(r.stream(req('any'), ac.signal)).catch(() => []));
    await waitFor(async () => a.open() === 4);
    await new Promise((res) => setTimeout(res, 50));
    assert.equal(a.open(), 4, 'the fifth call waits in the router');
    assert.deepEqual(r.availability('any'), { ok: false, reason: 'busy', retryAfterS: 1 });
    a.behaviour = { kind: 'ok' };
    a.release();
    await Promise.all(calls);
  });
});

describe('model router: health', () => {
  it('consecutive failures open a circuit; the deployment is skipped, then half-opens, and a good trial closes it', async () => {
    const a = await upstream({ behaviour: { kind: 'fail', status: 500 } });
    const b = await upstream();
    const { r, lines, metrics } = await router({ m: { deployments: [{ id: 'bad', url: a.url }, { id: 'good', url: b.url }] } }, { failureThreshold: 2, coolDownMs: 300 });
    const call = async () => served(await collect(r.stream(req('m'), new AbortController().signal)))!.deployment;
    for (let i = 0; i < 10 && a.seen.length < 2; i++) assert.equal(await call(), 'good', 'every call fails over to the good one');
    assert.equal(a.seen.length, 2);
    assert.equal(r.health().deployments.bad!.state, 'open');
    assert.ok(lines.some((l) => l.includes('circuit opened') && l.includes('"deployment":"bad"')));
    for (let i = 0; i < 6; i++) assert.equal(await call(), 'good');
    assert.equal(a.seen.length, 2, 'an open circuit gets no calls');

    await new Promise((res) => setTimeout(res, 320));
    assert.equal(r.health().deployments.bad!.state, 'half-open');
    for (let i = 0; i < 6 && a.seen.length < 3; i++) await call();
    assert.equal(a.seen.length, 3, 'one trial call');
    assert.equal(r.health().deployments.bad!.state, 'open', 'a failed trial opens the circuit again');

    a.behaviour = { kind: 'ok' };
    await new Promise((res) => setTimeout(res, 320));
    const after: string[] = [];
    for (let i = 0; i < 6; i++) after.push(await call());
    assert.equal(r.health().deployments.bad!.state, 'healthy', 'a good trial closes it');
    assert.ok(after.includes('bad') && after.includes('good'));
    const scrape = await metrics.registry.metrics();
    assert.match(scrape, /sluice_deployment_state\{deployment="bad",model="m",state="healthy"\} 1/);
    assert.match(scrape, /sluice_deployment_requests_total\{deployment="bad",model="m",outcome="transient"\} 3/);
  });

  it('an unreachable backend at start is a warning naming its URL and the cause; start-up goes on and calls avoid it', async () => {
    const port = await freePort();
    const dead = `http://127.0.0.1:${port}/v1`;
    const b = await upstream();
    const { r, lines } = await router({ m: { deployments: [{ id: 'dead', url: dead }, { id: 'alive', url: b.url }] } }, { probeIntervalMs: 60_000 });
    await r.started;
    const warning = lines.map((l) => JSON.parse(l) as { level: number; msg: string; cause?: string }).find((l) => l.msg.includes(dead));
    assert.ok(warning, `a line names ${dead}: ${lines.join('')}`);
    assert.equal(warning.level, 40, 'a warning');
    assert.match(warning.msg, /unreachable/);
    assert.doesNotMatch(warning.msg, /does not exist/);
    assert.match(warning.cause!, /ECONNREFUSED/);
    assert.equal(r.health().deployments.dead!.state, 'unreachable');
    for (let i = 0; i < 4; i++) assert.equal(served(await collect(r.stream(req('m'), new AbortController().signal)))!.deployment, 'alive');
  });
});

describe('model router: failover', () => {
  it('a transient failure before the first token moves to the next deployment, then to the fallback model; served names the one that answered', async () => {
    const a = await upstream({ behaviour: { kind: 'fail', status: 503 } });
    const b = await upstream({ behaviour: { kind: 'fail', status: 429 } });
    const c = await upstream();
    const { r, metrics } = await router({
      m: { deployments: [{ id: 'a', url: a.url }, { id: 'b', url: b.url }], fallbacks: ['f'] },
      f: { deployments: [{ id: 'c', url: c.url, model: 'c-model' }] },
    });
    const chunks = await collect(r.stream(req('m', 4), new AbortController().signal));
    assert.deepEqual(served(chunks), { deployment: 'c', model: 'c-model' });
    assert.equal(chunks.filter((x) => x.type === 'tokens').flatMap((x) => (x.type === 'tokens' ? x.texts : [])).length, 3);
    assert.deepEqual([a.seen.length, b.seen.length, c.seen.length], [1, 1, 1]);
    assert.equal(c.seen[0]!.model, 'c-model');
    assert.equal(await counterTotal(metrics, 'deploymentFailovers'), 2);
  });

  it('after the first token, a failure propagates (no failover): the attempt runner restarts', async () => {
    const a = await upstream({ behaviour: { kind: 'cut', after: 2 } });
    const b = await upstream();
    const { r } = await router({ m: { deployments: [{ url: a.url, weight: 100 }, { url: b.url }] } });
    const got: ModelChunk[] = [];
    await assert.rejects(async () => { for await (const c of r.stream(req('m', 5), new AbortController().signal)) got.push(c); },
      (e) => e instanceof ModelError && e.kind === 'transient');
    // The first chunk names the deployment (so a cut stream records who served it), then tokens.
    assert.equal(got[0]?.type, 'served');
    assert.ok(got.length > 1 && got.slice(1).every((c) => c.type === 'tokens'), 'tokens came first');
    assert.equal(b.seen.length, 0, 'no other deployment was asked');
  });

  it('a permanent error (400) does not fail over', async () => {
    const a = await upstream({ behaviour: { kind: 'fail', status: 400 } });
    const b = await upstream();
    const { r } = await router({ m: { deployments: [{ url: a.url, weight: 100 }, { url: b.url }] } });
    await assert.rejects(collect(r.stream(req('m'), new AbortController().signal)), (e) => e instanceof ModelError && e.kind === 'permanent' && e.status === 400);
    assert.equal(b.seen.length, 0);
    assert.equal(r.health().deployments['m#1']!.state, 'healthy', 'a refused request says nothing about health');
  });

  it('when every deployment and fallback is open, a call fails at once (transient) and direct mode is told when to retry', async () => {
    const a = await upstream({ behaviour: { kind: 'fail', status: 500 } });
    const { r } = await router({ m: { deployments: [{ url: a.url }] } }, { failureThreshold: 1, coolDownMs: 5_000 });
    await assert.rejects(collect(r.stream(req('m'), new AbortController().signal)), (e) => e instanceof ModelError && e.kind === 'transient' && e.status === 500);
    await assert.rejects(collect(r.stream(req('m'), new AbortController().signal)), (e) => e instanceof ModelError && e.kind === 'transient' && e.status === 503);
    assert.equal(a.seen.length, 1);
    const availability = r.availability('m');
    assert.equal(availability.ok, false);
    assert.ok(!availability.ok && availability.reason === 'unavailable' && availability.retryAfterS >= 4 && availability.retryAfterS <= 5);
    assert.equal(r.health().ok, false);
  });

  it('a chat call to an embeddings-only model is refused (permanent), not failed over', async () => {
    const a = await upstream();
    const { r } = await router({ e: { deployments: [{ url: a.url }], kinds: ['embeddings'] } });
    await assert.rejects(collect(r.stream(req('e'), new AbortController().signal)), (e) => e instanceof ModelError && e.kind === 'permanent');
    assert.equal(a.seen.length, 0);
  });
});

describe('model router: keys and the MODEL_URL shorthand', () => {
  it('each deployment sends its own bearer key, read from the variable its apiKeyEnv names', async () => {
    const a = await upstream({ key: 'key-of-a' });
    const b = await upstream({ key: 'key-of-b' });
    const { r } = await router({ m: { deployments: [{ url: a.url, apiKeyEnv: 'A_KEY' }, { url: b.url, apiKeyEnv: 'B_KEY' }] } }, {}, { A_KEY: 'key-of-a', B_KEY: 'key-of-b' });
    for (let i = 0; i < 4; i++) assert.ok(served(await collect(r.stream(req('m'), new AbortController().signal))));
    assert.deepEqual([a.seen.length, b.seen.length, a.refused, b.refused], [2, 2, 0, 0]);
    assert.ok(a.seen.every((s) => s.authorization === 'Bearer key-of-a'));
  });

  it('a missing key variable is a configuration error naming the variable and the deployment', async () => {
    const a = await upstream();
    await assert.rejects(router({ m: { deployments: [{ id: 'gpt-main', url: a.url, apiKeyEnv: 'NOT_SET_ANYWHERE' }] } }),
      (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG') && /NOT_SET_ANYWHERE/.test(e.message) && /gpt-main/.test(e.message));
  });

  it('MODEL_URL alone: one deployment serving every model id as sent, with MODEL_API_KEY as its bearer key', async () => {
    const a = await upstream({ key: 'the-model-key', model: 'listed-model' });
    const config = parseConfig({ modelUrl: a.url, modelApiKey: 'the-model-key', routing: { probeIntervalMs: 0 } });
    const r = await createRouter({ config, secret: () => undefined, logger: createLogger('silent', 'test'), metrics: createMetrics() });
    routers.push(r);
    assert.deepEqual(await r.models(), ['listed-model']);
    assert.equal(r.catalogueModels(), null);
    const chunks = await collect(r.stream(req('whatever-id'), new AbortController().signal));
    assert.deepEqual(served(chunks), { deployment: 'default', model: 'whatever-id' });
    assert.deepEqual(a.seen, [{ model: 'whatever-id', authorization: 'Bearer the-model-key' }]);
    assert.equal(r.allowsPassthrough('whatever-id'), false);
  });

  it('allowsPassthrough is true only for a model whose every deployment allows it', async () => {
    const a = await upstream();
    const { r } = await router({
      open: { deployments: [{ url: a.url, passthrough: true }, { url: 'sim://', passthrough: true }] },
      mixed: { deployments: [{ url: a.url, passthrough: true }, { url: 'sim://' }] },
    });
    assert.deepEqual([r.allowsPassthrough('open'), r.allowsPassthrough('mixed'), r.allowsPassthrough('nope')], [true, false, false]);
    assert.deepEqual(await r.models(), ['open', 'mixed']);
  });
});
