// Bad input: each case gets the right status and an OpenAI-shaped error with a stable code.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, startTestSluice, type TestSluice } from '../helpers/app.ts';

describe('bad input', () => {
  let app: TestSluice;
  let call: ReturnType<typeof api>;
  before(async () => { app = await startTestSluice({ bodyLimitBytes: 64 * 1024 }); call = api(app.url); });
  after(() => app.stop());

  async function expectError(res: Response, status: number, code: string) {
    const text = await res.text();
    assert.equal(res.status, status, `status for ${code}: ${text}`);
    const j = JSON.parse(text);
    assert.equal(j.error.code, code);
    assert.equal(typeof j.error.message, 'string');
    assert.ok(j.error.type);
  }
  const post = (path: string, body: string | object, headers: Record<string, string> = {}) =>
    call(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const ok = { model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] };

  for (const path of ['/v1/chat/completions', '/v1/requests']) {
    it(`${path}: malformed JSON -> 400 SLUICE_ERR_BAD_JSON`, async () => expectError(await post(path, '{"model": "sim",'), 400, 'SLUICE_ERR_BAD_JSON'));
    it(`${path}: wrong types -> 400 SLUICE_ERR_VALIDATION`, async () => {
      const res = await post(path, { ...ok, max_tokens: 'ten' });
      const j = await res.clone().json();
      assert.equal(j.error.param, 'max_tokens');
      await expectError(res, 400, 'SLUICE_ERR_VALIDATION');
    });
    it(`${path}: a field Sluice does not know -> 400 SLUICE_ERR_UNSUPPORTED_PARAM naming it`, async () => {
      const res = await post(path, { ...ok, top_k: 40 });
      assert.equal((await res.clone().json()).error.param, 'top_k');
      await expectError(res, 400, 'SLUICE_ERR_UNSUPPORTED_PARAM');
    });
    it(`${path}: an invalid chat field -> 400 naming it`, async () => {
      for (const [fields, param] of [
        [{ tools: [{ type: 'function', function: { name: 'bad name' } }] }, 'tools.0.function.name'],
        [{ n: 99 }, 'n'],
        [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'file:///etc/passwd' } }] }] }, 'messages.0.content.0.image_url.url'],
      ] as const) {
        const res = await post(path, { ...ok, ...fields });
        assert.equal((await res.clone().json()).error.param, param);
        await expectError(res, 400, 'SLUICE_ERR_VALIDATION');
      }
    });
    it(`${path}: missing messages -> 400`, async () => expectError(await post(path, { model: 'sim' }), 400, 'SLUICE_ERR_VALIDATION'));
    it(`${path}: empty messages -> 400`, async () => expectError(await post(path, { model: 'sim', messages: [] }), 400, 'SLUICE_ERR_VALIDATION'));
    it(`${path}: unknown model -> 404 SLUICE_ERR_UNKNOWN_MODEL`, async () => expectError(await post(path, { ...ok, model: 'gpt-17' }), 404, 'SLUICE_ERR_UNKNOWN_MODEL'));
    it(`${path}: max_tokens 0 and -5 -> 400`, async () => {
      await expectError(await post(path, { ...ok, max_tokens: 0 }), 400, 'SLUICE_ERR_VALIDATION');
      await expectError(await post(path, { ...ok, max_tokens: -5 }), 400, 'SLUICE_ERR_VALIDATION');
    });
    it(`${path}: body over the limit -> 413 SLUICE_ERR_BODY_TOO_LARGE`, async () => {
      const huge = { ...ok, messages: [{ role: 'user', content: 'x'.repeat(70 * 1024) }] };
      await expectError(await post(path, huge), 413, 'SLUICE_ERR_BODY_TOO_LARGE');
    });
    it(`${path}: no API key -> 401, wrong key -> 401`, async () => {
      await expectError(await fetch(app.url + path, { method: 'POST', body: JSON.stringify(ok) }), 401, 'SLUICE_ERR_MISSING_API_KEY');
      await expectError(await fetch(app.url + path, { method: 'POST', headers: { authorization: 'Bearer sk-nope' }, body: JSON.stringify(ok) }), 401, 'SLUICE_ERR_INVALID_API_KEY');
    });
  }

  it('the request body being a JSON array or scalar -> 400', async () => {
    await expectError(await post('/v1/requests', '[1,2]'), 400, 'SLUICE_ERR_VALIDATION');
    await expectError(await post('/v1/requests', '42'), 400, 'SLUICE_ERR_VALIDATION');
  });

  it('unknown request id -> 404; a malformed id -> 404', async () => {
    await expectError(await call('/v1/requests/7d0b2c1e-0000-4000-8000-000000000000'), 404, 'SLUICE_ERR_REQUEST_NOT_FOUND');
    await expectError(await call('/v1/requests/not-a-uuid'), 404, 'SLUICE_ERR_REQUEST_NOT_FOUND');
    await expectError(await call('/v1/requests/7d0b2c1e-0000-4000-8000-000000000000/events'), 404, 'SLUICE_ERR_REQUEST_NOT_FOUND');
    await expectError(await call('/v1/requests/7d0b2c1e-0000-4000-8000-000000000000', { method: 'DELETE' }), 404, 'SLUICE_ERR_REQUEST_NOT_FOUND');
  });

  it('a bogus Last-Event-ID -> 400 SLUICE_ERR_BAD_LAST_EVENT_ID', async () => {
    const r = await (await post('/v1/requests', ok)).json();
    await expectError(await call(`/v1/requests/${r.request_id}/events`, { headers: { 'last-event-id': 'abc' } }), 400, 'SLUICE_ERR_BAD_LAST_EVENT_ID');
    await expectError(await call(`/v1/requests/${r.request_id}/events?last_event_id=-3`), 400, 'SLUICE_ERR_BAD_LAST_EVENT_ID');
  });

  it('unknown route -> 404 SLUICE_ERR_ROUTE_NOT_FOUND; /healthz needs no key', async () => {
    await expectError(await call('/v1/nothing-here'), 404, 'SLUICE_ERR_ROUTE_NOT_FOUND');
    assert.equal((await fetch(`${app.url}/healthz`)).status, 200);
  });

  it('metrics are exposed in Prometheus format', async () => {
    const text = await (await fetch(`${app.url}/metrics`)).text();
    for (const name of ['sluice_http_requests_total', 'sluice_queue_depth', 'ml_tokens_processed_total', 'sluice_time_to_first_token_seconds', 'sluice_active_streams', 'sluice_quota_rejections_total']) {
      assert.match(text, new RegExp(`^# HELP ${name} `, 'm'));
    }
  });
});
