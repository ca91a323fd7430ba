// POST /v1/requests: maximum accepted requests/s (closed loop at high concurrency) and latency at a
// fixed open-loop rate, with the master key (quota accounting off) and a user key (accounting on),
// alternating, ROUNDS rounds. Workers consume the jobs meanwhile on a fast simulated model
// (MODEL_URL=sim://?ttft_ms=0&itl_ms=0, max_tokens 8); after each leg the bench waits for the
// backlog to drain so one leg's jobs do not run during the next.
//
// With BASELINE_DIR (another checkout, e.g. /work/main) the same legs run against that checkout's
// Sluice too, in alternating order each round, on the same services: the before/after to quote
// on a shared machine. Every closed-loop leg also reports the gateway process's CPU time per
// accepted request (user + system, all threads, from /proc/PID/stat), which moves less with the
// machine's other load than a rate does.
//
// env: ROUNDS (3), CONCURRENCY (64), MAX_SECONDS (5, closed-loop leg), RATE (500), RATE_SECONDS (5),
//      STORE=postgres (a fresh database on 127.0.0.1:5432; default embedded PGlite), WORKER_CONCURRENCY (16),
//      QUEUE_URL / LIMITER_URL / BUS_URL (memory://): with a real service, the run uses queue, key and
//      subject names of its own and removes them at the end;
//      SPLIT=1: the gateway alone in its process (SLUICE_ROLE=gateway) and the workers in another
//      (needs a QUEUE_URL other than memory://): intake measured on one gateway process;
//      BASELINE_DIR (see above); KEYS=user to run the user key only;
//      PROFILE=1: the gateway(s) run under `node --cpu-prof`, profiles left in the printed directory.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isolatedNames, removeIsolated } from '../test/helpers/services.ts';
import { bearer, closedLoopPost, createUserKey, freshPostgres, log, main, makePoster, MASTER_KEY, median, metricSum, onCleanup, pct, r2, REPO, sleep, startSluice, table, type Proc } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const C = Number(process.env.CONCURRENCY ?? 64);
const MAX_S = Number(process.env.MAX_SECONDS ?? 5);
const RATE = Number(process.env.RATE ?? 500);
const RATE_S = Number(process.env.RATE_SECONDS ?? 5);
const BODY = JSON.stringify({ model: 'sim', max_tokens: 8, messages: [{ role: 'user', content: 'hello there' }] });

const BASELINE_DIR = process.env.BASELINE_DIR;
const SPLIT = process.env.SPLIT === '1';
const PROFILE = process.env.PROFILE === '1';
const TICK_MS = 10; // USER_HZ is 100 on Linux

/** User + system CPU of a process (all its threads), in ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS; // fields 14 and 15 of stat(5)
}

/** One Sluice under test: its gateway, the process whose metrics count finished jobs, and how many it accepted. */
interface Sluice { name: string; gateway: Proc; finisher: Proc; accepted: number; keys: [string, string][] }

/** Closed loop: C callers, each posting back to back for MAX_S seconds; with the gateway's CPU per accepted request. */
async function closedLoop(s: Sluice, key: string): Promise<{ rps: number; p50: number; p99: number; errors: number; firstError: string; cpuPerReq: number }> {
  const cpu0 = cpuMs(s.gateway.pid);
  const r = await closedLoopPost(`${s.gateway.url}/v1/requests`, key, BODY, C, MAX_S);
  const cpu = cpuMs(s.gateway.pid) - cpu0;
  s.accepted += r.accepted;
  return { ...r, cpuPerReq: r.accepted ? cpu / r.accepted : NaN };
}

/** Open loop: one request every 1000/RATE ms whatever the answers; latency from the scheduled send time. */
async function openLoop(s: Sluice, key: string): Promise<{ sent: number; p50: number; p99: number; max: number; errors: number; firstError: string }> {
  const poster = makePoster(`${s.gateway.url}/v1/requests`, bearer(key), 1024);
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
  s.accepted += lat.length;
  return { sent: total, p50: pct(lat, 0.5), p99: pct(lat, 0.99), max: pct(lat, 1), errors, firstError };
}

async function drain(s: Sluice): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const finished = await metricSum(s.finisher, 'sluice_requests_finished_total');
    if (finished >= s.accepted) { log(`  [${s.name}] drained ${s.accepted} jobs (${((Date.now() - t0) / 1000).toFixed(1)} s)`); return; }
    if (Date.now() - t0 > 90_000) { log(`  [${s.name}] backlog not drained after 90 s (${finished}/${s.accepted}); going on`); return; }
    await sleep(250);
  }
}

const scheme = (url: string | undefined): string => (url ? new URL(url).protocol.slice(0, -1) : 'memory');

