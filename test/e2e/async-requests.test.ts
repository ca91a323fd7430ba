// Asynchronous requests: 202 + id, status, native SSE with the eventsource client, resume with
// Last-Event-ID (running, finished, expired log), cancel, idempotency, /chat, WebSocket.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { MASTER_KEY, api, readSse, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

const body = (max_tokens = 40, content = 'Write something long') => ({ model: 'sim', max_tokens, messages: [{ role: 'user', content }] });

interface TokenEvent { sequence: number; token: string }

/** Collects native events with the eventsource package until `stopAfter` tokens or the end. */
function listen(url: string, opts: { stopAfterTokens?: number } = {}): Promise<{ tokens: TokenEvent[]; ids: string[]; completed?: Record<string, unknown>; errored?: Record<string, unknown>; connected: boolean }> {
  return new Promise((resolve, reject) => {
    const out = { tokens: [] as TokenEvent[], ids: [] as string[], connected: false } as Awaited<ReturnType<typeof listen>>;
    const es = new EventSource(url, { fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, authorization: `Bearer ${MASTER_KEY}` } }) });
    const finish = () => { es.close(); resolve(out); };
    es.addEventListener('connected', () => { out.connected = true; });
    es.addEventListener('token', (e) => {
      out.tokens.push(JSON.parse(e.data));
      out.ids.push(e.lastEventId);
      if (opts.stopAfterTokens && out.tokens.length >= opts.stopAfterTokens) finish();
    });
    es.addEventListener('completed', (e) => { out.completed = JSON.parse(e.data); finish(); });
    es.addEventListener('error', (e) => {
      const data = (e as MessageEvent).data;
      if (data) { out.errored = JSON.parse(data); finish(); } else if (es.readyState === EventSource.CLOSED) reject(new Error('SSE connection failed'));
    });
    setTimeout(() => { es.close(); reject(new Error('listen timed out')); }, 15_000).unref();
  });
}

