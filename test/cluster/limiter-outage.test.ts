// Redis unreachable from the start: with SLUICE_LIMITER_FAILURE=fallback a gateway still admits
// user-key requests (a per-process limiter bridges the outage); with =refuse it answers 503
// SLUICE_ERR_LIMITER_UNAVAILABLE. One embedded process each (role all); only the limiter is Redis.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MASTER_KEY } from '../helpers/app.ts';
import { client } from '../helpers/cluster.ts';
import { spawnSluice, type SluiceProcess } from '../helpers/process.ts';

const DEAD_REDIS = 'redis://127.0.0.1:1';

describe('limiter (Redis) unreachable', () => {
  const procs: SluiceProcess[] = [];
  const dirs: string[] = [];
  after(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL')));
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  async function gateway(policy: 'fallback' | 'refuse'): Promise<{ proc: SluiceProcess; key: string }> {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-limiter-'));
    dirs.push(dir);
    const proc = await spawnSluice(['start', '--role', 'all'], {
      SLUICE_DATA_DIR: dir, DATABASE_URL: 'pglite://memory', QUEUE_URL: 'memory://', BUS_URL: 'memory://',
      LIMITER_URL: DEAD_REDIS, SLUICE_LIMITER_FAILURE: policy, SLUICE_MASTER_KEY: MASTER_KEY, SIM_TTFT_MS: '0', SIM_ITL_MS: '1',
    }, { timeoutMs: 60_000 }); // PGlite boots slowly on a loaded machine
    procs.push(proc);
    const admin = client(proc.url, MASTER_KEY);
    assert.equal((await admin.post('/admin/users', { id: 'alice' })).status, 201);
    const key = ((await (await admin.post('/admin/keys', { user_id: 'alice' })).json()) as { key: string }).key;
    return { proc, key };
  }

  // Both started at once: an embedded PGlite takes seconds to boot.
  let fallback: { proc: SluiceProcess; key: string };
  let refuse: { proc: SluiceProcess; key: string };
  before(async () => { [fallback, refuse] = await Promise.all([gateway('fallback'), gateway('refuse')]); });

  const body = { model: 'sim', max_tokens: 5, messages: [{ role: 'user', content: 'hello' }] };

  it('fallback: user-key requests are still served', async () => {
    const { proc, key } = fallback;
    const res = await client(proc.url, key).post('/v1/chat/completions', body);
    assert.equal(res.status, 200, await res.clone().text());
    const completion = (await res.json()) as { usage: { completion_tokens: number } };
    assert.equal(completion.usage.completion_tokens, 5);
    const metrics = await (await fetch(`${proc.url}/metrics`)).text();
    assert.match(metrics, /^sluice_limiter_degraded 1$/m, 'the operator sees the degraded limiter');
  });

  it('refuse: a user-key request gets 503 SLUICE_ERR_LIMITER_UNAVAILABLE', async () => {
    const { proc, key } = refuse;
    const res = await client(proc.url, key).post('/v1/chat/completions', body);
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_LIMITER_UNAVAILABLE');
    const queued = await client(proc.url, key).post('/v1/requests', body);
    assert.equal(queued.status, 503);
  });
});
