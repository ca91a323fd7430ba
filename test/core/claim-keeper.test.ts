// The claim keeper: every running attempt's claim renewed on one timer, all in the same turn, so the
// store batches them; a lost claim or an asked-for cancel reaches the attempt; a release stops it.
import { after, afterEach, before, beforeEach, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { ClaimKeeper, type ClaimHandlers } from '../../src/core/claim-keeper.ts';
import { createLogger } from '../../src/core/logger.ts';
import type { ClaimRenewal, RequestRecord, Store } from '../../src/ports/store.ts';
import { openPostgres } from '../../src/adapters/store/postgres.ts';
import { SqlStore, type SqlClient } from '../../src/adapters/store/sql-store.ts';
import { createDatabase, dropDatabase, serviceSuite, uniqueName } from '../helpers/services.ts';

const logger = createLogger('silent', 'test');
const record = (id: string, attempt = 1) => ({ id, attempt }) as RequestRecord;

/** A store whose renewClaim answers from `answers` (default held), or waits on `gate` when set. */
function fakeStore() {
  const calls: { id: string; workerId: string; attempt: number; claimMs: number }[] = [];
  const answers = new Map<string, ClaimRenewal | Error>();
  let gate: Promise<void> | null = null;
  const store = {
    async renewClaim(id: string, workerId: string, attempt: number, claimMs: number): Promise<ClaimRenewal> {
      calls.push({ id, workerId, attempt, claimMs });
      if (gate) await gate;
      const a = answers.get(id) ?? 'held';
      if (a instanceof Error) throw a;
      return a;
    },
  } as unknown as Store;
  return { store, calls, answers, setGate: (g: Promise<void> | null) => { gate = g; } };
}

function handlers() {
  const seen = { lost: 0, cancel: 0, renewed: 0 };
  const on: ClaimHandlers = { lost: () => { seen.lost++; }, cancel: () => { seen.cancel++; }, renewed: async () => { seen.renewed++; } };
  return { on, seen };
}

const settle = () => new Promise<void>((r) => setImmediate(r));

describe('ClaimKeeper', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setInterval'] }));
  afterEach(() => mock.timers.reset());

  it('renews every held claim on each tick, all in the same turn, with the claim time', async () => {
    const f = fakeStore();
    const keeper = new ClaimKeeper({ store: f.store, logger, intervalMs: 1000, claimMs: 3000 });
    for (let i = 0; i < 50; i++) keeper.hold(record(`r${i}`, 2), 'w1', handlers().on);
    mock.timers.tick(999);
    assert.equal(f.calls.length, 0, 'nothing before the first tick');
    mock.timers.tick(1);
    // Synchronously inside the tick: one turn, so SqlStore's batcher makes them one statement.
    assert.equal(f.calls.length, 50);
    assert.deepEqual(f.calls[7], { id: 'r7', workerId: 'w1', attempt: 2, claimMs: 3000 });
    await settle();
    mock.timers.tick(1000);
    assert.equal(f.calls.length, 100);
  });

  it('tells the attempt its claim is lost, or that a cancel was asked for', async () => {
    const f = fakeStore();
    const keeper = new ClaimKeeper({ store: f.store, logger, intervalMs: 100, claimMs: 300 });
    const held = handlers(), lost = handlers(), cancel = handlers();
    keeper.hold(record('held'), 'w', held.on);
    keeper.hold(record('lost'), 'w', lost.on);
    keeper.hold(record('cancel'), 'w', cancel.on);
    f.answers.set('lost', 'lost');
    f.answers.set('cancel', 'cancel');
    mock.timers.tick(100);
    await settle();
    assert.deepEqual(held.seen, { lost: 0, cancel: 0, renewed: 1 });
    assert.deepEqual(lost.seen, { lost: 1, cancel: 0, renewed: 0 }, 'a lost claim is no heartbeat');
    assert.deepEqual(cancel.seen, { lost: 0, cancel: 1, renewed: 1 }, 'the claim is still held: the attempt stops and settles');
  });

  it('stops renewing a released claim, and stops its timer when none is held', async () => {
    const f = fakeStore();
    const keeper = new ClaimKeeper({ store: f.store, logger, intervalMs: 100, claimMs: 300 });
    const a = keeper.hold(record('a'), 'w', handlers().on);
    const b = keeper.hold(record('b'), 'w', handlers().on);
    mock.timers.tick(100);
    await settle();
    a.release();
    a.release(); // twice is harmless
    mock.timers.tick(100);
    assert.deepEqual(f.calls.map((c) => c.id), ['a', 'b', 'b']);
    b.release();
    assert.equal(keeper.size, 0);
    mock.timers.tick(1000);
    assert.equal(f.calls.length, 3, 'no timer left running');
    keeper.hold(record('c'), 'w', handlers().on);
    mock.timers.tick(100);
    assert.deepEqual(f.calls.map((c) => c.id), ['a', 'b', 'b', 'c'], 'a new hold starts it again');
  });

  it('a release while the renewal is in flight drops its answer', async () => {
    const f = fakeStore();
    let open!: () => void;
    f.setGate(new Promise<void>((r) => { open = r; }));
    f.answers.set('a', 'lost');
    const keeper = new ClaimKeeper({ store: f.store, logger, intervalMs: 100, claimMs: 300 });
    const h = handlers();
    const claim = keeper.hold(record('a'), 'w', h.on);
    mock.timers.tick(100);
    claim.release();
    open();
    await settle();
    assert.deepEqual(h.seen, { lost: 0, cancel: 0, renewed: 0 });
  });

  it('does not pile renewals on a store that does not answer, and goes on after an error', async () => {
    const f = fakeStore();
    let open!: () => void;
    f.setGate(new Promise<void>((r) => { open = r; }));
    const keeper = new ClaimKeeper({ store: f.store, logger, intervalMs: 100, claimMs: 300 });
    const h = handlers();
    keeper.hold(record('a'), 'w', h.on);
    mock.timers.tick(100);
    mock.timers.tick(100);
    mock.timers.tick(100);
    assert.equal(f.calls.length, 1, 'one renewal in flight, not three');
    f.answers.set('a', new Error('store down'));
    f.setGate(null);
    open();
    await settle();
    assert.equal(h.seen.lost, 0, 'an error is not a lost claim');
    mock.timers.tick(100);
    await settle();
    f.answers.delete('a');
    mock.timers.tick(100);
    await settle();
    assert.equal(f.calls.length, 3);
    assert.equal(h.seen.renewed, 1);
  });
});

