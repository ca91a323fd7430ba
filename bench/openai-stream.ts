// OpenAI streaming through Sluice vs the floor proxy vs the upstream called directly.
// 64-token streamed replies, concurrency 8, model = the shared upstream simulator. Alternates
// upstream / floor / sluice-direct / sluice-queued (and sluice-direct with a user key, i.e.
// quota accounting on) for ROUNDS rounds and reports per-round and median ratios.
// env: ROUNDS (3), REQUESTS per leg (1000), CONCURRENCY (8), TOKENS (64), DATABASE_URL (embedded PGlite)
import { bearer, createUserKey, log, main, MASTER_KEY, median, pct, r2, runLoad, streamTtft, startFloor, startSluice, startUpstream, table, type LoadResult } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const N = Number(process.env.REQUESTS ?? 1000);
const C = Number(process.env.CONCURRENCY ?? 8);
const TOKENS = process.env.TOKENS ?? '64';

main('openai-stream', 10 * 60_000, async () => {
  const upstream = await startUpstream({ TOKENS });
  const floor = await startFloor(upstream);
  const sluice = await startSluice({
    MODEL_URL: `${upstream.url}/v1`, SLUICE_DELIVERY_MODE: 'direct',
    ...(process.env.DATABASE_URL && { DATABASE_URL: process.env.DATABASE_URL }),
  });
  const userKey = await createUserKey(sluice);
  log(`upstream ${upstream.url}, floor ${floor.url}, sluice ${sluice.url} (pid ${sluice.pid})`);

  const env = { MAX_TOKENS: TOKENS, STREAM: '1' };
  const legs: [string, (n: number) => Promise<LoadResult>][] = [
    ['upstream', (n) => runLoad(`${upstream.url}/v1/chat/completions`, C, n, {}, env)],
    ['floor', (n) => runLoad(`${floor.url}/v1/chat/completions`, C, n, {}, env)],
    ['sluice-direct', (n) => runLoad(`${sluice.url}/v1/chat/completions`, C, n, { ...bearer(MASTER_KEY), 'x-sluice-mode': 'direct' }, env)],
    ['sluice-queued', (n) => runLoad(`${sluice.url}/v1/chat/completions`, C, n, { ...bearer(MASTER_KEY), 'x-sluice-mode': 'queued' }, env)],
    ['sluice-direct-user', (n) => runLoad(`${sluice.url}/v1/chat/completions`, C, n, { ...bearer(userKey), 'x-sluice-mode': 'direct' }, env)],
  ];

  log('warm-up (200 requests per Sluice leg, not counted)');
  for (const [name, run] of legs) if (name.startsWith('sluice')) { const w = await run(200); log(`  ${name}: ${w.rps} req/s, ${w.errors} errors${w.first_error ? ` (${w.first_error})` : ''}`); }

  const rounds: Record<string, LoadResult>[] = [];
  const ttft: { d50: number; d99: number; q50: number; q99: number }[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const res: Record<string, LoadResult> = {};
    for (const [name, run] of legs) {
      const x = await run(N);
      if (x.errors) throw new Error(`${name}: ${x.errors} errors (${x.first_error})`);
      const expectEvents = x.ok * (Number(TOKENS) + 2); // tokens + finish chunk + [DONE]
      log(`round ${r} ${name}: ${x.rps} req/s, ttfb p50 ${x.ttfb_p50} p99 ${x.ttfb_p99} ms, total p50 ${x.total_p50} p99 ${x.total_p99} ms, sse events ${x.sse_events}${x.sse_events < expectEvents ? ` (< ${expectEvents}!)` : ''}`);
      res[name] = x;
    }
    // load.mjs's first byte from Sluice is the SSE preamble (headers + `retry:`), written before
    // any token; time to the first token is measured separately on the same endpoints.
    const td = await streamTtft(`${sluice.url}/v1/chat/completions`, { ...bearer(MASTER_KEY), 'x-sluice-mode': 'direct' }, C, 300, Number(TOKENS));
    const tq = await streamTtft(`${sluice.url}/v1/chat/completions`, { ...bearer(MASTER_KEY), 'x-sluice-mode': 'queued' }, C, 300, Number(TOKENS));
    ttft.push({ d50: pct(td.ttft, 0.5), d99: pct(td.ttft, 0.99), q50: pct(tq.ttft, 0.5), q99: pct(tq.ttft, 0.99) });
    log(`round ${r} time to first token: direct p50 ${r2(ttft[r - 1]!.d50)} p99 ${r2(ttft[r - 1]!.d99)}, queued p50 ${r2(ttft[r - 1]!.q50)} p99 ${r2(ttft[r - 1]!.q99)} ms`);
    rounds.push(res);
  }

  const rows = rounds.map((res, i) => {
    const d = res['sluice-direct']!, q = res['sluice-queued']!, f = res.floor!, u = res.upstream!, du = res['sluice-direct-user']!;
    return {
      round: String(i + 1), upstream_rps: u.rps, floor_rps: f.rps, direct_rps: d.rps, queued_rps: q.rps, direct_user_rps: du.rps,
      'direct/floor': r2(d.rps / f.rps), 'direct/upstream': r2(d.rps / u.rps), 'queued/floor': r2(q.rps / f.rps), 'queued/upstream': r2(q.rps / u.rps),
      'direct_user/floor': r2(du.rps / f.rps),
      'queued-direct ttfb p50': r2(q.ttfb_p50 - d.ttfb_p50), 'queued-direct ttfb p99': r2(q.ttfb_p99 - d.ttfb_p99),
      'queued-direct ttft p50': r2(ttft[i]!.q50 - ttft[i]!.d50), 'queued-direct ttft p99': r2(ttft[i]!.q99 - ttft[i]!.d99),
      'direct ttft p50/p99': `${r2(ttft[i]!.d50)}/${r2(ttft[i]!.d99)}`, 'queued ttft p50/p99': `${r2(ttft[i]!.q50)}/${r2(ttft[i]!.q99)}`,
      'direct ttfb p50/p99': `${d.ttfb_p50}/${d.ttfb_p99}`, 'queued ttfb p50/p99': `${q.ttfb_p50}/${q.ttfb_p99}`, 'floor ttfb p50/p99': `${f.ttfb_p50}/${f.ttfb_p99}`,
    };
  });
  const numCols = Object.keys(rows[0]!).filter((k) => k !== 'round' && typeof rows[0]![k as keyof typeof rows[0]] === 'number');
  const med: Record<string, unknown> = { round: 'median' };
  for (const k of numCols) med[k] = r2(median(rows.map((row) => row[k as keyof typeof row] as number)));
  console.log(`\nOpenAI streaming, ${TOKENS}-token replies, concurrency ${C}, ${N} requests per leg, ${ROUNDS} rounds (rps in requests/s, latencies in ms)`);
  console.log(table([...rows, med]));
  console.log(JSON.stringify({ bench: 'openai-stream', tokens: Number(TOKENS), concurrency: C, requests: N, rounds: rows, median: med }));
});

