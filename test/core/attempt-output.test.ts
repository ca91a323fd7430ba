// What the attempt runner logs and stores for the whole chat surface, with a fake model backend
// that yields what an upstream sends: tool-call fragments, several choices, logprobs. The log is
// the source of every delivery, so its order and fields are asserted as they are; the record's
// output is assembled from the same events; a cut stream is billed for the tool calls it produced.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { AttemptRunner } from '../../src/core/attempt-runner.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { countTextTokens } from '../../src/core/tokens.ts';
import type { ModelBackend, ModelChunk } from '../../src/ports/model.ts';
import type { RequestRecord } from '../../src/ports/store.ts';
import { startTestSluice, type TestSluice } from '../helpers/app.ts';

const PROMPT_TOKENS = 9;

/** A backend whose stream is the given generator. */
function fakeModel(stream: (signal: AbortSignal) => AsyncGenerator<ModelChunk>): ModelBackend {
  return { stream: (_req, signal) => stream(signal), models: async () => ['fake'], close: async () => {} };
}

const aborted = (signal: AbortSignal) => new Promise<void>((resolve) => {
  if (signal.aborted) resolve();
  else signal.addEventListener('abort', () => resolve(), { once: true });
});

describe('AttemptRunner: tool calls, choices and logprobs', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ worker: { maxAttempts: 1 } }); });
  after(() => app.stop());

  async function running(): Promise<RequestRecord> {
    const { record } = await app.store.insertRequest({
      id: randomUUID(), userId: 'master', keyId: null, model: 'fake', mode: 'direct', payload: { messages: [{ role: 'user', content: 'weather?' }], maxTokens: 50 },
      priority: 0, idempotencyKey: null, bodyHash: '', estimatedTokens: PROMPT_TOKENS + 50, promptTokens: PROMPT_TOKENS,
    }, { workerId: 'test', claimMs: 60_000 });
    return record;
  }

  const runnerWith = (model: ModelBackend, metrics = createMetrics()) =>
    new AttemptRunner({ config: app.config, store: app.store, bus: app.bus, model, ledger: app.ledger, metrics, logger: app.logger, now: Date.now });

  /** The log without sequence and time, as the events were appended. */
  const bodies = async (id: string) => (await app.bus.read(id, 0)).map(({ seq: _s, ts: _t, ...body }) => body);

  it('logs tool-call fragments in order and stores the assembled calls, the reported usage and who served', async () => {
    const model = fakeModel(async function* () {
      yield { type: 'tokens', texts: ['Let me', ' check'] };
      yield { type: 'tool_calls', deltas: [{ call: 0, id: 'call_a', name: 'get_weather', arguments: '' }, { call: 0, arguments: '{"city":' }] };
      yield { type: 'tool_calls', deltas: [{ call: 1, id: 'call_b', name: 'get_time', arguments: '{"tz":"CET"}' }, { call: 0, arguments: '"Paris"}' }] };
      yield { type: 'usage', promptTokens: 11, completionTokens: 31, finishReason: 'tool_calls', usageSource: 'reported', served: { deployment: 'eu-1', model: 'llama-3.1-8b' } };
    });
    const record = await running();
    const result = await runnerWith(model).run(record, 'test');
    assert.equal(result.kind, 'finished');

    assert.deepEqual(await bodies(record.id), [
      { type: 'token', attempt: 1, text: 'Let me' },
      { type: 'token', attempt: 1, text: ' check' },
      { type: 'tool_call', attempt: 1, choice: 0, call: 0, id: 'call_a', name: 'get_weather', arguments: '' },
      { type: 'tool_call', attempt: 1, choice: 0, call: 0, arguments: '{"city":' },
      { type: 'tool_call', attempt: 1, choice: 0, call: 1, id: 'call_b', name: 'get_time', arguments: '{"tz":"CET"}' },
      { type: 'tool_call', attempt: 1, choice: 0, call: 0, arguments: '"Paris"}' },
      { type: 'completed', attempt: 1, finishReason: 'tool_calls', usage: { promptTokens: 11, completionTokens: 31, totalTokens: 42 } },
    ], 'a token keeps its small shape; a one-choice completed event has no choices');

    const stored = (await app.store.getRequest(record.id))!;
    // The attempt hands back the record it ended, so a direct non-streaming answer needs no read back: it must be the stored one.
    assert.ok(result.kind === 'finished' && result.ended, 'the attempt that ended the request returns its record');
    assert.deepEqual({ ...result.ended, completedAt: null }, { ...stored, completedAt: null });
    assert.equal(stored.status, 'completed');
    assert.equal(stored.result, 'Let me check');
    assert.equal(stored.finishReason, 'tool_calls');
    assert.equal(stored.completionTokens, 31, 'the reported usage is the charge');
    assert.deepEqual(stored.output, {
      choices: [{
        index: 0, content: 'Let me check', finishReason: 'tool_calls',
        toolCalls: [
          { id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
          { id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"tz":"CET"}' } },
        ],
      }],
      usageSource: 'reported', served: { deployment: 'eu-1', model: 'llama-3.1-8b' },
    });
  });

  it('logs the tokens of n = 2 with their choice and logprobs, and ends with every choice\'s finish reason', async () => {
    const lp = (token: string, logprob: number) => ({ token, logprob, bytes: [...Buffer.from(token)], top_logprobs: [] });
    const model = fakeModel(async function* () {
      yield { type: 'tokens', texts: ['Yes', '.'], logprobs: [lp('Yes', -0.1), lp('.', -0.01)] };
      yield { type: 'tokens', texts: ['No'], choice: 1, logprobs: [lp('No', -2.3)] };
      yield { type: 'tokens', texts: [' way'], choice: 1, logprobs: [lp(' way', -0.7)] };
      yield { type: 'usage', promptTokens: 9, completionTokens: 4, finishReason: 'stop', choices: [{ index: 0, finishReason: 'stop' }, { index: 1, finishReason: 'length' }], usageSource: 'counted' };
    });
    const record = await running();
    await runnerWith(model).run(record, 'test');

    assert.deepEqual(await bodies(record.id), [
      { type: 'token', attempt: 1, text: 'Yes', logprobs: lp('Yes', -0.1) },
      { type: 'token', attempt: 1, text: '.', logprobs: lp('.', -0.01) },
      { type: 'token', attempt: 1, text: 'No', choice: 1, logprobs: lp('No', -2.3) },
      { type: 'token', attempt: 1, text: ' way', choice: 1, logprobs: lp(' way', -0.7) },
      {
        type: 'completed', attempt: 1, finishReason: 'stop', usage: { promptTokens: 9, completionTokens: 4, totalTokens: 13 },
        choices: [{ index: 0, finishReason: 'stop' }, { index: 1, finishReason: 'length' }],
      },
    ]);
    const stored = (await app.store.getRequest(record.id))!;
    assert.equal(stored.result, 'Yes.', 'result is choice 0');
    assert.deepEqual(stored.output, {
      choices: [
        { index: 0, content: 'Yes.', toolCalls: [], finishReason: 'stop', logprobs: [lp('Yes', -0.1), lp('.', -0.01)] },
        { index: 1, content: 'No way', toolCalls: [], finishReason: 'length', logprobs: [lp('No', -2.3), lp(' way', -0.7)] },
      ],
      usageSource: 'counted',
    });
  });

  it('bills a stream cut in the middle of a tool call for the tokens and argument fragments it logged', async () => {
    const client = new AbortController();
    const fragments = ['{"query":', ' "cheap flights', ' to Lisbon"'];
    const model = fakeModel(async function* (signal) {
      yield { type: 'tokens', texts: ['Searching'] };
      yield { type: 'tool_calls', deltas: [{ call: 0, id: 'call_s', name: 'search_web', arguments: '' }] };
      for (const f of fragments) yield { type: 'tool_calls', deltas: [{ call: 0, arguments: f }] };
      // Everything above is in the log now: the client goes away before the call is complete.
      client.abort();
      await aborted(signal);
    });
    const record = await running();
    await runnerWith(model).run(record, 'test', { disconnect: client.signal });

    const produced = 1 + countTextTokens('search_web') + fragments.reduce((n, f) => n + countTextTokens(f), 0);
    const stored = (await app.store.getRequest(record.id))!;
    assert.equal(stored.status, 'cancelled');
    assert.equal(stored.completionTokens, produced, 'one token, the function name and every argument fragment');
    assert.equal((await app.store.ledgerRow(record.id))?.chargedTokens, PROMPT_TOKENS + produced);
    assert.deepEqual(stored.output, {
      choices: [{
        index: 0, content: 'Searching', finishReason: 'cancelled',
        toolCalls: [{ id: 'call_s', type: 'function', function: { name: 'search_web', arguments: fragments.join('') } }],
      }],
      usageSource: 'counted',
    });
    const end = (await app.bus.read(record.id, 0)).at(-1)!;
    assert.equal(end.type, 'error');
    assert.equal(end.type === 'error' && end.usage.completionTokens, produced, 'the terminal event says what was billed');
  });

  it('stores model output the database cannot hold as it is (NUL, lone surrogates) with U+FFFD, everywhere in the output', async () => {
    const model = fakeModel(async function* () {
      yield { type: 'tokens', texts: ['a\u0000b'], logprobs: [{ token: '\ud83d', logprob: -1, bytes: [240], top_logprobs: [{ token: '\u0000', logprob: -2, bytes: [0] }] }] };
      yield { type: 'tool_calls', deltas: [{ call: 0, id: 'call_\u0000', name: 'f\udc00', arguments: '{"x":"\u0000\ud800"}' }] };
      yield { type: 'usage', promptTokens: 9, completionTokens: 3, finishReason: 'tool_calls' };
    });
    const record = await running();
    await runnerWith(model).run(record, 'test');
    const stored = (await app.store.getRequest(record.id))!;
    assert.equal(stored.status, 'completed', 'the answer is stored, not lost to a failed write');
    assert.equal(stored.result, 'a\uFFFDb');
    assert.deepEqual(stored.output?.choices[0], {
      index: 0, content: 'a\uFFFDb', finishReason: 'tool_calls',
      toolCalls: [{ id: 'call_\uFFFD', type: 'function', function: { name: 'f\uFFFD', arguments: '{"x":"\uFFFD\uFFFD"}' } }],
      logprobs: [{ token: '\uFFFD', logprob: -1, bytes: [240], top_logprobs: [{ token: '\uFFFD', logprob: -2, bytes: [0] }] }],
    });
    assert.equal(stored.output?.usageSource, 'reported', 'a usage chunk without a source is the backend\'s report');
  });

  it('observes time to first token at the first tool-call fragment of an answer that has no text', async () => {
    const metrics = createMetrics();
    const model = fakeModel(async function* () {
      yield { type: 'tool_calls', deltas: [{ call: 0, id: 'c', name: 'f', arguments: '{}' }] };
      yield { type: 'usage', promptTokens: 9, completionTokens: 5, finishReason: 'tool_calls' };
    });
    const record = await running();
    await runnerWith(model, metrics).run(record, 'test');
    const values = (await metrics.registry.getSingleMetric('sluice_time_to_first_token_seconds')!.get()).values as { value: number; metricName?: string }[];
    assert.equal(values.find((v) => v.metricName?.endsWith('_count'))?.value, 1);
    assert.equal((await app.store.getRequest(record.id))?.result, '');
  });
});
