// Never-reading SSE clients on real sockets. A gateway in a child process (its RSS is its own, from
// /proc/<pid>/status) streams long requests to N listeners that send their request and then never
// read a byte. The gateway must drop each one once its write buffer passes sse.maxBufferedBytes
// (the client resumes from the log with Last-Event-ID), keep answering /healthz meanwhile, and its
// memory must stay within a documented bound and come back after the clients go.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.ts';

const LISTENERS = 50;
/** One request: its log (60,000 events, tens of MiB in the memory bus) grows whether anyone listens
 *  or not, and is not what this bounds; the listeners' buffers are (all 50 share the one log). */
const REQUESTS = 1;
/** Tokens per request: each listener is offered far more than socket buffers and the bound hold. */
const TOKENS = 60_000;
/** RSS the hanging listeners may add to the gateway (documented in docs/operations.md). */
const RSS_GROWTH_BOUND_MIB = 150;
/** What may stay after they left: V8 keeps some heap it grew, but not the listeners' buffers. */
const RSS_AFTER_BOUND_MIB = 80;
const HEALTHZ_BOUND_MS = 2000;
const DROP_BOUND_MS = 60_000;

/** Opens the SSE stream on a raw socket and never reads from it (paused: the kernel buffers fill). */
function neverReadingListener(url: string, key: string, requestId: string): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: hostname, port: Number(port) }, () => {
      s.write(`GET /v1/requests/${requestId}/events HTTP/1.1\r\nhost: ${hostname}\r\nauthorization: Bearer ${key}\r\naccept: text/event-stream\r\n\r\n`);
      s.pause();
      resolve(s);
    });
    s.on('error', () => { /* a reset from the gateway dropping us is the point */ });
    s.once('error', reject);
  });
}

async function metric(gw: GatewayProcess, name: string): Promise<number> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

async function healthzMs(gw: GatewayProcess): Promise<number> {
  const t0 = Date.now();
  const res = await fetch(`${gw.url}/healthz`, { signal: AbortSignal.timeout(30_000) });
  assert.equal(res.status, 200);
  return Date.now() - t0;
}

