// Tool calls and several choices through the whole gateway, in queued and direct mode, with a fake
// model backend that streams what an OpenAI-compatible upstream sends: a little text, a tool call
// whose arguments arrive in fragments, a second call, and (when asked for two answers) a second
// choice. The event log is the source of every delivery: a stream resumed with Last-Event-ID in
// the middle of the arguments carries the rest exactly once; the stored output answers the
// non-streaming body and GET /v1/requests/{id}.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { countTextTokens, messageText } from '../../src/core/tokens.ts';
import type { ModelBackend, ModelChunk, ModelRequest } from '../../src/ports/model.ts';
import { api, MASTER_KEY, readSse, startTestSluice, waitFor, type SseFrame, type TestSluice } from '../helpers/app.ts';
import { connectWs } from '../helpers/ws-client.ts';

const MODEL = 'fake-tools';
const WEATHER_ARGS = ['{"', 'city', '":"', 'Paris', '"}'];
const TIME_ARGS = '{"tz":"CET"}';
const REPORTED = { promptTokens: 12, completionTokens: 17 };

/** Streams text, then get_weather in fragments, then get_time whole; holds after the second fragment while `gate` is shut. */
class ToolModel implements ModelBackend {
  private gate: Promise<void> = Promise.resolve();

  /** Shuts the gate; the returned function opens it. */
  hold(): () => void {
    let open!: () => void;
    this.gate = new Promise((resolve) => { open = resolve; });
    return open;
  }

  async *stream(req: ModelRequest, signal: AbortSignal): AsyncGenerator<ModelChunk> {
    const two = messageText(req.messages.at(-1)!).includes('two answers');
    yield { type: 'tokens', texts: ['Let', ' me', ' check'] };
    yield { type: 'tool_calls', deltas: [{ call: 0, id: 'call_w1', name: 'get_weather', arguments: '' }] };
    for (const [i, fragment] of WEATHER_ARGS.entries()) {
      yield { type: 'tool_calls', deltas: [{ call: 0, arguments: fragment }] };
      if (i === 1) await Promise.race([this.gate, new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))]);
      if (signal.aborted) return;
    }
    yield { type: 'tool_calls', deltas: [{ call: 1, id: 'call_t1', name: 'get_time', arguments: TIME_ARGS }] };
    if (two) yield { type: 'tokens', choice: 1, texts: ['Sunny', ' today'] };
    yield {
      type: 'usage', ...REPORTED, finishReason: 'tool_calls', usageSource: 'reported',
      ...(two && { choices: [{ index: 0, finishReason: 'tool_calls' }, { index: 1, finishReason: 'stop' }] }),
    };
  }

  async models(): Promise<string[]> { return [MODEL]; }
  async close(): Promise<void> {}
}

