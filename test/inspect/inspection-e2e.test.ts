// Content inspection end to end through the gateway (embedded store, in-process scripted model):
// inline and hybrid deliver and log the redacted text (a resume shows nothing more), async stops
// the request on a finding and bills what was produced exactly once, a tier's mode applies to its
// users only, prompts are refused before admission, and an inspector without a verdict fails closed.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { api, createUserKey, ledgerRows, readSse, startTestSluice, usageWindows, waitFor, type SseFrame, type TestSluice } from '../helpers/app.ts';
import { pieces, ScriptedModel } from '../helpers/scripted-model.ts';

const CARD = '4111 1111 1111 1111';
const SCRIPTS = {
  card: `Your card ${CARD} was charged; write to billing@example.com or call +1 (415) 555-2671. Thanks!`,
  // Long enough that async inspection stops it well before its end.
  late: `${'All is well here. '.repeat(4)}Now the key sk-abcdefghijklmnop0123 leaks, ${'and the story goes on and on. '.repeat(30)}`,
  plain: 'Nothing to see here, only words.',
};
const REDACTED_CARD = 'Your card [REDACTED:CARD] was charged; write to [REDACTED:EMAIL] or call [REDACTED:PHONE]. Thanks!';

const TIER = { requestsPerDay: 1000, tokensPerDay: 1_000_000, requestsPerMonth: 10_000, tokensPerMonth: 10_000_000, maxTokens: 4096, concurrentStreams: 10, priority: 5 };

interface Frame { event?: string; id?: string; data: Record<string, any> }
const frames = (raw: SseFrame[]): Frame[] => raw.filter((f) => f.event).map((f) => ({ event: f.event!, ...(f.id && { id: f.id }), data: JSON.parse(f.data) }));
const tokensOf = (fs: Frame[]) => fs.filter((f) => f.event === 'token').map((f) => f.data.token as string).join('');

