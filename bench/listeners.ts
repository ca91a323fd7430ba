// Concurrent listeners on one Sluice process, two cases (CASES=sse,ws):
//  sse: LISTENERS native-SSE listeners (GET /v1/requests/{id}/events, one socket each) spread over
//    REQUESTS long-running async requests. The simulated model waits TTFT_MS before the first token
//    so every listener is connected before tokens flow; then TOKENS tokens ITL_MS apart. Reports the
//    gateway's RSS before the listeners, with all of them connected, and its peak while streaming;
//    RSS per listener; delivery lag (receive time minus the event's append timestamp, same clock);
//    and checks that every listener received every token (distinct sequences = completion tokens)
//    and the end.
//  ws: LISTENERS WebSockets on GET /v1/ws that authenticate ({"type":"auth"} message) and sit idle:
//    RSS per connection once all are authenticated, and how long /healthz takes meanwhile.
// The client side runs in CLIENTS child processes (bench/listeners-client.ts, default one per
// 5,000 sockets) opening CONNECT_RATE connections/s in all. The gateway holds one descriptor per
// socket and admits connections up to its descriptor limit less a reserve (SLUICE_MAX_CONNECTIONS
// =auto; beyond it, 503): LISTENERS defaults to 20,000 or that cap less 100, whichever is lower
// (this machine's hard limit is 20,000, so 19,644 here); raise `ulimit -n` to go higher.
// The store defaults to a fresh PostgreSQL database: embedded PGlite alone holds hundreds of MiB of
// RSS that it trims at unpredictable moments, which would swamp a per-listener figure.
// env: CASES (sse,ws), LISTENERS, REQUESTS (20), TOKENS (50), ITL_MS (100), TTFT_MS (long enough to
//      connect everyone), CLIENTS, CONNECT_RATE (2000), BUS_URL/LIMITER_URL/QUEUE_URL, STORE=postgres|pglite,
//      PROF_DIR (the gateway runs under --cpu-prof, its profile written there), HEAP_DIR (heap
//      snapshots of the gateway there: before the listeners, and with them connected), GATEWAY_DIR
//      (the checkout whose built gateway runs, e.g. a baseline; this one by default)
import { fork, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { automaticCap } from '../src/http/connection-guard.ts';
import { freshPostgres, get, log, main, MASTER_KEY, onCleanup, r2, REPO, rssMiB, sleep, startSluice, submit, table, type Proc } from './lib.ts';

function fdLimit(): number {
  const m = /Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
  return m ? Number(m[1]) : 1024;
}
/** Connections the gateway admits on its defaults (SLUICE_MAX_CONNECTIONS=auto; it inherits this process's limit). */
const gatewayCap = (): number => automaticCap(readFileSync('/proc/self/limits', 'utf8')) || fdLimit();

const CASES = (process.env.CASES ?? 'sse,ws').split(',').map((c) => c.trim());
const REQUESTS = Number(process.env.REQUESTS ?? 20);
const WANTED = Number(process.env.LISTENERS ?? Math.min(20_000, gatewayCap() - 100));
const PER = Math.floor(WANTED / REQUESTS);
const TOTAL = REQUESTS * PER;
const TOKENS = Number(process.env.TOKENS ?? 50);
const ITL = Number(process.env.ITL_MS ?? 100);
const RATE = Number(process.env.CONNECT_RATE ?? 2000);
const TTFT = Number(process.env.TTFT_MS ?? Math.max(10_000, Math.ceil((TOTAL / RATE) * 1500) + 4000));
const CLIENTS = Math.max(1, Number(process.env.CLIENTS ?? Math.ceil(TOTAL / 5000)));

interface ClientMsg { connected?: number; authenticated?: number; failed?: number; firstError?: string; settled?: boolean; done?: boolean; closed?: boolean; fatal?: string;
  summary?: { listeners: number; complete: number; tokens: number; expected: number; firstBad: string; statuses: Record<string, number>; lag: [number, number][] } }

/** CLIENTS client processes; `last[i]` is the latest message of client i. */
function startClients(): { children: ChildProcess[]; last: ClientMsg[]; until(pred: (m: ClientMsg) => boolean, ms: number): Promise<boolean> } {
  const children: ChildProcess[] = [];
  const last: ClientMsg[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const child = fork(join(REPO, 'bench', 'listeners-client.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    last.push({});
    child.on('message', (m: ClientMsg) => {
      if (m.fatal) log(`client ${i}: ${m.fatal}`);
      last[i] = { ...last[i], ...m };
    });
    children.push(child);
  }
  onCleanup(async () => { for (const c of children) if (c.exitCode === null) c.kill('SIGKILL'); });
  return {
    children, last,
    async until(pred, ms) {
      const end = Date.now() + ms;
      while (Date.now() < end) { if (last.every(pred)) return true; await sleep(100); }
      return last.every(pred);
    },
  };
}

const share = (i: number): number => Math.floor(TOTAL / CLIENTS) + (i < TOTAL % CLIENTS ? 1 : 0);

function lagPct(pairs: [number, number][], q: number): number | null {
  const sorted = [...pairs].sort((a, b) => a[0] - b[0]);
  const n = sorted.reduce((s, [, c]) => s + c, 0);
  if (n === 0) return null;
  let seen = 0;
  for (const [ms, c] of sorted) { seen += c; if (seen >= q * n) return ms; }
  return sorted.at(-1)![0];
}

async function sluiceFor(name: string): Promise<{ sluice: Proc; store: string }> {
  const env: Record<string, string> = {
    MODEL_URL: `sim://?ttft_ms=${TTFT}&itl_ms=${ITL}`, WORKER_CONCURRENCY: String(Math.max(16, REQUESTS + 4)),
    // No keep-alive pings during the run: they would only add writes that are not tokens.
    SSE_PING_MS: '60000',
  };
  for (const k of ['BUS_URL', 'LIMITER_URL', 'QUEUE_URL'] as const) if (process.env[k]) env[k] = process.env[k]!;
  // HEAP_DIR=/some/dir: heap snapshots of the gateway there, before the listeners and with them all connected.
  if (process.env.HEAP_DIR) env.NODE_OPTIONS = `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${process.env.HEAP_DIR}`;
  if (process.env.STORE !== 'pglite') env.DATABASE_URL = await freshPostgres(`sluice_bench_${name}_${process.pid}`);
  // PROF_DIR=/some/dir: the gateway runs under --cpu-prof and writes its profile there when stopped.
  const prof = process.env.PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROF_DIR}`] : [];
  const sluice = await startSluice(env, `sluice-${name}`, process.env.GATEWAY_DIR ?? REPO, prof);
  return { sluice, store: env.DATABASE_URL ? 'postgres' : 'pglite' };
}

/** The gateway's V8 heap used / allocated and external memory (its /metrics), as "used/total/external" MiB. */
async function heapMiB(sluice: Proc): Promise<string> {
  const body = (await get(`${sluice.url}/metrics`)).body;
  const value = (name: string): string => {
    const m = new RegExp(`^sluice_process_${name} (\\S+)$`, 'm').exec(body);
    return m ? (Number(m[1]) / 1048576).toFixed(0) : '?';
  };
  return `${value('nodejs_heap_size_used_bytes')}/${value('nodejs_heap_size_total_bytes')}/${value('nodejs_external_memory_bytes')}`;
}

/** With HEAP_DIR set: one heap snapshot of the gateway (SIGUSR2), waiting until it is written. */
async function heapSnapshot(sluice: Proc): Promise<void> {
  const dir = process.env.HEAP_DIR;
  if (!dir) return;
  const count = (): number => readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot')).length;
  const before = count();
  process.kill(sluice.pid, 'SIGUSR2');
  for (let i = 0; i < 600 && count() === before; i++) await sleep(100);
  // Written once its size stops growing.
  let size = -1;
  for (;;) {
    const f = readdirSync(dir).filter((n) => n.endsWith('.heapsnapshot')).map((n) => statSync(join(dir, n)).mtimeMs).sort().at(-1) ?? 0;
    const total = readdirSync(dir).reduce((s, n) => s + statSync(join(dir, n)).size, 0);
    if (total === size && Date.now() - f > 1000) break;
    size = total;
    await sleep(500);
  }
  log(`heap snapshot written to ${dir}`);
}

async function sseCase(): Promise<Record<string, unknown>> {
  const { sluice, store } = await sluiceFor('listeners');
  log(`sse: sluice ${sluice.url} (pid ${sluice.pid}), store ${store}, bus ${process.env.BUS_URL ?? 'memory://'}; ${REQUESTS} requests × ${PER} listeners over ${CLIENTS} client processes at ${RATE}/s, ${TOKENS} tokens, ttft ${TTFT} ms, itl ${ITL} ms`);
  await sleep(1000);
  const rssIdle = rssMiB(sluice.pid);
  const t0 = Date.now();
  const ids: string[] = [];
  for (let i = 0; i < REQUESTS; i++) ids.push(await submit(sluice, MASTER_KEY, TOKENS));
  await sleep(300);
  const rssBefore = rssMiB(sluice.pid);
  await heapSnapshot(sluice);
  const heapBefore = await heapMiB(sluice);
  log(`submitted ${REQUESTS} requests; RSS idle ${rssIdle.toFixed(1)} MiB, with requests running ${rssBefore.toFixed(1)} MiB`);

  const clients = startClients();
  clients.children.forEach((c, i) => c.send({ cmd: 'sse', base: sluice.url, key: MASTER_KEY, ids: ids.map((_, k) => ids[(k + i) % ids.length]!), count: share(i), rate: RATE / CLIENTS }));
  const connected = (): number => clients.last.reduce((s, m) => s + (m.connected ?? 0), 0);
  const progress = setInterval(() => log(`  ${connected()}/${TOTAL} listeners connected`), 2000);
  await clients.until((m) => (m.connected ?? 0) > 0 && clients.last.reduce((s, x) => s + (x.connected ?? 0), 0) >= TOTAL, Math.max(1000, TTFT - (Date.now() - t0) - 500));
  clearInterval(progress);
  const connectMs = Date.now() - t0;
  await sleep(200);
  const rssConnected = rssMiB(sluice.pid);
  const connectedAtFirstToken = connected();
  const heapConnected = await heapMiB(sluice);
  await heapSnapshot(sluice);
  log(`${connected()}/${TOTAL} connected after ${connectMs} ms (from the first submit); RSS ${rssConnected.toFixed(1)} MiB`);
  if (connected() < TOTAL) log('WARNING: not all listeners connected before the first token (they still replay history)');

  let peak = rssConnected;
  const sampler = setInterval(() => { try { peak = Math.max(peak, rssMiB(sluice.pid)); } catch { /* exited */ } }, 250);
  await clients.until((m) => m.done === true || m.fatal !== undefined, 4 * 60_000);
  clearInterval(sampler);
  const rssAfter = rssMiB(sluice.pid);
  const heapAfter = await heapMiB(sluice);
  const sums = clients.last.map((m) => m.summary).filter((x) => x !== undefined);
  const lag = sums.flatMap((x) => x.lag);
  const complete = sums.reduce((a, x) => a + x.complete, 0);
  const firstBad = sums.find((x) => x.firstBad)?.firstBad;
  if (complete < TOTAL) log(`incomplete listeners: ${TOTAL - complete}; first: ${firstBad ?? '(a client failed)'}`);
  const statuses = sums.reduce<Record<string, number>>((a, x) => { for (const [k, n] of Object.entries(x.statuses)) a[k] = (a[k] ?? 0) + n; return a; }, {});
  for (const c of clients.children) c.kill();
  await sluice.stop();
  return {
    listeners: TOTAL, connected: connected(), 'complete listeners': complete, 'answers by status': JSON.stringify(statuses),
    'tokens received': sums.reduce((a, x) => a + x.tokens, 0), 'tokens expected': sums.reduce((a, x) => a + x.expected, 0),
    'RSS idle MiB': r2(rssIdle), 'RSS before MiB': r2(rssBefore), 'RSS connected MiB': r2(rssConnected), 'RSS peak MiB': r2(peak), 'RSS after MiB': r2(rssAfter),
    // Per listener connected when RSS was read (all of them unless the connects were too slow).
    'KiB/listener (connected)': r2(((rssConnected - rssBefore) * 1024) / Math.max(1, connectedAtFirstToken)), 'KiB/listener (peak)': r2(((peak - rssBefore) * 1024) / TOTAL),
    // Where RSS goes: V8 heap used / allocated and memory outside it (Buffers), before, connected, after streaming.
    'heap used/total/external MiB': [heapBefore, heapConnected, heapAfter].join(' → '),
    'delivery lag p50 ms': lagPct(lag, 0.5), 'delivery lag p99 ms': lagPct(lag, 0.99), 'delivery lag max ms': lagPct(lag, 1),
  };
}

async function wsCase(): Promise<Record<string, unknown>> {
  const { sluice, store } = await sluiceFor('ws');
  log(`ws: sluice ${sluice.url} (pid ${sluice.pid}), store ${store}; ${TOTAL} idle WebSockets over ${CLIENTS} client processes at ${RATE}/s`);
  await sleep(1000);
  const rssBefore = rssMiB(sluice.pid);
  const t0 = Date.now();
  const clients = startClients();
  clients.children.forEach((c, i) => c.send({ cmd: 'ws', base: sluice.url, key: MASTER_KEY, count: share(i), rate: RATE / CLIENTS }));
  const count = (f: 'authenticated' | 'failed'): number => clients.last.reduce((s, m) => s + (m[f] ?? 0), 0);
  const progress = setInterval(() => log(`  ${count('authenticated')}/${TOTAL} WebSockets authenticated, ${count('failed')} failed`), 2000);
  await clients.until((m) => m.settled === true || m.fatal !== undefined, 3 * 60_000);
  clearInterval(progress);
  const connectMs = Date.now() - t0;
  await sleep(2000);
  const rssConnected = rssMiB(sluice.pid);
  const h0 = performance.now();
  const health = await get(`${sluice.url}/healthz`);
  const healthMs = performance.now() - h0;
  const firstError = clients.last.find((m) => m.firstError)?.firstError;
  if (count('failed')) log(`failed WebSockets: ${count('failed')}; first: ${firstError}`);
  for (const c of clients.children) c.send({ cmd: 'close' });
  await sleep(500);
  for (const c of clients.children) c.kill();
  await sluice.stop();
  return {
    websockets: TOTAL, authenticated: count('authenticated'), failed: count('failed'), 'connect ms': connectMs,
    'RSS before MiB': r2(rssBefore), 'RSS connected MiB': r2(rssConnected), 'KiB/socket': r2(((rssConnected - rssBefore) * 1024) / TOTAL),
    '/healthz meanwhile': `${health.status} in ${Math.round(healthMs)} ms`,
  };
}

main('listeners', 8 * 60_000, async () => {
  log(`descriptor limit ${fdLimit()}; ${TOTAL} listeners`);
  if (CASES.includes('sse')) {
    const summary = await sseCase();
    console.log(`\n${TOTAL} native SSE listeners (${REQUESTS} requests × ${PER}), ${TOKENS} tokens ${ITL} ms apart each, store ${process.env.STORE === 'pglite' ? 'pglite' : 'postgres'}, bus ${process.env.BUS_URL ?? 'memory://'}`);
    console.log(table([summary]));
    console.log(JSON.stringify({ bench: 'listeners', case: 'sse', ...summary }));
  }
  if (CASES.includes('ws')) {
    const summary = await wsCase();
    console.log(`\n${TOTAL} idle WebSockets, authenticated`);
    console.log(table([summary]));
    console.log(JSON.stringify({ bench: 'listeners', case: 'ws', ...summary }));
  }
});
