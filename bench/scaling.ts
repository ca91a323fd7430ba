// The scaling curve of issue #13 (target 7): the 1,000-slow-stream case (64 tokens 20 ms apart,
// realistic body, user key) through 1, 2 and 4 Sluice processes on PostgreSQL + Redis (limiter) +
// NATS JetStream (queue and bus), each process role `all` (gateway + worker + ledger) on default
// settings otherwise, the 1,000 streams split evenly over the processes. Direct and queued modes.
// Per process count: total req/s, time to first token p50/p99, errors, and CPU ms per request summed
// over every Sluice process (from /proc): the figure that predicts the curve on a machine with more
// cores (req/s per core ≈ 1000 / CPU ms per request, until the upstream or the services bind).
// The floor proxy runs the same load in the same rounds as the reference. On a 2-core machine the
// curve is flat by construction: more processes share the same two cores.
// env: PROCESSES (1,2,4), ROUNDS (2), STREAMS (1000), REQUESTS per leg (= STREAMS), WARM_REQUESTS (300), ITL_MS (20),
//      TOKENS (64), RAMP_MS (1000), MODES (direct,queued)
import { isolatedNames, removeIsolated, SERVICES } from '../test/helpers/services.ts';
import { bearer, cpuMs, createUserKey, freshPostgres, log, main, median, onCleanup, pct, r2, realisticChatBody, startFloor, startSluice, startUpstream, streamTtft, table, type Proc } from './lib.ts';

const COUNTS = (process.env.PROCESSES ?? '1,2,4').split(',').map(Number).filter((n) => n > 0);
const ROUNDS = Number(process.env.ROUNDS ?? 2);
const STREAMS = Number(process.env.STREAMS ?? 1000);
const N = Number(process.env.REQUESTS ?? STREAMS);
const WARM_N = Number(process.env.WARM_REQUESTS ?? 300);
const ITL_MS = process.env.ITL_MS ?? '20';
const TOKENS = Number(process.env.TOKENS ?? 64);
const RAMP_MS = Number(process.env.RAMP_MS ?? 1000);
/** A stream still open after this long is counted as an error and dropped, so a leg always ends. */
const STREAM_TIMEOUT_MS = Number(process.env.STREAM_TIMEOUT_MS ?? 120_000);
const MODES = (process.env.MODES ?? 'direct,queued').split(',').map((s) => s.trim());

interface Leg { rps: number; p50: number; p99: number; errors: number; firstError: string; cpuPerReq: number }

/** STREAMS concurrent streams split over `targets`, all at once; CPU summed over `cpuOf`. */
async function leg(targets: Proc[], headers: Record<string, string>, body: string, cpuOf: Proc[], total = N): Promise<Leg> {
  const c0 = cpuOf.reduce((s, p) => s + cpuMs(p.pid), 0);
  const t0 = performance.now();
  const each = await Promise.all(targets.map((p, i) => {
    const share = Math.floor(STREAMS / targets.length) + (i < STREAMS % targets.length ? 1 : 0);
    const n = Math.floor(total / targets.length) + (i < total % targets.length ? 1 : 0);
    return streamTtft(`${p.url}/v1/chat/completions`, headers, share, n, TOKENS, body, RAMP_MS, STREAM_TIMEOUT_MS);
  }));
  const seconds = (performance.now() - t0) / 1000;
  const ok = each.reduce((s, x) => s + x.ok, 0);
  const ttft = each.flatMap((x) => x.ttft);
  const cpu = cpuOf.reduce((s, p) => s + cpuMs(p.pid), 0) - c0;
  return {
    rps: r2(ok / seconds), p50: r2(pct(ttft, 0.5)), p99: r2(pct(ttft, 0.99)),
    errors: each.reduce((s, x) => s + x.errors, 0), firstError: each.find((x) => x.firstError)?.firstError ?? '', cpuPerReq: r2(cpu / Math.max(1, ok)),
  };
}

main('scaling', 20 * 60_000, async () => {
  const upstream = await startUpstream({ TOKENS: String(TOKENS), ITL_MS });
  const floor = await startFloor(upstream);
  const body = realisticChatBody(true, TOKENS);
  const rows: Record<string, unknown>[] = [];
  const floorRuns: Leg[] = [];
  for (const count of COUNTS) {
    const base = `sluice_bench_scaling_${count}_${process.pid}`;
    const db = await freshPostgres(base);
    const names = isolatedNames(base);
    onCleanup(async () => { for (const f of await removeIsolated(names, { queue: 'nats', bus: 'nats' })) log(`cleanup: ${String(f)}`); });
    const env = { DATABASE_URL: db, LIMITER_URL: SERVICES.redis, QUEUE_URL: SERVICES.nats, BUS_URL: SERVICES.nats, ...names, MODEL_URL: `${upstream.url}/v1` };
    const procs: Proc[] = [];
    for (let i = 0; i < count; i++) procs.push(await startSluice(env, `sluice-${count}-${i + 1}`));
    const key = await createUserKey(procs[0]!, `bench_scaling_${count}_${process.pid}`);
    log(`${count} process(es): ${procs.map((p) => `${p.url} (pid ${p.pid})`).join(', ')}; store ${db}`);
    for (const mode of MODES) {
      const w = await leg(procs, { ...bearer(key), 'x-sluice-mode': mode }, body, procs, WARM_N); // warm-up
      log(`  warm-up ${mode}: ${w.rps} req/s${w.errors ? `, ${w.errors} errors (${w.firstError})` : ''}`);
    }
    const byMode = new Map<string, Leg[]>(MODES.map((m) => [m, []]));
    const fl: Leg[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      const order = ['floor', ...MODES];
      for (let i = 0; i < order.length; i++) {
        const what = order[(i + r - 1) % order.length]!;
        const x = what === 'floor' ? await leg([floor], {}, body, [floor]) : await leg(procs, { ...bearer(key), 'x-sluice-mode': what }, body, procs);
        log(`  round ${r} ${what}: ${x.rps} req/s, ttft p50 ${x.p50} p99 ${x.p99} ms, CPU ${x.cpuPerReq} ms/request${x.errors ? `, ${x.errors} errors (${x.firstError})` : ''}`);
        (what === 'floor' ? fl : byMode.get(what)!).push(x);
      }
    }
    floorRuns.push(...fl);
    const fRps = median(fl.map((x) => x.rps));
    for (const mode of MODES) {
      const xs = byMode.get(mode)!;
      const rps = median(xs.map((x) => x.rps));
      rows.push({
        processes: count, mode, 'req/s': r2(rps), 'floor req/s (same rounds)': r2(fRps), 'vs floor': r2(rps / fRps),
        'ttft p50 ms': r2(median(xs.map((x) => x.p50))), 'ttft p99 ms': r2(median(xs.map((x) => x.p99))),
        'floor ttft p50 ms': r2(median(fl.map((x) => x.p50))), errors: xs.reduce((s, x) => s + x.errors, 0),
        'CPU ms/request (all Sluice processes)': r2(median(xs.map((x) => x.cpuPerReq))), 'floor CPU ms/request': r2(median(fl.map((x) => x.cpuPerReq))),
      });
    }
    for (const p of procs) await p.stop();
  }
  console.log(`\nScaling: ${STREAMS} concurrent streams (${TOKENS} tokens, ${ITL_MS} ms apart) over 1..N Sluice processes on PostgreSQL + Redis + NATS, ${ROUNDS} rounds, medians; 2-core machine shared with other work`);
  console.log(table(rows));
  console.log(JSON.stringify({ bench: 'scaling', streams: STREAMS, rounds: ROUNDS, rows }));
});