describe('content inspection through the gateway', () => {
  let app: TestSluice;
  const keys: Record<string, string> = {};
  before(async () => {
    app = await startTestSluice({
      inspection: { mode: 'disabled', bufferMs: 40, prompts: 'block' }, defaultTier: 'pro',
      tiers: { pro: TIER, inl: { ...TIER, inspection: 'inline' }, hyb: { ...TIER, inspection: 'hybrid' }, asy: { ...TIER, inspection: 'async' } },
    }, { model: new ScriptedModel(SCRIPTS, { pieceChars: 3, itlMs: 2 }) });
    for (const tier of ['pro', 'inl', 'hyb', 'asy']) keys[tier] = await createUserKey(app.url, { id: `user-${tier}`, tier });
  });
  after(() => app.stop());

  async function run(tier: string, script: string): Promise<{ id: string; events: Frame[] }> {
    const call = api(app.url, keys[tier]);
    const res = await call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens: 400, messages: [{ role: 'user', content: `script:${script}` }] } });
    assert.equal(res.status, 202, await res.clone().text());
    const { request_id: id } = (await res.json()) as { request_id: string };
    const events = frames(await readSse(await call(`/v1/requests/${id}/events`), (f) => f.event === 'completed' || f.event === 'error'));
    return { id, events };
  }
  const status = async (tier: string, id: string) => (await (await api(app.url, keys[tier])(`/v1/requests/${id}`)).json()) as Record<string, any>;

  it('disabled (the tier without a mode): the answer passes untouched', async () => {
    const { events } = await run('pro', 'card');
    assert.equal(tokensOf(events), SCRIPTS.card);
  });

  for (const tier of ['inl', 'hyb']) {
    it(`${tier === 'inl' ? 'inline' : 'hybrid'}: delivers, logs and stores the redacted text; a resume reveals nothing more; usage is the backend's count`, async () => {
      const { id, events } = await run(tier, 'card');
      assert.equal(tokensOf(events), REDACTED_CARD);
      const done = events.at(-1)!;
      assert.equal(done.event, 'completed');
      assert.equal(done.data.usage.completion_tokens, pieces(SCRIPTS.card, 3).length, 'billed what the backend produced, whatever redaction did');
      const s = await status(tier, id);
      assert.equal(s.result, REDACTED_CARD);
      // Resume from the middle of the stream: the rest, redacted, and nothing of the raw text.
      const tokenFrames = events.filter((f) => f.event === 'token');
      // A hybrid window can release the whole answer as one token event: then resume from before it.
      const after = tokenFrames.length > 1 ? tokenFrames[Math.floor((tokenFrames.length - 1) / 2)]!.id! : String(Number(tokenFrames[0]!.id) - 1);
      const raw = await readSse(await api(app.url, keys[tier])(`/v1/requests/${id}/events`, { headers: { 'last-event-id': after } }), (f) => f.event === 'completed');
      const rest = tokensOf(frames(raw));
      assert.ok(REDACTED_CARD.endsWith(rest) && rest.length > 0, `resumed "${rest}"`);
      const whole = JSON.stringify(raw) + JSON.stringify(events);
      for (const secret of ['1111', 'billing@', '555-2671']) assert.equal(whole.includes(secret), false, `${secret} reached a client`);
      const rows = await ledgerRows(app.url, `user-${tier}`);
      assert.equal(rows.filter((r) => r.request_id === id).length, 1);
    });
  }

  it('the OpenAI surface (streaming and not) delivers the redacted text too', async () => {
    const call = api(app.url, keys.inl);
    const body = { model: 'sim', messages: [{ role: 'user', content: 'script:card' }] };
    const whole = (await (await call('/v1/chat/completions', { method: 'POST', json: body })).json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
    assert.equal(whole.choices[0]!.message.content, REDACTED_CARD);
    assert.equal(whole.usage.completion_tokens, pieces(SCRIPTS.card, 3).length);
    const raw = await readSse(await call('/v1/chat/completions', { method: 'POST', json: { ...body, stream: true } }));
    const text = raw.filter((f) => f.data.startsWith('{')).map((f) => (JSON.parse(f.data) as { choices: { delta?: { content?: string } }[] }).choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, REDACTED_CARD);
  });

  it('a key\'s own mode overrides its tier\'s, both ways (migration 004: api_keys.inspection_mode)', async () => {
    const admin = api(app.url);
    const make = async (userId: string, mode: string) => {
      const res = await admin('/admin/keys', { method: 'POST', json: { user_id: userId, inspection_mode: mode } });
      assert.equal(res.status, 201);
      const k = (await res.json()) as { key: string; inspection_mode: string };
      assert.equal(k.inspection_mode, mode);
      return k.key;
    };
    keys['pro-inline'] = await make('user-pro', 'inline');
    keys['inl-off'] = await make('user-inl', 'disabled');
    assert.equal(tokensOf((await run('pro-inline', 'card')).events), REDACTED_CARD);
    assert.equal(tokensOf((await run('inl-off', 'card')).events), SCRIPTS.card);
    const bad = await admin('/admin/keys', { method: 'POST', json: { user_id: 'user-pro', inspection_mode: 'sometimes' } });
    assert.equal(bad.status, 400);
  });

  it('async: tokens flow at once; a finding stops the request with SLUICE_ERR_CONTENT_BLOCKED, and what was produced is billed exactly once', async () => {
    const before = await usageWindows(app.url, keys.asy!);
    const { id, events } = await run('asy', 'late');
    const last = events.at(-1)!;
    assert.equal(last.event, 'error');
    assert.equal(last.data.error.code, 'SLUICE_ERR_CONTENT_BLOCKED');
    assert.equal(last.data.status, 'cancelled');
    const delivered = events.filter((f) => f.event === 'token').length;
    assert.ok(delivered < pieces(SCRIPTS.late, 3).length, `stopped early (${delivered} of ${pieces(SCRIPTS.late, 3).length})`);
    assert.ok(tokensOf(events).includes('sk-abc'), 'async does not hold text back: the secret reached the client before the stop');
    const s = await status('asy', id);
    assert.equal(s.status, 'cancelled');
    assert.equal(s.error.code, 'SLUICE_ERR_CONTENT_BLOCKED');
    assert.equal(s.usage.completion_tokens, delivered, 'billed the tokens produced (each one logged)');
    const rows = (await ledgerRows(app.url, 'user-asy')).filter((r) => r.request_id === id);
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.completion_tokens, delivered);
    assert.equal(rows[0]!.charged_requests, 1);
    const after = await waitFor(async () => { const w = await usageWindows(app.url, keys.asy!); return w.daily_tokens!.used > before.daily_tokens!.used && w; });
    assert.equal(after.daily_tokens!.used - before.daily_tokens!.used, rows[0]!.charged_tokens, 'the quota moved once, by the charge');
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.match(metrics, /sluice_inspection_stopped_total\{reason="blocked"\} [1-9]/);
    assert.match(metrics, /sluice_inspection_findings_total\{type="secret",kind="completion"\} [1-9]/);
    assert.match(metrics, /sluice_inspection_duration_seconds_count\{mode="async"\} [1-9]/);
  });

  it('async: an answer without findings completes as usual', async () => {
    const { events } = await run('asy', 'plain');
    assert.equal(events.at(-1)!.event, 'completed');
    assert.equal(tokensOf(events), SCRIPTS.plain);
  });

  it('prompts: a prompt with a finding is refused before admission with 422 SLUICE_ERR_PROMPT_BLOCKED; nothing is reserved', async () => {
    const before = await usageWindows(app.url, keys.pro!);
    const res = await api(app.url, keys.pro)('/v1/chat/completions', { method: 'POST', json: { model: 'sim', messages: [{ role: 'user', content: 'my mail is jane@example.org, script:plain' }] } });
    assert.equal(res.status, 422);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'SLUICE_ERR_PROMPT_BLOCKED');
    assert.match(body.error.message, /email/);
    assert.equal(body.error.message.includes('jane@'), false, 'the refusal does not echo the finding');
    const afterw = await usageWindows(app.url, keys.pro!);
    assert.equal(afterw.daily_requests!.used, before.daily_requests!.used);
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.match(metrics, /sluice_inspection_stopped_total\{reason="prompt"\} [1-9]/);
  });
});

