// The chat body: every field of the chat surface accepted and carried in OpenAI's names, invalid
// ones refused naming the field, unknown fields kept for admission (refused unless the model's
// deployment allows passthrough), the estimate counting tools, tool calls, media and n.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryLimiter } from '../../src/adapters/limiter/memory.ts';
import { SimModel } from '../../src/adapters/model/sim.ts';
import { loadConfig, tierOf } from '../../src/config.ts';
import { Admission } from '../../src/core/admission.ts';
import type { Principal } from '../../src/core/auth.ts';
import { MAX_CHOICES, parseChatBody, parseCompletionBody, type ChatInput } from '../../src/core/chat-request.ts';
import { isSluiceError, type ErrorCode } from '../../src/core/errors.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { ModelCatalog } from '../../src/core/model-catalog.ts';
import { IMAGE_TOKENS_HIGH, IMAGE_TOKENS_LOW, countPromptTokens, countTextTokens, countToolsTokens } from '../../src/core/tokens.ts';

const user = { role: 'user', content: 'What is the weather in Paris?' };
const base = { model: 'sim', messages: [user] };
const weather = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather of a city', strict: true,
    parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } }, required: ['city'] },
  },
};
const assistantCall = { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] };
const toolAnswer = { role: 'tool', tool_call_id: 'call_1', content: '{"temp":21}' };

function refused(body: unknown, param: string, code: ErrorCode = 'SLUICE_ERR_VALIDATION', parse = parseChatBody): void {
  assert.throws(() => parse(body), (e) => {
    assert.ok(isSluiceError(e, code), `${JSON.stringify(body).slice(0, 200)}: ${String(e)}`);
    assert.equal(e.details?.param, param, e.message);
    return true;
  });
}

