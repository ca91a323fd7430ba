// The official openai SDK against Sluice on the embedded default, in both delivery modes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { MASTER_KEY, readSse, startTestSluice, api, type TestSluice } from '../helpers/app.ts';

describe('OpenAI compatibility (openai SDK)', () => {
  let app: TestSluice;
  let client: OpenAI;
  before(async () => {
    app = await startTestSluice();
    client = new OpenAI({ baseURL: `${app.url}/v1`, apiKey: MASTER_KEY, maxRetries: 0 });
  });
  after(() => app.stop());

  it('lists models', async () => {
    const models = await client.models.list();
    assert.ok(models.data.some((m) => m.id === 'sim'));
  });

  for (const mode of ['queued', 'direct'] as const) {
    it(`non-streaming chat completion (${mode})`, async () => {
      const r = await client.chat.completions.create({ model: 'sim', max_tokens: 12, messages: [{ role: 'user', content: 'Say hello' }] }, { headers: { 'x-sluice-mode': mode } });
      assert.equal(r.object, 'chat.completion');
      assert.equal(r.choices[0]!.message.role, 'assistant');
      assert.ok((r.choices[0]!.message.content ?? '').length > 10);
      assert.equal(r.usage!.completion_tokens, 12);
      assert.ok(r.usage!.prompt_tokens > 3);
      assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + 12);
    });

    it(`streaming chat completion with include_usage (${mode})`, async () => {
      const stream = await client.chat.completions.create({ model: 'sim', max_tokens: 20, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'Tell me a story' }] }, { headers: { 'x-sluice-mode': mode } });
      let text = '';
      let chunks = 0;
      let usage: OpenAI.CompletionUsage | undefined;
      let finish: string | null = null;
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
        const c = chunk.choices[0];
        if (c?.delta?.content) { text += c.delta.content; chunks++; }
        if (c?.finish_reason) finish = c.finish_reason;
      }
      assert.equal(chunks, 20);
      assert.ok(text.trim().length > 0);
      assert.equal(finish, 'length');
      assert.equal(usage?.completion_tokens, 20, 'usage arrives in the last chunk');
    });
  }

  it('streams carry id: lines and x-request-id, and the same stream resumes in OpenAI format', async () => {
    const call = api(app.url);
    const res = await call('/v1/chat/completions', { method: 'POST', json: { model: 'sim', max_tokens: 8, stream: true, messages: [{ role: 'user', content: 'hi' }] } });
    const id = res.headers.get('x-request-id');
    assert.match(id ?? '', /^[0-9a-f-]{36}$/);
    const frames = (await readSse(res)).filter((f) => f.data);
    assert.deepEqual(frames.slice(0, 8).map((f) => f.id), ['1', '2', '3', '4', '5', '6', '7', '8']);
    assert.equal(frames.at(-1)!.data, '[DONE]');
    const full = frames.slice(0, 8).map((f) => JSON.parse(f.data).choices[0].delta.content).join('');
    const resumed = await readSse(await call(`/v1/requests/${id}/events?format=openai`, { headers: { 'last-event-id': '5' } }));
    const tail = resumed.filter((f) => f.data && f.data !== '[DONE]').map((f) => JSON.parse(f.data)).filter((c) => c.choices?.[0]?.delta?.content).map((c) => c.choices[0].delta.content).join('');
    assert.equal(tail, frames.slice(5, 8).map((f) => JSON.parse(f.data).choices[0].delta.content).join(''));
    assert.ok(full.endsWith(tail));
  });

  it('text completions (prompt form)', async () => {
    const r = await client.completions.create({ model: 'sim', prompt: 'Once upon a time', max_tokens: 5 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.usage!.completion_tokens, 5);
    assert.ok(r.choices[0]!.text.length > 0);
  });
});
