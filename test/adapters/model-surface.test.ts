// The whole chat surface through the model adapters: the simulator's tool calls, JSON mode, n
// choices, logprobs and embeddings; HttpModel against `sluice sim-model` (a real HTTP server) for
// the same, streamed and not, with a bearer key, injected failures, and usage reported or counted.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { HttpModel } from '../../src/adapters/model/http.ts';
import { SimModel, simOptionsFromUrl } from '../../src/adapters/model/sim.ts';
import { jsonPieces } from '../../src/adapters/model/sim-answer.ts';
import { startSimModelServer } from '../../src/cli/sim-model.ts';
import { countPromptTokens, countTextTokens } from '../../src/core/tokens.ts';
import { ModelError, type ChatMessage, type ModelBackend, type ModelChunk, type ModelRequest, type ToolCall } from '../../src/ports/model.ts';

const messages: ChatMessage[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
const weather = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' }, unit: { type: 'string', enum: ['c', 'f'] } }, required: ['city', 'days', 'unit'] },
  },
};
const clock = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string' } } } } };
const request = (over: Partial<ModelRequest> = {}): ModelRequest => ({ model: 'sim', messages, maxTokens: 40, seed: 7, ...over });

interface Choice { text: string; calls: ToolCall[]; logprobs: unknown[]; texts: number }
interface Answer { choices: Choice[]; usage: Extract<ModelChunk, { type: 'usage' }> | undefined; error: unknown; chunks: ModelChunk[] }