async function startOne(name: string, cwd: string, profDir: string | undefined): Promise<Sluice> {
  if (SPLIT && scheme(process.env.QUEUE_URL) === 'memory') throw new Error('SPLIT=1 needs QUEUE_URL (amqp:// or nats://)');
  const base = `sluice_bench_accept_${name}_${process.pid}`;
  const names = isolatedNames(base);
  const queue = scheme(process.env.QUEUE_URL), bus = scheme(process.env.BUS_URL);
  if (queue !== 'memory' || bus !== 'memory' || scheme(process.env.LIMITER_URL) !== 'memory') {
    onCleanup(async () => { for (const f of await removeIsolated(names, { queue: queue as 'amqp' | 'nats' | 'memory', bus: bus as 'redis' | 'nats' | 'memory' })) log(`cleanup: ${String(f)}`); });
  }
  const env: Record<string, string> = {
    MODEL_URL: 'sim://?ttft_ms=0&itl_ms=0',
    ...(process.env.STORE === 'postgres' && { DATABASE_URL: await freshPostgres(base) }),
    ...(process.env.WORKER_CONCURRENCY && { WORKER_CONCURRENCY: process.env.WORKER_CONCURRENCY }),
    ...(process.env.QUEUE_URL && { QUEUE_URL: process.env.QUEUE_URL }),
    ...(process.env.LIMITER_URL && { LIMITER_URL: process.env.LIMITER_URL }),
    ...(process.env.BUS_URL && { BUS_URL: process.env.BUS_URL }),
    ...names,
  };
  const nodeArgs = profDir ? ['--cpu-prof', '--cpu-prof-dir', `${profDir}/${name}`] : [];
  const gateway = await startSluice({ ...env, ...(SPLIT && { SLUICE_ROLE: 'gateway' }) }, `${name}-gateway`, cwd, nodeArgs);
  const finisher = SPLIT ? await startSluice({ ...env, SLUICE_ROLE: 'worker' }, `${name}-worker`, cwd) : gateway;
  // A user of its own: the Redis limiter's counters outlive the database.
  const userKey = await createUserKey(gateway, `bench_accept_${name}_${process.pid}`);
  const all: [string, string][] = [['master (accounting off)', MASTER_KEY], ['user (accounting on)', userKey]];
  const keys = process.env.KEYS === 'user' ? all.slice(1) : all;
  log(`[${name}] ${cwd}: gateway ${gateway.url} (pid ${gateway.pid})${SPLIT ? `, worker pid ${finisher.pid}` : ''}`);
  return { name, gateway, finisher, accepted: 0, keys };
}

main('accept', 20 * 60_000, async () => {
  // Not a tmpDir of lib.ts: those are removed at the end.
  const profDir = PROFILE ? mkdtempSync(join(tmpdir(), 'sluice-accept-prof-')) : undefined;
  const sluices = [await startOne('this', REPO, profDir)];
  if (BASELINE_DIR) sluices.push(await startOne('baseline', BASELINE_DIR, profDir));
  log(`closed loop c=${C} for ${MAX_S}s, open loop ${RATE}/s for ${RATE_S}s; queue ${scheme(process.env.QUEUE_URL)}, limiter ${scheme(process.env.LIMITER_URL)}, bus ${scheme(process.env.BUS_URL)}, store ${process.env.STORE ?? 'pglite'}${SPLIT ? ', gateway and worker in separate processes' : ''}`);

  log('warm-up');
  for (const s of sluices) {
    for (const [, key] of s.keys) { const poster = makePoster(`${s.gateway.url}/v1/requests`, bearer(key), 8); for (let i = 0; i < 200; i++) if ((await poster.post(BODY)).status === 202) s.accepted++; poster.close(); }
    await drain(s);
  }

  const rows: Record<string, string | number>[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    // Alternating order: neither checkout always runs first in a round.
    const order = r % 2 === 1 ? sluices : [...sluices].reverse();
    for (const s of order) {
      for (const [name, key] of s.keys) {
        const c = await closedLoop(s, key);
        log(`round ${r} [${s.name}] ${name} closed loop: ${c.rps.toFixed(0)} accepted/s, p50 ${c.p50.toFixed(2)} p99 ${c.p99.toFixed(2)} ms, gateway CPU ${c.cpuPerReq.toFixed(3)} ms/request, errors ${c.errors}${c.firstError ? ` (${c.firstError})` : ''}`);
        await drain(s);
        const o = await openLoop(s, key);
        log(`round ${r} [${s.name}] ${name} open loop ${RATE}/s: p50 ${o.p50.toFixed(2)} p99 ${o.p99.toFixed(2)} max ${o.max.toFixed(2)} ms, errors ${o.errors}${o.firstError ? ` (${o.firstError})` : ''}`);
        await drain(s);
        rows.push({ round: r, sluice: s.name, key: name, 'max accepted/s': Math.round(c.rps), 'closed p99 ms': r2(c.p99), 'gateway CPU ms/req': r2(c.cpuPerReq), [`${RATE}/s p50 ms`]: r2(o.p50), [`${RATE}/s p99 ms`]: r2(o.p99), errors: c.errors + o.errors });
      }
    }
  }
  const summaries = [];
  for (const s of sluices) {
    const mine = rows.filter((x) => x.sluice === s.name);
    for (const [name] of s.keys) {
      const leg = mine.filter((x) => x.key === name);
      summaries.push({
        sluice: s.name, key: name,
        'median accepted/s': median(leg.map((x) => x['max accepted/s'] as number)),
        'median gateway CPU ms/req': r2(median(leg.map((x) => x['gateway CPU ms/req'] as number))),
        [`median ${RATE}/s p50`]: r2(median(leg.map((x) => x[`${RATE}/s p50 ms`] as number))),
        [`median ${RATE}/s p99`]: r2(median(leg.map((x) => x[`${RATE}/s p99 ms`] as number))),
      });
    }
  }
  console.log(`\nPOST /v1/requests, closed loop c=${C} ${MAX_S}s per leg, open loop ${RATE}/s ${RATE_S}s per leg, ${ROUNDS} rounds; workers on sim://?ttft_ms=0&itl_ms=0, max_tokens 8${SPLIT ? '; gateway alone in its process' : ''}`);
  console.log(table(rows));
  console.log(table(summaries));
  if (profDir) console.log(`CPU profiles of the gateway(s): ${profDir}`);
  console.log(JSON.stringify({ bench: 'accept', concurrency: C, rate: RATE, rounds: rows, summaries }));
});
