// The server process survives what nothing handled: an exception thrown from a timer and a promise
// rejection nobody awaits are logged and counted, and /healthz keeps answering. In a real
// `sluice start` child, since the handlers belong to the process entry, not to any module.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MASTER_KEY, waitFor } from '../helpers/app.ts';
import { spawnSluice, type SluiceProcess } from '../helpers/process.ts';
import { connectWs } from '../helpers/ws-client.ts';

describe('last-resort handlers in sluice start', () => {
  let proc: SluiceProcess;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-last-resort-'));
    proc = await spawnSluice(['start'], {
      SLUICE_DATA_DIR: dir, DATABASE_URL: 'pglite://memory', SLUICE_MASTER_KEY: MASTER_KEY, SLUICE_CRASH_POINT: 'uncaught-after-start', LOG_LEVEL: 'info',
    }, { timeoutMs: 90_000 });
  });
  after(async () => { await proc.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); });

  it('an uncaught exception and an unhandled rejection are logged and counted; the process keeps serving', async () => {
    await waitFor(async () => proc.output().includes('unhandled rejection (process kept serving)') && proc.output().includes('uncaught exception (process kept serving)'), 15_000);
    assert.equal(proc.child.exitCode, null);
    assert.equal((await fetch(`${proc.url}/healthz`)).status, 200);
    const metrics = await (await fetch(`${proc.url}/metrics`)).text();
    assert.match(metrics, /sluice_uncaught_errors_total\{kind="exception"\} 1\b/);
    assert.match(metrics, /sluice_uncaught_errors_total\{kind="rejection"\} 1\b/);
  });

  it('a WebSocket message that is JSON but not an object does not take the process down', async () => {
    const c = await connectWs(proc.url, { key: MASTER_KEY });
    for (const frame of ['null', '1', '"x"', 'true']) c.send(frame);
    await waitFor(async () => c.messages.length === 4, 10_000);
    assert.ok(c.messages.every((m) => m.error.code === 'SLUICE_ERR_VALIDATION'));
    c.close();
    assert.equal((await fetch(`${proc.url}/healthz`)).status, 200);
    assert.equal(proc.child.exitCode, null);
  });

  it('no key appears in a log line, even a wrong one sent in the URL or an auth message', async () => {
    const urlKey = 'sk-url-key-should-never-be-logged-0001';
    const msgKey = 'sk-msg-key-should-never-be-logged-0002';
    const a = await connectWs(proc.url, { key: null, query: `?api_key=${urlKey}` });
    await a.closed;
    const b = await connectWs(proc.url, { key: null });
    b.send({ type: 'auth', api_key: msgKey });
    await b.closed;
    await fetch(`${proc.url}/v1/models`, { headers: { authorization: `Bearer ${msgKey}` } });
    const out = proc.output();
    assert.ok(!out.includes(urlKey) && !out.includes(msgKey) && !out.includes(MASTER_KEY), 'a key was logged');
  });
});
