// WebSocket hardening (issue #11): every frame validated into a catalogue error (never a crash),
// stream leases and a per-socket cap on follows, a per-socket message rate limit, the upgrade's
// Origin checked against the CORS allow-list, 426 without Upgrade, and auth by a first message.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MASTER_KEY, api, createUserKey, startTestSluice, usageWindows, type TestSluice } from '../helpers/app.ts';
import { connectWs, refusedUpgrade, type WsMessage } from '../helpers/ws-client.ts';
import { CorsPolicy } from '../../src/http/cors.ts';
import { loadConfig } from '../../src/config.ts';

const chat = (max_tokens = 5) => ({ model: 'sim', max_tokens, messages: [{ role: 'user', content: 'Write something long' }] });
const isError = (m: WsMessage) => m.type === 'error' && m.sequence === undefined;

describe('WebSocket: message validation, upgrade, origin, auth', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ corsOrigins: ['https://console.example.com'], ws: { authTimeoutMs: 400 } }); });
  after(() => app.stop());

  it('answers malformed frames with catalogue errors, keeps the socket usable, and the gateway serving', async () => {
    const c = await connectWs(app.url, { key: MASTER_KEY });
    const frames: [string, string, string | null][] = [
      ['null', 'SLUICE_ERR_VALIDATION', null],
      ['1', 'SLUICE_ERR_VALIDATION', null],
      ['"x"', 'SLUICE_ERR_VALIDATION', null],
      ['true', 'SLUICE_ERR_VALIDATION', null],
      ['[]', 'SLUICE_ERR_VALIDATION', null],
      ['{}', 'SLUICE_ERR_VALIDATION', 'type'],
      ['{"type":5}', 'SLUICE_ERR_VALIDATION', 'type'],
      ['{"type":"nope"}', 'SLUICE_ERR_VALIDATION', 'type'],
      ['{"type":"resume","request_id":{}}', 'SLUICE_ERR_VALIDATION', 'request_id'],
      ['{"type":"resume","request_id":"x","after":-1}', 'SLUICE_ERR_VALIDATION', 'after'],
      ['{"type":"cancel"}', 'SLUICE_ERR_VALIDATION', 'request_id'],
      ['{"type":"submit","request":null}', 'SLUICE_ERR_VALIDATION', 'request'],
      ['{"type":"submit","request":{"model":"sim","messages":[]}}', 'SLUICE_ERR_VALIDATION', 'request.messages'],
      ['not json', 'SLUICE_ERR_BAD_JSON', null],
      // Found by the fuzz bench: the key is stored with the request, so a NUL gave a 500 from the store.
      [JSON.stringify({ type: 'submit', request: chat(1), idempotency_key: 'k\u0000' }), 'SLUICE_ERR_INVALID_TEXT', 'idempotency_key'],
      [JSON.stringify({ type: 'submit', request: { ...chat(1), messages: [{ role: 'user', content: '\ud800' }] } }), 'SLUICE_ERR_INVALID_TEXT', 'request.messages.0.content'],
    ];
    for (const [frame] of frames) c.send(frame);
    c.ws.send(Buffer.from('{"type":"cancel","request_id":"x"}'), { binary: true });
    const errors = await waitForCount(c.messages, isError, frames.length + 1);
    assert.deepEqual(errors.slice(0, frames.length).map((e) => [e.error.code, e.error.param]), frames.map(([, code, param]) => [code, param]));
    assert.equal(errors[frames.length]!.error.code, 'SLUICE_ERR_BAD_JSON');
    for (const e of errors) assert.equal(e.error.type, 'invalid_request_error');

    c.send({ type: 'submit', id: 'after-garbage', request: chat(3) });
    const accepted = await c.next((m) => m.type === 'accepted' && m.id === 'after-garbage');
    await c.next((m) => m.type === 'completed' && m.request_id === accepted.request_id);
    assert.equal((await fetch(`${app.url}/healthz`)).status, 200);
    c.close();
  });

  it('a request id that is not the caller\'s gets a not-found error naming it', async () => {
    const c = await connectWs(app.url, { key: MASTER_KEY });
    c.send({ type: 'resume', request_id: 'no-such-request' });
    const e = await c.next(isError);
    assert.equal(e.error.code, 'SLUICE_ERR_REQUEST_NOT_FOUND');
    assert.equal(e.request_id, 'no-such-request');
    c.close();
  });

  it('GET /v1/ws without Upgrade is 426 with a catalogue body', async () => {
    const res = await api(app.url)('/v1/ws');
    assert.equal(res.status, 426);
    assert.equal(res.headers.get('upgrade'), 'websocket');
    const body = (await res.json()) as { error: { code: string; type: string } };
    assert.equal(body.error.code, 'SLUICE_ERR_UPGRADE_REQUIRED');
    assert.equal(body.error.type, 'invalid_request_error');
  });

  it('an upgrade from an origin off the allow-list is refused with 403; an allowed or absent Origin opens', async () => {
    const refused = await refusedUpgrade(app.url, { origin: 'https://evil.example', authorization: `Bearer ${MASTER_KEY}` });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'SLUICE_ERR_ORIGIN_NOT_ALLOWED');
    assert.equal(refused.body.error.type, 'permission_error');
    const allowed = await connectWs(app.url, { key: MASTER_KEY, headers: { origin: 'https://console.example.com' } });
    allowed.close();
    const noOrigin = await connectWs(app.url, { key: MASTER_KEY });
    noOrigin.close();
  });

  it('origin allow-list: empty allows none, * allows any', () => {
    assert.equal(new CorsPolicy([]).allows('https://a.example'), false);
    assert.equal(new CorsPolicy(['*']).allows('https://a.example'), true);
    assert.equal(new CorsPolicy(['https://a.example']).allows('https://b.example'), false);
  });

  it('without a key: other messages get MISSING_API_KEY until an auth message, then the socket works', async () => {
    const c = await connectWs(app.url, { key: null });
    c.send({ type: 'submit', id: 'early', request: chat(2) });
    const early = await c.next(isError);
    assert.equal(early.error.code, 'SLUICE_ERR_MISSING_API_KEY');
    assert.equal(early.id, 'early');
    c.send({ type: 'auth', api_key: MASTER_KEY });
    await c.next((m) => m.type === 'authenticated');
    c.send({ type: 'submit', id: 'later', request: chat(2) });
    const accepted = await c.next((m) => m.type === 'accepted' && m.id === 'later');
    await c.next((m) => m.type === 'completed' && m.request_id === accepted.request_id);
    c.close();
  });

  it('a wrong key in the auth message gets an error and close 4401', async () => {
    const c = await connectWs(app.url, { key: null });
    c.send({ type: 'auth', api_key: 'sk-wrong-key-0000000000000000' });
    const { code } = await c.closed;
    assert.equal(code, 4401);
    assert.equal(c.messages.find(isError)?.error.code, 'SLUICE_ERR_INVALID_API_KEY');
  });

  it('no auth message within ws.authTimeoutMs closes with 4401', async () => {
    const c = await connectWs(app.url, { key: null });
    const { code, reason } = await c.closed;
    assert.equal(code, 4401);
    assert.match(reason, /timed out/);
  });

  it('the key in ?api_key= still works (discouraged), a wrong header key closes with 4401', async () => {
    const c = await connectWs(app.url, { key: null, query: `?api_key=${MASTER_KEY}` });
    c.send({ type: 'submit', id: 'q', request: chat(2) });
    await c.next((m) => m.type === 'accepted' && m.id === 'q');
    c.close();
    const bad = await connectWs(app.url, { key: 'sk-wrong-key-0000000000000000' });
    assert.equal((await bad.closed).code, 4401);
  });
});

