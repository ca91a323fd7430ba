// LangChain's ChatOpenAI (`@langchain/openai`) against Sluice with a user key, in queued and direct
// mode, over the embedded simulator and over `sluice sim-model` as an authenticated HTTP
// deployment of the catalogue: a tool round trip with bindTools (the model calls get_weather, the
// LangChain tool runs on the call and gives the ToolMessage sent back, the model answers in text),
// with invoke and with stream; structured output (json_schema) parses. Every request's ledger row
// is its record and the usage LangChain reported.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessage, AIMessageChunk, HumanMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { z } from 'zod';
import {
  assertBilled, assertRoundTrip, BACKENDS, MODES, QUESTION, runWeather, startSdkGateway, WEATHER_TOOL,
  type Backend, type Mode, type SdkGateway,
} from '../helpers/sdk-gateway.ts';

type Usage = { prompt: number; completion: number };

describe('LangChain ChatOpenAI through Sluice', () => {
  let gw: SdkGateway;
  before(async () => { gw = await startSdkGateway(); });
  after(() => gw?.stop());

  const chat = (key: string, mode: Mode, model: string, maxTokens: number) => new ChatOpenAI({
    model, apiKey: key, maxTokens, maxRetries: 0, streamUsage: true,
    configuration: { baseURL: `${gw.app.url}/v1`, defaultHeaders: { 'x-sluice-mode': mode } },
  });

  /** invoke, or stream with the chunks concatenated as LangChain apps do. */
  async function ask(llm: { invoke(m: BaseMessage[]): Promise<AIMessage>; stream(m: BaseMessage[]): Promise<AsyncIterable<AIMessageChunk>> }, messages: BaseMessage[], stream: boolean): Promise<AIMessage> {
    if (!stream) return llm.invoke(messages);
    let whole: AIMessageChunk | undefined;
    for await (const chunk of await llm.stream(messages)) whole = whole ? whole.concat(chunk) : chunk;
    assert.ok(whole, 'chunks arrived');
    return whole;
  }
  const usageOf = (m: AIMessage): Usage => ({ prompt: m.usage_metadata!.input_tokens, completion: m.usage_metadata!.output_tokens });

  for (const backend of Object.keys(BACKENDS) as Backend[]) {
    for (const mode of MODES) {
      for (const stream of [false, true]) {
        it(`tool round trip with bindTools and ${stream ? 'stream' : 'invoke'}, ${mode} mode, ${backend} simulator`, async () => {
          const userId = `lc-rt-${backend}-${mode}-${stream ? 's' : 'n'}`;
          const key = await gw.user(userId);
          const ran: unknown[] = [];
          const weather = tool(async (input) => { ran.push(input); return JSON.stringify(runWeather(input)); }, {
            name: WEATHER_TOOL.name, description: WEATHER_TOOL.description, schema: z.object({ city: z.string(), unit: z.enum(['c', 'f']) }),
          });
          const messages: BaseMessage[] = [new HumanMessage(QUESTION)];

          const asked = await ask(chat(key, mode, BACKENDS[backend], 60).bindTools([weather]), messages, stream);
          assert.equal(asked.tool_calls?.length, 1, 'one call');
          const call = asked.tool_calls![0]!;
          assert.equal(call.name, 'get_weather');
          assert.equal(asked.response_metadata.finish_reason, 'tool_calls');
          const result = await weather.invoke({ ...call, type: 'tool_call' });
          assert.ok(result instanceof ToolMessage, 'the tool answers a call with a ToolMessage');
          assert.equal(result.tool_call_id, call.id);
          assert.deepEqual(ran, [call.args]);

          messages.push(asked, result);
          const answered = await ask(chat(key, mode, BACKENDS[backend], 12).bindTools([weather]), messages, stream);
          assert.deepEqual(answered.tool_calls ?? [], [], 'no second call after the tool result');
          assert.equal(typeof answered.content, 'string');
          assert.ok((answered.content as string).length > 0, 'the model answers in text');
          assert.equal(answered.response_metadata.finish_reason, 'length');
          assert.equal(answered.usage_metadata?.output_tokens, 12);

          const views = await assertBilled(gw, userId, key, [usageOf(asked), usageOf(answered)]);
          assertRoundTrip(views, [{ id: call.id!, name: call.name, input: call.args }], backend, mode);
          assert.equal(views[1]!.output!.choices[0]!.message.content, answered.content, 'the stored answer is the one delivered');
        });
      }

      it(`structured output (withStructuredOutput, json_schema) parses, invoke and stream, ${mode} mode, ${backend} simulator`, async () => {
        const userId = `lc-json-${backend}-${mode}`;
        const key = await gw.user(userId);
        const City = z.object({ name: z.string(), population: z.number().int(), rivers: z.array(z.string()) });
        const structured = chat(key, mode, BACKENDS[backend], 200).withStructuredOutput(City, { method: 'jsonSchema', includeRaw: true });
        const whole = await structured.invoke([new HumanMessage('Describe a city.')]);
        // The runnable's stream gives its parts one by one: the raw message, then the parsed value.
        const streamed: Partial<typeof whole> = {};
        for await (const part of await structured.stream([new HumanMessage('Describe a city.')])) Object.assign(streamed, part);
        const usage: Usage[] = [];
        for (const r of [whole, streamed as typeof whole]) {
          assert.deepEqual(City.parse(r.parsed), r.parsed, 'parsed with the schema');
          assert.deepEqual(Object.keys(r.parsed), ['name', 'population', 'rivers']);
          usage.push(usageOf(r.raw as AIMessage));
        }
        await assertBilled(gw, userId, key, usage);
      });
    }
  }
});
