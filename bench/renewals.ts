// What a thousand long direct-mode streams cost the PostgreSQL store while they are open: each
// attempt renews its claim every WORKER_CLAIM_MS / 3 (5 s) and checks for a cancel. The store's
// own counters (pg_stat_database: transactions committed, rows fetched and updated) are read over a
// window in which every stream is open, with the gateway's CPU time, for this checkout and (with
// BASELINE_DIR) an earlier one, each on its own fresh database, in alternating rounds.
//
// A backend's counters reach pg_stat_database up to 10 s late (PostgreSQL flushes an idle backend's
// statistics on a 10 s timer), so the window starts 12 s after the last stream opened and lasts
// long enough that the lag at its two ends is small beside it.
//
// env: STREAMS (1000), TOKENS per answer (100), ITL_MS (500: the upstream's delay between tokens,
//      so a stream lasts TOKENS × ITL_MS), RAMP_MS (3000), WINDOW_MS (30000), ROUNDS (2), BASELINE_DIR
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { bearer, cpuMs, createUserKey, freshPostgres, log, main, median, r2, REPO, sleep, startSluice, startUpstream, streamTtft, table } from './lib.ts';

const STREAMS = Number(process.env.STREAMS ?? 1000);
const TOKENS = Number(process.env.TOKENS ?? 100);
const ITL_MS = Number(process.env.ITL_MS ?? 500);
const RAMP_MS = Number(process.env.RAMP_MS ?? 3000);
const WINDOW_MS = Number(process.env.WINDOW_MS ?? 30_000);
/** After the last stream opened, before the window: past the statistics' flush delay. */
const SETTLE_MS = 12_000;
const ROUNDS = Number(process.env.ROUNDS ?? 2);
const BASELINE_DIR = process.env.BASELINE_DIR;

interface DbStats { xact: number; fetched: number; updated: number }

async function dbStats(url: string): Promise<DbStats> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query(`SELECT xact_commit, tup_fetched, tup_updated FROM pg_stat_database WHERE datname = current_database()`);
    const row = r.rows[0] as { xact_commit: string; tup_fetched: string; tup_updated: string };
    return { xact: Number(row.xact_commit), fetched: Number(row.tup_fetched), updated: Number(row.tup_updated) };
  } finally { await c.end(); }
}

main('renewals', 15 * 60_000, async () => {
  if (STREAMS * ITL_MS * TOKENS === 0) throw new Error('STREAMS, TOKENS and ITL_MS must be > 0');
  const lastsMs = TOKENS * ITL_MS;
  if (lastsMs < RAMP_MS + SETTLE_MS + WINDOW_MS + 2000) throw new Error(`a stream lasts ${lastsMs} ms: raise TOKENS × ITL_MS above RAMP_MS + WINDOW_MS + 14 s`);
  const upstream = await startUpstream({ TOKENS: String(TOKENS), ITL_MS: String(ITL_MS) });
  const targets: [string, string][] = [['current', REPO]];
  if (BASELINE_DIR) {
    if (!existsSync(join(BASELINE_DIR, 'bin', 'sluice.mjs'))) throw new Error(`BASELINE_DIR=${BASELINE_DIR} holds no bin/sluice.mjs`);
    targets.push(['baseline', BASELINE_DIR]);
  }
  const body = JSON.stringify({ model: 'sim', stream: true, max_tokens: TOKENS, messages: [{ role: 'user', content: 'hello there' }] });
  const results = new Map<string, { txPerS: number[]; fetchedPerS: number[]; updatedPerS: number[]; cpuMsPerS: number[]; errors: number }>();
  log(`${STREAMS} direct streams of ${TOKENS} tokens ${ITL_MS} ms apart (${lastsMs / 1000} s each), opened over ${RAMP_MS} ms; store counters over ${WINDOW_MS} ms while all are open; ${ROUNDS} round(s)`);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, dir] of round % 2 ? targets : [...targets].reverse()) {
      const dbUrl = await freshPostgres(`sluice_bench_renew_${name}_${round}`);
      const sluice = await startSluice({ MODEL_URL: `${upstream.url}/v1`, DATABASE_URL: dbUrl }, name, dir);
      const key = await createUserKey(sluice);
      const load = streamTtft(`${sluice.url}/v1/chat/completions`, { ...bearer(key), 'x-sluice-mode': 'direct' }, STREAMS, STREAMS, TOKENS, body, RAMP_MS, lastsMs + 60_000);
      await sleep(RAMP_MS + SETTLE_MS);
      const s0 = await dbStats(dbUrl), c0 = cpuMs(sluice.pid), t0 = performance.now();
      await sleep(WINDOW_MS);
      const s1 = await dbStats(dbUrl), c1 = cpuMs(sluice.pid), secs = (performance.now() - t0) / 1000;
      const done = await load;
      await sluice.stop();
      const r = results.get(name) ?? { txPerS: [], fetchedPerS: [], updatedPerS: [], cpuMsPerS: [], errors: 0 };
      r.txPerS.push((s1.xact - s0.xact) / secs); r.fetchedPerS.push((s1.fetched - s0.fetched) / secs);
      r.updatedPerS.push((s1.updated - s0.updated) / secs); r.cpuMsPerS.push((c1 - c0) / secs); r.errors += done.errors;
      results.set(name, r);
      log(`round ${round} ${name}: ${r2((s1.xact - s0.xact) / secs)} transactions/s, ${r2((s1.updated - s0.updated) / secs)} rows updated/s, gateway ${r2((c1 - c0) / secs)} CPU ms/s; ${done.ok} ok, ${done.errors} errors${done.firstError ? ` (${done.firstError})` : ''}`);
    }
  }
  console.log(`\nPostgreSQL store while ${STREAMS} direct streams are open (medians of ${ROUNDS} round(s))`);
  console.log(table([...results].map(([name, r]) => ({
    sluice: name, 'transactions/s': r2(median(r.txPerS)), 'rows fetched/s': r2(median(r.fetchedPerS)), 'rows updated/s': r2(median(r.updatedPerS)),
    'gateway CPU ms/s': r2(median(r.cpuMsPerS)), errors: r.errors,
  }))));
});
