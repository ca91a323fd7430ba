// The chat body travels whole from the client to an OpenAI-compatible backend: through admission,
// the stored payload and the worker (queued) or the gateway (direct), to what the upstream
// receives. A non-streaming caller in direct mode is sent upstream non-streaming.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startSimModelServer } from '../../src/cli/sim-model.ts';
import { api, startTestSluice, type TestSluice } from '../helpers/app.ts';

/** A proxy in front of `sluice sim-model` that records every chat body it passes on. */
async function recordingProxy(target: string): Promise<{ url: string; bodies: Record<string, unknown>[]; close(): Promise<void> }> {
  const bodies: Record<string, unknown>[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.url?.endsWith('/chat/completions')) bodies.push(JSON.parse(body.toString()) as Record<string, unknown>);
      const upstream = http.request(`${target}${req.url!.replace(/^\/v1/, '')}`, { method: req.method, headers: { 'content-type': 'application/json' } }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.end(req.method === 'GET' ? undefined : body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, bodies,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** `sluice sim-model` behind a recording proxy, and a Sluice configured (from the proxy's URL) to call it. */
async function forwardingSetup(config: (proxyUrl: string) => Record<string, unknown>) {
  const sim = await startSimModelServer({ host: '127.0.0.1', port: 0, ttftMs: 0, itlMs: 0 });
  const proxy = await recordingProxy(sim.url);
  const app = await startTestSluice(config(proxy.url));
  return { proxy, app, close: async () => { await app.stop(); await proxy.close(); await sim.close(); } };
}

describe('the chat body reaches the backend whole', () => {
  let setup: Awaited<ReturnType<typeof forwardingSetup>>;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let app: TestSluice;
  before(async () => {
    setup = await forwardingSetup((url) => ({ modelUrl: url, models: ['sim'] }));
    ({ proxy, app } = setup);
  });
  after(() => setup.close());

  const chat = (body: object, mode: 'direct' | 'queued') =>
    api(app.url)('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': mode }, json: { model: 'sim', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }], ...body } });

  it('a non-streaming request in direct mode goes upstream non-streaming; in queued mode it streams', async () => {
    for (const [mode, upstreamStreams] of [['direct', false], ['queued', true]] as const) {
      const res = await chat({ seed: 3 }, mode);
      assert.equal(res.status, 200, await res.clone().text());
      const body = (await res.json()) as { usage: { completion_tokens: number }; choices: { message: { content: string } }[] };
      assert.equal(body.usage.completion_tokens, 5);
      assert.ok(body.choices[0]!.message.content.length > 0);
      const sent = proxy.bodies.at(-1)!;
      assert.equal(sent.stream, upstreamStreams, mode);
      assert.equal(sent.stream_options === undefined, !upstreamStreams, mode);
    }
  });

  it('forwards tools, tool_choice, response_format, logprobs, penalties, logit_bias, user and n; usage is what the backend reports for every choice', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
    const fields = {
      tools, tool_choice: 'none', response_format: { type: 'json_object' }, logprobs: true, top_logprobs: 2,
      frequency_penalty: 0.5, presence_penalty: -0.5, logit_bias: { 11: 2 }, user: 'end-user', reasoning_effort: 'low',
    };
    for (const mode of ['direct', 'queued'] as const) {
      const res = await chat({ ...fields, n: 2, seed: 9 }, mode);
      assert.equal(res.status, 200, await res.clone().text());
      const sent = proxy.bodies.at(-1)!;
      for (const [k, v] of Object.entries(fields)) assert.deepEqual(sent[k], v, `${mode}: ${k}`);
      assert.deepEqual([sent.n, sent.max_tokens, sent.seed], [2, 5, 9]);
      const body = (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
      assert.equal(body.usage.completion_tokens, 10, `${mode}: two choices of 5 tokens`);
    }
  });
});

describe('vendor fields pass through only where the catalogue allows it', () => {
  let setup: Awaited<ReturnType<typeof forwardingSetup>>;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let app: TestSluice;
  before(async () => {
    setup = await forwardingSetup((url) => ({
      routing: { probeIntervalMs: 0 },
      catalogue: {
        vllm: { deployments: [{ url, model: 'sim', passthrough: true }] },
        strict: { deployments: [{ url, model: 'sim' }] },
      },
    }));
    ({ proxy, app } = setup);
  });
  after(() => setup.close());

  const vendor = { top_k: 20, min_p: 0.05, guided_json: { type: 'object' } };
  const chat = (model: string) => api(app.url)('/v1/chat/completions', {
    method: 'POST', headers: { 'x-sluice-mode': 'direct' }, json: { model, max_tokens: 3, messages: [{ role: 'user', content: 'hi' }], ...vendor },
  });

  it('a passthrough deployment receives vLLM fields as sent', async () => {
    const res = await chat('vllm');
    assert.equal(res.status, 200, await res.clone().text());
    const sent = proxy.bodies.at(-1)!;
    for (const [k, v] of Object.entries(vendor)) assert.deepEqual(sent[k], v, k);
  });

  it('any other model refuses the first unknown field by name, and nothing reaches the backend', async () => {
    const before = proxy.bodies.length;
    const res = await chat('strict');
    assert.equal(res.status, 400);
    const { error } = (await res.json()) as { error: { code: string; param: string } };
    assert.equal(error.code, 'SLUICE_ERR_UNSUPPORTED_PARAM');
    assert.ok(Object.keys(vendor).includes(error.param), error.param);
    assert.equal(proxy.bodies.length, before);
  });
});