const WEATHER = { id: 'call_w1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } };
const TIME = { id: 'call_t1', type: 'function', function: { name: 'get_time', arguments: TIME_ARGS } };

interface ToolCallDelta { index: number; id?: string; type?: string; function: { name?: string; arguments: string } }
interface Chunk { choices: { index: number; delta: { role?: string; content?: string | null; tool_calls?: ToolCallDelta[] }; finish_reason: string | null }[] }

const chunkOf = (f: SseFrame): Chunk | null => (f.data && f.data !== '[DONE]' ? JSON.parse(f.data) as Chunk : null);
const fragmentsOf = (f: SseFrame) => chunkOf(f)?.choices.flatMap((c) => c.delta.tool_calls ?? []) ?? [];

/** The tool calls a client assembles from OpenAI chunks, by call index. */
function assemble(frames: SseFrame[]): { id: string; type: string; function: { name: string; arguments: string } }[] {
  const calls: { id: string; type: string; function: { name: string; arguments: string } }[] = [];
  for (const d of frames.flatMap(fragmentsOf)) {
    calls[d.index] ??= { id: '', type: '', function: { name: '', arguments: '' } };
    const c = calls[d.index]!;
    if (d.id) c.id = d.id;
    if (d.type) c.type = d.type;
    if (d.function.name) c.function.name = d.function.name;
    c.function.arguments += d.function.arguments;
  }
  return calls;
}

describe('tool calls through the gateway', () => {
  let app: TestSluice;
  const model = new ToolModel();
  const call = () => api(app.url);
  const body = (over: Record<string, unknown> = {}) => ({
    model: MODEL, max_tokens: 40, messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
    ...over,
  });

  before(async () => { app = await startTestSluice({ models: [MODEL] }, { model }); });
  after(() => app.stop());

  for (const mode of ['queued', 'direct'] as const) {
    it(`streams tool calls as OpenAI chunks, and a resume in the middle of the arguments gives the rest exactly once (${mode})`, async () => {
      // Queued: the client leaves while the model is held in the middle of the arguments, and
      // resumes while it runs. Direct: the client is the attempt's listener (leaving would cut the
      // stream), so it reads to the end and resumes the ended request from the same place.
      const open = mode === 'queued' ? model.hold() : () => {};
      const res = await call()('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': mode }, json: body({ stream: true }) });
      assert.equal(res.status, 200);
      const id = res.headers.get('x-request-id')!;
      const isCity = (f: SseFrame) => fragmentsOf(f).some((d) => d.function.arguments === 'city');
      const first = (await readSse(res, mode === 'queued' ? isCity : undefined)).filter((f) => f.data);
      const cut = first.findIndex(isCity);
      assert.ok(cut > 0, 'the second argument fragment arrived');
      const lastId = Number(first[cut]!.id);
      const before = first.slice(0, cut + 1);

      const resumed = call()(`/v1/requests/${id}/events?format=openai`, { headers: { 'last-event-id': String(lastId) } });
      open();
      const rest = (await readSse(await resumed)).filter((f) => f.data);
      assert.equal(Number(rest[0]!.id), lastId + 1, 'the resume starts right after the last event received');
      assert.equal(rest.at(-1)!.data, '[DONE]');

      const whole = [...before, ...rest];
      const ids = whole.map((f) => Number(f.id));
      const fragmentIds = whole.filter((f) => fragmentsOf(f).length > 0).map((f) => Number(f.id));
      assert.equal(new Set(fragmentIds).size, fragmentIds.length, 'no fragment twice');
      assert.deepEqual(ids.filter((x, i) => i === 0 || x !== ids[i - 1]), Array.from({ length: ids.at(-1)! }, (_, i) => i + 1), 'no gap, no duplicate');
      assert.deepEqual(assemble(whole), [WEATHER, TIME]);
      const text = whole.flatMap((f) => chunkOf(f)?.choices.map((c) => c.delta.content ?? '') ?? []).join('');
      assert.equal(text, 'Let me check');
      assert.deepEqual(rest.flatMap((f) => chunkOf(f)?.choices.map((c) => c.finish_reason) ?? []).filter(Boolean), ['tool_calls']);
      // The live stream went on past the cut: its fragments after it are the resumed ones.
      if (mode === 'direct') assert.deepEqual(first.slice(cut + 1).flatMap(fragmentsOf), rest.flatMap(fragmentsOf), 'the live stream and the resumed one agree');

      // The native format resumes the same way: tool_call events from the same place.
      const native = (await readSse(await call()(`/v1/requests/${id}/events`, { headers: { 'last-event-id': String(lastId) } }))).filter((f) => f.event === 'tool_call');
      assert.deepEqual(native.map((f) => JSON.parse(f.data).arguments), [...WEATHER_ARGS.slice(2), TIME_ARGS]);
      assert.deepEqual(native.map((f) => Number(f.id)), fragmentIds.filter((x) => x > lastId));
    });

    it(`answers non-streaming with the assembled tool calls and content, and records them (${mode})`, async () => {
      const res = await call()('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': mode }, json: body() });
      assert.equal(res.status, 200);
      const done = (await res.json()) as { choices: unknown[]; usage: { completion_tokens: number } };
      assert.deepEqual(done.choices, [{ index: 0, message: { role: 'assistant', content: 'Let me check', refusal: null, tool_calls: [WEATHER, TIME] }, logprobs: null, finish_reason: 'tool_calls' }]);
      assert.equal(done.usage.completion_tokens, REPORTED.completionTokens, 'the backend\'s reported usage is the charge');

      const view = (await (await call()(`/v1/requests/${res.headers.get('x-request-id')}`)).json()) as Record<string, unknown>;
      assert.deepEqual((view.output as { choices: unknown[] }).choices, done.choices);
      assert.equal(view.usage_source, 'reported');
      // The router in front of the backend names what served it: MODEL_URL's one deployment, and the model id sent.
      assert.deepEqual(view.served, { deployment: 'default', model: 'fake-tools' });
      assert.equal(view.result, 'Let me check');
      assert.equal(view.finish_reason, 'tool_calls');
    });

    it(`answers two choices with their own messages and finish reasons (${mode})`, async () => {
      const res = await call()('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': mode }, json: body({ messages: [{ role: 'user', content: 'Give me two answers' }] }) });
      const done = (await res.json()) as { choices: unknown[] };
      assert.deepEqual(done.choices, [
        { index: 0, message: { role: 'assistant', content: 'Let me check', refusal: null, tool_calls: [WEATHER, TIME] }, logprobs: null, finish_reason: 'tool_calls' },
        { index: 1, message: { role: 'assistant', content: 'Sunny today', refusal: null }, logprobs: null, finish_reason: 'stop' },
      ]);
    });

    it(`works with the openai SDK's stream helper and non-streaming call (${mode})`, async () => {
      const client = new OpenAI({ baseURL: `${app.url}/v1`, apiKey: MASTER_KEY, maxRetries: 0, defaultHeaders: { 'x-sluice-mode': mode } });
      const params = body() as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming;
      const stream = client.chat.completions.stream({ ...params, stream: true });
      const final = await stream.finalChatCompletion();
      assert.equal(final.choices[0]!.finish_reason, 'tool_calls');
      assert.equal(final.choices[0]!.message.content, 'Let me check');
      assert.deepEqual(final.choices[0]!.message.tool_calls, [WEATHER, TIME]);
      const whole = await client.chat.completions.create(params);
      assert.deepEqual(whole.choices[0]!.message.tool_calls, [WEATHER, TIME]);
    });
  }

  it('delivers tool calls on a WebSocket, and a resume from the middle of the arguments gives the rest once', async () => {
    const ws = await connectWs(app.url, { key: MASTER_KEY });
    try {
      ws.send({ type: 'submit', id: 'w1', request: body() });
      const accepted = await ws.next((m) => m.type === 'accepted');
      await ws.next((m) => m.type === 'completed' && m.request_id === accepted.request_id);
      const calls = ws.messages.filter((m) => m.type === 'tool_call');
      assert.deepEqual(calls.map((m) => m.arguments), ['', ...WEATHER_ARGS, TIME_ARGS]);
      assert.deepEqual([calls[0]!.id, calls[0]!.name, calls[0]!.choice, calls[0]!.call], ['call_w1', 'get_weather', 0, 0]);
      const after = calls[2]!.sequence as number;
      const seen = ws.messages.length;
      ws.send({ type: 'resume', request_id: accepted.request_id, after });
      await waitFor(async () => ws.messages.slice(seen).some((m) => m.type === 'completed'));
      const again = ws.messages.slice(seen).filter((m) => m.type === 'tool_call');
      assert.deepEqual(again.map((m) => m.sequence), calls.slice(3).map((m) => m.sequence));
    } finally {
      ws.close();
    }
  });

  it('bills a direct stream cut in the middle of a tool call for what it produced', async () => {
    const open = model.hold();
    try {
      const client = new AbortController();
      const res = await call()('/v1/chat/completions', { method: 'POST', headers: { 'x-sluice-mode': 'direct' }, json: body({ stream: true }), signal: client.signal });
      const id = res.headers.get('x-request-id')!;
      await readSse(res, (f) => fragmentsOf(f).some((d) => d.function.arguments === 'city')).catch(() => []);
      client.abort();
      const record = await waitFor(async () => { const r = await app.store.getRequest(id); return r?.status === 'cancelled' ? r : undefined; });
      const produced = 3 + countTextTokens('get_weather') + countTextTokens('{"') + countTextTokens('city');
      assert.equal(record.completionTokens, produced, 'three tokens, the function name and two argument fragments');
      assert.deepEqual(record.output?.choices[0]?.toolCalls, [{ id: 'call_w1', type: 'function', function: { name: 'get_weather', arguments: '{"city' } }]);
      assert.equal(record.output?.usageSource, 'counted');
    } finally {
      open();
    }
  });
});
