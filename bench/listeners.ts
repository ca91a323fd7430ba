// 2,000 concurrent native-SSE listeners on one Sluice process: REQUESTS long-running async
// requests × PER listeners each (GET /v1/requests/{id}/events, one socket per listener). The
// simulated model waits TTFT_MS before the first token so every listener is connected before
// tokens flow; then TOKENS tokens ITL_MS apart. Reports the gateway's RSS before the listeners,
// with all of them connected, and its peak while streaming; RSS per listener; and checks that
// every listener received every token (distinct sequences = completion tokens) and the end.
// Needs ~2 file descriptors per listener in this process: `ulimit -n 8192` if yours is lower.
// The store defaults to a fresh PostgreSQL database: embedded PGlite alone holds ~650-850 MiB of
// RSS that it trims at unpredictable moments, which would swamp a per-listener figure.
// env: REQUESTS (20), PER (100), TOKENS (50), TTFT_MS (10000), ITL_MS (100), BUS_URL/LIMITER_URL/QUEUE_URL,
//      STORE=postgres|pglite (postgres)
import { freshPostgres, listen, log, main, MASTER_KEY, pct, r2, rssMiB, sleep, startSluice, submit, table, type ListenerResult } from './lib.ts';

const REQUESTS = Number(process.env.REQUESTS ?? 20);
const PER = Number(process.env.PER ?? 100);
const TOKENS = Number(process.env.TOKENS ?? 50);
const TTFT = Number(process.env.TTFT_MS ?? 10_000);
const ITL = Number(process.env.ITL_MS ?? 100);

main('listeners', 5 * 60_000, async () => {
  const env: Record<string, string> = {
    MODEL_URL: `sim://?ttft_ms=${TTFT}&itl_ms=${ITL}`, WORKER_CONCURRENCY: String(Math.max(16, REQUESTS + 4)),
    // No keep-alive pings during the run: they would only add writes that are not tokens.
    SSE_PING_MS: '60000',
  };
  for (const k of ['BUS_URL', 'LIMITER_URL', 'QUEUE_URL'] as const) if (process.env[k]) env[k] = process.env[k]!;
  if (process.env.STORE !== 'pglite') env.DATABASE_URL = await freshPostgres(`sluice_bench_listeners_${process.pid}`);
  const sluice = await startSluice(env);
  log(`sluice ${sluice.url} (pid ${sluice.pid}), store ${env.DATABASE_URL ? 'postgres' : 'pglite'}, bus ${env.BUS_URL ?? 'memory://'}; ${REQUESTS} requests × ${PER} listeners, ${TOKENS} tokens, ttft ${TTFT} ms, itl ${ITL} ms`);
  await sleep(1000);
  const rssIdle = rssMiB(sluice.pid);

  const t0 = Date.now();
  const ids: string[] = [];
  for (let i = 0; i < REQUESTS; i++) ids.push(await submit(sluice, MASTER_KEY, TOKENS));
  await sleep(300);
  const rssBefore = rssMiB(sluice.pid);
  log(`submitted ${REQUESTS} requests; RSS idle ${rssIdle.toFixed(1)} MiB, with requests running ${rssBefore.toFixed(1)} MiB`);

  let connected = 0;
  let allConnected!: () => void;
  const connectedAll = new Promise<void>((r) => { allConnected = r; });
  const listeners: Promise<ListenerResult>[] = [];
  for (let i = 0; i < PER; i++) {
    for (const id of ids) {
      listeners.push(listen(sluice.url, id, MASTER_KEY, { lag: true, onConnected: () => { if (++connected === REQUESTS * PER) allConnected(); } }));
    }
    if (i % 10 === 9) await sleep(20); // let the gateway accept in batches rather than one 2,000-connection burst
  }
  const total = REQUESTS * PER;
  const progress = setInterval(() => log(`  ${connected}/${total} listeners connected`), 1000);
  await Promise.race([connectedAll, sleep(TTFT)]);
  clearInterval(progress);
  const connectMs = Date.now() - t0;
  await sleep(200);
  const rssConnected = rssMiB(sluice.pid);
  log(`${connected}/${total} connected after ${connectMs} ms; RSS ${rssConnected.toFixed(1)} MiB`);
  if (connected < total) log(`WARNING: not all listeners connected before the first token (they still replay history)`);

  let peak = rssConnected;
  const sampler = setInterval(() => { try { peak = Math.max(peak, rssMiB(sluice.pid)); } catch { /* exited */ } }, 250);
  const results = await Promise.all(listeners);
  clearInterval(sampler);
  const rssAfter = rssMiB(sluice.pid);

  const complete = results.filter((r) => r.status === 200 && r.completed && r.completionTokens !== null && r.seqs.size === r.completionTokens && r.tokens === r.completionTokens);
  const tokenCount = results.reduce((s, r) => s + r.tokens, 0);
  const expected = results.reduce((s, r) => s + (r.completionTokens ?? TOKENS), 0);
  const lag = results.flatMap((r) => r.lagMs);
  const bad = results.filter((r) => !complete.includes(r));
  if (bad.length) log(`incomplete listeners: ${bad.length}; first: status ${bad[0]!.status}, tokens ${bad[0]!.tokens}, completed ${bad[0]!.completed}, error ${bad[0]!.error}`);

  const summary = {
    listeners: total, connected, 'complete listeners': complete.length, 'tokens received': tokenCount, 'tokens expected': expected,
    'RSS idle MiB': r2(rssIdle), 'RSS before MiB': r2(rssBefore), 'RSS connected MiB': r2(rssConnected), 'RSS peak MiB': r2(peak), 'RSS after MiB': r2(rssAfter),
    'KiB/listener (connected)': r2(((rssConnected - rssBefore) * 1024) / total), 'KiB/listener (peak)': r2(((peak - rssBefore) * 1024) / total),
    'delivery lag p50 ms': lag.length ? pct(lag, 0.5) : null, 'delivery lag p99 ms': lag.length ? pct(lag, 0.99) : null,
  };
  console.log(`\n${total} native SSE listeners (${REQUESTS} requests × ${PER}), ${TOKENS} tokens each, store ${env.DATABASE_URL ? 'postgres' : 'pglite'}, bus ${env.BUS_URL ?? 'memory://'}`);
  console.log(table([summary]));
  console.log(JSON.stringify({ bench: 'listeners', bus: env.BUS_URL ?? 'memory://', ...summary }));
  if (complete.length !== total) process.exitCode = 1;
});