describe('content inspection: an inspector without a verdict', () => {
  let app: TestSluice;
  let inspector: Server;
  let hits = 0;
  before(async () => {
    inspector = createServer((req, res) => { hits++; req.resume(); res.writeHead(500).end('down'); });
    await new Promise<void>((r) => inspector.listen(0, '127.0.0.1', r));
    const endpoint = `http://127.0.0.1:${(inspector.address() as AddressInfo).port}/inspect`;
    app = await startTestSluice({ inspection: { mode: 'inline', builtin: 'none', endpoint, circuitFailures: 2, circuitCoolDownMs: 60_000 } },
      { model: new ScriptedModel(SCRIPTS, { pieceChars: 3, itlMs: 1 }) });
  });
  after(async () => { await app.stop(); inspector.closeAllConnections(); await new Promise((r) => inspector.close(r)); });

  it('inline fails closed: an error event SLUICE_ERR_INSPECTION_FAILED, no text delivered, the request refunded as failed', async () => {
    const call = api(app.url);
    for (let i = 0; i < 3; i++) {
      const res = await call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens: 100, messages: [{ role: 'user', content: 'script:card' }] } });
      const { request_id: id } = (await res.json()) as { request_id: string };
      const events = frames(await readSse(await call(`/v1/requests/${id}/events`), (f) => f.event === 'completed' || f.event === 'error'));
      assert.equal(tokensOf(events), '', 'nothing uninspected is delivered');
      const last = events.at(-1)!;
      assert.equal(last.event, 'error');
      assert.equal(last.data.error.code, 'SLUICE_ERR_INSPECTION_FAILED');
      assert.equal(last.data.status, 'failed');
    }
    // Two failures opened the circuit: the third request failed without calling the inspector.
    assert.equal(hits, 2);
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.match(metrics, /sluice_inspection_failures_total\{kind="circuit_open"\} 1/);
    assert.match(metrics, /sluice_inspection_stopped_total\{reason="failed"\} 3/);
  });
});
