// Issue #11 defect 2 on real sockets: a client that sends 2,000 resumes of one completed
// 1,024-token request and never reads. The gateway runs in a child process so that its RSS is its
// own. Bounds (generous, for a loaded 2-core box): the server closes the socket, /healthz answers
// within 2 s throughout, RSS grows by less than 150 MiB and falls back once the client is gone.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { MASTER_KEY, api, waitFor } from '../helpers/app.ts';
import { spawnSluice, type SluiceProcess } from '../helpers/process.ts';

const MiB = 1024 * 1024;
const PEAK_GROWTH_BOUND = 150 * MiB;
/** After the client leaves, V8 may keep some heap it grew; what stays must be well under the bound. */
const SETTLED_GROWTH_BOUND = 64 * MiB;
const HEALTHZ_BOUND_MS = 2000;

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error('no VmRSS');
  return Number(m[1]) * 1024;
}

async function healthzMs(url: string): Promise<number> {
  const t = Date.now();
  const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(res.status, 200);
  return Date.now() - t;
}

describe('WebSocket resource bounds (child process)', () => {
  let proc: SluiceProcess;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-ws-rss-'));
    proc = await spawnSluice(['start'], { SLUICE_DATA_DIR: dir, DATABASE_URL: 'pglite://memory', SLUICE_MASTER_KEY: MASTER_KEY, SIM_TTFT_MS: '0', SIM_ITL_MS: '0' }, { timeoutMs: 90_000 });
  });
  after(async () => { await proc.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); });

  it('2,000 resumes from a client that never reads: closed by the server, /healthz answers, RSS bounded and returned', async () => {
    const call = api(proc.url);
    const submitted = await call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens: 1024, messages: [{ role: 'user', content: 'Write something very long' }] } });
    assert.equal(submitted.status, 202);
    const { request_id } = (await submitted.json()) as { request_id: string };
    const done = await waitFor(async () => { const r = (await (await call(`/v1/requests/${request_id}`)).json()) as { status: string; usage?: { completion_tokens: number } }; return r.status === 'completed' && r; }, 20_000, 100);
    assert.equal(done.usage?.completion_tokens, 1024);

    // Warm up, and measure /healthz before the flood: on a box loaded by other test runs the bound
    // is 2 s or 3x the quiet time, whichever is larger (the unbounded gateway stalled 12-40 s).
    let quiet = 0;
    for (let i = 0; i < 3; i++) quiet = Math.max(quiet, await healthzMs(proc.url));
    const healthzBound = Math.max(HEALTHZ_BOUND_MS, 3 * quiet);
    const pid = proc.child.pid!;
    const baseline = rssOf(pid);
    let peak = baseline;
    const sampler = setInterval(() => { peak = Math.max(peak, rssOf(pid)); }, 50);

    const ws = new WebSocket(`${proc.url.replace('http', 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${MASTER_KEY}` } });
    await new Promise((ok, fail) => { ws.once('open', ok); ws.once('error', fail); });
    // Stop reading: the server's sends pile up in its buffers, as with a client that never reads.
    (ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const closed = new Promise<number>((ok) => ws.on('close', (code) => ok(code)));
    ws.on('error', () => {});
    for (let i = 0; i < 2000; i++) ws.send(JSON.stringify({ type: 'resume', request_id, after: 0 }));

    let slowest = 0;
    try {
      // The server closes the socket (its policy counter moves), whether for the flood, a lease, or the buffer.
      await waitFor(async () => {
        slowest = Math.max(slowest, await healthzMs(proc.url));
        const m = await (await fetch(`${proc.url}/metrics`)).text();
        return /sluice_ws_policy_closes_total\{reason="[a-z_]+"\} [1-9]/.test(m);
      }, 15_000, 100);
      slowest = Math.max(slowest, await healthzMs(proc.url));
      const peakGrowth = peak - baseline;

      // The client leaves; what the socket held must go with it.
      (ws as unknown as { _socket: { resume(): void } })._socket.resume();
      const code = await Promise.race([closed, new Promise<number>((ok) => setTimeout(() => { ws.terminate(); ok(-1); }, 5000))]);
      await new Promise((r) => setTimeout(r, 3000));
      clearInterval(sampler);
      const settled = rssOf(pid) - baseline;
      console.log(`ws resource test: baseline RSS ${(baseline / MiB).toFixed(1)} MiB, peak growth ${(peakGrowth / MiB).toFixed(1)} MiB, growth 3 s after the client left ${(settled / MiB).toFixed(1)} MiB, slowest /healthz ${slowest} ms, client saw close code ${code}`);

      assert.ok([1008, 1013, 1006].includes(code), `closed by the server (code ${code})`);
      assert.ok(slowest < healthzBound, `/healthz took ${slowest} ms (bound ${healthzBound} ms)`);
      assert.ok(peakGrowth < PEAK_GROWTH_BOUND, `RSS grew by ${(peakGrowth / MiB).toFixed(1)} MiB`);
      assert.ok(settled < SETTLED_GROWTH_BOUND || settled < peakGrowth / 2, `RSS still ${(settled / MiB).toFixed(1)} MiB above the baseline after the client left`);
    } finally {
      clearInterval(sampler);
      ws.terminate();
    }
  });
});
