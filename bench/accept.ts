// POST /v1/requests: maximum accepted requests/s (closed loop at high concurrency) and latency at a
// fixed open-loop rate, with the master key (quota accounting off) and a user key (accounting on),
// alternating, ROUNDS rounds. Workers consume the jobs meanwhile on a fast simulated model
// (MODEL_URL=sim://?ttft_ms=0&itl_ms=0, max_tokens 8); after each leg the bench waits for the
// backlog to drain so one leg's jobs do not run during the next.
// env: ROUNDS (3), CONCURRENCY (64), MAX_SECONDS (5, closed-loop leg), RATE (500), RATE_SECONDS (5),
//      STORE=postgres (a fresh database on 127.0.0.1:5432; default embedded PGlite), WORKER_CONCURRENCY (16),
//      QUEUE_URL / LIMITER_URL / BUS_URL (memory://)
import { bearer, closedLoopPost, createUserKey, freshPostgres, log, main, makePoster, MASTER_KEY, median, metricSum, pct, r2, sleep, startSluice, table, type Proc } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const C = Number(process.env.CONCURRENCY ?? 64);
const MAX_S = Number(process.env.MAX_SECONDS ?? 5);
const RATE = Number(process.env.RATE ?? 500);
const RATE_S = Number(process.env.RATE_SECONDS ?? 5);
const BODY = JSON.stringify({ model: 'sim', max_tokens: 8, messages: [{ role: 'user', content: 'hello there' }] });

let accepted = 0;

/** Closed loop: C callers, each posting back to back for MAX_S seconds. */
async function closedLoop(sluice: Proc, key: string): Promise<{ rps: number; p50: number; p99: number; errors: number; firstError: string }> {
  const r = await closedLoopPost(`${sluice.url}/v1/requests`, key, BODY, C, MAX_S);
  accepted += r.accepted;
  return r;
}

/** Open loop: one request every 1000/RATE ms whatever the answers; latency from the scheduled send time. */
async function openLoop(sluice: Proc, key: string): Promise<{ sent: number; p50: number; p99: number; max: number; errors: number; firstError: string }> {
  const poster = makePoster(`${sluice.url}/v1/requests`, bearer(key), 1024);
  const total = RATE * RATE_S;
  const lat: number[] = [];
  let errors = 0, firstError = '';
  const pending: Promise<void>[] = [];
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    pending.push(poster.post(BODY).then((r) => {
      // Measured from when the request was due, so a stalled client does not hide server delay.
      const ms = performance.now() - due;
      if (r.status === 202) lat.push(ms); else { errors++; firstError ||= `${r.status} ${r.body.slice(0, 200)}`; }
    }));
  }
  await Promise.all(pending);
  poster.close();
  accepted += lat.length;
  return { sent: total, p50: pct(lat, 0.5), p99: pct(lat, 0.99), max: pct(lat, 1), errors, firstError };
}

async function drain(sluice: Proc): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const finished = await metricSum(sluice, 'sluice_requests_finished_total');
    if (finished >= accepted) { log(`  drained ${accepted} jobs (${((Date.now() - t0) / 1000).toFixed(1)} s)`); return; }
    if (Date.now() - t0 > 90_000) { log(`  backlog not drained after 90 s (${finished}/${accepted}); going on`); return; }
    await sleep(250);
  }
}

main('accept', 12 * 60_000, async () => {
  const sluice = await startSluice({
    MODEL_URL: 'sim://?ttft_ms=0&itl_ms=0',
    ...(process.env.STORE === 'postgres' && { DATABASE_URL: await freshPostgres(`sluice_bench_accept_${process.pid}`) }),
    ...(process.env.WORKER_CONCURRENCY && { WORKER_CONCURRENCY: process.env.WORKER_CONCURRENCY }),
    ...(process.env.QUEUE_URL && { QUEUE_URL: process.env.QUEUE_URL }),
    ...(process.env.LIMITER_URL && { LIMITER_URL: process.env.LIMITER_URL }),
    ...(process.env.BUS_URL && { BUS_URL: process.env.BUS_URL }),
  });
  const userKey = await createUserKey(sluice);
  log(`sluice ${sluice.url} (pid ${sluice.pid}); closed loop c=${C} for ${MAX_S}s, open loop ${RATE}/s for ${RATE_S}s`);
  const keys: [string, string][] = [['master (accounting off)', MASTER_KEY], ['user (accounting on)', userKey]];

  log('warm-up');
  for (const [, key] of keys) { const poster = makePoster(`${sluice.url}/v1/requests`, bearer(key), 8); for (let i = 0; i < 200; i++) if ((await poster.post(BODY)).status === 202) accepted++; poster.close(); }
  await drain(sluice);

  const rows: Record<string, string | number>[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [name, key] of keys) {
      const c = await closedLoop(sluice, key);
      log(`round ${r} ${name} closed loop: ${c.rps.toFixed(0)} accepted/s, p50 ${c.p50.toFixed(2)} p99 ${c.p99.toFixed(2)} ms, errors ${c.errors}${c.firstError ? ` (${c.firstError})` : ''}`);
      await drain(sluice);
      const o = await openLoop(sluice, key);
      log(`round ${r} ${name} open loop ${RATE}/s: p50 ${o.p50.toFixed(2)} p99 ${o.p99.toFixed(2)} max ${o.max.toFixed(2)} ms, errors ${o.errors}${o.firstError ? ` (${o.firstError})` : ''}`);
      await drain(sluice);
      rows.push({ round: r, key: name, 'max accepted/s': Math.round(c.rps), 'closed p99 ms': r2(c.p99), [`${RATE}/s p50 ms`]: r2(o.p50), [`${RATE}/s p99 ms`]: r2(o.p99), errors: c.errors + o.errors });
    }
  }
  const off = rows.filter((x) => x.key === keys[0]![0]), on = rows.filter((x) => x.key === keys[1]![0]);
  const ratios = off.map((x, i) => r2((on[i]!['max accepted/s'] as number) / (x['max accepted/s'] as number)));
  const summary = {
    'median accepted/s off': median(off.map((x) => x['max accepted/s'] as number)),
    'median accepted/s on': median(on.map((x) => x['max accepted/s'] as number)),
    'on/off per round': ratios.join(', '),
    'median on/off': r2(median(ratios)),
    [`median ${RATE}/s p99 off`]: r2(median(off.map((x) => x[`${RATE}/s p99 ms`] as number))),
    [`median ${RATE}/s p99 on`]: r2(median(on.map((x) => x[`${RATE}/s p99 ms`] as number))),
  };
  console.log(`\nPOST /v1/requests, closed loop c=${C} ${MAX_S}s per leg, open loop ${RATE}/s ${RATE_S}s per leg, ${ROUNDS} rounds; workers on sim://?ttft_ms=0&itl_ms=0, max_tokens 8`);
  console.log(table(rows));
  console.log(table([summary]));
  console.log(JSON.stringify({ bench: 'accept', concurrency: C, rate: RATE, rounds: rows, summary }));
});
