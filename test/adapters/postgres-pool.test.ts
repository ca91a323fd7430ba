// The PostgreSQL driver when its pool has no connection to give (every one busy under load, or the
// server out of reach): no statement ran, so the failure is SLUICE_ERR_UNAVAILABLE, and a batch of
// calls that hit it fails at once instead of being run again call by call (each call would wait
// the connect timeout in turn: a 1,000-stream run had a request wait 13 minutes for its insert).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { openPostgres } from '../../src/adapters/store/postgres.ts';
import { SqlStore, type SqlClient } from '../../src/adapters/store/sql-store.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import { createDatabase, dropDatabase, serviceSuite, uniqueName } from '../helpers/services.ts';

/** pg's pool size in the driver (postgres.ts POOL_SIZE). */
const POOL_SIZE = 10;

describe('PostgreSQL pool exhausted', { timeout: 30_000, ...await serviceSuite('postgres') }, () => {
  const name = uniqueName('sluice_pgpool');
  let client: SqlClient;
  before(async () => {
    client = await openPostgres(await createDatabase(name), { connectTimeoutMs: 300 });
    await new SqlStore(client).migrate();
  });
  after(async () => { await client?.close(); await dropDatabase(name); });

  it('a statement that gets no connection fails with SLUICE_ERR_UNAVAILABLE; a batch of them runs one statement, not one per call', async () => {
    let statements = 0;
    const counting: SqlClient = { ...client, query: (sql, params) => { statements++; return client.query(sql, params); } };
    const store = new SqlStore(counting);
    // Every pooled connection held by a transaction until `release`.
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    let held = 0;
    const holders = Array.from({ length: POOL_SIZE }, () => client.transaction(async () => { held++; await gate; }));
    while (held < POOL_SIZE) await new Promise((r) => setTimeout(r, 10));
    try {
      // Made in one turn: one batch (store/batch.ts).
      const results = await Promise.allSettled([1, 2, 3].map(() => store.markPublished(randomUUID())));
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        assert.ok(isSluiceError((r as PromiseRejectedResult).reason, 'SLUICE_ERR_UNAVAILABLE'), `got ${String((r as PromiseRejectedResult).reason)}`);
      }
      assert.equal(statements, 1, 'the batch is not run again call by call');
    } finally {
      release();
      await Promise.all(holders);
    }
    // The pool serves again once connections come back.
    await store.markPublished(randomUUID());
  });
});
