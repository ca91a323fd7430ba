import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { countTokens } from 'gpt-tokenizer/encoding/o200k_base';
import { SimModel } from '../../src/adapters/model/sim.ts';
import { HttpModel } from '../../src/adapters/model/http.ts';
import { SseDataParser } from '../../src/adapters/model/sse-data.ts';
import { createModel } from '../../src/adapters/model/factory.ts';
import { startSimModelServer } from '../../src/cli/sim-model.ts';
import { countPromptTokens, countTextTokens, messageText } from '../../src/core/tokens.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import { ModelError, type ChatMessage, type ModelBackend, type ModelChunk, type ModelRequest } from '../../src/ports/model.ts';

const messages: ChatMessage[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Tell me a story.' }];
const request = (over: Partial<ModelRequest> = {}): ModelRequest => ({ model: 'sim', messages, maxTokens: 30, ...over });

interface Collected { tokens: string[]; batches: number; text: string; usage: Extract<ModelChunk, { type: 'usage' }> | undefined; error: unknown }

async function collect(model: ModelBackend, req: ModelRequest, signal = new AbortController().signal, onToken?: (n: number) => void): Promise<Collected> {
  const out: Collected = { tokens: [], batches: 0, text: '', usage: undefined, error: undefined };
  try {
    for await (const chunk of model.stream(req, signal)) {
      if (chunk.type === 'tokens') {
        assert.ok(chunk.texts.length > 0, 'a tokens chunk is never empty');
        out.batches++;
        for (const text of chunk.texts) { out.tokens.push(text); onToken?.(out.tokens.length); }
      } else if (chunk.type === 'usage') {
        assert.equal(out.usage, undefined, 'usage comes once');
        out.usage = chunk;
      }
    }
  } catch (e) { out.error = e; }
  out.text = out.tokens.join('');
  return out;
}

const fast = () => new SimModel({ ttftMs: 0, itlMs: 0 });

describe('SimModel', () => {
  it('is deterministic: same seed gives the same text, another seed other text', async () => {
    const a = await collect(fast(), request({ seed: 42 }));
    const b = await collect(fast(), request({ seed: 42, messages: [{ role: 'user', content: 'something else' }] }));
    const c = await collect(fast(), request({ seed: 43 }));
    assert.equal(a.text, b.text);
    assert.notEqual(a.text, c.text);
  });

  it('without a seed, derives one from the messages', async () => {
    const a = await collect(fast(), request());
    const b = await collect(fast(), request());
    const c = await collect(fast(), request({ messages: [{ role: 'user', content: 'Tell me another story.' }] }));
    assert.equal(a.text, b.text);
    assert.notEqual(a.text, c.text);
  });

  it('writes readable sentences of words, exactly maxTokens tokens, then usage', async () => {
    const r = await collect(fast(), request({ maxTokens: 200, seed: 7 }));
    assert.equal(r.error, undefined);
    assert.equal(r.tokens.length, 200);
    assert.match(r.text, /^[A-Z][a-z]+ [a-z]+/);
    assert.match(r.text, /[a-z][.!?] [A-Z][a-z]+/, 'several capitalised sentences');
    assert.ok(r.tokens.slice(1).every((t) => /^( [A-Za-z]+|[.,!?])$/.test(t)), 'each token is a word piece or punctuation');
    assert.ok(r.text.split(' ').length > 100);
    assert.deepEqual(r.usage, { type: 'usage', promptTokens: countPromptTokens(messages), completionTokens: 200, finishReason: 'length', usageSource: 'reported' });
  });

  it('a shorter maxTokens yields a prefix of the same text', async () => {
    const long = await collect(fast(), request({ seed: 9, maxTokens: 50 }));
    const short = await collect(fast(), request({ seed: 9, maxTokens: 10 }));
    assert.deepEqual(short.tokens, long.tokens.slice(0, 10));
  });

  it('abort mid-stream ends the iterator promptly without usage', async () => {
    const model = new SimModel({ ttftMs: 0, itlMs: 20 });
    const ac = new AbortController();
    const started = Date.now();
    const r = await collect(model, request({ maxTokens: 10_000 }), ac.signal, (n) => { if (n === 3) ac.abort(); });
    assert.equal(r.error, undefined);
    assert.equal(r.tokens.length, 3);
    assert.equal(r.usage, undefined);
    assert.ok(Date.now() - started < 5_000, 'did not run to maxTokens');
  });

  it('abort during the time to first token ends it at once', async () => {
    const model = new SimModel({ ttftMs: 60_000, itlMs: 0 });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 20);
    const started = Date.now();
    const r = await collect(model, request(), ac.signal);
    assert.deepEqual([r.tokens.length, r.usage, r.error], [0, undefined, undefined]);
    assert.ok(Date.now() - started < 5_000, 'did not wait out the time to first token');
  });

  it('abort with no inter-token delay still gets a chance to land', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 5);
    const r = await collect(fast(), request({ maxTokens: 50_000_000 }), ac.signal);
    assert.equal(r.usage, undefined);
    assert.ok(r.tokens.length < 50_000_000);
  });

  it('honours ttft and itl (lower bounds)', async () => {
    const model = new SimModel({ ttftMs: 60, itlMs: 15 });
    const started = Date.now();
    let firstAt = 0;
    const r = await collect(model, request({ maxTokens: 5 }), undefined, (n) => { if (n === 1) firstAt = Date.now(); });
    const total = Date.now() - started;
    assert.ok(firstAt - started >= 55, `first token after ${firstAt - started} ms`);
    assert.ok(total >= 60 + 4 * 15 - 10, `whole stream took ${total} ms`);
    assert.equal(r.usage?.completionTokens, 5);
    assert.equal(r.batches, 5, 'with an inter-token delay each token is its own chunk');
  });

  it('tokens produced without a pause leave together, a turn of the event loop at a time', async () => {
    const r = await collect(fast(), request({ maxTokens: 150, seed: 3 }));
    assert.equal(r.tokens.length, 150);
    assert.equal(r.batches, 3, '64 + 64 + 22');
  });

  it('stop_probability=1 ends at the first sentence end with finishReason stop', async () => {
    const model = await createModel('sim://?stop_probability=1', { ttftMs: 0, itlMs: 0 });
    const r = await collect(model, request({ maxTokens: 500, seed: 3 }));
    assert.match(r.text, /[.!?]$/);
    assert.equal(r.text.match(/[.!?]/g)?.length, 1);
    assert.equal(r.usage?.finishReason, 'stop');
    assert.equal(r.usage?.completionTokens, r.tokens.length);
  });

  it('a stop string ends the answer before it with finishReason stop', async () => {
    const full = await collect(fast(), request({ seed: 11, maxTokens: 40 }));
    const stopAt = 10;
    const stop = full.tokens[stopAt] as string;
    const r = await collect(fast(), request({ seed: 11, maxTokens: 40, stop: [stop] }));
    assert.ok(r.tokens.length <= stopAt);
    assert.ok(!r.text.includes(stop));
    assert.equal(r.usage?.finishReason, 'stop');
    assert.equal(r.usage?.completionTokens, r.tokens.length);
  });

  it('serves sim plus configured models', async () => {
    assert.deepEqual(await new SimModel({ ttftMs: 0, itlMs: 0, models: ['llama-3', 'sim'] }).models(), ['sim', 'llama-3']);
    assert.deepEqual(await (await createModel('sim://?models=a,b', { ttftMs: 0, itlMs: 0, models: ['c'] })).models(), ['sim', 'c', 'a', 'b']);
  });
});

