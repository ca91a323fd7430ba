// OpenTelemetry tracing end to end: a client's W3C traceparent is the parent of the gateway's
// span; admission, reservation, queue wait, the worker's attempt, the model call, time to first
// token and settlement are spans of the same trace, exported over OTLP/HTTP JSON to a receiver made
// here; and the model backend (an OpenAI-compatible server made here) gets a traceparent of that trace.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { api, createUserKey, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number }

/** OTLP/JSON ids are hex; tolerate base64 (protobuf-JSON mapping) too. */
const hex = (id: string | undefined) => (!id ? '' : /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex'));

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

/** Collects the spans POSTed to /v1/traces (JSON encoding). */
function otlpReceiver() {
  const spans: OtlpSpan[] = [];
  const contentTypes: string[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') { res.writeHead(404).end(); return; }
      contentTypes.push(String(req.headers['content-type']));
      const json = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
      for (const rs of json.resourceSpans) for (const ss of rs.scopeSpans) for (const s of ss.spans) {
        spans.push({ ...s, traceId: hex(s.traceId), spanId: hex(s.spanId), parentSpanId: hex(s.parentSpanId) });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  return { server, spans, contentTypes };
}

/** A model backend streaming three tokens and usage, keeping each call's traceparent header. */
function modelBackend() {
  const traceparents: string[] = [];
  const server = http.createServer((req, res) => {
    req.resume().on('end', () => {
      if (req.url === '/v1/models') { res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":[{"id":"m1"}]}'); return; }
      traceparents.push(String(req.headers.traceparent ?? ''));
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const t of ['Hel', 'lo', '!']) res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: t } }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 3 } })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
  });
  return { server, traceparents };
}

describe('tracing (OTLP/HTTP)', () => {
  const receiver = otlpReceiver();
  const model = modelBackend();
  let app: TestSluice | undefined;
  before(async () => {
    const [otlpPort, modelPort] = await Promise.all([listen(receiver.server), listen(model.server)]);
    app = await startTestSluice({ modelUrl: `http://127.0.0.1:${modelPort}/v1`, models: ['m1'], tracing: { endpoint: `http://127.0.0.1:${otlpPort}` } });
  });
  after(async () => {
    await app?.stop();
    receiver.server.close();
    model.server.close();
  });

  it('one trace per request, parented by the client, reaching the model backend', async () => {
    const key = await createUserKey(app!.url, { id: 'tracy' });
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const clientSpan = '00f067aa0ba902b7';
    const res = await api(app!.url, key)('/v1/chat/completions', {
      method: 'POST', headers: { traceparent: `00-${traceId}-${clientSpan}-01` },
      json: { model: 'm1', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content, 'Hello!');
    await app!.stop(); // flushes the batch of spans
    app = undefined;

    const mine = await waitFor(async () => {
      const s = receiver.spans.filter((x) => x.traceId === traceId);
      return s.some((x) => x.name === 'sluice.settlement') && s.some((x) => x.name.startsWith('POST ')) && s;
    }, 10_000);
    assert.ok(receiver.contentTypes.every((t) => t.startsWith('application/json')), receiver.contentTypes.join());
    const byName = new Map(mine.map((s) => [s.name, s]));
    for (const name of ['POST /v1/chat/completions', 'sluice.admission', 'sluice.reservation', 'sluice.queue_wait', 'sluice.attempt', 'sluice.model', 'sluice.time_to_first_token', 'sluice.settlement']) {
      assert.ok(byName.has(name), `no span ${name} in the trace: ${[...byName.keys()].join(', ')}`);
    }
    // No span of this request went to another trace.
    const names = new Set(byName.keys());
    assert.deepEqual(receiver.spans.filter((s) => s.traceId !== traceId && names.has(s.name) && s.name !== 'POST /admin/users' && s.name !== 'POST /admin/keys'), []);

    const server = byName.get('POST /v1/chat/completions')!;
    assert.equal(server.parentSpanId, clientSpan, "the client's traceparent is the parent");
    const parentOf = (name: string) => byName.get(name)!.parentSpanId;
    assert.equal(parentOf('sluice.admission'), server.spanId);
    assert.equal(parentOf('sluice.reservation'), byName.get('sluice.admission')!.spanId);
    // The worker (another process in a real deployment) continues from the span stored with the job.
    assert.equal(parentOf('sluice.queue_wait'), server.spanId);
    assert.equal(parentOf('sluice.attempt'), server.spanId);
    const attempt = byName.get('sluice.attempt')!.spanId;
    assert.equal(parentOf('sluice.model'), attempt);
    assert.equal(parentOf('sluice.time_to_first_token'), attempt);
    assert.equal(parentOf('sluice.settlement'), attempt);

    // The model backend saw a traceparent of this trace: the model call's span.
    assert.equal(model.traceparents.length, 1);
    const [version, tid, sid, flags] = model.traceparents[0]!.split('-');
    assert.deepEqual([version, tid, sid, flags], ['00', traceId, byName.get('sluice.model')!.spanId, '01']);
  });
});

describe('tracing off (the default)', () => {
  const model = modelBackend();
  let app: TestSluice;
  before(async () => {
    const modelPort = await listen(model.server);
    app = await startTestSluice({ modelUrl: `http://127.0.0.1:${modelPort}/v1`, models: ['m1'] });
  });
  after(async () => { await app?.stop(); model.server.close(); });

  it('sends no traceparent upstream and stores none with the request', async () => {
    assert.equal(app.config.tracing.endpoint, undefined);
    const res = await api(app.url)('/v1/chat/completions', {
      method: 'POST', headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
      json: { model: 'm1', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(model.traceparents, ['']);
    const record = await app.store.getRequest(res.headers.get('x-request-id')!);
    assert.equal(record?.payload.traceparent, undefined);
  });
});
