// The Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`) against Sluice with a user key, in
// queued and direct mode, over the embedded simulator and over `sluice sim-model` as an
// authenticated HTTP deployment of the catalogue: generateText and streamText run their own tool
// loop (the model calls get_weather, the SDK runs it and sends the result back as a `tool`
// message, the model answers in text and the loop stops); structured output (json_schema) parses.
// Every request's ledger row is its record and the usage the SDK reported.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateText, jsonSchema, Output, stepCountIs, streamText, tool, type StepResult, type Tool } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import {
  assertBilled, assertRoundTrip, BACKENDS, MODES, QUESTION, runWeather, startSdkGateway, WEATHER_TOOL,
  type Backend, type Mode, type SdkGateway,
} from '../helpers/sdk-gateway.ts';

type WeatherTools = { get_weather: Tool<{ city: string; unit: 'c' | 'f' }, ReturnType<typeof runWeather>> };

describe('Vercel AI SDK through Sluice', () => {
  let gw: SdkGateway;
  before(async () => { gw = await startSdkGateway(); });
  after(() => gw?.stop());

  const provider = (key: string, mode: Mode) => createOpenAICompatible({
    name: 'sluice', baseURL: `${gw.app.url}/v1`, apiKey: key, headers: { 'x-sluice-mode': mode }, includeUsage: true, supportsStructuredOutputs: true,
  });

  /** The tool set, counting the SDK's calls of the tool. */
  function weatherTools(ran: unknown[]): WeatherTools {
    return {
      get_weather: tool({
        description: WEATHER_TOOL.description,
        inputSchema: jsonSchema<{ city: string; unit: 'c' | 'f' }>(WEATHER_TOOL.parameters as never),
        execute: async (input) => { ran.push(input); return runWeather(input); },
      }),
    };
  }

  /** The round trip's two steps as the SDK reports them, checked; returns what the store should hold. */
  function checkSteps(steps: StepResult<WeatherTools>[], ran: unknown[]) {
    assert.equal(steps.length, 2, 'two steps: the call, then the answer (the loop stops on text)');
    const [asked, answered] = steps as [StepResult<WeatherTools>, StepResult<WeatherTools>];
    assert.equal(asked.finishReason, 'tool-calls');
    assert.equal(asked.toolCalls.length, 1);
    const call = asked.toolCalls[0]!;
    assert.equal(call.toolName, 'get_weather');
    assert.deepEqual(ran, [call.input], 'the SDK ran the tool once, with the call\'s arguments');
    assert.deepEqual(asked.toolResults.map((r) => r.output), [runWeather(call.input)]);
    assert.equal(answered.toolCalls.length, 0, 'no second call after the tool result');
    assert.ok(answered.text.length > 0, 'the model answers in text');
    assert.equal(answered.finishReason, 'length', 'the simulator writes maxOutputTokens tokens');
    assert.equal(answered.usage.outputTokens, 12);
    for (const s of steps) assert.ok(s.response.headers?.['x-request-id'], 'each step was one Sluice request');
    return {
      calls: [{ id: call.toolCallId, name: call.toolName, input: call.input }],
      usage: steps.map((s) => ({ prompt: s.usage.inputTokens!, completion: s.usage.outputTokens! })),
      requestIds: steps.map((s) => s.response.headers!['x-request-id']),
      answer: answered.text,
    };
  }

  for (const backend of Object.keys(BACKENDS) as Backend[]) {
    for (const mode of MODES) {
      for (const stream of [false, true]) {
        it(`tool loop with ${stream ? 'streamText' : 'generateText'}, ${mode} mode, ${backend} simulator`, async () => {
          const userId = `vc-rt-${backend}-${mode}-${stream ? 's' : 'n'}`;
          const key = await gw.user(userId);
          const ran: unknown[] = [];
          const common = {
            model: provider(key, mode).chatModel(BACKENDS[backend]), tools: weatherTools(ran), prompt: QUESTION,
            // A step budget above two: the loop must end because the model answered in text.
            stopWhen: stepCountIs(4), maxRetries: 0,
            prepareStep: ({ stepNumber }: { stepNumber: number }) => ({ maxOutputTokens: stepNumber === 0 ? 60 : 12 }),
          };
          let steps: StepResult<WeatherTools>[];
          if (stream) {
            const errors: unknown[] = [];
            const result = streamText({ ...common, onError: ({ error }) => { errors.push(error); } });
            let text = '';
            for await (const delta of result.textStream) text += delta;
            steps = await result.steps;
            assert.deepEqual(errors, []);
            assert.equal(text, steps.at(-1)!.text, 'the streamed text is the answer');
          } else {
            steps = (await generateText(common)).steps;
          }
          const seen = checkSteps(steps, ran);
          const views = await assertBilled(gw, userId, key, seen.usage);
          assert.deepEqual(views.map((v) => v.request_id), seen.requestIds, 'the records are the steps\' requests');
          assertRoundTrip(views, seen.calls, backend, mode);
          assert.equal(views[1]!.output!.choices[0]!.message.content, seen.answer, 'the stored answer is the one delivered');
        });
      }

      it(`structured output (json_schema) parses with generateText and streamText, ${mode} mode, ${backend} simulator`, async () => {
        const userId = `vc-json-${backend}-${mode}`;
        const key = await gw.user(userId);
        const schema = jsonSchema<{ title: string; year: number; genres: string[] }>({
          type: 'object', properties: { title: { type: 'string' }, year: { type: 'integer' }, genres: { type: 'array', items: { type: 'string' } } },
          required: ['title', 'year', 'genres'], additionalProperties: false,
        });
        const common = { model: provider(key, mode).chatModel(BACKENDS[backend]), output: Output.object({ schema }), prompt: 'Name a film.', maxOutputTokens: 200, maxRetries: 0 };
        const whole = await generateText(common);
        const streamed = streamText({ ...common, onError: ({ error }) => { throw error; } });
        await streamed.consumeStream();
        const usage = [];
        for (const [value, u] of [[whole.output, whole.usage], [await streamed.output, await streamed.usage]] as const) {
          assert.deepEqual(Object.keys(value).sort(), ['genres', 'title', 'year']);
          assert.ok(typeof value.title === 'string' && Number.isInteger(value.year) && Array.isArray(value.genres));
          usage.push({ prompt: u.inputTokens!, completion: u.outputTokens! });
        }
        await assertBilled(gw, userId, key, usage);
      });
    }
  }
});