describe('WebSocket: stream leases and the per-socket cap', () => {
  let app: TestSluice;
  let key: string;
  // Long enough that two requests are surely still running when the third arrives.
  before(async () => {
    app = await startTestSluice({ sim: { ttftMs: 5, itlMs: 40 }, ws: { maxFollowsPerSocket: 2 } });
    key = await createUserKey(app.url, { id: 'ws-free', tier: 'free' });
  });
  after(() => app.stop());

  it('a free user (2 streams): the third submit and a third resume are refused and charge nothing; one more fits after one ends', async () => {
    const c = await connectWs(app.url, { key });
    c.send({ type: 'submit', id: 'a', request: chat(40) });
    const a = await c.next((m) => m.type === 'accepted' && m.id === 'a');
    c.send({ type: 'submit', id: 'b', request: chat(5) });
    const b = await c.next((m) => m.type === 'accepted' && m.id === 'b');
    const usedBefore = (await usageWindows(app.url, key)).daily_requests!.used;
    c.send({ type: 'submit', id: 'c', request: chat(5) });
    const refused = await c.next((m) => isError(m) && m.id === 'c');
    assert.equal(refused.error.code, 'SLUICE_ERR_STREAM_LIMIT');
    assert.equal(c.messages.some((m) => m.type === 'accepted' && m.id === 'c'), false);
    assert.equal((await usageWindows(app.url, key)).daily_requests!.used, usedBefore, 'a refused submit is not charged');

    // A resume of a request the socket already follows replaces that follow: not a third stream.
    c.send({ type: 'resume', request_id: a.request_id, after: 0 });
    // A second socket of the same user: its resume would be a third stream.
    const other = await connectWs(app.url, { key });
    other.send({ type: 'resume', request_id: b.request_id });
    const refusedResume = await other.next(isError);
    assert.equal(refusedResume.error.code, 'SLUICE_ERR_STREAM_LIMIT');
    assert.equal(refusedResume.request_id, b.request_id);

    await c.next((m) => m.type === 'completed' && m.request_id === b.request_id);
    c.send({ type: 'submit', id: 'd', request: chat(2) });
    const d = await c.next((m) => (m.type === 'accepted' || isError(m)) && m.id === 'd');
    assert.equal(d.type, 'accepted', JSON.stringify(d));
    assert.equal(c.messages.filter((m) => isError(m) && m.request_id === a.request_id).length, 0, 'the replacing resume was not refused');
    other.close();
    c.close();
  });

  it('closing a socket frees its leases', async () => {
    const c = await connectWs(app.url, { key });
    for (const id of ['x1', 'x2']) c.send({ type: 'submit', id, request: chat(40) });
    await c.next((m) => m.type === 'accepted' && m.id === 'x2');
    c.close();
    await c.closed;
    const next = await connectWs(app.url, { key });
    // Leases are released asynchronously after the close: allow a few tries.
    let accepted: WsMessage | undefined;
    for (let i = 0; i < 20 && !accepted; i++) {
      next.send({ type: 'submit', id: `y${i}`, request: chat(2) });
      const m = await next.next((x) => (x.type === 'accepted' || isError(x)) && x.id === `y${i}`);
      if (m.type === 'accepted') accepted = m; else await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(accepted, 'a submit after the close was accepted');
    next.close();
  });

  it('keys without a stream limit are capped per socket (ws.maxFollowsPerSocket)', async () => {
    const c = await connectWs(app.url, { key: MASTER_KEY });
    for (const id of ['m1', 'm2', 'm3']) c.send({ type: 'submit', id, request: chat(40) });
    const third = await c.next((m) => (m.type === 'accepted' || isError(m)) && m.id === 'm3');
    assert.equal(third.error?.code, 'SLUICE_ERR_STREAM_LIMIT');
    c.close();
  });
});

describe('WebSocket: per-socket message rate limit', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ ws: { messagesPerSecond: 1, messageBurst: 5 } }); });
  after(() => app.stop());

  it('messages over the rate get RATE_LIMITED unprocessed; a socket that keeps flooding is closed with 1008', async () => {
    const c = await connectWs(app.url, { key: MASTER_KEY });
    for (let i = 0; i < 8; i++) c.send({ type: 'cancel', request_id: `r${i}` });
    const errors = await waitForCount(c.messages, isError, 8);
    const limited = errors.filter((e) => e.error.code === 'SLUICE_ERR_RATE_LIMITED');
    assert.ok(limited.length >= 2, `at least 2 of 8 refused at 1/s with a burst of 5: ${JSON.stringify(errors)}`);
    assert.equal(errors.filter((e) => e.error.code === 'SLUICE_ERR_REQUEST_NOT_FOUND').length, 8 - limited.length, 'refused messages were not processed');
    for (let i = 0; i < 100; i++) c.send({ type: 'cancel', request_id: 'flood' });
    const { code, reason } = await c.closed;
    assert.equal(code, 1008);
    assert.match(reason, /too many messages/);
    assert.equal((await fetch(`${app.url}/healthz`)).status, 200);
  });
});