describe('ClaimKeeper on PostgreSQL', { timeout: 60_000, ...await serviceSuite('postgres') }, () => {
  const name = uniqueName('sluice_claims');
  let client: SqlClient;
  before(async () => {
    client = await openPostgres(await createDatabase(name));
    await new SqlStore(client).migrate();
  });
  after(async () => { await client?.close(); await dropDatabase(name); });

  it('a tick renews 300 running attempts in a few statements, each claim extended', async () => {
    const store = new SqlStore(client);
    const ids = Array.from({ length: 300 }, () => randomUUID());
    const records = await Promise.all(ids.map(async (id) => (await store.insertRequest({
      id, userId: 'u', keyId: null, model: 'sim', mode: 'queued', payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 8 },
      priority: 0, idempotencyKey: null, bodyHash: 'h', estimatedTokens: 10, promptTokens: 2,
    }, { workerId: 'w', claimMs: 2_000 })).record));
    let statements = 0;
    const counting: SqlClient = { ...client, query: (sql, params) => { statements++; return client.query(sql, params); } };
    const keeper = new ClaimKeeper({ store: new SqlStore(counting), logger, intervalMs: 200, claimMs: 60_000 });
    let renewed = 0;
    const claims = records.map((r) => keeper.hold(r, 'w', { lost: () => assert.fail('lost'), cancel: () => assert.fail('cancel'), renewed: async () => { renewed++; } }));
    const deadline = Date.now() + 20_000;
    while (renewed < 300 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of claims) c.release();
    assert.equal(renewed, 300);
    // One tick: 300 rows in batches of at most 256 (batch.ts), not 300 (or, before, 600) statements.
    assert.ok(statements <= 4, `${statements} statements`);
    const rows = await client.query(`SELECT count(*)::int AS n FROM requests WHERE claim_expires_at > now() + interval '30 seconds'`, []);
    assert.equal(rows[0]!.n, 300);
  });
});
