// PGlite runs no autovacuum: the driver vacuums and analyzes by autovacuum's rule, so the cached
// plans of its prepared statements follow the tables as they grow (finishing a request must not
// scan every request ever made) and dead index entries do not pile up.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Maintenance, openPglite } from '../../src/adapters/store/pglite.ts';
import { SqlStore } from '../../src/adapters/store/sql-store.ts';
import type { SqlClient } from '../../src/adapters/store/sql-store.ts';

interface TableStats { seq_scan: number; n_tup_upd: number; n_dead_tup: number; vacuum_count: number; analyze_count: number }

async function requestsStats(client: SqlClient): Promise<TableStats> {
  const [row] = await client.query(
    `SELECT seq_scan::int, n_tup_upd::int, n_dead_tup::int, vacuum_count::int, analyze_count::int
     FROM pg_stat_user_tables WHERE relname = 'requests'`);
  return row as unknown as TableStats;
}

/**
 * Statistics reach the view up to a second late: polls until `ok` holds. Slowly, as the store
 * vacuums only once it has been quiet for a moment and these reads are statements too.
 */
async function statsWhen(client: SqlClient, ok: (s: TableStats) => boolean, what: string): Promise<TableStats> {
  const until = Date.now() + 20_000;
  for (;;) {
    const s = await requestsStats(client);
    if (ok(s)) return s;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 600));
  }
}

/** Inserts and finishes `n` requests, 50 at a time (as concurrent callers would). */
async function churn(store: SqlStore, n: number): Promise<void> {
  for (let done = 0; done < n; done += 50) {
    await Promise.all(Array.from({ length: Math.min(50, n - done) }, async () => {
      const id = randomUUID();
      await store.insertRequest({
        id, userId: 'u1', keyId: null, model: 'sim', mode: 'direct', payload: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 8 },
        priority: 0, idempotencyKey: null, bodyHash: 'h', estimatedTokens: 9, promptTokens: 1,
      }, { workerId: 'w', claimMs: 30_000 });
      const ended = await store.finishRequest(id, {
        status: 'completed', attempt: 1, result: 'ok', finishReason: 'stop', usage: { promptTokens: 1, completionTokens: 8, totalTokens: 9 },
        error: null, chargedTokens: 9, chargedRequests: 1,
      });
      assert.equal(ended, true);
    }));
  }
}

describe('PGlite maintenance', { timeout: 60_000 }, () => {
  it('vacuums and analyzes a growing table, after which finishing requests does not scan it', async () => {
    const client = await openPglite(null);
    const store = new SqlStore(client);
    try {
      await store.migrate();
      await churn(store, 3000);
      await statsWhen(client, (s) => s.vacuum_count > 0 && s.analyze_count > 0 && s.n_dead_tup < 1000, 'a VACUUM and an ANALYZE of requests');
      const before = await statsWhen(client, (s) => s.n_tup_upd >= 3000, 'the updates to be counted');
      await churn(store, 500);
      const after = await statsWhen(client, (s) => s.n_tup_upd >= before.n_tup_upd + 500, 'the second round to be counted');
      assert.equal(after.seq_scan - before.seq_scan, 0, 'finishing 500 requests in a table of 3,000 read them by key');
    } finally {
      await store.close();
    }
  });

  it('reports a failure that repeats every check once, not every second', async () => {
    let checks = 0;
    const failing = {
      query: async () => { checks++; throw new Error('catalog unreadable'); },
      exec: async () => [],
    };
    const reported: unknown[] = [];
    const maintenance = new Maintenance(failing, () => 0, (err) => reported.push(err));
    try {
      while (checks < 3) await new Promise((r) => setTimeout(r, 100));
    } finally {
      await maintenance.stop();
    }
    assert.equal(reported.length, 1);
    assert.equal((reported[0] as Error).message, 'catalog unreadable');
  });
});