/** Every choice assembled from the chunks, as a request's output would be. */
async function answer(model: ModelBackend, req: ModelRequest): Promise<Answer> {
  const out: Answer = { choices: [], usage: undefined, error: undefined, chunks: [] };
  const choice = (i: number) => (out.choices[i] ??= { text: '', calls: [], logprobs: [], texts: 0 });
  try {
    for await (const chunk of model.stream(req, new AbortController().signal)) {
      out.chunks.push(chunk);
      if (chunk.type === 'usage') { out.usage = chunk; continue; }
      if (chunk.type === 'served') continue;
      const c = choice(chunk.choice ?? 0);
      if (chunk.type === 'tokens') {
        assert.ok(chunk.texts.length > 0);
        if (chunk.logprobs) { assert.equal(chunk.logprobs.length, chunk.texts.length, 'logprobs parallel to texts'); c.logprobs.push(...chunk.logprobs); }
        c.text += chunk.texts.join('');
        c.texts += chunk.texts.length;
      } else {
        for (const d of chunk.deltas) {
          const call = (c.calls[d.call] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
          if (d.id) call.id = d.id;
          if (d.name) call.function.name = d.name;
          call.function.arguments += d.arguments;
        }
      }
    }
  } catch (e) { out.error = e; }
  return out;
}

const fast = () => new SimModel({ ttftMs: 0, itlMs: 0 });

describe('SimModel on the chat surface', () => {
  it('calls the first tool with valid JSON arguments holding its required parameters, in fragments', async () => {
    const a = await answer(fast(), request({ params: { tools: [weather, clock] } }));
    assert.equal(a.choices.length, 1);
    const [call] = a.choices[0]!.calls;
    assert.equal(a.choices[0]!.calls.length, 1);
    assert.equal(a.choices[0]!.text, '');
    assert.equal(call?.function.name, 'get_weather');
    assert.match(call?.id ?? '', /^call_[a-z0-9]{24}$/);
    const args = JSON.parse(call!.function.arguments) as Record<string, unknown>;
    assert.deepEqual(Object.keys(args), ['city', 'days', 'unit']);
    assert.equal(typeof args.city, 'string');
    assert.ok(Number.isInteger(args.days));
    assert.ok(['c', 'f'].includes(args.unit as string));
    const deltas = a.chunks.flatMap((c) => (c.type === 'tool_calls' ? c.deltas : []));
    assert.ok(deltas.length >= 3, 'several fragments');
    assert.deepEqual([deltas[0]!.id, deltas[0]!.name], [call!.id, 'get_weather'], 'the first fragment names the call');
    assert.ok(deltas.slice(1).every((d) => d.id === undefined && d.name === undefined));
    assert.equal(a.usage?.finishReason, 'tool_calls');
    assert.equal(a.usage?.completionTokens, deltas.length);
    assert.equal(a.usage?.promptTokens, countPromptTokens(messages, [weather, clock]));
    assert.deepEqual(await answer(fast(), request({ params: { tools: [weather, clock] } })), a, 'deterministic');
  });

  it('honours tool_choice: a named function, none, and parallel calls', async () => {
    const named = await answer(fast(), request({ params: { tools: [weather, clock], tool_choice: { type: 'function', function: { name: 'get_time' } } } }));
    assert.equal(named.choices[0]!.calls[0]?.function.name, 'get_time');
    assert.deepEqual(Object.keys(JSON.parse(named.choices[0]!.calls[0]!.function.arguments) as object), ['zone'], 'no required: every property');
    const none = await answer(fast(), request({ params: { tools: [weather], tool_choice: 'none' } }));
    assert.deepEqual([none.choices[0]!.calls.length, none.usage?.finishReason], [0, 'length']);
    assert.equal(none.choices[0]!.text, (await answer(fast(), request())).choices[0]!.text);
    const parallel = await answer(fast(), request({ maxTokens: 200, params: { tools: [weather, clock], parallel_tool_calls: true } }));
    assert.deepEqual(parallel.choices[0]!.calls.map((c) => c.function.name), ['get_weather', 'get_time']);
    assert.notEqual(parallel.choices[0]!.calls[0]!.id, parallel.choices[0]!.calls[1]!.id);
  });

  it('answers a tool result in text, unless tool_choice forces another call', async () => {
    const first = await answer(fast(), request({ params: { tools: [weather] } }));
    const call = first.choices[0]!.calls[0]!;
    const roundTrip: ChatMessage[] = [...messages, { role: 'assistant', content: '', tool_calls: [call] }, { role: 'tool', tool_call_id: call.id, content: '{"temp":21}' }];
    const after = await answer(fast(), request({ messages: roundTrip, params: { tools: [weather] } }));
    assert.deepEqual([after.choices[0]!.calls.length, after.usage?.finishReason], [0, 'length']);
    assert.ok(after.choices[0]!.text.length > 0, 'an answer in text');
    for (const toolChoice of ['required', { type: 'function', function: { name: 'get_weather' } }]) {
      const forced = await answer(fast(), request({ messages: roundTrip, params: { tools: [weather], tool_choice: toolChoice } }));
      assert.deepEqual([forced.choices[0]!.calls[0]?.function.name, forced.usage?.finishReason], ['get_weather', 'tool_calls'], JSON.stringify(toolChoice));
    }
  });

  it('max_tokens cuts a tool call with finish reason length', async () => {
    const a = await answer(fast(), request({ maxTokens: 2, params: { tools: [weather] } }));
    assert.equal(a.usage?.finishReason, 'length');
    assert.equal(a.usage?.completionTokens, 2);
  });

  it('writes JSON under response_format: json_object, and json_schema with the required properties', async () => {
    const object = await answer(fast(), request({ params: { response_format: { type: 'json_object' } } }));
    assert.equal(typeof JSON.parse(object.choices[0]!.text), 'object');
    assert.equal(object.usage?.finishReason, 'stop');
    const schema = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' }, tags: { type: 'array', items: { type: 'string' } }, ok: { type: 'boolean' } }, required: ['name', 'age', 'tags', 'ok'] };
    const typed = await answer(fast(), request({ maxTokens: 100, params: { response_format: { type: 'json_schema', json_schema: { name: 'person', schema } } } }));
    const value = JSON.parse(typed.choices[0]!.text) as Record<string, unknown>;
    assert.deepEqual(Object.keys(value), ['name', 'age', 'tags', 'ok']);
    assert.ok(typeof value.name === 'string' && Number.isInteger(value.age) && Array.isArray(value.tags) && typeof value.ok === 'boolean');
    assert.ok(typed.choices[0]!.texts > 5, 'in token-sized pieces');
    const text = JSON.stringify({ a: 'b c, d', e: [1, { f: true }] });
    assert.equal(jsonPieces(text).join(''), text);
  });

  it('n choices: each with its index and own text, usage over all of them', async () => {
    const one = await answer(fast(), request({ maxTokens: 10 }));
    const three = await answer(fast(), request({ maxTokens: 10, n: 3 }));
    assert.equal(three.choices.length, 3);
    assert.equal(three.choices[0]!.text, one.choices[0]!.text, 'choice 0 reads as the single answer');
    assert.notEqual(three.choices[1]!.text, three.choices[0]!.text);
    assert.notEqual(three.choices[2]!.text, three.choices[1]!.text);
    assert.ok(three.chunks.some((c) => c.type === 'tokens' && c.choice === 2));
    assert.ok(three.chunks.every((c) => c.type !== 'tokens' || c.choice !== 0), 'choice 0 is left out, as the port says');
    assert.equal(three.usage?.completionTokens, 30);
    assert.deepEqual(three.usage?.choices, [0, 1, 2].map((index) => ({ index, finishReason: 'length' })));
    const tools = await answer(fast(), request({ n: 2, params: { tools: [weather] } }));
    assert.equal(tools.choices.length, 2);
    assert.notEqual(tools.choices[0]!.calls[0]!.id, tools.choices[1]!.calls[0]!.id);
  });

  it('logprobs: an entry per token with top_logprobs alternatives, deterministic', async () => {
    const a = await answer(fast(), request({ maxTokens: 8, params: { logprobs: true, top_logprobs: 3 } }));
    assert.equal(a.choices[0]!.logprobs.length, 8);
    for (const e of a.choices[0]!.logprobs as { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number }[] }[]) {
      assert.ok(e.logprob <= 0 && e.logprob > -3);
      assert.deepEqual(Buffer.from(e.bytes).toString(), e.token);
      assert.equal(e.top_logprobs.length, 3);
      assert.equal(e.top_logprobs[0]!.token, e.token);
      assert.ok(e.top_logprobs[2]!.logprob < e.top_logprobs[1]!.logprob);
    }
    assert.deepEqual(a.choices[0]!.logprobs.map((e) => (e as { token: string }).token).join(''), a.choices[0]!.text);
    assert.deepEqual((await answer(fast(), request({ maxTokens: 8, params: { logprobs: true, top_logprobs: 3 } }))).choices, a.choices);
    assert.equal((await answer(fast(), request({ maxTokens: 8 }))).chunks.some((c) => c.type === 'tokens' && c.logprobs !== undefined), false);
  });

  it('embeds deterministically: unit vectors of the asked dimensions, base64 on request', async () => {
    const sim = new SimModel(simOptionsFromUrl(new URL('sim://?embedding_dim=16'), { ttftMs: 0, itlMs: 0 }));
    const signal = new AbortController().signal;
    const r = await sim.embed({ model: 'sim', input: ['hello', 'world', 'hello'] }, signal);
    const [a, b, c] = r.data.map((d) => d.embedding as number[]);
    assert.equal(a!.length, 16);
    assert.deepEqual(a, c);
    assert.notDeepEqual(a, b);
    assert.ok(Math.abs(a!.reduce((s, x) => s + x * x, 0) - 1) < 1e-9);
    assert.deepEqual([r.promptTokens, r.usageSource], [countTextTokens('hello') * 2 + countTextTokens('world'), 'reported']);
    const wide = await sim.embed({ model: 'sim', input: ['hello'], params: { dimensions: 64, encoding_format: 'base64' } }, signal);
    const bytes = Buffer.from(wide.data[0]!.embedding as string, 'base64');
    assert.equal(bytes.length, 64 * 4);
  });
});

