// A resume always ends with the request's terminal event, exactly one of which is in the log:
// - in the window between the attempt's settle (the store says ended) and its terminal append
//   (issue #17: a resume there got no terminal event, or appended a second one);
// - with Last-Event-ID at or past the end of the log (issue #11 defect 8), on a completed request
//   and on a running one, for native SSE, ?format=openai and the WebSocket.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { isTerminal, type EventBody, type LogEvent } from '../../src/ports/bus.ts';
import { api, MASTER_KEY, readSse, startTestSluice, waitFor, type SseFrame, type TestSluice } from '../helpers/app.ts';

const body = (maxTokens: number) => ({ model: 'sim', max_tokens: maxTokens, messages: [{ role: 'user', content: 'hi' }] });

describe('a resume ends with the one terminal event', { timeout: 60_000 }, () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ sim: { ttftMs: 0, itlMs: 20 }, sse: { pingMs: 10 } }); });
  after(() => app.stop());

  const submit = async (maxTokens: number): Promise<string> => {
    const res = await api(app.url)('/v1/requests', { method: 'POST', json: body(maxTokens) });
    return ((await res.json()) as { request_id: string }).request_id;
  };
  const status = async (id: string): Promise<string> => ((await (await api(app.url)(`/v1/requests/${id}`)).json()) as { status: string }).status;
  const completedRequest = async (maxTokens: number): Promise<string> => {
    const id = await submit(maxTokens);
    await waitFor(async () => (await status(id)) === 'completed');
    return id;
  };
  const events = (id: string, lastEventId: number | undefined, query = ''): Promise<SseFrame[]> =>
    api(app.url)(`/v1/requests/${id}/events${query}`, { headers: lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) } }).then((r) => readSse(r));
  const terminalsIn = async (id: string): Promise<LogEvent[]> => (await app.bus.read(id, 0)).filter(isTerminal);

  it('in the window between the settle and the terminal append: the stream ends with it, and the log keeps one', async () => {
    const bus = app.bus;
    const append = bus.append.bind(bus);
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const held: Promise<LogEvent>[] = [];
    // The attempt's terminal append (the first one) waits until the resumes below are done (a slow
    // bus, a GC pause); the repairs' appends go through.
    bus.append = (requestId: string, event: EventBody) => {
      if (!isTerminal(event) || held.length > 0) return append(requestId, event);
      const p = gate.then(() => append(requestId, event));
      held.push(p);
      return p;
    };
    try {
      const id = await submit(5);
      await waitFor(async () => (await status(id)) === 'completed' && held.length > 0);
      assert.equal((await terminalsIn(id)).length, 0, 'the request ended in the store, its log has no terminal event yet');

      // Resumed right after the last token: the stream must not close without the terminal event.
      const atEnd = await events(id, 5);
      assert.deepEqual(atEnd.filter((f) => f.event === 'token'), []);
      assert.equal(atEnd.at(-1)!.event, 'completed');
      const fromStart = await events(id, 0);
      assert.equal(fromStart.filter((f) => f.event === 'token').length, 5);
      assert.equal(fromStart.at(-1)!.event, 'completed');
      assert.equal(fromStart.at(-1)!.id, atEnd.at(-1)!.id, 'both resumes got the same terminal event');

      release();
      const appended = await Promise.all(held);
      const terminals = await terminalsIn(id);
      assert.equal(terminals.length, 1, 'exactly one terminal event in the log');
      assert.equal(appended[0]!.seq, terminals[0]!.seq, "the attempt's append learned the existing terminal event");
      assert.equal(String(terminals[0]!.seq), atEnd.at(-1)!.id);
      const usage = JSON.parse(atEnd.at(-1)!.data).usage;
      assert.equal(usage.completion_tokens, 5);
    } finally {
      release();
      bus.append = append;
    }
  });

  it('Last-Event-ID at or past the end of a completed request: the terminal event at once (native SSE)', async () => {
    const id = await completedRequest(4);
    for (const lastId of [5, 6, 999]) {
      const frames = await events(id, lastId);
      assert.deepEqual(frames.filter((f) => f.event).map((f) => f.event), ['connected', 'completed'], `Last-Event-ID ${lastId}`);
      assert.equal(frames.at(-1)!.id, '5', 'the terminal event keeps its own id');
      assert.equal(JSON.parse(frames.at(-1)!.data).usage.completion_tokens, 4);
    }
  });

  it('Last-Event-ID past the end of a completed request: the finish chunk and [DONE] (?format=openai)', async () => {
    const id = await completedRequest(4);
    const frames = await events(id, 999, '?format=openai');
    assert.equal(frames.at(-1)!.data, '[DONE]');
    const chunks = frames.filter((f) => f.data.startsWith('{')).map((f) => JSON.parse(f.data));
    assert.ok(chunks.some((c) => typeof c.choices?.[0]?.finish_reason === 'string'), 'a chunk carries the finish reason');
    assert.ok(chunks.every((c) => (c.choices?.[0]?.delta?.content ?? '') === ''), 'no token is sent again');
  });

  it('Last-Event-ID past the end of a running request: the stream ends with the terminal event when it comes', async () => {
    const id = await submit(40);
    await waitFor(async () => (await app.bus.read(id, 0)).length > 0);
    const [native, openai] = await Promise.all([events(id, 999), events(id, 999, '?format=openai')]);
    assert.equal((await terminalsIn(id)).length, 1);
    assert.deepEqual(native.filter((f) => f.event).map((f) => f.event), ['connected', 'completed']);
    assert.equal(native.at(-1)!.id, '41');
    assert.equal(openai.at(-1)!.data, '[DONE]');
  });

  it('WebSocket resume past the end of a completed request gets the terminal event', async () => {
    const id = await completedRequest(3);
    const ws = new WebSocket(`${app.url.replace('http', 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${MASTER_KEY}` } });
    try {
      await new Promise((ok, fail) => { ws.once('open', ok); ws.once('error', fail); });
      const msgs: Record<string, unknown>[] = [];
      const done = new Promise<void>((ok) => ws.on('message', (m) => {
        const x = JSON.parse(String(m)) as Record<string, unknown>;
        msgs.push(x);
        if (x.type === 'completed' || x.type === 'error') ok();
      }));
      ws.send(JSON.stringify({ type: 'resume', request_id: id, after: 50 }));
      await done;
      assert.deepEqual(msgs.map((m) => m.type), ['completed']);
      assert.equal(msgs[0]!.sequence, 4);
    } finally {
      ws.close();
    }
  });
});