describe('SimModel failure injection (sim:// URL)', () => {
  it('fail_rate=1 fails every stream with a transient ModelError before the first token', async () => {
    const model = await createModel('sim://?fail_rate=1', { ttftMs: 0, itlMs: 0 });
    const r = await collect(model, request());
    assert.ok(r.error instanceof ModelError);
    assert.equal(r.error.kind, 'transient');
    assert.equal(r.tokens.length, 0);
  });

  it('fail_after=N fails after exactly N tokens', async () => {
    const model = await createModel('sim://?fail_after=4', { ttftMs: 0, itlMs: 0 });
    const r = await collect(model, request({ maxTokens: 20 }));
    assert.ok(r.error instanceof ModelError && r.error.kind === 'transient');
    assert.equal(r.tokens.length, 4);
    assert.equal(r.usage, undefined);
  });

  it('fail_rate draws are seeded: the same pattern every run, and some pass', async () => {
    const pattern = async () => {
      const model = await createModel('sim://?fail_rate=0.5&fail_seed=5', { ttftMs: 0, itlMs: 0 });
      const out: boolean[] = [];
      for (let i = 0; i < 20; i++) out.push((await collect(model, request({ maxTokens: 2 }))).error instanceof ModelError);
      return out;
    };
    const a = await pattern();
    assert.deepEqual(a, await pattern());
    assert.ok(a.includes(true) && a.includes(false), a.join());
  });

  it('fail_count limits the injected failures (fail once, then succeed)', async () => {
    const model = await createModel('sim://?fail_rate=1&fail_count=1&fail_kind=permanent', { ttftMs: 0, itlMs: 0 });
    const first = await collect(model, request());
    assert.ok(first.error instanceof ModelError && first.error.kind === 'permanent');
    const second = await collect(model, request());
    assert.equal(second.error, undefined);
    assert.equal(second.usage?.completionTokens, 30);
  });

  it('URL options override the configured pacing', async () => {
    const model = await createModel('sim://?ttft_ms=80&itl_ms=0', { ttftMs: 0, itlMs: 0 });
    const started = Date.now();
    await collect(model, request({ maxTokens: 1 }));
    assert.ok(Date.now() - started >= 75);
  });

  it('bad options and unknown schemes are configuration errors', async () => {
    await assert.rejects(createModel('sim://?fail_rate=2', { ttftMs: 0, itlMs: 0 }), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
    await assert.rejects(createModel('sim://?ttft_ms=abc', { ttftMs: 0, itlMs: 0 }), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
    await assert.rejects(createModel('grpc://x:1', { ttftMs: 0, itlMs: 0 }), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
    await assert.rejects(createModel('not a url', { ttftMs: 0, itlMs: 0 }), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
  });
});

describe('token counting', () => {
  it('is a real tokenizer, not a word count', () => {
    assert.equal(countTextTokens('hello world'), 2);
    assert.ok(countTextTokens('antidisestablishmentarianism') > 1);
    assert.equal(countTextTokens(''), 0);
  });

  it('treats special-token lookalikes in user text as plain text', () => {
    assert.ok(countTextTokens('a <|endoftext|> b') > 3);
  });

  it('adds the chat template overhead: 3 per message, 1 per name, 3 to prime the reply', () => {
    const text = (m: ChatMessage) => countTextTokens(m.role) + countTextTokens(messageText(m));
    const one: ChatMessage = { role: 'user', content: 'hello world' };
    assert.equal(countPromptTokens([one]), 3 + text(one) + 3);
    assert.equal(countPromptTokens([one]), 9);
    const named: ChatMessage = { role: 'user', content: 'hello world', name: 'bob' };
    assert.equal(countPromptTokens([named]), 3 + text(named) + 1 + countTextTokens('bob') + 3);
    assert.equal(countPromptTokens(messages), messages.reduce((n, m) => n + 3 + text(m), 3));
  });

  it('counts long prompts exactly, and pathological 1 MiB runs without quadratic work', () => {
    const words = ['alpha', 'beta,', 'Gamma', 'delta.', '\n\n', 'epsilon', '42', 'zeta!', '  eta', 'théta', '🌍'];
    let text = '';
    for (let i = 0; text.length < 300_000; i++) text += `${words[(i * 7) % words.length]} `;
    assert.equal(countTextTokens(text), countTokens(text));
    const run = 'x'.repeat(1 << 20);
    const n = countTextTokens(run);
    assert.ok(n > 100_000 && n < 200_000, String(n));
    assert.ok(countTextTokens(' '.repeat(1 << 20)) > 0);
  });
});

describe('SseDataParser', () => {
  it('splits events across arbitrary chunk boundaries and CRLF', () => {
    const raw = 'data: {"a":1}\r\n\r\n: ping\n\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n';
    for (let size = 1; size <= raw.length; size++) {
      const parser = new SseDataParser();
      const out: string[] = [];
      for (let i = 0; i < raw.length; i += size) out.push(...parser.push(raw.slice(i, i + size)));
      assert.deepEqual(out, ['{"a":1}', 'line1\nline2', '[DONE]'], `chunk size ${size}`);
    }
  });
});

// ---- HttpModel against a scripted upstream --------------------------------------------------

interface Scripted { url: string; closes: string[]; bodies: Array<{ path: string; body: Record<string, unknown>; auth: string | undefined }>; close(): Promise<void> }

const sseChunk = (content: string | null, finish: string | null = null) =>
  `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: finish }] })}\n\n`;

/** A tiny upstream whose behaviour is chosen by the first path segment of the base URL. */
async function scriptedUpstream(): Promise<Scripted> {
  const closes: string[] = [];
  const bodies: Scripted['bodies'] = [];
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const mode = (req.url ?? '').split('/')[1] ?? '';
    res.on('close', () => { if (!res.writableFinished) closes.push(mode); });
    if (req.method === 'GET') { res.writeHead(503).end(); return; }
    bodies.push({ path: req.url ?? '', body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>, auth: req.headers.authorization });
    const json = (status: number, body: object) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const sse = () => res.writeHead(200, { 'content-type': 'text/event-stream' });
    switch (mode) {
      case '500': return json(500, { error: { message: 'engine overloaded' } });
      case '429': return json(429, { error: { message: 'slow down' } });
      case '400': return json(400, { error: { message: "model 'nope' does not exist", type: 'invalid_request_error' } });
      case '401': res.writeHead(401).end('bad key'); return;
      case 'cut': sse(); res.write(sseChunk('Hello')); setTimeout(() => res.socket?.destroy(), 20); return;
      case 'nodone': sse(); res.end(sseChunk('Hello') + sseChunk(' there')); return;
      case 'nousage': sse(); res.end(sseChunk('Hello') + sseChunk(' wonderful') + sseChunk(' world') + sseChunk(null, 'stop') + 'data: [DONE]\n\n'); return;
      case 'midError': sse(); res.end(sseChunk('Hi') + `data: ${JSON.stringify({ error: { message: 'oom' } })}\n\n`); return;
      case 'hang': sse(); res.write(sseChunk('Hello')); return; // never ends: the client must close it
      case 'bytes': {
        sse();
        const payload = Buffer.from(sseChunk('héllo') + sseChunk(' 🌍 wörld') + sseChunk(null, 'length')
          + `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 11, completion_tokens: 3, total_tokens: 14 } })}\n\ndata: [DONE]\n\n`);
        for (let i = 0; i < payload.length; i++) { res.write(payload.subarray(i, i + 1)); await new Promise((r) => setImmediate(r)); }
        res.end();
        return;
      }
      default: return json(404, { error: { message: 'no such mode' } });
    }
  };
  const server = http.createServer((req, res) => { void handle(req, res); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`, closes, bodies,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

describe('HttpModel', () => {
  let sim: { url: string; close(): Promise<void> };
  let upstream: Scripted;
  const models: HttpModel[] = [];
  const httpModel = (baseUrl: string, extra: { apiKey?: string; models?: string[] } = {}) => {
    const m = new HttpModel({ baseUrl, models: extra.models ?? [], ...(extra.apiKey ? { apiKey: extra.apiKey } : {}) });
    models.push(m);
    return m;
  };
  before(async () => {
    sim = await startSimModelServer({ host: '127.0.0.1', port: 0, ttftMs: 0, itlMs: 0 });
    upstream = await scriptedUpstream();
  });
  after(async () => {
    await Promise.all(models.map((m) => m.close()));
    await sim.close();
    await upstream.close();
  });

  it('round-trips tokens and usage through the sim server', async () => {
    const req = request({ seed: 21, maxTokens: 25 });
    const direct = await collect(fast(), req);
    const viaHttp = await collect(httpModel(sim.url), req);
    assert.equal(viaHttp.error, undefined);
    assert.deepEqual(viaHttp.tokens, direct.tokens);
    assert.deepEqual(viaHttp.usage, direct.usage);
  });

  it('lists the upstream models, and falls back to the configured list when it cannot', async () => {
    assert.deepEqual(await httpModel(sim.url).models(), ['sim']);
    assert.deepEqual(await httpModel(`${upstream.url}/500/v1`, { models: ['fallback'] }).models(), ['fallback']);
  });

  it('sends an OpenAI streaming request with usage, parameters and the API key', async () => {
    await collect(httpModel(`${upstream.url}/nousage/v1`, { apiKey: 'sk-up' }), request({ maxTokens: 7, temperature: 0.5, topP: 0.9, stop: ['\n'], seed: 1 }));
    const sent = upstream.bodies.at(-1);
    assert.equal(sent?.path, '/nousage/v1/chat/completions');
    assert.equal(sent?.auth, 'Bearer sk-up');
    assert.deepEqual(sent?.body, {
      model: 'sim', messages, stream: true, stream_options: { include_usage: true }, max_tokens: 7, temperature: 0.5, top_p: 0.9, stop: ['\n'], seed: 1,
    });
  });

  it('counts usage itself when the upstream omits it', async () => {
    const r = await collect(httpModel(`${upstream.url}/nousage/v1`), request());
    assert.equal(r.text, 'Hello wonderful world');
    assert.ok(r.batches < r.tokens.length, 'the tokens of one upstream write travel as one chunk');
    assert.deepEqual(r.usage, { type: 'usage', promptTokens: countPromptTokens(messages), completionTokens: countTextTokens('Hello wonderful world'), finishReason: 'stop', usageSource: 'counted' });
    assert.ok((r.usage?.completionTokens ?? 0) > 0);
  });

  it('parses a stream delivered one byte at a time (multi-byte characters split)', async () => {
    const r = await collect(httpModel(`${upstream.url}/bytes/v1`), request());
    assert.equal(r.error, undefined);
    assert.deepEqual(r.tokens, ['héllo', ' 🌍 wörld']);
    assert.deepEqual(r.usage, { type: 'usage', promptTokens: 11, completionTokens: 3, finishReason: 'length', usageSource: 'reported' });
  });

  it('classifies 5xx and 429 as transient, other 4xx as permanent with the upstream message', async () => {
    const kinds: Array<[string, 'transient' | 'permanent', number, RegExp]> = [
      ['500', 'transient', 500, /engine overloaded/],
      ['429', 'transient', 429, /slow down/],
      ['400', 'permanent', 400, /model 'nope' does not exist/],
      ['401', 'permanent', 401, /bad key/],
    ];
    for (const [mode, kind, status, message] of kinds) {
      const r = await collect(httpModel(`${upstream.url}/${mode}/v1`), request());
      assert.ok(r.error instanceof ModelError, mode);
      assert.equal(r.error.kind, kind, mode);
      assert.equal(r.error.status, status, mode);
      assert.match(r.error.message, message);
    }
  });

  it('connection refused, a socket cut mid-stream, a stream without [DONE] and an error event are transient', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = await collect(httpModel(`http://127.0.0.1:${port}/v1`), request());
    assert.ok(refused.error instanceof ModelError && refused.error.kind === 'transient');

    for (const mode of ['cut', 'nodone', 'midError']) {
      const r = await collect(httpModel(`${upstream.url}/${mode}/v1`), request());
      assert.ok(r.error instanceof ModelError, mode);
      assert.equal(r.error.kind, 'transient', mode);
      assert.equal(r.usage, undefined, mode);
      assert.ok(r.tokens.length >= 1, mode);
    }
    // Tokens that arrived in the same read as the error were still produced: they reach the caller.
    assert.deepEqual((await collect(httpModel(`${upstream.url}/midError/v1`), request())).tokens, ['Hi']);
  });

  it('abort closes the upstream request promptly and ends without usage or error', async () => {
    const ac = new AbortController();
    const before = upstream.closes.filter((m) => m === 'hang').length;
    const r = await collect(httpModel(`${upstream.url}/hang/v1`), request(), ac.signal, () => ac.abort());
    assert.deepEqual([r.tokens, r.usage, r.error], [['Hello'], undefined, undefined]);
    for (let i = 0; i < 100 && upstream.closes.filter((m) => m === 'hang').length === before; i++) await new Promise((res) => setTimeout(res, 10));
    assert.equal(upstream.closes.filter((m) => m === 'hang').length, before + 1, 'upstream saw the request close');
  });

  it('leaving the loop early also closes the upstream request', async () => {
    const before = upstream.closes.filter((m) => m === 'hang').length;
    for await (const chunk of httpModel(`${upstream.url}/hang/v1`).stream(request(), new AbortController().signal)) {
      assert.equal(chunk.type, 'tokens');
      break;
    }
    for (let i = 0; i < 100 && upstream.closes.filter((m) => m === 'hang').length === before; i++) await new Promise((res) => setTimeout(res, 10));
    assert.equal(upstream.closes.filter((m) => m === 'hang').length, before + 1);
  });

  it('createModel picks HttpModel for http:// URLs', async () => {
    const model = await createModel(sim.url, { ttftMs: 0, itlMs: 0 });
    try {
      const r = await collect(model, request({ maxTokens: 3 }));
      assert.equal(r.usage?.completionTokens, 3);
    } finally { await model.close(); }
  });
});

// ---- the standalone sim server is OpenAI-compatible ------------------------------------------

describe('sim-model server', () => {
  let sim: { url: string; close(): Promise<void> };
  let client: OpenAI;
  before(async () => {
    sim = await startSimModelServer({ host: '127.0.0.1', port: 0, ttftMs: 1, itlMs: 0 });
    client = new OpenAI({ baseURL: sim.url, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => { await sim.close(); });

  it('answers a non-streamed chat completion through the official SDK', async () => {
    const c = await client.chat.completions.create({ model: 'sim', messages: [{ role: 'user', content: 'hello world' }], max_tokens: 12, seed: 5 });
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.choices[0]?.message.role, 'assistant');
    assert.match(c.choices[0]?.message.content ?? '', /^[A-Z][a-z]+ /);
    assert.equal(c.choices[0]?.finish_reason, 'length');
    assert.deepEqual(c.usage, { prompt_tokens: 9, completion_tokens: 12, total_tokens: 21 });
  });

  it('streams a chat completion with include_usage through the official SDK', async () => {
    const stream = await client.chat.completions.create({
      model: 'sim', messages: [{ role: 'user', content: 'hello world' }], max_tokens: 12, seed: 5, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let finish: string | null | undefined;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, 'chat.completion.chunk');
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    const plain = await client.chat.completions.create({ model: 'sim', messages: [{ role: 'user', content: 'hello world' }], max_tokens: 12, seed: 5 });
    assert.equal(text, plain.choices[0]?.message.content);
    assert.ok(chunks >= 12 + 2);
    assert.equal(finish, 'length');
    assert.deepEqual(usage, { prompt_tokens: 9, completion_tokens: 12, total_tokens: 21 });
  });

  it('answers the prompt form and lists models through the official SDK', async () => {
    const c = await client.completions.create({ model: 'sim', prompt: 'hello world', max_tokens: 4 });
    assert.equal(c.object, 'text_completion');
    assert.ok((c.choices[0]?.text ?? '').length > 0);
    assert.deepEqual(c.usage, { prompt_tokens: 2, completion_tokens: 4, total_tokens: 6 });
    const list = await client.models.list();
    assert.deepEqual(list.data.map((m) => m.id), ['sim']);
  });

  it('returns OpenAI-shaped errors for bad input', async () => {
    const post = (path: string, body: string) => fetch(`${sim.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const bad = await post('/chat/completions', '{not json');
    assert.equal(bad.status, 400);
    const badJson = (await bad.json()) as { error: { message: string; type: string } };
    assert.equal(badJson.error.type, 'invalid_request_error');
    const noMessages = await post('/chat/completions', JSON.stringify({ model: 'sim', messages: [] }));
    assert.equal(noMessages.status, 400);
    assert.equal(((await noMessages.json()) as { error: { param: string } }).error.param, 'messages');
    const badMax = await post('/chat/completions', JSON.stringify({ model: 'sim', messages: [{ role: 'user', content: 'x' }], max_tokens: -1 }));
    assert.equal(badMax.status, 400);
    await badMax.body?.cancel();
    const missing = await fetch(`${sim.url}/nope`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    await assert.rejects(client.chat.completions.create({ model: 'sim', messages: [], max_tokens: 1 }), (e) => e instanceof OpenAI.BadRequestError);
  });
});