describe('HttpModel against sluice sim-model', () => {
  const servers: { url: string; close(): Promise<void> }[] = [];
  const models: HttpModel[] = [];
  let open: { url: string };
  let keyed: { url: string };
  let silent: { url: string };
  let failing: { url: string };
  const client = (url: string, apiKey?: string) => {
    const m = new HttpModel({ baseUrl: url, models: ['fallback'], ...(apiKey && { apiKey }) });
    models.push(m);
    return m;
  };
  before(async () => {
    const start = async (extra: Partial<Parameters<typeof startSimModelServer>[0]> = {}) => {
      const s = await startSimModelServer({ host: '127.0.0.1', port: 0, ttftMs: 0, itlMs: 0, ...extra });
      servers.push(s);
      return s;
    };
    open = await start();
    keyed = await start({ apiKey: 'sk-upstream-secret' });
    silent = await start({ reportUsage: false, embeddingDim: 8 });
    failing = await start({ failRate: 1 });
  });
  after(async () => {
    await Promise.all(models.map((m) => m.close()));
    await Promise.all(servers.map((s) => s.close()));
  });

  const cases: [string, Partial<ModelRequest>][] = [
    ['tool calls', { params: { tools: [weather, clock] } }],
    ['parallel tool calls over two choices', { n: 2, maxTokens: 200, params: { tools: [weather, clock], parallel_tool_calls: true } }],
    ['n choices', { n: 3, maxTokens: 12 }],
    ['logprobs', { maxTokens: 10, n: 2, params: { logprobs: true, top_logprobs: 2 } }],
    ['JSON mode', { maxTokens: 100, params: { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'number' } }, required: ['a'] } } } } }],
  ];
  for (const [name, over] of cases) {
    it(`${name}: streamed and non-streamed, the same answer as the embedded simulator, usage reported`, async () => {
      const req = request(over);
      const direct = await answer(fast(), req);
      const streamed = await answer(client(open.url), req);
      const whole = await answer(client(open.url), { ...req, stream: false });
      for (const via of [streamed, whole]) {
        assert.equal(via.error, undefined);
        assert.deepEqual(via.choices.map(({ texts: _t, ...c }) => c), direct.choices.map(({ texts: _t, ...c }) => c));
        assert.deepEqual(via.usage, direct.usage);
      }
      assert.equal(whole.chunks.filter((c) => c.type === 'tokens').length, direct.choices.filter((c) => c.text !== '').length, 'one tokens chunk per choice');
    });
  }

  it('sends the forwarded fields, and stream: false for a non-streaming caller', async () => {
    const bodies: Record<string, unknown>[] = [];
    const upstream = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push(JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
          id: 'x', object: 'chat.completion', choices: [
            { index: 0, message: { role: 'assistant', content: 'Hi there', tool_calls: [{ id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }] }, logprobs: { content: [{ token: 'Hi', logprob: -0.1, top_logprobs: [] }, { token: ' there', logprob: -0.2, top_logprobs: [] }] }, finish_reason: 'tool_calls' },
            { index: 1, message: { role: 'assistant', content: 'Blocked' }, logprobs: null, finish_reason: 'content_filter' },
          ],
        }));
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
      const params = { tools: [weather], tool_choice: 'auto', logprobs: true, top_logprobs: 0, logit_bias: { 11: 1 }, user: 'u', top_k: 5 };
      const a = await answer(client(url), request({ n: 2, stream: false, params }));
      assert.deepEqual(bodies[0], { ...params, model: 'sim', messages, stream: false, max_tokens: 40, n: 2, seed: 7 });
      assert.deepEqual(a.chunks.slice(0, 3), [
        { type: 'tokens', texts: ['Hi', ' there'], logprobs: [{ token: 'Hi', logprob: -0.1, top_logprobs: [] }, { token: ' there', logprob: -0.2, top_logprobs: [] }] },
        { type: 'tool_calls', deltas: [{ call: 0, id: 'call_a', name: 'get_weather', arguments: '{"city":"Oslo"}' }] },
        { type: 'tokens', choice: 1, texts: ['Blocked'], logprobs: [null] },
      ]);
      const counted = countTextTokens('Hi there') + countTextTokens('get_weather{"city":"Oslo"}') + countTextTokens('Blocked');
      assert.deepEqual(a.usage, {
        type: 'usage', promptTokens: countPromptTokens(messages, [weather]), completionTokens: counted, finishReason: 'tool_calls', usageSource: 'counted',
        choices: [{ index: 0, finishReason: 'tool_calls' }, { index: 1, finishReason: 'content_filter' }],
      });
    } finally {
      upstream.closeAllConnections();
      await new Promise<void>((resolve) => upstream.close(() => resolve()));
    }
  });

  it('usage the upstream does not report is counted, tool-call arguments included', async () => {
    for (const stream of [true, false]) {
      const text = await answer(client(silent.url), request({ maxTokens: 15, stream }));
      assert.equal(text.usage?.usageSource, 'counted');
      assert.equal(text.usage?.completionTokens, countTextTokens(text.choices[0]!.text));
      const tool = await answer(client(silent.url), request({ stream, params: { tools: [weather] } }));
      const call = tool.choices[0]!.calls[0]!;
      assert.deepEqual([tool.usage?.usageSource, tool.usage?.finishReason], ['counted', 'tool_calls']);
      assert.equal(tool.usage?.completionTokens, countTextTokens(call.function.name + call.function.arguments));
      assert.equal(tool.usage?.promptTokens, countPromptTokens(messages, [weather]));
    }
  });

  it('sends the bearer key; a missing or wrong one is a permanent 401', async () => {
    const ok = await answer(client(keyed.url, 'sk-upstream-secret'), request({ maxTokens: 3 }));
    assert.equal(ok.usage?.completionTokens, 3);
    for (const key of [undefined, 'sk-wrong']) {
      const r = await answer(client(keyed.url, key), request({ maxTokens: 3 }));
      assert.ok(r.error instanceof ModelError);
      assert.deepEqual([r.error.kind, r.error.status], ['permanent', 401]);
      assert.match(r.error.message, /API key/);
    }
    assert.deepEqual(await client(keyed.url, 'sk-upstream-secret').models(), ['sim']);
    assert.deepEqual(await client(keyed.url, 'sk-wrong').models(), ['fallback']);
    const raw = await fetch(`${keyed.url}/models`, { headers: { authorization: 'Bearer nope' } });
    assert.equal(raw.status, 401);
    assert.deepEqual(((await raw.json()) as { error: { code: string; type: string } }).error.code, 'invalid_api_key');
  });

  it('an injected failure is HTTP 500 before the first token: transient, nothing produced', async () => {
    for (const stream of [true, false]) {
      const r = await answer(client(failing.url), request({ stream }));
      assert.ok(r.error instanceof ModelError);
      assert.deepEqual([r.error.kind, r.error.status, r.chunks.length], ['transient', 500, 0]);
    }
  });

  it('embeddings: the simulator\'s vectors, usage reported or counted', async () => {
    const signal = new AbortController().signal;
    const input = ['alpha beta', 'gamma'];
    const direct = await new SimModel({ ttftMs: 0, itlMs: 0 }).embed({ model: 'sim', input, params: { dimensions: 12 } }, signal);
    const via = await client(open.url).embed({ model: 'sim', input, params: { dimensions: 12 } }, signal);
    assert.deepEqual(via, direct);
    const counted = await client(silent.url).embed({ model: 'sim', input }, signal);
    assert.equal((counted.data[0]!.embedding as number[]).length, 8);
    assert.deepEqual([counted.promptTokens, counted.usageSource], [countTextTokens('alpha beta') + countTextTokens('gamma'), 'counted']);
    await assert.rejects(client(failing.url).embed({ model: 'sim', input }, signal), (e) => e instanceof ModelError && e.kind === 'transient' && e.status === 500);
  });

  it('the official SDK reads the simulator\'s tool calls, choices and logprobs', async () => {
    const sdk = new OpenAI({ baseURL: keyed.url, apiKey: 'sk-upstream-secret', maxRetries: 0 });
    const body = { model: 'sim', messages: [{ role: 'user' as const, content: 'weather?' }], tools: [weather as OpenAI.ChatCompletionTool], seed: 3, n: 2 };
    const whole = await sdk.chat.completions.create(body);
    assert.equal(whole.choices.length, 2);
    assert.equal(whole.choices[0]!.finish_reason, 'tool_calls');
    assert.equal(whole.choices[0]!.message.content, null);
    const call = whole.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    assert.equal(call.function.name, 'get_weather');
    const stream = await sdk.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    const args = ['', ''];
    const ids = ['', ''];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) for (const tc of c.delta.tool_calls ?? []) { args[c.index] += tc.function?.arguments ?? ''; if (tc.id) ids[c.index] = tc.id; }
    }
    assert.equal(args[0], call.function.arguments);
    assert.equal(ids[0], call.id);
    assert.deepEqual(usage, whole.usage);
    const lp = await sdk.chat.completions.create({ model: 'sim', messages: [{ role: 'user', content: 'x' }], max_tokens: 4, logprobs: true, top_logprobs: 2 });
    assert.equal(lp.choices[0]!.logprobs?.content?.length, 4);
  });
});
