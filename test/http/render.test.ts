// OpenAI chunk rendering: the pre-serialised fast path must produce exactly the JSON a plain
// serialisation of the chunk would, whatever the token text holds.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { OpenAIChunks } from '../../src/http/render.ts';
import { sseFrame } from '../../src/http/sse.ts';
import type { LogEvent } from '../../src/ports/bus.ts';

const token = (seq: number, text: string): LogEvent => ({ type: 'token', attempt: 1, text, seq, ts: 0 });

describe('OpenAIChunks', () => {
  it('renders token chunks identical to their plain JSON, role only in the first', () => {
    const chunks = new OpenAIChunks('r1', 'sim', false);
    const texts = ['Hello', ' "quoted"', ' back\\slash', ' \u0000nul', ' line\nbreak', ' 😀', ' \u2028'];
    const parsed = texts.map((t, i) => JSON.parse(chunks.frames(token(i + 1, t))[0]!.data));
    parsed.forEach((c, i) => {
      assert.equal(c.id, 'chatcmpl-r1');
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.model, 'sim');
      assert.deepEqual(c.choices, [{ index: 0, delta: i === 0 ? { role: 'assistant', content: texts[i] } : { content: texts[i] }, logprobs: null, finish_reason: null }]);
    });
  });

  it('ends with a finish chunk, the usage chunk when asked, and [DONE]', () => {
    const chunks = new OpenAIChunks('r2', 'sim', true);
    chunks.frames(token(1, 'a'));
    const end = chunks.frames({ type: 'completed', attempt: 1, finishReason: 'length', usage: { promptTokens: 3, completionTokens: 1, totalTokens: 4 }, seq: 2, ts: 0 });
    assert.equal(end.length, 3);
    assert.equal(JSON.parse(end[0]!.data).choices[0].finish_reason, 'length');
    assert.deepEqual(JSON.parse(end[1]!.data).usage, { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 });
    assert.deepEqual(JSON.parse(end[1]!.data).choices, []);
    assert.equal(end[2]!.data, '[DONE]');
  });

  it('renders text completions with a text field', () => {
    const chunks = new OpenAIChunks('r3', 'sim', false, 'text_completion');
    const c = [1, 2].map((i) => JSON.parse(chunks.frames(token(i, `t"${i}`))[0]!.data));
    assert.deepEqual(c.map((x) => x.choices[0].text), ['t"1', 't"2']);
    assert.equal(c[0].object, 'text_completion');
  });

  it('writes a burst as the same SSE text its frames make one by one', () => {
    const events: LogEvent[] = [
      token(1, 'Hi'), token(2, ' "there"'), { type: 'restart', attempt: 2, reason: 'retry', seq: 3, ts: 0 }, token(4, '\n'),
      { type: 'completed', attempt: 2, finishReason: 'stop', usage: { promptTokens: 2, completionTokens: 3, totalTokens: 5 }, seq: 5, ts: 0 },
    ];
    const bulk = new OpenAIChunks('r4', 'sim', true);
    const single = new OpenAIChunks('r4', 'sim', true);
    const text = bulk.sseText(events.slice(0, 2)) + bulk.sseText(events.slice(2));
    assert.equal(text, events.flatMap((e) => single.frames(e)).map(sseFrame).join(''));
    assert.deepEqual([...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1])), [1, 2, 4, 5, 5, 5]);
  });
});
