// OpenAI chunk and body shapes for tool calls, several choices and logprobs, compared with what
// the OpenAI API sends for the same answer (its `refusal: null` fields aside, which Sluice omits
// as it always has): a tool-call stream opens its choice with role and content null and gives id,
// type and name on a call's first fragment only; with n = 2 each choice opens with its role and
// ends with its own finish chunk.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { completionBody, nativeSseText, OpenAIChunks, requestView } from '../../src/http/render.ts';
import { storedEvents } from '../../src/http/delivery.ts';
import { sseFrame } from '../../src/http/sse.ts';
import type { EventBody, LogEvent } from '../../src/ports/bus.ts';
import type { RequestOutput, RequestRecord } from '../../src/ports/store.ts';

let seq = 0;
const logged = (e: EventBody): LogEvent => ({ ...e, seq: ++seq, ts: 0 });
const usage = { promptTokens: 10, completionTokens: 7, totalTokens: 17 };

/** The `choices` of every data frame but [DONE]. */
function choicesOf(chunks: OpenAIChunks, events: LogEvent[]): unknown[] {
  return events.flatMap((e) => chunks.frames(e)).filter((f) => f.data !== '[DONE]').map((f) => JSON.parse(f.data).choices);
}

describe('OpenAIChunks: tool calls, choices, logprobs', () => {
  it('streams tool calls as OpenAI does: role and content null first, id, type and name on a call\'s first fragment', () => {
    const events = [
      logged({ type: 'tool_call', attempt: 1, choice: 0, call: 0, id: 'call_DdmO9pD3', name: 'get_weather', arguments: '' }),
      logged({ type: 'tool_call', attempt: 1, choice: 0, call: 0, arguments: '{"' }),
      logged({ type: 'tool_call', attempt: 1, choice: 0, call: 0, arguments: 'location":"Paris"}' }),
      logged({ type: 'tool_call', attempt: 1, choice: 0, call: 1, id: 'call_Xk2', name: 'get_time', arguments: '' }),
      logged({ type: 'tool_call', attempt: 1, choice: 0, call: 1, arguments: '{}' }),
      logged({ type: 'completed', attempt: 1, finishReason: 'tool_calls', usage }),
    ];
    const openai = [
      [{ index: 0, delta: { role: 'assistant', content: null, tool_calls: [{ index: 0, id: 'call_DdmO9pD3', type: 'function', function: { name: 'get_weather', arguments: '' } }] }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"' } }] }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: 'location":"Paris"}' } }] }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { tool_calls: [{ index: 1, id: 'call_Xk2', type: 'function', function: { name: 'get_time', arguments: '' } }] }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { tool_calls: [{ index: 1, function: { arguments: '{}' } }] }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: {}, logprobs: null, finish_reason: 'tool_calls' }],
    ];
    const chunks = new OpenAIChunks('r1', 'gpt-4o-mini', false);
    assert.deepEqual(choicesOf(chunks, events), openai);
    const first = JSON.parse(new OpenAIChunks('r1', 'gpt-4o-mini', false).frames(events[0]!)[0]!.data);
    assert.equal(first.object, 'chat.completion.chunk');
    assert.equal(first.id, 'chatcmpl-r1');
  });

  it('gives text before a tool call the role, and the tool call no second one', () => {
    const chunks = new OpenAIChunks('r2', 'm', false);
    const out = choicesOf(chunks, [
      logged({ type: 'token', attempt: 1, text: 'Checking.' }),
      logged({ type: 'tool_call', attempt: 1, choice: 0, call: 0, id: 'c1', name: 'f', arguments: '{}' }),
    ]);
    assert.deepEqual(out, [
      [{ index: 0, delta: { role: 'assistant', content: 'Checking.' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { tool_calls: [{ index: 0, id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] }, logprobs: null, finish_reason: null }],
    ]);
  });

  it('streams n = 2 with each choice\'s index, each opening with its role and ending with its own finish reason', () => {
    const events = [
      logged({ type: 'token', attempt: 1, text: 'Red' }),
      logged({ type: 'token', attempt: 1, text: 'Blue', choice: 1 }),
      logged({ type: 'token', attempt: 1, text: '.' }),
      logged({ type: 'token', attempt: 1, text: ' sky', choice: 1 }),
      logged({ type: 'completed', attempt: 1, finishReason: 'stop', usage, choices: [{ index: 0, finishReason: 'stop' }, { index: 1, finishReason: 'length' }] }),
    ];
    const openai = [
      [{ index: 0, delta: { role: 'assistant', content: 'Red' }, logprobs: null, finish_reason: null }],
      [{ index: 1, delta: { role: 'assistant', content: 'Blue' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { content: '.' }, logprobs: null, finish_reason: null }],
      [{ index: 1, delta: { content: ' sky' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }],
      [{ index: 1, delta: {}, logprobs: null, finish_reason: 'length' }],
      [],
    ];
    const chunks = new OpenAIChunks('r3', 'm', true);
    assert.deepEqual(choicesOf(chunks, events), openai, 'the usage chunk last, with no choices');
  });

  it('gives a choice that produced nothing its role in its finish chunk', () => {
    const chunks = new OpenAIChunks('r4', 'm', false);
    const out = choicesOf(chunks, [
      logged({ type: 'token', attempt: 1, text: 'x' }),
      logged({ type: 'completed', attempt: 1, finishReason: 'stop', usage, choices: [{ index: 0, finishReason: 'stop' }, { index: 1, finishReason: 'stop' }] }),
    ]);
    assert.deepEqual(out.slice(1), [
      [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }],
      [{ index: 1, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: 'stop' }],
    ]);
  });

  it('puts a token\'s logprobs entry in its chunk as {content: [entry]}', () => {
    const entry = { token: 'Hi', logprob: -0.31, bytes: [72, 105], top_logprobs: [{ token: 'Hi', logprob: -0.31, bytes: [72, 105] }] };
    const chunks = new OpenAIChunks('r5', 'm', false);
    const out = choicesOf(chunks, [logged({ type: 'token', attempt: 1, text: 'Hi', logprobs: entry }), logged({ type: 'token', attempt: 1, text: '!' })]);
    assert.deepEqual(out, [
      [{ index: 0, delta: { role: 'assistant', content: 'Hi' }, logprobs: { content: [entry], refusal: null }, finish_reason: null }],
      [{ index: 0, delta: { content: '!' }, logprobs: null, finish_reason: null }],
    ]);
  });

  it('keeps the serialise-once path for choice 0 identical to the plain path, between chunks of other shapes', () => {
    const events = [
      logged({ type: 'token', attempt: 1, text: 'a' }),
      logged({ type: 'token', attempt: 1, text: 'b"', choice: 1 }),
      logged({ type: 'tool_call', attempt: 1, choice: 0, call: 0, id: 'c', name: 'f', arguments: '{"q":"\\u0000"}' }),
      logged({ type: 'token', attempt: 1, text: '\u2028c' }),
      logged({ type: 'completed', attempt: 1, finishReason: 'stop', usage, choices: [{ index: 0, finishReason: 'tool_calls' }, { index: 1, finishReason: 'stop' }] }),
    ];
    const bulk = new OpenAIChunks('r6', 'm', true);
    const single = new OpenAIChunks('r6', 'm', true);
    assert.equal(bulk.sseText(events), events.flatMap((e) => single.frames(e)).map(sseFrame).join(''));
    const plain = JSON.parse(new OpenAIChunks('r6', 'm', false).sseText(events).split('\n\n')[3]!.split('data: ')[1]!);
    assert.deepEqual(plain.choices, [{ index: 0, delta: { content: '\u2028c' }, logprobs: null, finish_reason: null }]);
  });

  it('sends nothing for a tool call in a text completion stream', () => {
    const chunks = new OpenAIChunks('r7', 'm', false, 'text_completion');
    assert.deepEqual(chunks.frames(logged({ type: 'tool_call', attempt: 1, choice: 0, call: 0, arguments: '{}' })), []);
  });
});

describe('native events', () => {
  it('name a tool call\'s choice, call, id, name and fragment; a token its choice and logprobs only when it has them', () => {
    const events = [
      logged({ type: 'tool_call', attempt: 1, choice: 1, call: 0, id: 'c', name: 'f', arguments: '{"a"' }),
      logged({ type: 'token', attempt: 1, text: 'x' }),
      logged({ type: 'token', attempt: 1, text: 'y', choice: 1, logprobs: { token: 'y', logprob: -1 } }),
      logged({ type: 'completed', attempt: 1, finishReason: 'tool_calls', usage, choices: [{ index: 0, finishReason: 'stop' }, { index: 1, finishReason: 'tool_calls' }] }),
    ];
    const frames = nativeSseText('r8', events).trim().split('\n\n').map((f) => ({ event: /event: (\w+)/.exec(f)![1], data: JSON.parse(/data: (.*)/.exec(f)![1]!) }));
    assert.deepEqual(frames.map((f) => f.event), ['tool_call', 'token', 'token', 'completed']);
    const { timestamp: _t, ...call } = frames[0]!.data;
    assert.deepEqual(call, { request_id: 'r8', sequence: events[0]!.seq, attempt: 1, choice: 1, call: 0, id: 'c', name: 'f', arguments: '{"a"', done: false });
    assert.equal('choice' in frames[1]!.data || 'logprobs' in frames[1]!.data, false);
    assert.equal(frames[2]!.data.choice, 1);
    assert.deepEqual(frames[2]!.data.logprobs, { token: 'y', logprob: -1 });
    assert.deepEqual(frames[3]!.data.choices, [{ index: 0, finish_reason: 'stop' }, { index: 1, finish_reason: 'tool_calls' }]);
  });
});

const output: RequestOutput = {
  choices: [
    { index: 0, content: '', finishReason: 'tool_calls', toolCalls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
    { index: 1, content: 'It is sunny.', finishReason: 'stop', toolCalls: [], logprobs: [{ token: 'It', logprob: -0.2 }] },
  ],
  usageSource: 'counted', served: { deployment: 'eu-1', model: 'llama-3.1-8b' },
};

function record(over: Partial<RequestRecord> = {}): RequestRecord {
  const at = new Date('2026-01-02T03:04:05Z');
  return {
    id: 'r9', userId: 'u', keyId: null, model: 'm', mode: 'queued', payload: { messages: [{ role: 'user', content: 'q' }], maxTokens: 20 },
    priority: 0, idempotencyKey: null, bodyHash: '', estimatedTokens: 30, promptTokens: 10,
    status: 'completed', attempt: 1, result: '', output, finishReason: 'tool_calls', completionTokens: 12, error: null,
    cancelRequested: false, claimExpiresAt: null, publishedAt: at, handoffs: 0, createdAt: at, startedAt: at, completedAt: at, ...over,
  };
}

describe('stored output', () => {
  it('makes a chat.completion of every choice: content null beside tool calls, logprobs when present', () => {
    const body = completionBody(record(), 'chat') as { choices: unknown[]; usage: unknown };
    assert.deepEqual(body.choices, [
      { index: 0, message: { role: 'assistant', content: null, refusal: null, tool_calls: output.choices[0]!.toolCalls }, logprobs: null, finish_reason: 'tool_calls' },
      { index: 1, message: { role: 'assistant', content: 'It is sunny.', refusal: null }, logprobs: { content: [{ token: 'It', logprob: -0.2 }], refusal: null }, finish_reason: 'stop' },
    ]);
    assert.deepEqual(body.usage, { prompt_tokens: 10, completion_tokens: 12, total_tokens: 22 });
  });

  it('answers a record without output (a row older than it) from its result, as before', () => {
    const body = completionBody(record({ output: null, result: 'old text', finishReason: 'stop' }), 'chat') as { choices: unknown[] };
    assert.deepEqual(body.choices, [{ index: 0, message: { role: 'assistant', content: 'old text', refusal: null }, logprobs: null, finish_reason: 'stop' }]);
  });

  it('shows the assembled messages, the usage source and who served in the request view', () => {
    const view = requestView(record());
    assert.deepEqual(view.output, { choices: (completionBody(record(), 'chat') as { choices: unknown[] }).choices });
    assert.equal(view.usage_source, 'counted');
    assert.deepEqual(view.served, { deployment: 'eu-1', model: 'llama-3.1-8b' });
    const queued = requestView(record({ status: 'queued', output: null }));
    assert.equal(queued.output, null);
    assert.equal(queued.usage_source, null);
  });

  it('replays a stored answer whose log expired with its tool calls, each choice, and the terminal event', () => {
    const events = storedEvents(record());
    assert.deepEqual(events.map(({ ts: _t, ...e }) => e), [
      { type: 'tool_call', attempt: 1, choice: 0, call: 0, id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}', seq: 1 },
      { type: 'token', attempt: 1, text: 'It is sunny.', choice: 1, seq: 2 },
      {
        type: 'completed', attempt: 1, finishReason: 'tool_calls', usage: { promptTokens: 10, completionTokens: 12, totalTokens: 22 },
        choices: [{ index: 0, finishReason: 'tool_calls' }, { index: 1, finishReason: 'stop' }], seq: 3,
      },
    ]);
  });
});
