// The model catalogue through the whole gateway: keys reaching upstreams, GET /v1/models, /readyz
// and /metrics showing deployments, direct mode refusing when every deployment is full or down,
// queued mode waiting, and the fault test: one of three deployments killed mid-run.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, createUserKey, ledgerRows, startTestSluice, usageWindows, waitFor, type TestSluice } from '../helpers/app.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const upstreams: Upstream[] = [];
const apps: TestSluice[] = [];
after(async () => {
  await Promise.allSettled(apps.map((a) => a.stop()));
  await Promise.allSettled(upstreams.map((u) => u.kill()));
});

async function upstream(...args: Parameters<typeof startUpstream>): Promise<Upstream> {
  const u = await startUpstream(...args);
  upstreams.push(u);
  return u;
}

async function sluice(overrides: Record<string, unknown>, env: Record<string, string> = {}): Promise<TestSluice> {
  const app = await startTestSluice({ routing: { probeIntervalMs: 0 }, ...overrides }, { env });
  apps.push(app);
  return app;
}

const chat = (model: string, maxTokens = 3) => ({ model, max_tokens: maxTokens, messages: [{ role: 'user', content: 'hello' }] });

interface ErrorBody { error: { code: string; message: string } }
interface ReadyBody { ok: boolean; checks: Record<string, string>; deployments: Record<string, { model: string; state: string; outstanding: number; maxConcurrency: number | null }> }

