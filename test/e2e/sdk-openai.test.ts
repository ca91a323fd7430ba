// The official `openai` SDK against Sluice with a user key, in queued and direct mode, over the
// embedded simulator and over `sluice sim-model` as an authenticated HTTP deployment of the
// catalogue: a tool-calling round trip (the model calls a tool, the client runs it and sends the
// result back as a `tool` message, the model answers in text), streamed and not; JSON mode
// (json_object, json_schema through the SDK's zod helper) parses; n=2 gives two choices; a stream
// cut in the middle of a tool call's arguments and resumed with Last-Event-ID carries the call
// exactly once, as the stored record holds it; what every request billed is its ledger row.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { api, readSse, type SseFrame } from '../helpers/app.ts';
import {
  assertBilled, assertRoundTrip, BACKENDS, MODES, QUESTION, requestsOf, runWeather, settledRows, startSdkGateway, WEATHER_TOOL,
  type Backend, type Mode, type SdkGateway, type ToolCallView,
} from '../helpers/sdk-gateway.ts';

type Message = OpenAI.ChatCompletionMessageParam;
type Usage = { prompt: number; completion: number };
const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: WEATHER_TOOL as unknown as OpenAI.FunctionDefinition }];

describe('openai SDK through Sluice', () => {
  let gw: SdkGateway;
  before(async () => { gw = await startSdkGateway(); });
  after(() => gw?.stop());

  const clientFor = (key: string, mode: Mode) => new OpenAI({ baseURL: `${gw.app.url}/v1`, apiKey: key, maxRetries: 0, defaultHeaders: { 'x-sluice-mode': mode } });
  const usageOf = (c: OpenAI.ChatCompletion): Usage => ({ prompt: c.usage!.prompt_tokens, completion: c.usage!.completion_tokens });

  /** One call, streamed through the SDK's stream helper (which assembles the chunks) or not. */
  async function complete(client: OpenAI, stream: boolean, body: OpenAI.ChatCompletionCreateParamsNonStreaming): Promise<OpenAI.ChatCompletion> {
    if (!stream) return client.chat.completions.create(body);
    return client.chat.completions.stream({ ...body, stream: true, stream_options: { include_usage: true } }).finalChatCompletion();
  }

  for (const backend of Object.keys(BACKENDS) as Backend[]) {
    for (const mode of MODES) {
      for (const stream of [false, true]) {
        it(`tool round trip, ${stream ? 'streamed' : 'not streamed'}, ${mode} mode, ${backend} simulator`, async () => {
          const userId = `oa-rt-${backend}-${mode}-${stream ? 's' : 'n'}`;
          const key = await gw.user(userId);
          const client = clientFor(key, mode);
          const model = BACKENDS[backend];
          const messages: Message[] = [{ role: 'user', content: QUESTION }];

          const first = await complete(client, stream, { model, messages, tools, max_tokens: 60 });
          const asked = first.choices[0]!;
          assert.equal(asked.finish_reason, 'tool_calls');
          const calls = asked.message.tool_calls ?? [];
          assert.equal(calls.length, 1, 'one call');
          const call = calls[0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
          assert.equal(call.function.name, 'get_weather');
          assert.match(call.id, /^call_/);
          const result = runWeather(JSON.parse(call.function.arguments));

          messages.push(asked.message, { role: 'tool', tool_call_id: call.id, content: JSON.stringify(result) });
          const second = await complete(client, stream, { model, messages, tools, max_tokens: 12 });
          const answer = second.choices[0]!;
          assert.deepEqual(answer.message.tool_calls ?? [], [], 'no second call after the tool result');
          assert.ok((answer.message.content ?? '').length > 0, 'the model answers in text');
          assert.equal(answer.finish_reason, 'length', 'the simulator writes max_tokens tokens');
          assert.equal(second.usage!.completion_tokens, 12);
          assert.ok(second.usage!.prompt_tokens > first.usage!.prompt_tokens, 'the second prompt holds the call and its result');

          const views = await assertBilled(gw, userId, key, [usageOf(first), usageOf(second)]);
          assertRoundTrip(views, [{ id: call.id, name: call.function.name, input: JSON.parse(call.function.arguments) }], backend, mode);
          assert.equal(views[0]!.output!.choices[0]!.message.tool_calls![0]!.function.arguments, call.function.arguments, 'the arguments, byte for byte');
          assert.equal(views[1]!.output!.choices[0]!.message.content, answer.message.content, 'the stored answer is the one delivered');
        });
      }

      it(`JSON mode: json_object and json_schema (zod helper) parse, streamed and not, ${mode} mode, ${backend} simulator`, async () => {
        const userId = `oa-json-${backend}-${mode}`;
        const key = await gw.user(userId);
        const client = clientFor(key, mode);
        const model = BACKENDS[backend];
        const usage: Usage[] = [];
        const Person = z.object({ name: z.string(), age: z.number().int(), tags: z.array(z.string()), member: z.boolean() });
        for (const stream of [false, true]) {
          const object = await complete(client, stream, { model, max_tokens: 200, response_format: { type: 'json_object' }, messages: [{ role: 'user', content: 'Answer in JSON.' }] });
          assert.equal(object.choices[0]!.finish_reason, 'stop', 'the JSON is whole');
          const parsedObject = JSON.parse(object.choices[0]!.message.content!) as unknown;
          assert.ok(typeof parsedObject === 'object' && parsedObject !== null && !Array.isArray(parsedObject), 'a JSON object');
          usage.push(usageOf(object));

          const body = { model, max_tokens: 200, response_format: zodResponseFormat(Person, 'person'), messages: [{ role: 'user' as const, content: 'Describe a person.' }] };
          const typed = stream
            ? await client.chat.completions.stream({ ...body, stream_options: { include_usage: true } }).finalChatCompletion()
            : await client.chat.completions.parse(body);
          const person = typed.choices[0]!.message.parsed;
          assert.ok(person, 'the SDK parsed the answer with the schema');
          assert.deepEqual(Object.keys(person), ['name', 'age', 'tags', 'member']);
          assert.deepEqual(Person.parse(person), person);
          usage.push(usageOf(typed));
        }
        await assertBilled(gw, userId, key, usage);
      });

      it(`n=2 gives two choices, each its own answer, streamed and not; billed for both, ${mode} mode, ${backend} simulator`, async () => {
        const userId = `oa-n2-${backend}-${mode}`;
        const key = await gw.user(userId);
        const client = clientFor(key, mode);
        const usage: Usage[] = [];
        for (const stream of [false, true]) {
          const two = await complete(client, stream, { model: BACKENDS[backend], n: 2, max_tokens: 7, messages: [{ role: 'user', content: 'Say something, twice.' }] });
          assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
          assert.ok(two.choices.every((c) => (c.message.content ?? '').length > 0 && c.finish_reason === 'length'));
          assert.notEqual(two.choices[0]!.message.content, two.choices[1]!.message.content, 'two different answers');
          assert.equal(two.usage!.completion_tokens, 14, 'seven tokens of each choice');
          usage.push(usageOf(two));
          const [view] = (await requestsOf(gw, userId, key)).slice(-1);
          assert.deepEqual(view!.output!.choices.map((c) => c.message.content), two.choices.map((c) => c.message.content), 'the record holds both choices');
        }
        await assertBilled(gw, userId, key, usage);
      });

      it(`a stream cut in the middle of tool-call arguments resumes with Last-Event-ID: the call exactly once, as stored, ${mode} mode, ${backend} simulator`, async () => {
        const userId = `oa-resume-${backend}-${mode}`;
        const key = await gw.user(userId);
        await resumeAfterCut(gw, key, userId, BACKENDS[backend], mode);
      });
    }
  }
});

interface ToolCallDelta { index: number; id?: string; type?: string; function?: { name?: string; arguments?: string } }
interface Chunk { choices: { index: number; delta: { content?: string | null; tool_calls?: ToolCallDelta[] }; finish_reason: string | null }[]; usage?: { prompt_tokens: number; completion_tokens: number } | null }

/** An OpenAI chunk, or null for `[DONE]` and for the error object a stream ends with when its request did not complete. */
function chunkOf(f: SseFrame): Chunk | null {
  if (!f.data || f.data === '[DONE]') return null;
  const j = JSON.parse(f.data) as Partial<Chunk>;
  return Array.isArray(j.choices) ? j as Chunk : null;
}
const deltasOf = (f: SseFrame): ToolCallDelta[] => chunkOf(f)?.choices.flatMap((c) => c.delta.tool_calls ?? []) ?? [];

/** The calls a client assembles from OpenAI chunks, by call index. */
function assemble(frames: SseFrame[]): ToolCallView[] {
  const calls: ToolCallView[] = [];
  for (const d of frames.flatMap(deltasOf)) {
    const c = (calls[d.index] ??= { id: '', type: '', function: { name: '', arguments: '' } });
    if (d.id) c.id = d.id;
    if (d.type) c.type = d.type;
    if (d.function?.name) c.function.name = d.function.name;
    c.function.arguments += d.function?.arguments ?? '';
  }
  return calls;
}

/** A tool whose arguments are long enough to stream in many fragments. */
const ADDRESS_TOOL = {
  type: 'function',
  function: {
    name: 'send_letter',
    parameters: {
      type: 'object',
      properties: Object.fromEntries(['name', 'street', 'city', 'country', 'subject', 'greeting', 'body', 'closing'].map((p) => [p, { type: 'string' }])),
      required: ['name', 'street', 'city', 'country', 'subject', 'greeting', 'body', 'closing'],
    },
  },
};

/**
 * Reads a streamed tool call until three argument fragments arrived and hangs up, then resumes
 * from the last event id on GET /v1/requests/{id}/events?format=openai. Queued mode: the request
 * runs on and completes. Direct mode: the client is the stream, so hanging up cuts the request,
 * which is billed for what it produced. Either way the ids run on with no gap and no duplicate,
 * the assembled call is the stored one, and the ledger row is the stored usage.
 */
async function resumeAfterCut(gw: SdkGateway, key: string, userId: string, model: string, mode: Mode): Promise<void> {
  const call = api(gw.app.url, key);
  const res = await call('/v1/chat/completions', {
    method: 'POST', headers: { 'x-sluice-mode': mode },
    json: { model, stream: true, stream_options: { include_usage: true }, max_tokens: 400, tools: [ADDRESS_TOOL], messages: [{ role: 'user', content: 'Write to my aunt.' }] },
  });
  assert.equal(res.status, 200);
  const id = res.headers.get('x-request-id')!;
  let fragments = 0;
  const before = (await readSse(res, (f) => (fragments += deltasOf(f).filter((d) => d.function?.arguments).length) >= 3)).filter((f) => f.data);
  const lastId = before.at(-1)!.id!;
  assert.ok(before.some((f) => deltasOf(f).some((d) => d.function?.name === 'send_letter')), 'the call began before the cut');

  const view = async () => ((await (await call(`/v1/requests/${id}`)).json()) as { status: string; usage: { prompt_tokens: number; completion_tokens: number } | null; output: { choices: { message: { tool_calls?: ToolCallView[] }; finish_reason: string }[] } | null });
  const record = await (async () => {
    for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 25))) {
      const v = await view();
      if (['completed', 'cancelled', 'failed'].includes(v.status)) return v;
    }
    return assert.fail('the request did not end');
  })();
  if (mode === 'queued') assert.equal(record.status, 'completed', 'a queued request runs on without its listener');
  else assert.ok(['cancelled', 'completed'].includes(record.status), `a cut direct stream is cancelled (or had already completed): ${record.status}`);

  const rest = (await readSse(await call(`/v1/requests/${id}/events?format=openai`, { headers: { 'last-event-id': lastId } }))).filter((f) => f.data);
  assert.equal(rest.at(-1)!.data, '[DONE]');
  assert.equal(Number(rest[0]!.id), Number(lastId) + 1, 'the resume starts right after the last event received');
  const whole = [...before, ...rest];
  const ids = whole.filter((f) => f.id !== undefined).map((f) => Number(f.id));
  const distinct = ids.filter((x, i) => i === 0 || x !== ids[i - 1]);
  assert.deepEqual(distinct, Array.from({ length: distinct.length }, (_, i) => distinct[0]! + i), 'no gap');
  const fragmentIds = whole.filter((f) => deltasOf(f).length > 0).map((f) => f.id);
  assert.equal(new Set(fragmentIds).size, fragmentIds.length, 'no fragment twice');

  const calls = assemble(whole);
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.function.name, 'send_letter');
  assert.deepEqual(calls, record.output!.choices[0]!.message.tool_calls, 'the resumed call is the stored one, exactly');
  const ending = rest.at(-2)!;
  if (record.status === 'cancelled') assert.equal((JSON.parse(ending.data) as { error?: { code: string } }).error?.code, 'SLUICE_ERR_CANCELLED', 'the resumed stream says how it ended');
  if (record.status === 'completed') {
    assert.deepEqual(Object.keys(JSON.parse(calls[0]!.function.arguments) as object), ADDRESS_TOOL.function.parameters.required, 'whole, valid arguments');
    const finish = whole.flatMap((f) => chunkOf(f)?.choices.map((c) => c.finish_reason) ?? []).filter(Boolean);
    assert.deepEqual(finish, ['tool_calls']);
  }
  const [row] = await settledRows(gw, userId, 1);
  assert.deepEqual([row!.prompt_tokens, row!.completion_tokens], [record.usage!.prompt_tokens, record.usage!.completion_tokens], 'billed as recorded');
  assert.equal(row!.status, record.status);
  assert.ok(row!.completion_tokens >= fragments, 'billed at least for the fragments the client saw');
}
