// Nothing accepted is lost: SIGKILL the embedded process while requests are queued and running;
// after a restart every accepted request completes, exactly once.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MASTER_KEY, waitFor } from '../helpers/app.ts';
import { freePort, spawnSluice, type SluiceProcess } from '../helpers/process.ts';

describe('crash recovery on the embedded default', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-crash-'));
  let proc: SluiceProcess | undefined;
  after(async () => { await proc?.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); });

  it('every request accepted before a SIGKILL completes after the restart', async () => {
    const port = await freePort();
    const env = {
      SLUICE_DATA_DIR: dir, DATABASE_URL: `pglite://${join(dir, 'db')}`, SLUICE_MASTER_KEY: MASTER_KEY,
      SIM_TTFT_MS: '0', SIM_ITL_MS: '25', WORKER_CONCURRENCY: '4',
    };
    proc = await spawnSluice(['start'], env, { port });
    const headers = { authorization: `Bearer ${MASTER_KEY}`, 'content-type': 'application/json' };
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const res: Response = await fetch(`${proc.url}/v1/requests`, { method: 'POST', headers, body: JSON.stringify({ model: 'sim', max_tokens: 40, messages: [{ role: 'user', content: `job ${i}` }] }) });
      assert.equal(res.status, 202);
      ids.push(((await res.json()) as { request_id: string }).request_id);
    }
    const statuses = async () => Promise.all(ids.map(async (id) => ((await (await fetch(`${proc!.url}/v1/requests/${id}`, { headers })).json()) as { status: string }).status));
    await waitFor(async () => (await statuses()).includes('running'));
    const before = await statuses();
    assert.ok(before.includes('queued'), `some requests still queued at the crash: ${before}`);
    await proc.kill('SIGKILL');

    proc = await spawnSluice(['start'], env, { port });
    const final = await waitFor(async () => { const s = await statuses(); return s.every((x) => x === 'completed') && s; }, 30_000, 200);
    assert.equal(final.length, 12);
    for (const id of ids) {
      const r = (await (await fetch(`${proc.url}/v1/requests/${id}`, { headers })).json()) as { usage: { completion_tokens: number } };
      assert.equal(r.usage.completion_tokens, 40);
    }
  });
});