describe('parseChatBody: the whole chat surface', () => {
  it('accepts every forwarded field and carries it in OpenAI names', () => {
    const input = parseChatBody({
      ...base,
      messages: [{ role: 'developer', content: 'Be brief.' }, user, assistantCall, toolAnswer],
      tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } }, parallel_tool_calls: false,
      response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object', required: ['a'] }, strict: true } },
      logprobs: true, top_logprobs: 5, frequency_penalty: -1.5, presence_penalty: 2, logit_bias: { '50256': -100, '11': 3.5 },
      user: 'end-user-7', metadata: { team: 'a' }, store: false, reasoning_effort: 'low', n: 3, seed: 4, stop: 'END', temperature: 0.2, top_p: 0.9, max_completion_tokens: 50,
      stream: true, stream_options: { include_usage: true },
    });
    assert.deepEqual(input.params, {
      tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } }, parallel_tool_calls: false,
      response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object', required: ['a'] }, strict: true } },
      logprobs: true, top_logprobs: 5, frequency_penalty: -1.5, presence_penalty: 2, logit_bias: { '50256': -100, '11': 3.5 }, user: 'end-user-7',
      metadata: { team: 'a' }, store: false, reasoning_effort: 'low',
    });
    assert.equal(input.n, 3);
    assert.deepEqual([input.seed, input.stop, input.temperature, input.topP, input.maxTokens, input.stream, input.includeUsage], [4, ['END'], 0.2, 0.9, 50, true, true]);
    assert.deepEqual(input.messages, [
      { role: 'system', content: 'Be brief.' }, user, assistantCall, toolAnswer,
    ]);
    assert.equal(input.extra, undefined);
  });

  it('keeps image and audio parts of a user message; text-only parts become a string', () => {
    const parts = [
      { type: 'text', text: 'What is in ' }, { type: 'text', text: 'this image?' },
      { type: 'image_url', image_url: { url: 'https://example.com/cat.png', detail: 'low' } },
      { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
      { type: 'input_audio', input_audio: { data: 'UklGRg==', format: 'wav' } },
    ];
    const input = parseChatBody({ ...base, messages: [{ role: 'user', content: parts }, { role: 'system', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }] });
    assert.deepEqual(input.messages[0]!.content, parts);
    assert.equal(input.messages[1]!.content, 'ab');
  });

  it('a plain body carries no n, params or extra (its idempotency hash is unchanged)', () => {
    const input = parseChatBody({ ...base, n: 1, tool_choice: null, user: null });
    assert.deepEqual(Object.keys(input).sort(), ['includeUsage', 'maxTokens', 'messages', 'mode', 'model', 'stream']);
  });

  it('translates legacy functions and function_call to tools and tool_choice, messages included', () => {
    const input = parseChatBody({
      ...base,
      messages: [user, { role: 'assistant', content: null, function_call: { name: 'get_weather', arguments: '{"city":"Paris"}' } }, { role: 'function', name: 'get_weather', content: '21C' }],
      functions: [weather.function], function_call: { name: 'get_weather' },
    });
    assert.deepEqual(input.params, { tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } }, parallel_tool_calls: false });
    assert.deepEqual(input.messages.slice(1), [
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_legacy_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', content: '21C', tool_call_id: 'call_legacy_1' },
    ]);
    assert.deepEqual(parseChatBody({ ...base, functions: [weather.function], function_call: 'auto' }).params?.tool_choice, 'auto');
  });

  it('refuses invalid fields, naming each', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ tools: [{ type: 'function', function: { name: 'has space' } }] }, 'tools.0.function.name'],
      [{ tools: [{ type: 'retrieval', function: { name: 'x' } }] }, 'tools.0.type'],
      [{ tools: [{ type: 'function', function: { name: 'x', parameters: 'object' } }] }, 'tools.0.function.parameters'],
      [{ tools: Array.from({ length: 129 }, () => weather) }, 'tools'],
      [{ tool_choice: 'sometimes', tools: [weather] }, 'tool_choice'],
      [{ tool_choice: 'required' }, 'tool_choice'],
      [{ tool_choice: { type: 'function', function: { name: 'other' } }, tools: [weather] }, 'tool_choice'],
      [{ parallel_tool_calls: true }, 'parallel_tool_calls'],
      [{ parallel_tool_calls: 'yes', tools: [weather] }, 'parallel_tool_calls'],
      [{ response_format: { type: 'xml' } }, 'response_format.type'],
      [{ response_format: { type: 'json_schema', json_schema: { schema: {} } } }, 'response_format.json_schema.name'],
      [{ logprobs: 'yes' }, 'logprobs'],
      [{ top_logprobs: 3 }, 'top_logprobs'],
      [{ logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
      [{ frequency_penalty: 2.5 }, 'frequency_penalty'],
      [{ presence_penalty: -3 }, 'presence_penalty'],
      [{ logit_bias: { abc: 1 } }, 'logit_bias.abc'],
      [{ logit_bias: { 12: 101 } }, 'logit_bias.12'],
      [{ n: 0 }, 'n'],
      [{ n: MAX_CHOICES + 1 }, 'n'],
      [{ n: 1.5 }, 'n'],
      [{ user: 7 }, 'user'],
      [{ metadata: { a: 1 } }, 'metadata.a'],
      [{ reasoning_effort: 'max' }, 'reasoning_effort'],
      [{ functions: [weather.function], tools: [weather] }, 'functions'],
      [{ function_call: 'auto', tool_choice: 'auto', tools: [weather], functions: undefined }, 'function_call'],
      [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'ftp://x/y.png' } }] }] }, 'messages.0.content.0.image_url.url'],
      [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png', detail: 'max' } }] }] }, 'messages.0.content.0.image_url.detail'],
      [{ messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'not base64!', format: 'wav' } }] }] }, 'messages.0.content.0.input_audio.data'],
      [{ messages: [{ role: 'user', content: [{ type: 'video', video: {} }] }] }, 'messages.0.content.0.type'],
      [{ messages: [{ role: 'system', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }] }, 'messages.0.content.0'],
      [{ messages: [{ role: 'tool', content: 'x' }] }, 'messages.0.tool_call_id'],
      [{ messages: [{ role: 'user', content: 'x', tool_call_id: 'c' }] }, 'messages.0.tool_call_id'],
      [{ messages: [{ role: 'user', content: 'x', tool_calls: assistantCall.tool_calls }] }, 'messages.0.tool_calls'],
      [{ messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f' } }] }] }, 'messages.0.tool_calls.0.function.arguments'],
      [{ messages: [{ role: 'function', name: 'f', content: 'x' }] }, 'messages.0.name'],
    ];
    for (const [fields, param] of cases) refused({ ...base, ...fields }, param);
  });

  it('bounds the nesting of free-form JSON (tool parameters, schemas, unknown fields)', () => {
    let deep: Record<string, unknown> = {};
    for (let i = 0; i < 40; i++) deep = { properties: deep };
    refused({ ...base, tools: [{ type: 'function', function: { name: 'f', parameters: deep } }] }, 'tools.0.function.parameters');
    refused({ ...base, response_format: { type: 'json_schema', json_schema: { name: 'a', schema: deep } } }, 'response_format.json_schema.schema');
    refused({ ...base, guided_json: deep }, 'guided_json');
  });

  it('keeps unknown top-level fields in extra, bounded in number and size', () => {
    const input = parseChatBody({ ...base, top_k: 40, min_p: 0.05, guided_json: { type: 'object' }, ['__proto__']: 1 });
    assert.deepEqual(Object.keys(input.extra ?? {}).sort(), ['__proto__', 'guided_json', 'min_p', 'top_k'].sort());
    assert.equal(input.extra?.top_k, 40);
    const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`vendor_${i}`, i]));
    refused({ ...base, ...many }, 'vendor_32');
    refused({ ...base, vendor_blob: 'x'.repeat(70_000) }, 'vendor_blob');
  });

  it('/v1/completions forwards the sampling fields and refuses what only the prompt form means', () => {
    const input = parseCompletionBody({ model: 'sim', prompt: 'hi', frequency_penalty: 1, user: 'u', top_k: 3 });
    assert.deepEqual(input.params, { frequency_penalty: 1, user: 'u' });
    assert.deepEqual(input.extra, { top_k: 3 });
    for (const field of ['echo', 'best_of', 'suffix', 'logprobs']) refused({ model: 'sim', prompt: 'hi', [field]: 1 }, field, 'SLUICE_ERR_UNSUPPORTED_PARAM', parseCompletionBody);
  });
});

