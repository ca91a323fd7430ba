// CORS from config.corsOrigins and the security headers every response carries, on JSON routes,
// errors and hijacked SSE streams alike.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, readSse, startTestSluice, type TestSluice } from '../helpers/app.ts';

const CONSOLE = 'https://console.example.com';
const EVIL = 'https://evil.example.net';

function preflight(base: string, path: string, origin: string, method = 'POST', headers = 'authorization, content-type') {
  return fetch(base + path, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers } });
}

async function errorCode(res: Response): Promise<string> {
  return ((await res.json()) as { error: { code: string } }).error.code;
}

function assertSecurityHeaders(res: Response, what: string): void {
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff', what);
  assert.equal(res.headers.get('referrer-policy'), 'no-referrer', what);
}

describe('CORS with an allow-list', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ corsOrigins: [CONSOLE] }); });
  after(() => app.stop());

  it('answers an allowed preflight with 204 and the CORS headers, without a key', async () => {
    for (const path of ['/v1/chat/completions', '/v1/requests/abc/events', '/admin/users']) {
      const res = await preflight(app.url, path, CONSOLE);
      assert.equal(res.status, 204, path);
      assert.equal(res.headers.get('access-control-allow-origin'), CONSOLE);
      assert.match(res.headers.get('access-control-allow-methods') ?? '', /POST/);
      const allowed = (res.headers.get('access-control-allow-headers') ?? '').split(',').map((h) => h.trim());
      for (const h of ['authorization', 'content-type', 'x-api-key', 'idempotency-key', 'last-event-id', 'x-sluice-mode']) assert.ok(allowed.includes(h), h);
      assert.ok(Number(res.headers.get('access-control-max-age')) > 0);
      assert.match(res.headers.get('vary') ?? '', /origin/i);
      assert.equal(res.headers.get('access-control-allow-credentials'), null);
      assertSecurityHeaders(res, path);
    }
  });

  it('refuses a preflight from another origin with a 403 catalogue error', async () => {
    const res = await preflight(app.url, '/v1/chat/completions', EVIL);
    assert.equal(res.status, 403);
    assert.equal(await errorCode(res), 'SLUICE_ERR_ORIGIN_NOT_ALLOWED');
    assert.equal(res.headers.get('access-control-allow-origin'), null);
  });

  it('marks actual responses to the allowed origin, errors included, and exposes the gateway\'s headers', async () => {
    const ok = await api(app.url)('/v1/models', { headers: { origin: CONSOLE } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), CONSOLE);
    const exposed = ok.headers.get('access-control-expose-headers') ?? '';
    for (const h of ['x-request-id', 'retry-after', 'location', 'x-sluice-degraded', 'idempotent-replayed', 'x-ratelimit-remaining-tokens']) assert.match(exposed, new RegExp(`\\b${h}\\b`), h);
    const unauthorised = await fetch(`${app.url}/v1/models`, { headers: { origin: CONSOLE } });
    assert.equal(unauthorised.status, 401);
    assert.equal(unauthorised.headers.get('access-control-allow-origin'), CONSOLE, 'the page must be able to read the 401');
    const other = await api(app.url)('/v1/models', { headers: { origin: EVIL } });
    assert.equal(other.status, 200);
    assert.equal(other.headers.get('access-control-allow-origin'), null);
  });

  it('gives a streamed (SSE) response the CORS and security headers too', async () => {
    const res = await api(app.url)('/v1/chat/completions', {
      method: 'POST', headers: { origin: CONSOLE },
      json: { model: 'sim', max_tokens: 4, stream: true, messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    assert.equal(res.headers.get('access-control-allow-origin'), CONSOLE);
    assert.match(res.headers.get('access-control-expose-headers') ?? '', /x-request-id/);
    assertSecurityHeaders(res, 'sse');
    assert.match(res.headers.get('cache-control') ?? '', /no-store/);
    assert.match(res.headers.get('cache-control') ?? '', /no-transform/);
    const frames = await readSse(res);
    assert.equal(frames.at(-1)?.data, '[DONE]');
  });
});

describe('CORS wildcard', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ corsOrigins: ['*'] }); });
  after(() => app.stop());

  it('answers any origin with *', async () => {
    const res = await preflight(app.url, '/v1/requests', EVIL);
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    const actual = await api(app.url)('/v1/models', { headers: { origin: EVIL } });
    assert.equal(actual.headers.get('access-control-allow-origin'), '*');
  });
});

describe('CORS closed (default) and security headers', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice(); });
  after(() => app.stop());

  it('refuses every preflight with a 403 catalogue error (not a 404) and sends no CORS headers', async () => {
    const res = await preflight(app.url, '/v1/chat/completions', CONSOLE);
    assert.equal(res.status, 403);
    assert.equal(await errorCode(res), 'SLUICE_ERR_ORIGIN_NOT_ALLOWED');
    const actual = await api(app.url)('/v1/models', { headers: { origin: CONSOLE } });
    assert.equal(actual.status, 200);
    assert.equal(actual.headers.get('access-control-allow-origin'), null);
    assert.equal(actual.headers.get('access-control-expose-headers'), null);
  });

  it('puts nosniff on every response and no-store on JSON responses, keys above all', async () => {
    const call = api(app.url);
    const responses: Array<[string, Response]> = [
      ['healthz', await fetch(`${app.url}/healthz`)],
      ['models', await call('/v1/models')],
      ['not found', await call('/nope')],
      ['401', await fetch(`${app.url}/v1/models`)],
      ['admin list', await call('/admin/users')],
      ['new user', await call('/admin/users', { method: 'POST', json: { id: 'hdr-user', tier: 'pro' } })],
      ['new key', await call('/admin/keys', { method: 'POST', json: { user_id: 'hdr-user' } })],
    ];
    for (const [what, res] of responses) {
      assertSecurityHeaders(res, what);
      assert.equal(res.headers.get('cache-control'), 'no-store', what);
      await res.arrayBuffer();
    }
    assert.equal(responses.at(-1)![1].status, 201);
  });

  it('puts nosniff on native SSE streams', async () => {
    const res = await api(app.url)('/chat', { method: 'POST', json: { message: 'hi' } });
    assert.equal(res.status, 200);
    assertSecurityHeaders(res, '/chat');
    await readSse(res);
  });
});
