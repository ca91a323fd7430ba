// One client process of bench/listeners.ts (started by it with an IPC channel; not run by hand).
// Thousands of sockets and their parsing are spread over several such processes, so the client
// is not the bottleneck it was as one process, and each stays well under its descriptor limit.
//   {cmd:'sse', base, key, ids, count, rate}: `count` native SSE listeners, round-robin over ids,
//     opened at `rate`/s; reports {connected} as they connect, then one {done, summary}.
//   {cmd:'ws', base, key, count, rate}: `count` WebSockets that authenticate (auth message) and sit idle; reports
//     {authenticated}, then waits for {cmd:'close'} and reports {closed}.
import WebSocket from 'ws';
import { listen, sleep, type ListenerResult } from './lib.ts';

type Command =
  | { cmd: 'sse'; base: string; key: string; ids: string[]; count: number; rate: number }
  | { cmd: 'ws'; base: string; key: string; count: number; rate: number }
  | { cmd: 'close' };

/** Delivery lag in 1 ms buckets (the last bucket holds everything at or beyond 120 s). */
const LAG_BUCKETS = 120_000;

const send = (m: unknown): void => { process.send?.(m); };
const sockets: WebSocket[] = [];

async function paced<T>(count: number, rate: number, open: (i: number) => T): Promise<T[]> {
  const out: T[] = [];
  const batch = Math.max(1, Math.round(rate / 50));
  for (let i = 0; i < count; i++) {
    out.push(open(i));
    if (i % batch === batch - 1) await sleep(20);
  }
  return out;
}

async function sse(c: Extract<Command, { cmd: 'sse' }>): Promise<void> {
  let connected = 0;
  const progress = setInterval(() => send({ connected }), 500);
  const results = await Promise.all(await paced(c.count, c.rate, (i) =>
    listen(c.base, c.ids[i % c.ids.length]!, c.key, { lag: true, onConnected: () => { connected++; } })));
  clearInterval(progress);
  send({ connected });
  const lag = new Uint32Array(LAG_BUCKETS);
  const ok = (r: ListenerResult): boolean => r.status === 200 && r.completed && r.completionTokens !== null && r.seqs.size === r.completionTokens && r.tokens === r.completionTokens;
  let complete = 0, tokens = 0, expected = 0, firstBad = '';
  const statuses: Record<string, number> = {};
  for (const r of results) {
    statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    if (ok(r)) complete++;
    else firstBad ||= `status ${r.status}, tokens ${r.tokens}, completed ${r.completed}, error ${r.error}`;
    tokens += r.tokens;
    expected += r.completionTokens ?? 0;
    for (const ms of r.lagMs) lag[Math.min(LAG_BUCKETS - 1, Math.max(0, Math.round(ms)))]!++;
  }
  // Sparse: [ms, count] pairs.
  const lagPairs: [number, number][] = [];
  lag.forEach((n, ms) => { if (n) lagPairs.push([ms, n]); });
  send({ done: true, summary: { listeners: results.length, complete, tokens, expected, firstBad, statuses, lag: lagPairs } });
}

async function ws(c: Extract<Command, { cmd: 'ws' }>): Promise<void> {
  let authenticated = 0, failed = 0, firstError = '';
  const url = `${c.base.replace(/^http/, 'ws')}/v1/ws`;
  const progress = setInterval(() => send({ authenticated, failed }), 500);
  await Promise.all(await paced(c.count, c.rate, () => new Promise<void>((resolve) => {
    // The key in a first auth message, which the gateway answers with `authenticated` (a key in the
    // upgrade's headers is checked without an answer).
    const s = new WebSocket(url, { perMessageDeflate: false });
    s.on('open', () => s.send(JSON.stringify({ type: 'auth', api_key: c.key })));
    sockets.push(s);
    let settled = false;
    const settle = (ok: boolean, why = ''): void => {
      if (settled) return;
      settled = true;
      if (ok) authenticated++; else { failed++; firstError ||= why; }
      resolve();
    };
    s.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string; error?: { code?: string } };
      settle(m.type === 'authenticated', `message ${m.type} ${m.error?.code ?? ''}`);
    });
    s.on('error', (e) => settle(false, e.message));
    s.on('close', (code) => settle(false, `closed ${code}`));
  })));
  clearInterval(progress);
  send({ authenticated, failed, firstError, settled: true });
}

process.on('message', (c: Command) => {
  if (c.cmd === 'sse') void sse(c).catch((e: Error) => send({ fatal: e.message }));
  else if (c.cmd === 'ws') void ws(c).catch((e: Error) => send({ fatal: e.message }));
  else if (c.cmd === 'close') {
    for (const s of sockets) s.terminate();
    send({ closed: true });
  }
});
// The parent going away ends this process too.
process.on('disconnect', () => process.exit(0));
