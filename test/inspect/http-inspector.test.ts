// The HTTP inspector against a local test server: the documented request and response schema, a
// timeout, a circuit breaker that stops calling a failing inspector and lets one trial through
// after its cool-down, and answers that do not match the schema.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpInspector } from '../../src/adapters/inspector/http.ts';
import { createInspector } from '../../src/adapters/inspector/factory.ts';
import { InspectorError } from '../../src/ports/inspector.ts';
import { StreamRedactor } from '../../src/core/stream-redactor.ts';
import { parseConfig } from '../../src/config.ts';

type Behaviour = (body: Record<string, any>) => { status?: number; delayMs?: number; json?: unknown; raw?: string };

describe('HTTP inspector', () => {
  let server: Server;
  let endpoint: string;
  let behaviour: Behaviour;
  let seen: Record<string, any>[] = [];
  before(async () => {
    server = createServer(async (req: IncomingMessage, res) => {
      let raw = '';
      for await (const c of req) raw += c;
      const body = JSON.parse(raw) as Record<string, any>;
      seen.push(body);
      const b = behaviour(body);
      if (b.delayMs) await new Promise((r) => setTimeout(r, b.delayMs));
      if (res.destroyed) return;
      res.writeHead(b.status ?? 200, { 'content-type': 'application/json' }).end(b.raw ?? JSON.stringify(b.json ?? { findings: [] }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/inspect`;
  });
  after(async () => { server.closeAllConnections(); await new Promise((r) => server.close(r)); });
  beforeEach(() => { seen = []; });

  /** A server that flags every occurrence of "forbidden" (block) and "Bob" (redact). */
  const words: Behaviour = (body) => {
    const findings = [];
    const text = body.text as string;
    for (const [word, action] of [['forbidden', 'block'], ['Bob', 'redact']] as const) {
      for (let i = text.indexOf(word); i !== -1; i = text.indexOf(word, i + 1)) if (i >= body.from) findings.push({ type: word === 'Bob' ? 'name' : 'policy', start: i, end: i + word.length, action, ...(word === 'Bob' && { replacement: '[NAME]' }) });
    }
    return { json: { findings } };
  };

  it('sends the documented request and applies the findings it answers', async () => {
    behaviour = words;
    const inspector = new HttpInspector({ endpoint, timeoutMs: 1000, failures: 3, coolDownMs: 1000 });
    const v = await inspector.inspect({ text: 'ctx Hello Bob, hi', from: 4, final: true, requestId: 'r1', kind: 'completion' });
    assert.deepEqual(seen.find((b) => b.request_id === 'r1'), { request_id: 'r1', kind: 'completion', text: 'ctx Hello Bob, hi', from: 4, final: true });
    assert.deepEqual(v.findings, [{ type: 'name', start: 10, end: 13, action: 'redact', replacement: '[NAME]' }]);
    assert.equal(v.hold, 17);
  });

  it('with the built-in detector: findings of both, over a stream', async () => {
    behaviour = words;
    const inspector = createInspector(parseConfig({ inspection: { endpoint, timeoutMs: 1000 } }))!;
    assert.equal(inspector.name, 'pii+http');
    const r = new StreamRedactor(inspector, 'r2');
    let out = '';
    for (const p of ['Bob', ' wrote to a@', 'b.org', ' today']) out += (await r.push(p)).text;
    out += (await r.finish()).text;
    assert.equal(out, '[NAME] wrote to [REDACTED:EMAIL] today');
    const blocked = await inspector.inspect({ text: 'a forbidden word', from: 0, final: true, requestId: 'r3', kind: 'completion' });
    assert.equal(blocked.findings[0]?.action, 'block');
  });

  it('times out: InspectorError timeout after timeoutMs', async () => {
    behaviour = () => ({ delayMs: 500 });
    const inspector = new HttpInspector({ endpoint, timeoutMs: 100, failures: 5, coolDownMs: 1000 });
    const started = Date.now();
    await assert.rejects(inspector.inspect({ text: 'x', from: 0, final: true, requestId: 'r', kind: 'completion' }), (e: unknown) => e instanceof InspectorError && e.kind === 'timeout');
    assert.ok(Date.now() - started < 450, 'did not wait for the slow answer');
  });

  it('opens its circuit after consecutive failures, then lets one trial through after the cool-down', async () => {
    let now = 1_000_000;
    behaviour = () => ({ status: 503 });
    const inspector = new HttpInspector({ endpoint, timeoutMs: 1000, failures: 3, coolDownMs: 5000, now: () => now });
    const input = { text: 'x', from: 0, final: true, requestId: 'circuit', kind: 'completion' } as const;
    // Counted by request id: a late request of an earlier test (the timeout's) may still arrive.
    const calls = () => seen.filter((b) => b.request_id === 'circuit').length;
    for (let i = 0; i < 3; i++) await assert.rejects(inspector.inspect(input), (e: unknown) => e instanceof InspectorError && e.kind === 'unavailable');
    assert.equal(inspector.state(), 'open');
    await assert.rejects(inspector.inspect(input), (e: unknown) => e instanceof InspectorError && e.kind === 'circuit_open');
    assert.equal(calls(), 3, 'an open circuit does not call the inspector');
    now += 5001;
    behaviour = () => ({ json: { findings: [] } });
    assert.deepEqual((await inspector.inspect(input)).findings, []);
    assert.equal(calls(), 4);
    assert.equal(inspector.state(), 'healthy');
  });

  it('refuses answers outside the schema: bad JSON, a span outside the text, an unknown action', async () => {
    const inspector = new HttpInspector({ endpoint, timeoutMs: 1000, failures: 100, coolDownMs: 1000 });
    const input = { text: 'hello', from: 0, final: true, requestId: 'r', kind: 'completion' } as const;
    for (const b of [{ raw: 'not json' }, { json: { findings: [{ type: 'x', start: 2, end: 9 }] } }, { json: { findings: [{ type: 'x', start: 0, end: 1, action: 'explode' }] } }]) {
      behaviour = () => b;
      await assert.rejects(inspector.inspect(input), (e: unknown) => e instanceof InspectorError && e.kind === 'bad_response', JSON.stringify(b));
    }
  });

  it('an unreachable endpoint is unavailable', async () => {
    const inspector = new HttpInspector({ endpoint: 'http://127.0.0.1:9/inspect', timeoutMs: 1000, failures: 5, coolDownMs: 1000 });
    await assert.rejects(inspector.inspect({ text: 'x', from: 0, final: true, requestId: 'r', kind: 'prompt' }), (e: unknown) => e instanceof InspectorError && e.kind === 'unavailable');
  });
});
