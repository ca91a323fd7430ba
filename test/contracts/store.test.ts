import { readdirSync } from 'node:fs';
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createStore } from '../../src/adapters/store/factory.ts';
import { openPglite } from '../../src/adapters/store/pglite.ts';
import { SqlStore, storedOutput } from '../../src/adapters/store/sql-store.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import { createDatabase, dropDatabase, serviceSuite, uniqueName } from '../helpers/services.ts';
import { storeContract } from './store.contract.ts';

storeContract('pglite://memory', () => createStore('pglite://memory'));
storeContract('pglite://memory (worker thread)', () => createStore('pglite://memory', { pgliteWorker: true }));

describe('Store factory', () => {
  it('refuses an unknown scheme with SLUICE_ERR_CONFIG', async () => {
    await assert.rejects(createStore('mysql://localhost/db'), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
    await assert.rejects(createStore('pglite://'), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
    await assert.rejects(createStore('pglite:memory'), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
  });

  it('maps an unreachable server to SLUICE_ERR_UNAVAILABLE', async () => {
    await assert.rejects(
      createStore('postgres://postgres@127.0.0.1:1/none'),
      (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE'),
    );
  });
});

describe('Stored output (PGlite)', () => {
  it('reads a row whose output holds choice 0\'s text only in result (the compact form) as one that holds it in both', async () => {
    const db = await openPglite(null);
    const store = new SqlStore(db);
    try {
      await store.migrate();
      const output = { choices: [{ index: 0, content: 'Bonjour', toolCalls: [], finishReason: 'stop' as const }], usageSource: 'reported' as const };
      const ids = ['req-new', 'req-old'];
      for (const id of ids) {
        await store.insertRequest({
          id, userId: 'u', keyId: null, model: 'm', mode: 'direct', payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 4 },
          priority: 0, idempotencyKey: null, bodyHash: '', estimatedTokens: 6, promptTokens: 2,
        });
        assert.equal(await store.finishRequest(id, {
          status: 'completed', attempt: null, result: 'Bonjour', output, finishReason: 'stop',
          usage: { promptTokens: 2, completionTokens: 1, totalTokens: 3 }, error: null, chargedTokens: 3, chargedRequests: 1,
        }), true);
      }
      // This version writes choice 0's text once, in `result` (the compact form)...
      const [stored] = await db.query(`SELECT output::text AS output FROM requests WHERE request_id = 'req-new'`);
      assert.ok(!String(stored?.output).includes('Bonjour'), `written compact: ${String(stored?.output)}`);
      assert.deepEqual(JSON.parse(String(stored?.output)), storedOutput(output, 'Bonjour'));
      // ...and reads as well a row that an earlier version wrote whole.
      await db.query(`UPDATE requests SET output = $1::jsonb WHERE request_id = 'req-old'`, [JSON.stringify(output)]);
      for (const id of ids) assert.deepEqual((await store.getRequest(id))?.output, output, id);
    } finally {
      await store.close();
    }
  });
});

describe('Store on PGlite on disk', () => {
  let base: string;
  before(async () => { base = await mkdtemp(join(tmpdir(), 'sluice-store-')); });
  after(async () => { await rm(base, { recursive: true, force: true }); });

  it('keeps data across close and reopen, creating parent directories', async () => {
    const url = `pglite://${join(base, 'nested', 'deeper', 'db')}`;
    const first = await createStore(url);
    await first.createUser({ id: 'persisted', name: 'Disk', tier: 'pro' });
    const { record } = await first.insertRequest({
      id: 'req-disk', userId: 'persisted', keyId: null, model: 'm', mode: 'queued',
      payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 4 }, priority: 1,
      idempotencyKey: 'idem', bodyHash: 'h', estimatedTokens: 6, promptTokens: 2,
    });
    await first.close();

    // Reopening runs the migrations again: they must find nothing to do.
    const second = await createStore(url);
    try {
      assert.equal((await second.getUser('persisted'))?.name, 'Disk');
      assert.deepEqual(await second.getRequest('req-disk'), record);
    } finally {
      await second.close();
    }
  });

  it('refuses a store path it cannot open a cluster in with SLUICE_ERR_CONFIG naming the path and the reason', async () => {
    const file = join(base, 'a-file');
    await writeFile(file, 'not a directory');
    await assert.rejects(createStore(`pglite://${file}`), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG') && e.message.includes(file));
    await assert.rejects(createStore(`pglite://${join(file, 'db')}`), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG') && e.message.includes(file));
    // A file where the cluster's base directory must go: the reason is named.
    const blocked = join(base, 'blocked');
    await mkdir(blocked);
    await writeFile(join(blocked, 'base'), 'in the way');
    await assert.rejects(createStore(`pglite://${blocked}`), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG') && e.message.includes(blocked) && e.message.includes('ENOTDIR'));
  });
});

describe('Store on PostgreSQL', await serviceSuite('postgres'), () => {
  const created: string[] = [];

  async function freshDatabase(): Promise<string> {
    const name = uniqueName('sluice_store');
    created.push(name);
    return createDatabase(name);
  }

  let url = '';
  before(async () => { url = await freshDatabase(); });
  after(async () => { for (const name of created) await dropDatabase(name); });

  storeContract('postgres', () => createStore(url));

  it('migrates once when two processes start at once on an empty database', async () => {
    const target = await freshDatabase();
    const stores = await Promise.all([createStore(target), createStore(target), createStore(target)]);
    try {
      await stores[0]?.createUser({ id: 'race', tier: 'free' });
      assert.equal((await stores[2]?.getUser('race'))?.tier, 'free');
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
    const client = new pg.Client({ connectionString: target });
    await client.connect();
    try {
      const { rows } = await client.query<{ version: string }>('SELECT version FROM schema_migrations ORDER BY version');
      const files = readdirSync(new URL('../../src/adapters/store/migrations/', import.meta.url)).filter((f) => f.endsWith('.sql')).map((f) => f.replace(/\.sql$/, '')).sort();
      assert.ok(files.length >= 2);
      assert.deepEqual(rows.map((r) => r.version), files, 'each migration applied once, in order');
    } finally {
      await client.end();
    }
  });
});
