// The data directory holds the default store: two instances with different SLUICE_DATA_DIRs and no
// DATABASE_URL keep separate stores, each on disk under its own directory.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSluice } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { api, MASTER_KEY } from '../helpers/app.ts';

describe('SLUICE_DATA_DIR holds the default store', () => {
  let base: string;
  before(() => { base = mkdtempSync(join(tmpdir(), 'sluice-datadir-')); });
  after(() => rmSync(base, { recursive: true, force: true }));

  /** Starts a whole instance configured the way a deployment is: the environment, no DATABASE_URL. */
  async function withInstance<T>(dataDir: string, fn: (call: ReturnType<typeof api>) => Promise<T>): Promise<T> {
    const config = loadConfig({ SLUICE_DATA_DIR: dataDir, SLUICE_CONFIG: undefined }, { port: 0, host: '127.0.0.1', logLevel: 'silent', masterKey: MASTER_KEY });
    const app = await startSluice(config);
    try { return await fn(api(app.url!)); } finally { await app.close(); }
  }

  it('two data dirs, two stores, each under its directory', async () => {
    const dirA = join(base, 'a');
    const dirB = join(base, 'b');
    await withInstance(dirA, async (call) => {
      assert.equal((await call('/admin/users', { method: 'POST', json: { id: 'only-in-a', tier: 'free' } })).status, 201);
    });
    assert.ok(existsSync(join(dirA, 'db', 'PG_VERSION')), 'the store of A is a cluster under A/db');
    await withInstance(dirB, async (call) => {
      assert.equal((await call('/admin/users/only-in-a')).status, 404, 'B does not see A\'s store');
    });
    assert.ok(existsSync(join(dirB, 'db', 'PG_VERSION')), 'the store of B is a cluster under B/db');
    await withInstance(dirA, async (call) => {
      assert.equal((await call('/admin/users/only-in-a')).status, 200, 'A finds its user again after a restart');
    });
  });
});