describe('asynchronous requests', () => {
  let app: TestSluice;
  let call: ReturnType<typeof api>;
  before(async () => {
    app = await startTestSluice({ sim: { ttftMs: 5, itlMs: 15 } });
    call = api(app.url);
  });
  after(() => app.stop());

  async function submit(b = body(), headers: Record<string, string> = {}) {
    const res = await call('/v1/requests', { method: 'POST', json: b, headers });
    assert.equal(res.status, 202);
    return (await res.json()) as { request_id: string; status: string; links: { events: string } };
  }
  const status = async (id: string) => (await (await call(`/v1/requests/${id}`)).json()) as Record<string, any>;

  it('answers 202 queued, then running, then completed with result and usage', async () => {
    const r = await submit(body(30));
    assert.equal(r.status, 'queued');
    assert.match(r.links.events, new RegExp(r.request_id));
    await waitFor(async () => (await status(r.request_id)).status === 'running');
    const done = await waitFor(async () => { const s = await status(r.request_id); return s.status === 'completed' && s; });
    assert.equal(done.usage.completion_tokens, 30);
    assert.ok(done.result.length > 30);
    assert.equal(done.finish_reason, 'length');
  });

  it('streams native SSE: retry, connected, tokens with id and sequence, completed', async () => {
    const r = await submit(body(10));
    const frames = await readSse(await call(`/v1/requests/${r.request_id}/events`));
    assert.equal(frames[0]!.retry, 3000);
    assert.equal(frames[1]!.event, 'connected');
    const tokens = frames.filter((f) => f.event === 'token');
    assert.equal(tokens.length, 10);
    tokens.forEach((f, i) => { assert.equal(f.id, String(i + 1)); assert.equal(JSON.parse(f.data).sequence, i + 1); assert.equal(JSON.parse(f.data).done, false); });
    const last = frames.at(-1)!;
    assert.equal(last.event, 'completed');
    assert.equal(JSON.parse(last.data).done, true);
    assert.equal(JSON.parse(last.data).usage.completion_tokens, 10);
  });

  it('resumes with Last-Event-ID while running: every token exactly once (eventsource client)', async () => {
    const r = await submit(body(40));
    const first = await listen(`${app.url}/v1/requests/${r.request_id}/events`, { stopAfterTokens: 7 });
    assert.equal(first.connected, true);
    const n = first.tokens.at(-1)!.sequence;
    const rest = await listen(`${app.url}/v1/requests/${r.request_id}/events?last_event_id=${n}`);
    assert.ok(rest.completed, 'second connection reaches completed');
    const seqs = [...first.tokens, ...rest.tokens].map((t) => t.sequence);
    assert.deepEqual(seqs, Array.from({ length: 40 }, (_, i) => i + 1));
    const s = await status(r.request_id);
    assert.equal([...first.tokens, ...rest.tokens].map((t) => t.token).join(''), s.result);
  });

  it('resumes with the Last-Event-ID header after the request finished', async () => {
    const r = await submit(body(12));
    await waitFor(async () => (await status(r.request_id)).status === 'completed');
    const frames = await readSse(await call(`/v1/requests/${r.request_id}/events`, { headers: { 'last-event-id': '9' } }));
    const tokens = frames.filter((f) => f.event === 'token').map((f) => Number(f.id));
    assert.deepEqual(tokens, [10, 11, 12]);
    assert.equal(frames.at(-1)!.event, 'completed');
  });

  it('cancels a running request: the stream ends with a terminal event, status cancelled, partial usage', async () => {
    const r = await submit(body(200));
    const res = await call(`/v1/requests/${r.request_id}/events`);
    const framesP = readSse(res);
    await waitFor(async () => { const s = await status(r.request_id); return s.status === 'running' && s; });
    await new Promise((ok) => setTimeout(ok, 100));
    const del = await call(`/v1/requests/${r.request_id}`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    const frames = await framesP;
    const last = frames.at(-1)!;
    assert.equal(last.event, 'error');
    assert.equal(JSON.parse(last.data).status, 'cancelled');
    const produced = frames.filter((f) => f.event === 'token').length;
    const s = await waitFor(async () => { const x = await status(r.request_id); return x.status === 'cancelled' && x; });
    assert.ok(produced > 0 && produced < 200);
    assert.equal(s.usage.completion_tokens, produced, 'charged the tokens produced');
    const again = await call(`/v1/requests/${r.request_id}`, { method: 'DELETE' });
    assert.equal(again.status, 409);
    assert.equal((await again.json()).error.code, 'SLUICE_ERR_NOT_CANCELLABLE');
  });

  it('Idempotency-Key returns the same request; another body with the key is a conflict', async () => {
    const key = `idem-${Date.now()}`;
    const a = await submit(body(5, 'same'), { 'idempotency-key': key });
    const b = await submit(body(5, 'same'), { 'idempotency-key': key });
    assert.equal(a.request_id, b.request_id);
    const c = await call('/v1/requests', { method: 'POST', json: body(5, 'different'), headers: { 'idempotency-key': key } });
    assert.equal(c.status, 409);
    assert.equal((await c.json()).error.code, 'SLUICE_ERR_IDEMPOTENCY_CONFLICT');
  });

  it('POST /chat streams native SSE (the edge quick test)', async () => {
    const res = await call('/chat', { method: 'POST', json: { message: 'Hello there' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const frames = await readSse(res);
    assert.equal(frames.find((f) => f.event)!.event, 'connected');
    assert.ok(frames.filter((f) => f.event === 'token').length > 0);
    assert.equal(frames.at(-1)!.event, 'completed');
  });

  it('WebSocket: submit, tokens, completed; resume after a sequence', async () => {
    const ws = new WebSocket(`${app.url.replace('http', 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${MASTER_KEY}` } });
    const msgs: Record<string, any>[] = [];
    await new Promise((ok, fail) => { ws.once('open', ok); ws.once('error', fail); });
    const done = new Promise<void>((ok) => ws.on('message', (m) => { const x = JSON.parse(String(m)); msgs.push(x); if (x.type === 'completed') ok(); }));
    ws.send(JSON.stringify({ type: 'submit', id: 'c1', request: body(6) }));
    await done;
    const accepted = msgs.find((m) => m.type === 'accepted')!;
    assert.equal(accepted.id, 'c1');
    assert.deepEqual(msgs.filter((m) => m.type === 'token').map((m) => m.sequence), [1, 2, 3, 4, 5, 6]);
    msgs.length = 0;
    const resumed = new Promise<void>((ok) => ws.on('message', (m) => { if (JSON.parse(String(m)).type === 'completed') ok(); }));
    ws.send(JSON.stringify({ type: 'resume', request_id: accepted.request_id, after: 4 }));
    await resumed;
    assert.deepEqual(msgs.filter((m) => m.type === 'token').map((m) => m.sequence), [5, 6]);
    ws.close();
  });
});

describe('event log expiry', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ eventLog: { ttlSeconds: 1, maxLen: 1000 } }); });
  after(() => app.stop());

  it('a resume after the log expired gets the stored result, not an error', async () => {
    const call = api(app.url);
    const r = (await (await call('/v1/requests', { method: 'POST', json: body(5) })).json()) as { request_id: string };
    await waitFor(async () => (await (await call(`/v1/requests/${r.request_id}`)).json()).status === 'completed');
    await new Promise((ok) => setTimeout(ok, 2200));
    const frames = await readSse(await call(`/v1/requests/${r.request_id}/events`, { headers: { 'last-event-id': '2' } }));
    const last = frames.at(-1)!;
    assert.equal(last.event, 'completed');
    const data = JSON.parse(last.data);
    assert.equal(data.replayed_from, 'store');
    assert.equal(data.usage.completion_tokens, 5);
    assert.ok(data.result.length > 0);
  });

  it('in the OpenAI format, the stored answer comes as one chunk, then its finish reason and usage, then [DONE]', async () => {
    const call = api(app.url);
    const r = (await (await call('/v1/requests', { method: 'POST', json: body(5) })).json()) as { request_id: string };
    await waitFor(async () => (await (await call(`/v1/requests/${r.request_id}`)).json()).status === 'completed');
    const stored = (await (await call(`/v1/requests/${r.request_id}`)).json()) as { result: string; finish_reason: string; usage: { prompt_tokens: number; completion_tokens: number } };
    await new Promise((ok) => setTimeout(ok, 2200));
    const frames = await readSse(await call(`/v1/requests/${r.request_id}/events?format=openai`));
    assert.equal(frames.at(-1)!.data, '[DONE]');
    const chunks = frames.slice(0, -1).filter((f) => f.data !== '').map((f) => JSON.parse(f.data));
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), stored.result);
    assert.equal(chunks.filter((c) => c.choices[0]?.delta?.content).length, 1);
    assert.deepEqual(chunks.map((c) => c.choices[0]?.finish_reason).filter(Boolean), [stored.finish_reason]);
    const usage = chunks.find((c) => c.usage)?.usage;
    assert.deepEqual([usage?.prompt_tokens, usage?.completion_tokens], [stored.usage.prompt_tokens, stored.usage.completion_tokens]);
  });
});
