// Every role is probed and scraped: a worker (or ledger) process serves /healthz, /readyz and
// /metrics on PORT, and nothing else; the metrics it owns (tokens, time to first token) appear there.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config.ts';
import { startSluice, type Sluice } from '../../src/app.ts';
import { MASTER_KEY } from '../helpers/app.ts';

describe('worker role', () => {
  let worker: Sluice;
  let base: string;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-roles-'));
  before(async () => {
    worker = await startSluice(parseConfig({ role: 'worker', port: 0, dataDir: dir, databaseUrl: 'pglite://memory', logLevel: 'silent', masterKey: MASTER_KEY }));
    base = `http://127.0.0.1:${(worker.server.server.address() as { port: number }).port}`;
  });
  after(async () => { await worker.close(); rmSync(dir, { recursive: true, force: true }); });

  it('serves probes and the metrics KEDA and dashboards read', async () => {
    assert.equal(worker.url, null, 'no API on a worker');
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const text = await (await fetch(`${base}/metrics`)).text();
    for (const name of ['ml_tokens_processed_total', 'sluice_time_to_first_token_seconds', 'sluice_requests_finished_total']) assert.match(text, new RegExp(`^# HELP ${name} `, 'm'));
  });

  it('answers API routes with 404 SLUICE_ERR_ROUTE_NOT_FOUND', async () => {
    const res = await fetch(`${base}/v1/models`, { headers: { authorization: `Bearer ${MASTER_KEY}` } });
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_ROUTE_NOT_FOUND');
  });
});