describe('token estimate', () => {
  const text = (s: string) => countTextTokens(s);

  it('counts tool definitions by their JSON, tool calls and the call id a tool message answers', () => {
    const plain = countPromptTokens([{ role: 'user', content: 'hi' }]);
    assert.equal(countPromptTokens([{ role: 'user', content: 'hi' }], [weather]), plain + countToolsTokens([weather]));
    assert.ok(countToolsTokens([weather]) > text(JSON.stringify([weather])));
    assert.equal(countToolsTokens(undefined), 0);
    const call = assistantCall.tool_calls[0]!;
    const withCall = countPromptTokens([{ role: 'assistant', content: null, tool_calls: [call as never] }]);
    assert.equal(withCall, countPromptTokens([{ role: 'assistant', content: '' }]) + 3 + text(call.id) + text(call.function.name) + text(call.function.arguments));
    assert.equal(countPromptTokens([{ role: 'tool', content: 'x', tool_call_id: 'call_1' }]), countPromptTokens([{ role: 'tool', content: 'x' }]) + text('call_1'));
  });

  it('gives images a flat estimate by detail and audio one by length', () => {
    const only = (part: object) => countPromptTokens([{ role: 'user', content: [part as never] }]) - countPromptTokens([{ role: 'user', content: '' }]);
    assert.equal(only({ type: 'image_url', image_url: { url: 'https://x/a.png', detail: 'low' } }), IMAGE_TOKENS_LOW);
    assert.equal(only({ type: 'image_url', image_url: { url: 'https://x/a.png' } }), IMAGE_TOKENS_HIGH);
    assert.equal(only({ type: 'image_url', image_url: { url: `data:image/png;base64,${'A'.repeat(400_000)}`, detail: 'high' } }), IMAGE_TOKENS_HIGH);
    // 160,000 base64 characters are 120,000 bytes of audio: 75 tokens at 1,600 bytes a token.
    assert.equal(only({ type: 'input_audio', input_audio: { data: 'A'.repeat(160_000), format: 'mp3' } }), 75);
  });
});

describe('Admission: n, tools and passthrough', () => {
  const config = loadConfig({}, {});
  const principal: Principal = { userId: 'u1', keyId: 'k1', admin: false, unlimited: false, tier: 'free', limits: tierOf(config, 'free')!, models: null };
  const admission = (allowsPassthrough?: (model: string) => boolean) => new Admission({
    config, limiter: new MemoryLimiter(), models: new ModelCatalog(new SimModel({ ttftMs: 0, itlMs: 0 }), ['sim', 'vllm-model']),
    pressure: { depth: () => 0 }, metrics: createMetrics(), now: Date.now, ...(allowsPassthrough && { allowsPassthrough }),
  });
  let serial = 0;
  const admit = (a: Admission, input: ChatInput) => a.admit(principal, input, `00000000-0000-4000-8000-${String(++serial).padStart(12, '0')}`);

  it('reserves prompt (tools included) + n x max_tokens and carries n and params to the worker', async () => {
    const input = parseChatBody({ ...base, max_tokens: 20, n: 3, tools: [weather], tool_choice: 'required', logprobs: true });
    const admitted = await admit(admission(), input);
    assert.equal(admitted.promptTokens, countPromptTokens(input.messages, [weather]));
    assert.equal(admitted.estimatedTokens, admitted.promptTokens + 3 * 20);
    assert.equal(admitted.payload.n, 3);
    assert.deepEqual(admitted.payload.params, { tools: [weather], tool_choice: 'required', logprobs: true });
  });

  it('refuses an unknown field naming it, unless the model allows passthrough; then forwards it', async () => {
    const input = parseChatBody({ ...base, model: 'vllm-model', max_tokens: 5, top_k: 40, guided_json: { type: 'object' }, presence_penalty: 1 });
    await assert.rejects(admit(admission(), input), (e) => isSluiceError(e, 'SLUICE_ERR_UNSUPPORTED_PARAM') && e.details?.param === 'top_k' && e.status === 400);
    await assert.rejects(admit(admission((m) => m === 'sim'), input), (e) => isSluiceError(e, 'SLUICE_ERR_UNSUPPORTED_PARAM'));
    const admitted = await admit(admission((m) => m === 'vllm-model'), input);
    assert.deepEqual(admitted.payload.params, { top_k: 40, guided_json: { type: 'object' }, presence_penalty: 1 });
  });
});