async function until(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const settle = () => new Promise((r) => setTimeout(r, 1500));

/** Reads what a paused listener was sent, to the end: a dropped listener's stream ends. */
function drain(s: net.Socket, timeoutMs: number): Promise<{ head: string; ended: boolean }> {
  return new Promise((resolve) => {
    let head = '';
    const finish = (ended: boolean) => { clearTimeout(t); resolve({ head, ended }); };
    const t = setTimeout(() => finish(false), timeoutMs);
    s.on('data', (c: Buffer) => { if (head.length < 200) head += c.toString('latin1'); });
    s.once('end', () => finish(true));
    s.once('close', () => finish(true));
    s.resume();
  });
}

/**
 * Runs LISTENERS never-reading clients against a gateway whose per-listener bound is `boundBytes`
 * and asserts they are dropped, /healthz stays fast, and RSS stays bounded and comes back.
 */
async function neverReadingListenersAreDropped(boundBytes: number): Promise<void> {
  const gw = await startGatewayProcess({
    store: 'disk',
    // The master key's max_tokens is the largest tier's: one tier with room for long requests.
    config: { sse: { maxBufferedBytes: boundBytes, pingMs: 1000 }, tiers: { free: { requestsPerDay: 100, tokensPerDay: 1e6, requestsPerMonth: 1000, tokensPerMonth: 1e7, maxTokens: TOKENS, concurrentStreams: 2, priority: 1 } } },
    env: { SIM_TTFT_MS: '0', SIM_ITL_MS: '0', SLUICE_DEFAULT_TIER: 'free' },
  });
  const sockets: net.Socket[] = [];
  try {
    const headers = { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json' };
    // Warm up (JIT, pools) so the baseline is not the cold process.
    for (let i = 0; i < 3; i++) await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers, body: JSON.stringify({ model: 'sim', max_tokens: 200, messages: [{ role: 'user', content: 'warm' }] }) }).then((r) => r.text());
    await settle();
    const rssBefore = gw.rssMiB();

    const ids: string[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      const res = await fetch(`${gw.url}/v1/requests`, { method: 'POST', headers, body: JSON.stringify({ model: 'sim', max_tokens: TOKENS, messages: [{ role: 'user', content: `long ${i}` }] }) });
      assert.equal(res.status, 202, await res.clone().text());
      ids.push(((await res.json()) as { request_id: string }).request_id);
    }
    for (let i = 0; i < LISTENERS; i++) sockets.push(await neverReadingListener(gw.url, gw.masterKey, ids[i % REQUESTS]!));

    let rssPeak = gw.rssMiB();
    let worstHealthz = 0;
    let dropped: unknown = null;
    const watch = setInterval(() => { try { rssPeak = Math.max(rssPeak, gw.rssMiB()); } catch { /* exited: asserted below */ } }, 200);
    try {
      // While they hang, the gateway keeps answering; it drops each one once its buffer is past the bound.
      await until(`the gateway drops the ${LISTENERS} never-reading listeners (sse.maxBufferedBytes ${boundBytes})`, async () => {
        worstHealthz = Math.max(worstHealthz, await healthzMs(gw));
        return (await metric(gw, 'sluice_active_streams')) === 0;
      }, DROP_BOUND_MS);
    } catch (err) { dropped = err; } finally { clearInterval(watch); }
    const stillStreaming = await metric(gw, 'sluice_active_streams');
    rssPeak = Math.max(rssPeak, gw.rssMiB());
    // Each listener got its stream (200) and then the gateway ended it.
    const seen = await Promise.all(sockets.map((s) => drain(s, dropped ? 100 : 10_000)));
    for (const s of sockets.splice(0)) s.destroy();
    await settle();
    const rssAfter = gw.rssMiB();
    console.log(`sse-slow (bound ${boundBytes} B): ${LISTENERS} never-reading listeners on ${REQUESTS} requests of ${TOKENS} tokens: still streaming ${stillStreaming}; RSS before ${rssBefore.toFixed(0)} MiB, peak ${rssPeak.toFixed(0)} MiB, after ${rssAfter.toFixed(0)} MiB; slowest /healthz ${worstHealthz} ms`);

    assert.ok(gw.alive(), 'the gateway is alive');
    if (dropped) throw dropped;
    for (const s of seen) {
      // A reset discards what the client had not read, so a dropped listener may see nothing at all.
      assert.ok(s.head === '' || /^HTTP\/1\.1 200/.test(s.head), `a listener saw ${JSON.stringify(s.head.slice(0, 60))}`);
      assert.ok(s.ended, 'the gateway ended the stream of a listener that never read');
    }
    assert.ok(worstHealthz < HEALTHZ_BOUND_MS, `/healthz took ${worstHealthz} ms while the listeners hung (bound ${HEALTHZ_BOUND_MS} ms)`);
    assert.ok(rssPeak - rssBefore < RSS_GROWTH_BOUND_MIB, `RSS grew ${(rssPeak - rssBefore).toFixed(0)} MiB (bound ${RSS_GROWTH_BOUND_MIB} MiB)`);
    assert.ok(rssAfter - rssBefore < RSS_AFTER_BOUND_MIB, `RSS stayed ${(rssAfter - rssBefore).toFixed(0)} MiB above the start after the listeners left (bound ${RSS_AFTER_BOUND_MIB} MiB)`);
    // The requests themselves were not harmed: each completed.
    for (const id of ids) {
      await until(`request ${id} completes`, async () => ((await (await fetch(`${gw.url}/v1/requests/${id}`, { headers })).json()) as { status: string }).status === 'completed', 60_000);
    }
  } finally {
    for (const s of sockets) s.destroy();
    await gw.stop();
  }
}

describe('never-reading SSE clients', { timeout: 300_000 }, () => {
  // Below Node's 16 KiB write high-water mark: the first stalled write is already past the bound.
  it(`are dropped with a 4 KiB per-listener bound; /healthz stays fast, RSS bounded and given back`, () => neverReadingListenersAreDropped(4096));
  // A realistic bound, above the high-water mark: the stream must still be dropped, not wait forever.
  it(`are dropped with a 256 KiB per-listener bound; /healthz stays fast, RSS bounded and given back`, () => neverReadingListenersAreDropped(256 * 1024));
});
