// The Store contract: every Store adapter must pass these. One store per suite; every test uses
// its own ids (and users where totals matter), so tests do not depend on each other.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { isSluiceError } from '../../src/core/errors.ts';
import type { NewRequest, Outcome, Store } from '../../src/ports/store.ts';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const id = (prefix: string) => `${prefix}-${randomUUID()}`;

function newRequest(over: Partial<NewRequest> = {}): NewRequest {
  return {
    id: randomUUID(), userId: 'contract-user', keyId: 'key-1', model: 'sim-1', mode: 'queued',
    payload: { messages: [{ role: 'user', content: 'héllo "world"' }], maxTokens: 32, temperature: 0.5, stop: ['\n'] },
    priority: 3, idempotencyKey: null, bodyHash: 'hash-1', estimatedTokens: 40, promptTokens: 8,
    ...over,
  };
}

function outcome(over: Partial<Outcome> = {}): Outcome {
  return {
    status: 'completed', attempt: null, result: 'Hello there', finishReason: 'stop',
    usage: { promptTokens: 8, completionTokens: 5, totalTokens: 13 }, error: null,
    chargedTokens: 13, chargedRequests: 1, ...over,
  };
}

export function storeContract(name: string, factory: () => Promise<Store>): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    before(async () => { store = await factory(); });
    after(async () => { await store?.close(); });

    /** A fresh queued request. */
    const queued = async (over: Partial<NewRequest> = {}) => (await store.insertRequest(newRequest(over))).record;

    it('migrate is idempotent, also when called concurrently', async () => {
      await Promise.all([store.migrate(), store.migrate()]);
      assert.deepEqual(await store.migrate(), [], 'nothing left to apply');
      assert.deepEqual(await store.pendingMigrations(), []);
      assert.equal(await store.getUser(id('nobody')), null);
    });

    describe('users', () => {
      it('creates, reads, lists and updates a user', async () => {
        const uid = id('u');
        const created = await store.createUser({ id: uid, name: 'Ada', email: 'ada@example.com', tier: 'pro' });
        assert.equal(created.id, uid);
        assert.equal(created.name, 'Ada');
        assert.equal(created.email, 'ada@example.com');
        assert.equal(created.tier, 'pro');
        assert.equal(created.active, true);
        assert.ok(created.createdAt instanceof Date);
        assert.deepEqual(await store.getUser(uid), created);
        assert.ok((await store.listUsers()).some((u) => u.id === uid));

        const updated = await store.updateUser(uid, { tier: 'enterprise', active: false, email: null });
        assert.deepEqual(updated, { ...created, tier: 'enterprise', active: false, email: null });
        assert.deepEqual(await store.getUser(uid), updated);
        assert.deepEqual(await store.updateUser(uid, {}), updated);
      });

      it('defaults name and email to null', async () => {
        const u = await store.createUser({ id: id('u'), tier: 'free' });
        assert.equal(u.name, null);
        assert.equal(u.email, null);
      });

      it('refuses a duplicate id with SLUICE_ERR_USER_EXISTS', async () => {
        const uid = id('u');
        await store.createUser({ id: uid, tier: 'free' });
        await assert.rejects(store.createUser({ id: uid, tier: 'pro' }), (e) => isSluiceError(e, 'SLUICE_ERR_USER_EXISTS'));
        assert.equal((await store.getUser(uid))?.tier, 'free');
      });

      it('one failing write among concurrent ones fails alone (batched writes fall back one by one)', async () => {
        const taken = id('u');
        await store.createUser({ id: taken, tier: 'free' });
        const ids = Array.from({ length: 12 }, () => id('u'));
        const results = await Promise.allSettled([
          ...ids.slice(0, 6).map((uid) => store.createUser({ id: uid, tier: 'free' })),
          store.createUser({ id: taken, tier: 'pro' }),
          ...ids.slice(6).map((uid) => store.createUser({ id: uid, tier: 'free' })),
        ]);
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 12);
        const failed = results.filter((r) => r.status === 'rejected');
        assert.equal(failed.length, 1);
        assert.ok(isSluiceError((failed[0] as PromiseRejectedResult).reason, 'SLUICE_ERR_USER_EXISTS'));
        for (const uid of ids) assert.equal((await store.getUser(uid))?.id, uid);
        assert.equal((await store.getUser(taken))?.tier, 'free', 'the refused write changed nothing');
      });

      it('returns null for unknown users', async () => {
        assert.equal(await store.getUser(id('missing')), null);
        assert.equal(await store.updateUser(id('missing'), { tier: 'pro' }), null);
      });
    });

    describe('api keys', () => {
      it('finds a key by its hash with its user', async () => {
        const uid = id('u');
        const user = await store.createUser({ id: uid, name: 'Key Owner', tier: 'free' });
        const hash = id('hash');
        const key = await store.createApiKey({ id: id('k'), userId: uid, hash, prefix: 'sk-abc', name: 'laptop', admin: true });
        assert.equal(key.userId, uid);
        assert.equal(key.prefix, 'sk-abc');
        assert.equal(key.name, 'laptop');
        assert.equal(key.admin, true);
        assert.equal(key.models, null, 'no list of its own: the tier decides');
        assert.equal(key.revokedAt, null);
        assert.ok(key.createdAt instanceof Date);
        assert.deepEqual(await store.findApiKey(hash), { key, user });
        assert.equal(await store.findApiKey(id('other-hash')), null);
      });

      it('stores a key\'s own model allow-list and returns it from create, find and list', async () => {
        const uid = id('u');
        await store.createUser({ id: uid, tier: 'free' });
        const hash = id('hash');
        const models = ['gpt-4o', 'llama-3.1-8b', 'name with "quotes"'];
        const key = await store.createApiKey({ id: id('k'), userId: uid, hash, prefix: 'sk-m', admin: false, models });
        assert.deepEqual(key.models, models);
        assert.deepEqual((await store.findApiKey(hash))?.key.models, models);
        assert.deepEqual((await store.listApiKeys(uid)).map((k) => k.models), [models]);
        const open = await store.createApiKey({ id: id('k'), userId: uid, hash: id('hash'), prefix: 'sk-n', admin: false, models: null });
        assert.equal(open.models, null);
      });

      it('still finds a revoked key, with revokedAt set', async () => {
        const uid = id('u');
        await store.createUser({ id: uid, tier: 'free' });
        const hash = id('hash');
        const key = await store.createApiKey({ id: id('k'), userId: uid, hash, prefix: 'sk-r', admin: false });
        const revoked = await store.revokeApiKey(key.id);
        assert.ok(revoked?.revokedAt instanceof Date);
        const found = await store.findApiKey(hash);
        assert.equal(found?.key.id, key.id);
        assert.deepEqual(found?.key.revokedAt, revoked.revokedAt);
        assert.equal(await store.revokeApiKey(id('missing')), null);
      });

      it('lists keys, all or for one user', async () => {
        const a = id('u');
        const b = id('u');
        await store.createUser({ id: a, tier: 'free' });
        await store.createUser({ id: b, tier: 'free' });
        const ka1 = await store.createApiKey({ id: id('k'), userId: a, hash: id('h'), prefix: 'p', admin: false });
        await sleep(5); // keys made in one millisecond tie on created_at and fall back to id order
        const ka2 = await store.createApiKey({ id: id('k'), userId: a, hash: id('h'), prefix: 'p', admin: false });
        const kb = await store.createApiKey({ id: id('k'), userId: b, hash: id('h'), prefix: 'p', admin: false });
        assert.deepEqual((await store.listApiKeys(a)).map((k) => k.id), [ka1.id, ka2.id]);
        const all = (await store.listApiKeys()).map((k) => k.id);
        for (const k of [ka1, ka2, kb]) assert.ok(all.includes(k.id));
      });

      it('refuses a key for an unknown user with SLUICE_ERR_UNKNOWN_USER', async () => {
        await assert.rejects(
          store.createApiKey({ id: id('k'), userId: id('ghost'), hash: id('h'), prefix: 'p', admin: false }),
          (e) => isSluiceError(e, 'SLUICE_ERR_UNKNOWN_USER'),
        );
      });
    });

    describe('quota overrides', () => {
      it('upserts, reads and deletes an override', async () => {
        const uid = id('u');
        await store.createUser({ id: uid, tier: 'free' });
        assert.equal(await store.getQuotaOverride(uid), null);
        const first = {
          userId: uid, requestsPerDay: 10, tokensPerDay: 5_000_000_000, requestsPerMonth: null, tokensPerMonth: null,
          maxTokens: 256, concurrentStreams: 1, priority: 7,
        };
        assert.deepEqual(await store.setQuotaOverride(first), first);
        assert.deepEqual(await store.getQuotaOverride(uid), first);

        const second = { ...first, requestsPerDay: null, requestsPerMonth: 99, priority: null };
        assert.deepEqual(await store.setQuotaOverride(second), second);
        assert.deepEqual(await store.getQuotaOverride(uid), second);

        assert.equal(await store.deleteQuotaOverride(uid), true);
        assert.equal(await store.getQuotaOverride(uid), null);
        assert.equal(await store.deleteQuotaOverride(uid), false);
      });
    });

    describe('requests', () => {
      it('inserts a queued request and reads it back unchanged', async () => {
        const input = newRequest({ idempotencyKey: id('idem') });
        const { record, created } = await store.insertRequest(input);
        assert.equal(created, true);
        const { id: rid, userId, keyId, model, mode, payload, priority, idempotencyKey, bodyHash, estimatedTokens, promptTokens } = record;
        assert.deepEqual(
          { id: rid, userId, keyId, model, mode, payload, priority, idempotencyKey, bodyHash, estimatedTokens, promptTokens },
          input,
        );
        assert.equal(record.status, 'queued');
        assert.equal(record.attempt, 0);
        assert.equal(record.result, null);
        assert.equal(record.finishReason, null);
        assert.equal(record.completionTokens, null);
        assert.equal(record.error, null);
        assert.equal(record.cancelRequested, false);
        assert.equal(record.claimExpiresAt, null);
        assert.ok(record.createdAt instanceof Date);
        assert.equal(record.startedAt, null);
        assert.equal(record.completedAt, null);
        assert.deepEqual(await store.getRequest(input.id), record);
        assert.equal(await store.getRequest(randomUUID()), null);
      });

      it('stores quotes, backslashes, SQL and unicode exactly', async () => {
        const nasty = `it's "quoted" \\ back\\slash '); DROP TABLE requests; -- $1 $$ e'\\x41' 😀 \u2028`;
        const input = newRequest({ userId: `o'brien`, idempotencyKey: `k'${nasty}`, payload: { messages: [{ role: 'user', content: nasty }], maxTokens: 1, stop: [`'`] } });
        const { record } = await store.insertRequest(input);
        assert.deepEqual(record.payload, input.payload);
        const back = await store.getRequest(input.id);
        assert.deepEqual(back?.payload, input.payload);
        assert.equal(back?.userId, `o'brien`);
        assert.equal(back?.idempotencyKey, input.idempotencyKey);
        const claim = await store.claimRequest(input.id, `w'1`, 60_000);
        assert.equal(claim.state, 'claimed');
        assert.equal(await store.finishRequest(input.id, { status: 'completed', attempt: 1, result: nasty, finishReason: 'stop', usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 }, error: { code: `c'`, message: nasty }, chargedTokens: 2, chargedRequests: 1 }), true);
        const done = await store.getRequest(input.id);
        assert.equal(done?.result, nasty);
        assert.deepEqual(done?.error, { code: `c'`, message: nasty });
      });

      it('returns the first request for a reused idempotency key of the same user', async () => {
        const key = id('idem');
        const first = await store.insertRequest(newRequest({ idempotencyKey: key, bodyHash: 'body-a' }));
        const again = await store.insertRequest(newRequest({ idempotencyKey: key, bodyHash: 'body-b' }));
        assert.equal(again.created, false);
        assert.deepEqual(again.record, first.record);
        assert.equal(again.record.bodyHash, 'body-a');
      });

      it('lets different users use the same idempotency key', async () => {
        const key = id('idem');
        const a = await store.insertRequest(newRequest({ userId: id('ua'), idempotencyKey: key }));
        const b = await store.insertRequest(newRequest({ userId: id('ub'), idempotencyKey: key }));
        assert.equal(a.created, true);
        assert.equal(b.created, true);
        assert.notEqual(a.record.id, b.record.id);
      });

      it('never collides on null idempotency keys', async () => {
        const userId = id('u');
        const a = await store.insertRequest(newRequest({ userId }));
        const b = await store.insertRequest(newRequest({ userId }));
        assert.equal(a.created && b.created, true);
        assert.notEqual(a.record.id, b.record.id);
      });

      it('creates exactly one request for concurrent inserts with one idempotency key', async () => {
        const key = id('idem');
        const userId = id('u');
        const results = await Promise.all(
          Array.from({ length: 10 }, () => store.insertRequest(newRequest({ userId, idempotencyKey: key }))),
        );
        assert.equal(results.filter((r) => r.created).length, 1);
        assert.equal(new Set(results.map((r) => r.record.id)).size, 1);
      });

      it('returns the existing row when the same request id is inserted twice', async () => {
        const input = newRequest();
        await store.insertRequest(input);
        const again = await store.insertRequest({ ...input, model: 'other' });
        assert.equal(again.created, false);
        assert.equal(again.record.model, input.model);
      });

      it('records a cancel request', async () => {
        const r = await queued();
        const cancelled = await store.requestCancel(r.id);
        assert.equal(cancelled?.cancelRequested, true);
        assert.equal(cancelled?.status, 'queued');
        assert.equal((await store.getRequest(r.id))?.cancelRequested, true);
        assert.equal(await store.requestCancel(randomUUID()), null);
      });

      it('lists requests by user and status, newest first', async () => {
        const userId = id('u');
        const a = await queued({ userId });
        // Created in the same millisecond, two requests tie (PGlite's clock has millisecond steps).
        await sleep(5);
        const b = await queued({ userId });
        await queued();
        assert.deepEqual((await store.listRequests({ userId, limit: 10 })).map((r) => r.id), [b.id, a.id]);
        assert.deepEqual((await store.listRequests({ userId, limit: 1 })).map((r) => r.id), [b.id]);
        await store.claimRequest(a.id, 'w', 60_000);
        assert.deepEqual((await store.listRequests({ userId, status: 'running', limit: 10 })).map((r) => r.id), [a.id]);
        assert.deepEqual((await store.listRequests({ userId, status: 'queued', limit: 10 })).map((r) => r.id), [b.id]);
      });

      it('filters requests by model and pages them with a `before` cursor, without gap or repeat', async () => {
        const userId = id('u');
        const made: string[] = [];
        // Some created in the same instant (PGlite's clock has millisecond steps): the id breaks the tie.
        for (let i = 0; i < 7; i++) {
          made.push((await queued({ userId, model: i % 2 === 0 ? 'even' : 'odd' })).id);
          if (i % 3 === 2) await sleep(3);
        }
        const all = (await store.listRequests({ userId, limit: 100 })).map((r) => r.id);
        assert.deepEqual([...all].sort(), [...made].sort());
        const paged: string[] = [];
        let before: string | undefined;
        for (;;) {
          const page = (await store.listRequests({ userId, limit: 3, ...(before && { before }) })).map((r) => r.id);
          paged.push(...page);
          if (page.length < 3) break;
          before = page.at(-1);
        }
        assert.deepEqual(paged, all, 'pages concatenate to the whole list, in order');
        assert.deepEqual((await store.listRequests({ userId, model: 'odd', limit: 100 })).map((r) => r.id), all.filter((x) => made.indexOf(x) % 2 === 1));
        assert.deepEqual((await store.listRequests({ userId, model: 'odd', before: all[0]!, limit: 100 })).map((r) => r.id), all.slice(1).filter((x) => made.indexOf(x) % 2 === 1));
        assert.deepEqual(await store.listRequests({ userId, before: randomUUID(), limit: 100 }), [], 'an unknown cursor lists nothing');
        assert.deepEqual(await store.listRequests({ userId, before: all.at(-1)!, limit: 100 }), [], 'nothing is older than the oldest');
      });
    });

    describe('published jobs and the queue depth', () => {
      it('a new request has no confirmed job; markPublished stamps one', async () => {
        const r = await queued();
        assert.equal(r.publishedAt, null);
        assert.equal((await store.getRequest(r.id))?.publishedAt, null);
        const before = Date.now();
        await Promise.all([store.markPublished(r.id), store.markPublished(r.id)]);
        const at = (await store.getRequest(r.id))?.publishedAt;
        assert.ok(at instanceof Date);
        assert.ok(Math.abs(at.getTime() - before) < 60_000);
        await store.markPublished(randomUUID()); // an unknown id is no error
      });

      it('lists the requests whose job is lost: never published and not held by a live claim', async () => {
        const published = await queued();
        await store.markPublished(published.id);
        const lost = await queued();
        const running = await queued();
        await store.claimRequest(running.id, 'w-live', 60_000);
        const orphan = (await store.insertRequest(newRequest({ mode: 'direct' }), { workerId: 'gw-dead', claimMs: 1 })).record;
        const ended = await queued();
        await store.finishRequest(ended.id, outcome({ status: 'cancelled', chargedTokens: 0, chargedRequests: 0 }));
        await sleep(20);
        const ours = new Set([published.id, lost.id, running.id, orphan.id, ended.id]);
        const listed = (await store.listUnpublished({ createdBefore: new Date(Date.now() + 1000), limit: 10_000 })).filter((r) => ours.has(r.id));
        assert.deepEqual(listed.map((r) => r.id).sort(), [lost.id, orphan.id].sort());
        assert.equal((await store.listUnpublished({ createdBefore: new Date(lost.createdAt.getTime() - 60_000), limit: 10_000 })).some((r) => ours.has(r.id)), false, 'only those created before the horizon');
      });

      it('handBack gives the claim back at once and counts a hand-off; only the holder of the attempt can', async () => {
        const r = await queued();
        assert.equal(r.handoffs, 0);
        await store.claimRequest(r.id, 'w-draining', 60_000);
        assert.equal(await store.handBack(r.id, 'w-other', 1), false);
        assert.equal(await store.handBack(r.id, 'w-draining', 2), false);
        assert.equal(await store.handBack(r.id, 'w-draining', 1), true);
        const back = (await store.getRequest(r.id))!;
        assert.equal(back.status, 'running');
        assert.equal(back.handoffs, 1);
        assert.ok(back.claimExpiresAt!.getTime() <= Date.now() + 5);
        const next = await store.claimRequest(r.id, 'w-next', 60_000);
        assert.equal(next.state, 'claimed', 'another worker takes it at once');
        assert.ok(next.state === 'claimed' && next.record.attempt === 2 && next.record.handoffs === 1);
      });

      it('counts queued requests, not running, ended or cancel-requested ones', async () => {
        const base = await store.countQueued();
        const a = await queued();
        await queued();
        const c = await queued();
        assert.equal(await store.countQueued(), base + 3);
        await store.claimRequest(a.id, 'w', 60_000);
        await store.requestCancel(c.id);
        assert.equal(await store.countQueued(), base + 1);
        await store.finishRequest(c.id, outcome({ status: 'cancelled', chargedTokens: 0, chargedRequests: 0 }));
        assert.equal(await store.countQueued(), base + 1);
      });
    });

    describe('claims', () => {
      it('claims a queued request: running, attempt 1, claim held for claimMs', async () => {
        const r = await queued();
        const before = Date.now();
        const res = await store.claimRequest(r.id, 'worker-a', 60_000);
        assert.equal(res.state, 'claimed');
        assert.ok(res.state === 'claimed');
        assert.equal(res.record.status, 'running');
        assert.equal(res.record.attempt, 1);
        assert.ok(res.record.startedAt instanceof Date);
        const expires = res.record.claimExpiresAt?.getTime() ?? 0;
        // Generous bounds: the database clock may differ slightly from this process's.
        assert.ok(expires > before + 50_000 && expires < before + 70_000, `claim expires at ${expires}`);
      });

      it('inserts a request already claimed (direct mode): attempt 1, held by that worker', async () => {
        const input = newRequest({ mode: 'direct' });
        const before = Date.now();
        const { record, created } = await store.insertRequest(input, { workerId: 'gateway-a', claimMs: 60_000 });
        assert.equal(created, true);
        assert.equal(record.status, 'running');
        assert.equal(record.attempt, 1);
        assert.ok(record.startedAt instanceof Date);
        const expires = record.claimExpiresAt?.getTime() ?? 0;
        assert.ok(expires > before + 50_000 && expires < before + 70_000, `claim expires at ${expires}`);
        assert.deepEqual(await store.getRequest(input.id), record);
        assert.equal(await store.renewClaim(input.id, 'gateway-a', 1, 60_000), 'held');
        const other = await store.claimRequest(input.id, 'worker-b', 60_000);
        assert.equal(other.state, 'busy');
      });

      it('reports busy with `until` while another worker holds a live claim', async () => {
        const r = await queued();
        const first = await store.claimRequest(r.id, 'worker-a', 60_000);
        assert.ok(first.state === 'claimed');
        const second = await store.claimRequest(r.id, 'worker-b', 60_000);
        assert.equal(second.state, 'busy');
        assert.ok(second.state === 'busy');
        assert.equal(second.until, first.record.claimExpiresAt?.getTime());
        assert.equal(second.record.attempt, 1);
      });

      it('lets another worker take an expired claim, with the next attempt', async () => {
        const r = await queued();
        const first = await store.claimRequest(r.id, 'worker-a', 40);
        assert.ok(first.state === 'claimed');
        await sleep(80);
        const second = await store.claimRequest(r.id, 'worker-b', 60_000);
        assert.equal(second.state, 'claimed');
        assert.ok(second.state === 'claimed');
        assert.equal(second.record.attempt, 2);
        assert.equal(await store.renewClaim(r.id, 'worker-a', 1, 60_000), 'lost');
        assert.equal(await store.renewClaim(r.id, 'worker-b', 2, 60_000), 'held');
      });

      it('reports terminal for a finished request and missing for an unknown one', async () => {
        const r = await queued();
        assert.equal(await store.finishRequest(r.id, outcome({ status: 'cancelled', finishReason: 'cancelled' })), true);
        const res = await store.claimRequest(r.id, 'worker-a', 60_000);
        assert.equal(res.state, 'terminal');
        assert.ok(res.state === 'terminal');
        assert.equal(res.record.status, 'cancelled');
        assert.deepEqual(await store.claimRequest(randomUUID(), 'worker-a', 60_000), { state: 'missing' });
      });

      it('gives a request to exactly one of 20 concurrent claimers', async () => {
        const r = await queued();
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.claimRequest(r.id, `worker-${i}`, 60_000)),
        );
        const claimed = results.filter((x) => x.state === 'claimed');
        assert.equal(claimed.length, 1);
        assert.equal(results.filter((x) => x.state === 'busy').length, 19);
        const after = await store.getRequest(r.id);
        assert.equal(after?.attempt, 1);
      });

      it('renews only for the current worker and attempt of a running request', async () => {
        const r = await queued();
        assert.equal(await store.renewClaim(r.id, 'worker-a', 0, 60_000), 'lost', 'queued: nothing to renew');
        const res = await store.claimRequest(r.id, 'worker-a', 1_000);
        assert.ok(res.state === 'claimed');
        const oldExpiry = res.record.claimExpiresAt?.getTime() ?? 0;
        assert.equal(await store.renewClaim(r.id, 'worker-a', 1, 60_000), 'held');
        assert.ok(((await store.getRequest(r.id))?.claimExpiresAt?.getTime() ?? 0) > oldExpiry + 30_000);
        assert.equal(await store.renewClaim(r.id, 'worker-b', 1, 60_000), 'lost', 'other worker');
        assert.equal(await store.renewClaim(r.id, 'worker-a', 2, 60_000), 'lost', 'other attempt');
        assert.equal(await store.renewClaim(randomUUID(), 'worker-a', 1, 60_000), 'lost', 'unknown request');
        await store.finishRequest(r.id, outcome());
        assert.equal(await store.renewClaim(r.id, 'worker-a', 1, 60_000), 'lost', 'finished');
      });

      it('a renewal reports a cancel asked for meanwhile, and still extends the claim', async () => {
        const r = await queued();
        const res = await store.claimRequest(r.id, 'worker-a', 1_000);
        assert.ok(res.state === 'claimed');
        assert.equal(await store.renewClaim(r.id, 'worker-a', 1, 60_000), 'held');
        await store.requestCancel(r.id);
        assert.equal(await store.renewClaim(r.id, 'worker-a', 1, 60_000), 'cancel');
        assert.ok(((await store.getRequest(r.id))?.claimExpiresAt?.getTime() ?? 0) > Date.now() + 30_000);
        assert.equal(await store.renewClaim(r.id, 'worker-b', 1, 60_000), 'lost', 'a cancel is news only to the holder');
      });

      it('renews many attempts at once, each on its own conditions', async () => {
        const rows = await Promise.all(Array.from({ length: 12 }, () => queued()));
        for (const r of rows) assert.ok((await store.claimRequest(r.id, 'worker-a', 1_000)).state === 'claimed');
        await store.requestCancel(rows[1]!.id);
        await store.finishRequest(rows[2]!.id, outcome());
        // Made in one turn, so they share statements (batch.ts); each row answers for itself.
        const got = await Promise.all(rows.map((r, i) => store.renewClaim(r.id, i === 3 ? 'worker-b' : 'worker-a', 1, 60_000)));
        assert.deepEqual(got, rows.map((_, i) => (i === 1 ? 'cancel' : i === 2 || i === 3 ? 'lost' : 'held')));
      });

      it('releaseAllClaims expires every running claim so it can be claimed again', async () => {
        const a = await queued();
        const b = await queued();
        await store.claimRequest(a.id, 'dead-worker', 600_000);
        await store.claimRequest(b.id, 'dead-worker', 600_000);
        const released = await store.releaseAllClaims();
        assert.ok(released >= 2, `released ${released}`);
        const again = await store.claimRequest(a.id, 'new-worker', 60_000);
        assert.equal(again.state, 'claimed');
        assert.ok(again.state === 'claimed');
        assert.equal(again.record.attempt, 2);
        assert.equal((await store.claimRequest(b.id, 'new-worker', 60_000)).state, 'claimed');
      });
    });

    describe('finishing and the usage ledger', () => {
      it('finishes once: sets the outcome and appends one ledger row', async () => {
        const userId = id('u');
        const r = await queued({ userId });
        const claim = await store.claimRequest(r.id, 'w', 60_000);
        assert.ok(claim.state === 'claimed');
        const o = outcome({ attempt: 1, usage: { promptTokens: 9, completionTokens: 5, totalTokens: 14 }, chargedTokens: 14 });
        assert.equal(await store.finishRequest(r.id, o), true);

        const done = await store.getRequest(r.id);
        assert.equal(done?.status, 'completed');
        assert.equal(done?.result, 'Hello there');
        assert.equal(done?.finishReason, 'stop');
        assert.equal(done?.completionTokens, 5);
        assert.equal(done?.promptTokens, 9);
        assert.equal(done?.error, null);
        assert.ok(done?.completedAt instanceof Date);

        const failed = outcome({ status: 'failed', finishReason: 'error', error: { code: 'X', message: 'late' }, chargedTokens: 0, chargedRequests: 0 });
        assert.equal(await store.finishRequest(r.id, failed), false, 'second finish');
        assert.deepEqual(await store.getRequest(r.id), done, 'second finish changes nothing');

        const rows = await store.usageRows({ from: new Date(0), to: new Date(Date.now() + 3_600_000), userId });
        assert.equal(rows.length, 1);
        const row = rows[0];
        assert.ok(row);
        assert.equal(row.requestId, r.id);
        assert.equal(row.userId, userId);
        assert.equal(row.keyId, 'key-1');
        assert.equal(row.model, 'sim-1');
        assert.equal(row.status, 'completed');
        assert.equal(row.promptTokens, 9);
        assert.equal(row.completionTokens, 5);
        assert.equal(row.chargedTokens, 14);
        assert.equal(row.chargedRequests, 1);
        assert.equal(row.costUsd, null, 'no cost given: unpriced');
        assert.equal(row.deployment, null);
        assert.deepEqual(row.createdAt, r.createdAt);
        assert.ok(row.settledAt instanceof Date);
      });

      it('writes the cost and the serving deployment with the ledger row (the deployment from the output when not given)', async () => {
        const explicit = await queued();
        assert.equal(await store.finishRequest(explicit.id, outcome({ costUsd: 0.000123, deployment: 'gpu-a' })), true);
        const row = await store.ledgerRow(explicit.id);
        assert.equal(row?.costUsd, 0.000123);
        assert.equal(row?.deployment, 'gpu-a');

        const served = await queued();
        const output = { choices: [{ index: 0, content: 'Hello there', toolCalls: [], finishReason: 'stop' as const }], usageSource: 'reported' as const, served: { deployment: 'gpu-b', model: 'upstream-name' } };
        assert.equal(await store.finishRequest(served.id, outcome({ output, costUsd: 0 })), true);
        const servedRow = await store.ledgerRow(served.id);
        assert.equal(servedRow?.deployment, 'gpu-b');
        assert.equal(servedRow?.costUsd, 0, 'a refund of a priced model costs 0, not null');
        assert.deepEqual((await store.getRequest(served.id))?.output, output);
      });

      it('reads back every choice as finished: choice 0 from its result, a content other than the result as written', async () => {
        const logprobs = [{ token: 'Hel', logprob: -0.1, bytes: [72, 101, 108], top_logprobs: [] }];
        const toolCalls = [{ id: 'call_1', type: 'function' as const, function: { name: 'get_weather', arguments: '{"city":"Milan"}' } }];
        const output = {
          choices: [
            { index: 0, content: 'Hello there', toolCalls: [], finishReason: 'stop' as const, logprobs },
            { index: 1, content: 'Hello there', toolCalls, finishReason: 'tool_calls' as const },
            { index: 2, content: '', toolCalls: [], finishReason: 'length' as const },
          ],
          usageSource: 'counted' as const, served: { deployment: 'gpu-a', model: 'up' },
        };
        const same = await queued();
        assert.equal(await store.finishRequest(same.id, outcome({ output })), true);
        assert.deepEqual((await store.getRequest(same.id))?.output, output);
        assert.deepEqual((await store.listRequests({ userId: same.userId, limit: 10 })).find((r) => r.id === same.id)?.output, output);

        // A result the output does not repeat (never written so today, but a row may hold it).
        const other = await queued();
        const differs = { ...output, choices: [{ ...output.choices[0]!, content: 'Hi' }] };
        assert.equal(await store.finishRequest(other.id, outcome({ output: differs })), true);
        assert.deepEqual((await store.getRequest(other.id))?.output, differs);
        assert.equal((await store.getRequest(other.id))?.result, 'Hello there');

        const empty = await queued();
        const nothing = { choices: [{ index: 0, content: '', toolCalls, finishReason: 'tool_calls' as const }], usageSource: 'reported' as const };
        assert.equal(await store.finishRequest(empty.id, outcome({ result: '', output: nothing })), true);
        assert.deepEqual((await store.getRequest(empty.id))?.output, nothing);
      });

      it('sums spend per model for one user in [from, to): charged tokens, and cost null for a model never priced', async () => {
        const userId = id('u');
        const start = new Date(Date.now() - 60_000);
        const finish = async (model: string, o: Partial<Outcome>) => {
          const r = await queued({ userId, model });
          assert.equal(await store.finishRequest(r.id, outcome(o)), true);
        };
        await finish('priced', { usage: { promptTokens: 10, completionTokens: 4, totalTokens: 14 }, chargedTokens: 14, costUsd: 0.25 });
        await finish('priced', { usage: { promptTokens: 6, completionTokens: 2, totalTokens: 8 }, chargedTokens: 8, costUsd: 0.5 });
        // A refund: its row keeps the usage, but it is neither a charged request nor charged tokens.
        await finish('priced', { status: 'failed', usage: { promptTokens: 50, completionTokens: 0, totalTokens: 50 }, chargedTokens: 0, chargedRequests: 0, costUsd: 0 });
        await finish('free', { usage: { promptTokens: 3, completionTokens: 1, totalTokens: 4 }, chargedTokens: 4 });
        const other = await queued({ userId: id('other'), model: 'priced' });
        await store.finishRequest(other.id, outcome({ costUsd: 100 }));
        const end = new Date(Date.now() + 60_000);

        assert.deepEqual(await store.spendByModel(userId, start, end), [
          { model: 'free', requests: 1, promptTokens: 3, completionTokens: 1, chargedTokens: 4, costUsd: null },
          { model: 'priced', requests: 2, promptTokens: 16, completionTokens: 6, chargedTokens: 22, costUsd: 0.75 },
        ]);
        assert.deepEqual(await store.spendByModel(userId, end, new Date(end.getTime() + 1000)), []);
      });

      it('sums charged usage per calendar day in the asked time zone', async () => {
        const userId = id('daily');
        const start = new Date(Date.now() - 60_000);
        const finish = async (o: Partial<Outcome>) => {
          const r = await queued({ userId });
          assert.equal(await store.finishRequest(r.id, outcome(o)), true);
        };
        await finish({ chargedTokens: 14 });
        await finish({ chargedTokens: 8 });
        // A refund is a row of the day, but neither a charged request nor charged tokens.
        await finish({ status: 'failed', chargedTokens: 0, chargedRequests: 0 });
        await store.finishRequest((await queued({ userId: id('other') })).id, outcome({ chargedTokens: 1000 }));
        const end = new Date(Date.now() + 60_000);
        // The day as the zone's own calendar names it (en-CA formats as YYYY-MM-DD).
        const dayIn = (timeZone: string, t: Date) => new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(t);
        for (const tz of ['UTC', 'Pacific/Kiritimati', 'Pacific/Pago_Pago']) {
          const days = await store.usageByDay(userId, start, end, tz);
          // Near midnight the rows may straddle two days of that zone: the sum is what must hold.
          assert.ok(days.length >= 1 && days.length <= 2, `${tz}: ${JSON.stringify(days)}`);
          assert.ok(days.every((d) => d.day === dayIn(tz, start) || d.day === dayIn(tz, end)), `${tz}: ${JSON.stringify(days)}`);
          assert.deepEqual(days.reduce((a, d) => ({ requests: a.requests + d.requests, tokens: a.tokens + d.tokens }), { requests: 0, tokens: 0 }), { requests: 2, tokens: 22 });
        }
        assert.notEqual(dayIn('Pacific/Kiritimati', start), dayIn('Pacific/Pago_Pago', start), 'UTC+14 and UTC-11 are a day apart');
        assert.deepEqual(await store.usageByDay(userId, end, new Date(end.getTime() + 1000), 'UTC'), []);
      });

      it('records an error outcome', async () => {
        const r = await queued();
        const o = outcome({
          status: 'failed', finishReason: 'error', result: '', error: { code: 'SLUICE_ERR_MODEL_PERMANENT', message: 'no' },
          usage: { promptTokens: 0, completionTokens: 0, totalTokens: 0 }, chargedTokens: 0, chargedRequests: 0,
        });
        assert.equal(await store.finishRequest(r.id, o), true);
        const done = await store.getRequest(r.id);
        assert.equal(done?.status, 'failed');
        assert.deepEqual(done?.error, { code: 'SLUICE_ERR_MODEL_PERMANENT', message: 'no' });
        assert.equal(done?.promptTokens, 0, 'the request reports the usage it was charged for, not the admission count');
        assert.equal((await store.ledgerRow(r.id))?.promptTokens, 0);
      });

      it('refuses a stale attempt and changes nothing', async () => {
        const userId = id('u');
        const r = await queued({ userId });
        await store.claimRequest(r.id, 'w1', 30);
        await sleep(60);
        const second = await store.claimRequest(r.id, 'w2', 60_000);
        assert.ok(second.state === 'claimed');
        assert.equal(await store.finishRequest(r.id, outcome({ attempt: 1 })), false);
        assert.deepEqual(await store.getRequest(r.id), second.record);
        assert.deepEqual(await store.usageRows({ from: new Date(0), to: new Date(Date.now() + 3_600_000), userId }), []);
        assert.equal(await store.finishRequest(r.id, outcome({ attempt: 2 })), true);
      });

      it('returns false for an unknown request', async () => {
        assert.equal(await store.finishRequest(randomUUID(), outcome()), false);
      });

      it('lets exactly one of 20 concurrent finishers win, with one ledger row', async () => {
        const userId = id('u');
        const r = await queued({ userId });
        await store.claimRequest(r.id, 'w', 60_000);
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.finishRequest(r.id, outcome({ attempt: 1, chargedTokens: 100 + i }))),
        );
        assert.equal(results.filter(Boolean).length, 1);
        const rows = await store.usageRows({ from: new Date(0), to: new Date(Date.now() + 3_600_000), userId });
        assert.equal(rows.length, 1);
        assert.equal(rows[0]?.chargedTokens, 100 + results.indexOf(true));
      });

      it('lists unfinished requests oldest first, honouring createdBefore and limit', async () => {
        // Dates carry milliseconds and the database microseconds: keep creations apart.
        const a = await queued();
        await sleep(3);
        const b = await queued();
        await sleep(3);
        const c = await queued();
        const d = await queued();
        await store.claimRequest(b.id, 'w', 60_000);
        await store.finishRequest(c.id, outcome());
        const mine = new Set([a.id, b.id, c.id, d.id]);
        const all = await store.listUnfinished({ limit: 100_000 });
        assert.deepEqual(all.filter((r) => mine.has(r.id)).map((r) => r.id), [a.id, b.id, d.id]);
        assert.ok(all.every((r) => r.status === 'queued' || r.status === 'running'));
        for (let i = 1; i < all.length; i++) {
          assert.ok((all[i]?.createdAt.getTime() ?? 0) >= (all[i - 1]?.createdAt.getTime() ?? 0), 'oldest first');
        }
        const beforeB = await store.listUnfinished({ createdBefore: b.createdAt, limit: 100_000 });
        assert.deepEqual(beforeB.filter((r) => mine.has(r.id)).map((r) => r.id), [a.id]);
        const two = await store.listUnfinished({ limit: 2 });
        assert.deepEqual(two.map((r) => r.id), all.slice(0, 2).map((r) => r.id));
      });

      it('tells when the oldest still-queued request was created', async () => {
        const a = await queued();
        const oldest = await store.oldestQueuedAt();
        assert.ok(oldest instanceof Date);
        const queuedNow = (await store.listUnfinished({ limit: 100_000 })).filter((r) => r.status === 'queued');
        assert.equal(oldest.getTime(), Math.min(...queuedNow.map((r) => r.createdAt.getTime())));
        assert.ok(oldest.getTime() <= a.createdAt.getTime());
        // A claimed (running) request is no longer queued.
        await store.claimRequest(a.id, 'w', 60_000);
        const after = await store.oldestQueuedAt();
        const stillQueued = (await store.listUnfinished({ limit: 100_000 })).filter((r) => r.status === 'queued');
        assert.equal(after?.getTime() ?? null, stillQueued.length ? Math.min(...stillQueued.map((r) => r.createdAt.getTime())) : null);
      });

      it('sums charged usage settled in [from, to) and lists those rows in order', async () => {
        const userId = id('u');
        const start = new Date(Date.now() - 60_000);
        const finish = async (tokens: number, requests: 0 | 1) => {
          // Dates carry milliseconds and the database microseconds: keep settlements apart.
          await sleep(3);
          const r = await queued({ userId });
          assert.equal(await store.finishRequest(r.id, outcome({ chargedTokens: tokens, chargedRequests: requests })), true);
          return r.id;
        };
        const ids = [await finish(10, 1), await finish(20, 1), await finish(0, 0), await finish(7, 1)];
        // Another user's usage must not count.
        const other = await queued({ userId: id('other') });
        await store.finishRequest(other.id, outcome({ chargedTokens: 1000 }));

        const end = new Date(Date.now() + 60_000);
        const rows = await store.usageRows({ from: start, to: end, userId });
        assert.equal(rows.length, 4);
        assert.deepEqual(rows.map((r) => r.requestId), ids);
        for (let i = 1; i < rows.length; i++) {
          assert.ok((rows[i]?.settledAt.getTime() ?? 0) >= (rows[i - 1]?.settledAt.getTime() ?? 0));
        }
        assert.deepEqual(await store.usageTotals(userId, start, end), { requests: 3, tokens: 37 });

        const secondSettled = rows[1]?.settledAt;
        assert.ok(secondSettled);
        // `to` is exclusive: a window ending at the second settlement holds only the first.
        assert.deepEqual(await store.usageTotals(userId, start, secondSettled), { requests: 1, tokens: 10 });
        assert.deepEqual((await store.usageRows({ from: start, to: secondSettled, userId })).map((r) => r.requestId), [ids[0]]);
        // One request's row: what it was charged (a refund is a row too); none before it ends.
        const refunded = await store.ledgerRow(ids[2]!);
        assert.deepEqual([refunded?.requestId, refunded?.chargedTokens, refunded?.chargedRequests], [ids[2], 0, 0]);
        assert.equal((await store.ledgerRow(ids[1]!))?.chargedTokens, 20);
        const unended = (await queued({ userId })).id;
        assert.equal(await store.ledgerRow(unended), null);
        // Many requests' rows in one call: those that have one, whatever the order asked.
        const many = await store.ledgerRowsOf([unended, ids[2]!, randomUUID(), ids[0]!]);
        assert.deepEqual(many.map((r) => [r.requestId, r.chargedTokens]).sort(), [[ids[0], 10], [ids[2], 0]].sort());
        assert.deepEqual(await store.ledgerRowsOf([]), []);
        // Newest first with a limit: the last rows, in reverse.
        assert.deepEqual((await store.usageRows({ from: start, to: end, userId, limit: 3, newestFirst: true })).map((r) => r.requestId), ids.slice(1).reverse());
        // `from` is inclusive.
        assert.deepEqual(await store.usageTotals(userId, secondSettled, end), { requests: 2, tokens: 27 });
        assert.deepEqual(await store.usageTotals(userId, end, new Date(end.getTime() + 60_000)), { requests: 0, tokens: 0 });

        assert.deepEqual((await store.usageRows({ from: start, to: end, userId, limit: 2 })).map((r) => r.requestId), ids.slice(0, 2));
        const everyone = await store.usageRows({ from: start, to: end });
        assert.ok(everyone.some((r) => r.requestId === other.id));
      });
    });
  });
}
