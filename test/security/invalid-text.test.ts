// Text the store cannot hold (a NUL character, an unpaired UTF-16 surrogate) anywhere in a body,
// a query or a path is refused with 400 SLUICE_ERR_INVALID_TEXT naming the field, on the embedded
// store and on PostgreSQL; a well-formed surrogate pair (an emoji) goes through and round-trips.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';
import { createDatabase, dropDatabase, serviceSuite, uniqueName } from '../helpers/services.ts';

const NUL = 'a\u0000b';
const HIGH_ALONE = 'a\uD800b';
const LOW_ALONE = 'a\uDC00b';
const EMOJI = 'smile \uD83D\uDE00 ok';
const BAD = { NUL, 'a lone high surrogate': HIGH_ALONE, 'a lone low surrogate': LOW_ALONE };

const chat = { model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] };

/** Body cases: where the bad text goes, and the param the answer must name. */
const bodyCases = (bad: string): { path: string; body: unknown; param: string }[] => [
  { path: '/v1/chat/completions', body: { ...chat, messages: [{ role: 'user', content: bad }] }, param: 'messages.0.content' },
  { path: '/v1/chat/completions', body: { ...chat, messages: [{ role: 'user', content: [{ type: 'text', text: bad }] }] }, param: 'messages.0.content.0.text' },
  { path: '/v1/chat/completions', body: { ...chat, messages: [{ role: 'user', content: 'hi', name: bad }] }, param: 'messages.0.name' },
  { path: '/v1/chat/completions', body: { ...chat, stop: bad }, param: 'stop' },
  { path: '/v1/chat/completions', body: { ...chat, stop: ['ok', bad] }, param: 'stop.1' },
  { path: '/v1/chat/completions', body: { ...chat, model: bad }, param: 'model' },
  { path: '/v1/chat/completions', body: { ...chat, user: bad }, param: 'user' },
  { path: '/v1/chat/completions', body: { ...chat, metadata: { tags: ['x', bad] } }, param: 'metadata.tags.1' },
  { path: '/v1/completions', body: { model: 'sim', max_tokens: 4, prompt: bad }, param: 'prompt' },
  { path: '/v1/completions', body: { model: 'sim', max_tokens: 4, prompt: ['ok', bad] }, param: 'prompt.1' },
  { path: '/v1/requests', body: { ...chat, messages: [{ role: 'user', content: bad }] }, param: 'messages.0.content' },
  { path: '/chat', body: { message: bad }, param: 'message' },
  { path: '/admin/users', body: { id: 'text-user', name: bad }, param: 'name' },
  { path: '/admin/users', body: { id: 'text-user', email: bad }, param: 'email' },
  { path: '/admin/users', body: { id: 'text-user', tier: bad }, param: 'tier' },
  { path: '/admin/keys', body: { user_id: bad }, param: 'user_id' },
];

async function expectInvalidText(res: Response, param: string): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, 400, text);
  const j = JSON.parse(text) as { error: { code: string; param: string | null; type: string } };
  assert.equal(j.error.code, 'SLUICE_ERR_INVALID_TEXT', text);
  assert.equal(j.error.type, 'invalid_request_error');
  assert.equal(j.error.param, param, text);
}

function invalidTextSuite(name: string, overrides: () => Record<string, unknown>): void {
  describe(`invalid text (${name})`, () => {
    let app: TestSluice;
    let call: ReturnType<typeof api>;
    before(async () => { app = await startTestSluice(overrides()); call = api(app.url); });
    after(() => app.stop());
    const post = (path: string, body: unknown) => call(path, { method: 'POST', json: body });

    for (const [what, bad] of Object.entries(BAD)) {
      it(`${what} in any body field -> 400 SLUICE_ERR_INVALID_TEXT naming the field`, async () => {
        for (const c of bodyCases(bad)) await expectInvalidText(await post(c.path, c.body), c.param);
      });
    }

    it('a NUL or a lone surrogate in an object key (a passthrough field) -> 400', async () => {
      await expectInvalidText(await post('/v1/chat/completions', { ...chat, 'x\u0000y': 1 }), 'x\uFFFDy');
      await expectInvalidText(await post('/v1/requests', { ...chat, extra: { '\uDC00': true } }), 'extra.\uFFFD');
    });

    it('a NUL in a query parameter or a path parameter of the admin API -> 400, not a database error', async () => {
      await expectInvalidText(await call('/admin/keys?user_id=a%00b'), 'user_id');
      await expectInvalidText(await call('/admin/requests?user_id=%00'), 'user_id');
      await expectInvalidText(await call('/admin/usage.csv?user_id=x%00'), 'user_id');
      await expectInvalidText(await call('/admin/users/a%00b'), 'id');
      await expectInvalidText(await call('/admin/quotas/a%00b'), 'userId');
      await expectInvalidText(await call('/admin/keys/k%00', { method: 'DELETE' }), 'id');
    });

    it('nothing refused was stored: the user of a refused body does not exist', async () => {
      await post('/admin/users', { id: 'never-made', name: NUL });
      assert.equal((await call('/admin/users/never-made')).status, 404);
    });

    it('an emoji (a well-formed surrogate pair) is accepted everywhere and round-trips', async () => {
      const res = await post('/v1/chat/completions', { ...chat, stop: [EMOJI], messages: [{ role: 'user', content: EMOJI, name: 'n\uD83D\uDE00' }], metadata: { [EMOJI]: EMOJI } });
      assert.equal(res.status, 200, await res.clone().text());
      const queued = await post('/v1/requests', { ...chat, messages: [{ role: 'user', content: EMOJI }] });
      assert.equal(queued.status, 202);
      const { request_id: id } = (await queued.json()) as { request_id: string };
      const stored = await app.store.getRequest(id);
      assert.equal(stored?.payload.messages[0]?.content, EMOJI);
      await waitFor(async () => ((await (await call(`/v1/requests/${id}`)).json()) as { status: string }).status === 'completed', 30_000);

      const created = await post('/admin/users', { id: 'emoji-user', name: EMOJI, email: EMOJI });
      assert.equal(created.status, 201, await created.clone().text());
      const u = (await (await call('/admin/users/emoji-user')).json()) as { name: string; email: string };
      assert.equal(u.name, EMOJI);
      assert.equal(u.email, EMOJI);
    });
  });
}

invalidTextSuite('PGlite', () => ({}));

describe('invalid text on PostgreSQL', await serviceSuite('postgres'), () => {
  const db = uniqueName('sluice_text');
  let url = '';
  before(async () => { url = await createDatabase(db); });
  after(async () => { await dropDatabase(db); });
  invalidTextSuite('PostgreSQL', () => ({ databaseUrl: url }));
});