describe('model catalogue through the gateway', () => {
  it('MODEL_URL alone sends MODEL_API_KEY as its bearer key, in both delivery modes', async () => {
    const up = await upstream({ key: 'sk-upstream-secret', model: 'up-model' });
    const app = await sluice({ modelUrl: up.url, modelApiKey: 'sk-upstream-secret' });
    const call = api(app.url);
    assert.deepEqual(((await (await call('/v1/models')).json()) as { data: { id: string }[] }).data.map((m) => m.id), ['up-model']);
    for (const mode of ['direct', 'queued']) {
      const res = await call('/v1/chat/completions', { method: 'POST', json: chat('up-model'), headers: { 'x-sluice-mode': mode } });
      assert.equal(res.status, 200, `${mode}: ${await res.clone().text()}`);
    }
    assert.equal(up.refused, 0);
    assert.deepEqual(up.seen.map((s) => s.authorization), ['Bearer sk-upstream-secret', 'Bearer sk-upstream-secret']);
  });

  it('MODEL_URL alone, backend unreachable: a request is 503 naming the cause, not "model does not exist"', async () => {
    const dead = await upstream();
    await dead.kill();
    const app = await sluice({ modelUrl: dead.url });
    const res = await api(app.url)('/v1/chat/completions', { method: 'POST', json: chat('anything') });
    assert.equal(res.status, 503);
    const { error } = (await res.json()) as ErrorBody;
    assert.equal(error.code, 'SLUICE_ERR_MODEL_UNAVAILABLE');
    assert.match(error.message, /unreachable \(.*ECONNREFUSED/);
    assert.ok(error.message.includes(dead.url), error.message);
  });

  it('lists the catalogue, sends each deployment its key and model name, and /readyz and /metrics show every deployment', async () => {
    const a = await upstream({ key: 'key-a' });
    const b = await upstream({ key: 'key-b' });
    const app = await sluice({
      catalogue: {
        chat: { deployments: [{ id: 'vllm-a', url: a.url, model: 'backend-a', apiKeyEnv: 'KEY_A' }, { id: 'vllm-b', url: b.url, model: 'backend-b', apiKeyEnv: 'KEY_B', maxConcurrency: 8 }] },
        spare: { deployments: [{ url: 'sim://' }] },
      },
    }, { KEY_A: 'key-a', KEY_B: 'key-b' });
    const call = api(app.url);
    assert.deepEqual(((await (await call('/v1/models')).json()) as { data: { id: string }[] }).data.map((m) => m.id).sort(), ['chat', 'spare']);
    const unknown = await call('/v1/chat/completions', { method: 'POST', json: chat('sim') });
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as ErrorBody).error.code, 'SLUICE_ERR_UNKNOWN_MODEL');
    for (let i = 0; i < 4; i++) {
      const res = await call('/v1/chat/completions', { method: 'POST', json: chat('chat'), headers: { 'x-sluice-mode': i % 2 ? 'queued' : 'direct' } });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { model: string }).model, 'chat', 'the client sees the public model id');
    }
    assert.deepEqual([a.seen.length, b.seen.length, a.refused, b.refused], [2, 2, 0, 0]);
    assert.ok(a.seen.every((s) => s.model === 'backend-a' && s.authorization === 'Bearer key-a'));
    assert.ok(b.seen.every((s) => s.model === 'backend-b' && s.authorization === 'Bearer key-b'));

    const ready = await fetch(`${app.url}/readyz`);
    assert.equal(ready.status, 200);
    const body = (await ready.json()) as ReadyBody;
    assert.equal(body.checks['model:chat'], 'ok');
    assert.deepEqual(body.deployments['vllm-b'], { model: 'chat', state: 'healthy', outstanding: 0, maxConcurrency: 8 });
    assert.equal(body.deployments['spare#1']!.state, 'healthy');
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.match(metrics, /sluice_deployment_state\{deployment="vllm-a",model="chat",state="healthy"\} 1/);
    assert.match(metrics, /sluice_deployment_state\{deployment="vllm-a",model="chat",state="open"\} 0/);
    assert.match(metrics, /sluice_deployment_outstanding_requests\{deployment="vllm-b",model="chat"\} 0/);
    assert.match(metrics, /sluice_deployment_requests_total\{deployment="vllm-a",model="chat",outcome="ok"\} 2/);
  });

  it('direct mode: every deployment full = 503 SLUICE_ERR_MODEL_BUSY with Retry-After and nothing reserved; queued mode waits for room', async () => {
    const up = await upstream({ behaviour: { kind: 'hold' } });
    const app = await sluice({ catalogue: { m: { deployments: [{ id: 'only', url: up.url, maxConcurrency: 1 }] } } });
    const key = await createUserKey(app.url, { id: 'busy-user' });
    const call = api(app.url, key);
    const holding = call('/v1/chat/completions', { method: 'POST', json: chat('m'), headers: { 'x-sluice-mode': 'direct' } });
    await waitFor(async () => up.seen.length === 1);
    const before = await usageWindows(app.url, key);

    const refused = await call('/v1/chat/completions', { method: 'POST', json: chat('m'), headers: { 'x-sluice-mode': 'direct' } });
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.equal(((await refused.json()) as ErrorBody).error.code, 'SLUICE_ERR_MODEL_BUSY');
    const afterRefusal = await usageWindows(app.url, key);
    assert.equal(afterRefusal.daily_requests!.used, before.daily_requests!.used, 'a refused request reserves nothing');

    const queued = (await (await call('/v1/requests', { method: 'POST', json: chat('m') })).json()) as { request_id: string };
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(up.seen.length, 1, 'the queued request waits for room instead of reaching the full deployment');
    const waiting = (await (await call(`/v1/requests/${queued.request_id}`)).json()) as { status: string };
    assert.notEqual(waiting.status, 'failed');

    up.behaviour = { kind: 'ok' };
    up.release();
    assert.equal((await holding).status, 200);
    const done = await waitFor(async () => {
      const r = (await (await call(`/v1/requests/${queued.request_id}`)).json()) as { status: string };
      return r.status === 'completed' && r;
    });
    assert.equal(done.status, 'completed');
    assert.equal(up.seen.length, 2);
  });

  it('a deployment whose circuit is open: /readyz says unavailable (503) and direct mode refuses with SLUICE_ERR_MODEL_UNAVAILABLE', async () => {
    const up = await upstream({ behaviour: { kind: 'fail', status: 502 } });
    const app = await sluice({
      catalogue: { m: { deployments: [{ id: 'flaky', url: up.url }] } },
      routing: { probeIntervalMs: 0, failureThreshold: 1, coolDownMs: 60_000 },
      worker: { maxAttempts: 1 },
    });
    const call = api(app.url);
    const failed = await call('/v1/chat/completions', { method: 'POST', json: chat('m'), headers: { 'x-sluice-mode': 'direct' } });
    assert.equal(((await failed.json()) as ErrorBody).error.code, 'SLUICE_ERR_MODEL_TRANSIENT');
    const ready = await fetch(`${app.url}/readyz`);
    assert.equal(ready.status, 503);
    const body = (await ready.json()) as ReadyBody;
    assert.equal(body.checks['model:m'], 'unavailable');
    assert.equal(body.deployments.flaky!.state, 'open');
    const refused = await call('/v1/chat/completions', { method: 'POST', json: chat('m'), headers: { 'x-sluice-mode': 'direct' } });
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as ErrorBody).error.code, 'SLUICE_ERR_MODEL_UNAVAILABLE');
    assert.ok(Number(refused.headers.get('retry-after')) >= 59);
    assert.equal(up.seen.length, 1, 'the open circuit kept the second request away');
  });

  it('fault: one of three deployments killed mid-run; every request completes and is charged once', async () => {
    const ups = await Promise.all([0, 1, 2].map(() => upstream({ behaviour: { kind: 'ok', tokens: 20, itlMs: 5 } })));
    const app = await sluice({
      catalogue: { m: { deployments: ups.map((u, i) => ({ id: `d${i}`, url: u.url })) } },
      routing: { probeIntervalMs: 0, failureThreshold: 2, coolDownMs: 60_000 },
      worker: { concurrency: 6, maxAttempts: 4, retryBaseMs: 20 },
    });
    const key = await createUserKey(app.url, { id: 'fault-user' });
    const call = api(app.url, key);
    const total = 30;
    const ids: string[] = [];
    for (let i = 0; i < total; i++) {
      const res = await call('/v1/requests', { method: 'POST', json: chat('m', 20) });
      assert.equal(res.status, 202);
      ids.push(((await res.json()) as { request_id: string }).request_id);
    }
    await waitFor(async () => ups[1]!.seen.length >= 2 && ups[1]!.open() > 0, 20_000, 5);
    await ups[1]!.kill();

    const records = await waitFor(async () => {
      const all = await Promise.all(ids.map(async (id) => (await (await call(`/v1/requests/${id}`)).json()) as { request_id: string; status: string; usage: { completion_tokens: number } | null; served: { deployment: string; model: string } | null }));
      return all.every((r) => r.status === 'completed' || r.status === 'failed' || r.status === 'cancelled') && all;
    }, 60_000, 50);
    assert.deepEqual(records.map((r) => r.status), ids.map(() => 'completed'), 'every request completed');
    assert.ok(records.every((r) => r.usage?.completion_tokens === 20));

    const rows = await ledgerRows(app.url, 'fault-user');
    assert.equal(rows.length, total, 'one ledger row per request');
    assert.equal(new Set(rows.map((r) => r.request_id)).size, total);
    assert.ok(rows.every((r) => r.charged_requests === 1 && r.completion_tokens === 20), 'each charged once, for the answer that completed');
    const servedBy = new Map(records.map((r) => [r.request_id, r.served?.deployment]));
    assert.ok(records.every((r) => r.served !== null && ['d0', 'd1', 'd2'].includes(r.served.deployment)), 'every record names the deployment that served it');
    assert.ok(rows.every((r) => r.deployment === servedBy.get(String(r.request_id))), 'the ledger row names the same deployment');
    const windows = await usageWindows(app.url, key);
    assert.equal(windows.daily_requests!.used, total);

    const scrape = await (await fetch(`${app.url}/metrics`)).text();
    const ok = (d: string) => Number(new RegExp(`sluice_deployment_requests_total\\{deployment="${d}",model="m",outcome="ok"\\} (\\d+)`).exec(scrape)?.[1] ?? 0);
    assert.equal(ok('d0') + ok('d1') + ok('d2'), total, 'each request was served (usage) by exactly one deployment');
    assert.ok(ok('d0') > 0 && ok('d2') > 0);
    assert.match(scrape, /sluice_deployment_state\{deployment="d1",model="m",state="open"\} 1/, 'the killed deployment\'s circuit opened');
    for (const d of ['d0', 'd1', 'd2']) assert.equal(records.filter((r) => r.served?.deployment === d).length, ok(d), `${d}: records and metrics agree`);
  });

  it('a stream cut after its first tokens still records the deployment that produced them', async () => {
    const up = await upstream({ behaviour: { kind: 'cut', after: 3 } });
    const app = await sluice({ catalogue: { m: { deployments: [{ id: 'only', url: up.url, model: 'up-model' }] } }, worker: { maxAttempts: 1 } });
    const key = await createUserKey(app.url, { id: 'cut-user' });
    const res = await api(app.url, key)('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': 'direct' }, json: { ...chat('m', 10), stream: true } });
    await res.text();
    const id = res.headers.get('x-request-id')!;
    const record = await waitFor(async () => {
      const r = (await (await api(app.url, key)(`/v1/requests/${id}`)).json()) as { status: string; served: { deployment: string; model: string } | null };
      return r.status === 'failed' && r;
    });
    assert.deepEqual(record.served, { deployment: 'only', model: 'up-model' });
    const rows = await ledgerRows(app.url, 'cut-user');
    assert.deepEqual(rows.map((r) => r.deployment), ['only']);
  });
});