describe('WebSocket config', () => {
  it('ws settings have defaults and come from WS_* environment variables', () => {
    assert.deepEqual(loadConfig({}).ws, { maxFollowsPerSocket: 32, messagesPerSecond: 20, messageBurst: 50, maxBufferedBytes: 1024 * 1024, slowCloseMs: 10_000, authTimeoutMs: 10_000 });
    const c = loadConfig({ WS_MAX_FOLLOWS_PER_SOCKET: '4', WS_MESSAGES_PER_SECOND: '5', WS_MESSAGE_BURST: '6', WS_MAX_BUFFERED_BYTES: '65536', WS_SLOW_CLOSE_MS: '2000', WS_AUTH_TIMEOUT_MS: '3000' });
    assert.deepEqual(c.ws, { maxFollowsPerSocket: 4, messagesPerSecond: 5, messageBurst: 6, maxBufferedBytes: 65536, slowCloseMs: 2000, authTimeoutMs: 3000 });
  });
});

async function waitForCount(messages: WsMessage[], pred: (m: WsMessage) => boolean, n: number, timeoutMs = 15_000): Promise<WsMessage[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const hits = messages.filter(pred);
    if (hits.length >= n) return hits;
    if (Date.now() > end) throw new Error(`only ${hits.length} of ${n} messages: ${JSON.stringify(messages).slice(0, 2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('WebSocket: a key that cannot be checked', () => {
  it('closes with 1013 (try again later), not 4401, when the store cannot be reached', async () => {
    const app = await startTestSluice();
    try {
      const key = await createUserKey(app.url, { id: 'ws-store-down' });
      await app.store.close();
      const c = await connectWs(app.url, { key: null });
      c.send({ type: 'auth', api_key: key });
      const { code } = await c.closed;
      assert.equal(code, 1013, 'a good key whose check failed is not told it is unauthorized');
      const e = c.messages.find(isError);
      assert.ok(e && e.error.code !== 'SLUICE_ERR_INVALID_API_KEY', JSON.stringify(e));
    } finally {
      await app.stop().catch(() => {});
    }
  });
});
