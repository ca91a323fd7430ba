// The access log of a live gateway (pino output captured): one line per request with its id,
// user, route, status, duration and tokens where known; nothing when off (the default); sampled
// when a rate is set. Expected refusals (503 QUEUE_FULL) are info lines without a stack.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import Fastify from 'fastify';
import { parseConfig } from '../../src/config.ts';
import { createLogger } from '../../src/core/logger.ts';
import { registerAccessLog } from '../../src/http/access-log.ts';
import { api, createUserKey, readSse, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

type Line = Record<string, unknown>;

function logCapture() {
  const lines: Line[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) { for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l) as Line); cb(); },
  });
  return { lines, stream, access: () => lines.filter((l) => l.msg === 'access') };
}

const body = { model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] };
const INFO = 30;

describe('access log on', () => {
  const logs = logCapture();
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ accessLog: 'on', logLevel: 'info' }, { logger: createLogger('info', 'all', logs.stream) }); });
  after(async () => { await app?.stop(); });

  it('logs one line per request with id, user, route, status, duration and tokens', async () => {
    const key = await createUserKey(app.url, { id: 'carol', quota: { requests_per_day: 2 } });
    const call = api(app.url, key);
    const before = logs.access().length;

    const plain = await call('/v1/chat/completions', { method: 'POST', json: body });
    assert.equal(plain.status, 200);
    const plainUsage = ((await plain.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
    const streamed = await call('/v1/chat/completions', { method: 'POST', json: { ...body, stream: true } });
    assert.equal(streamed.status, 200);
    await readSse(streamed);
    const refused = await call('/v1/chat/completions', { method: 'POST', json: body });
    assert.equal(refused.status, 429);
    assert.equal((await api(app.url, 'sk-nobody')('/v1/models')).status, 401);

    const lines = await waitFor(async () => { const l = logs.access().slice(before); return l.length >= 4 && l; });
    assert.equal(lines.length, 4, JSON.stringify(lines));
    const [a, b, c, d] = lines as [Line, Line, Line, Line];
    for (const l of lines) {
      assert.equal(l.level, INFO);
      assert.equal(typeof l.duration_ms, 'number');
      assert.equal(l.method, l === d ? 'GET' : 'POST');
      assert.equal(l.err, undefined);
    }
    assert.deepEqual({ request_id: a.request_id, user: a.user, route: a.route, status: a.status, prompt_tokens: a.prompt_tokens, completion_tokens: a.completion_tokens },
      { request_id: plain.headers.get('x-request-id'), user: 'carol', route: '/v1/chat/completions', status: 200, prompt_tokens: plainUsage.prompt_tokens, completion_tokens: 4 });
    // A stream's headers were written outside Fastify: its id and tokens still reach the line.
    assert.deepEqual({ request_id: b.request_id, status: b.status, completion_tokens: b.completion_tokens }, { request_id: streamed.headers.get('x-request-id'), status: 200, completion_tokens: 4 });
    assert.equal(typeof b.prompt_tokens, 'number');
    assert.deepEqual({ user: c.user, status: c.status, tokens: c.completion_tokens }, { user: 'carol', status: 429, tokens: undefined });
    assert.deepEqual({ user: d.user, route: d.route, status: d.status }, { user: null, route: '/v1/models', status: 401 });
    // No line carries the key.
    assert.ok(!JSON.stringify(logs.lines).includes(key));
  });
});

describe('access log off (the default)', () => {
  const logs = logCapture();
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ logLevel: 'info' }, { logger: createLogger('info', 'all', logs.stream) }); });
  after(async () => { await app?.stop(); });

  it('writes no access lines', async () => {
    assert.equal(app.config.accessLog, 'off');
    assert.equal((await api(app.url)('/v1/chat/completions', { method: 'POST', json: body })).status, 200);
    assert.equal((await api(app.url)('/v1/models')).status, 200);
    assert.deepEqual(logs.access(), []);
  });
});

describe('expected refusals', () => {
  const logs = logCapture();
  let app: TestSluice;
  before(async () => {
    // One worker slot, a model slow to answer and a queue of one: the queue fills at once.
    app = await startTestSluice(
      { logLevel: 'info', queueMaxDepth: 1, worker: { concurrency: 1 }, sim: { ttftMs: 2000, itlMs: 1 } },
      { logger: createLogger('info', 'all', logs.stream) },
    );
  });
  after(async () => { await app?.stop(); });

  it('503 QUEUE_FULL is an info line without a stack, never an error line', async () => {
    const call = api(app.url);
    const status = await waitFor(async () => {
      const res = await call('/v1/requests', { method: 'POST', json: body });
      return res.status === 503 ? res : false;
    }, 15_000, 100);
    assert.equal(((await status.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_QUEUE_FULL');
    const refused = logs.lines.filter((l) => l.code === 'SLUICE_ERR_QUEUE_FULL');
    assert.ok(refused.length >= 1);
    for (const l of refused) {
      assert.equal(l.level, INFO, JSON.stringify(l));
      assert.equal(l.msg, 'request refused');
      assert.equal(l.err, undefined);
      assert.ok(!JSON.stringify(l).includes('    at '), 'no stack trace');
    }
    assert.deepEqual(logs.lines.filter((l) => (l.level as number) >= 50), []);
  });
});

describe('access log sampling', () => {
  it('parses off, on and a rate from the config and SLUICE_ACCESS_LOG', () => {
    assert.equal(parseConfig({}).accessLog, 'off');
    assert.equal(parseConfig({ accessLog: 'on' }).accessLog, 'on');
    assert.equal(parseConfig({ accessLog: '0.25' }).accessLog, 0.25);
    assert.equal(parseConfig({ accessLog: 0.01 }).accessLog, 0.01);
    assert.throws(() => parseConfig({ accessLog: 'sometimes' }), (e: Error & { code?: string }) => e.code === 'SLUICE_ERR_CONFIG' && /accessLog/.test(e.message));
    assert.throws(() => parseConfig({ accessLog: 2 }), (e: Error & { code?: string }) => e.code === 'SLUICE_ERR_CONFIG');
  });

  it('logs the share of requests its rate says', async () => {
    const logs = logCapture();
    const app = Fastify();
    // A fixed sequence of draws: with rate 0.3, the draws below it are logged.
    const draws = [0.1, 0.5, 0.29, 0.3, 0.9, 0.0];
    let i = 0;
    registerAccessLog(app, 0.3, createLogger('info', 'gateway', logs.stream), () => draws[i++ % draws.length]!);
    app.get('/x', async () => 'ok');
    for (let n = 0; n < draws.length; n++) assert.equal((await app.inject({ method: 'GET', url: '/x' })).statusCode, 200);
    await app.close();
    assert.equal(logs.access().length, 3);
  });
});
