// Queued mode over real services, split into a gateway process (SLUICE_ROLE=gateway) and a
// worker process (SLUICE_ROLE=worker), each topology on a fresh PostgreSQL database:
//   amqp:       PostgreSQL + Redis (limiter, bus) + RabbitMQ (queue)
//   nats-queue: PostgreSQL + Redis (limiter, bus) + NATS JetStream (queue)
//   nats-all:   PostgreSQL + Redis (limiter) + NATS JetStream (queue and bus)
// Per topology:
//   1. accepted requests/s: closed loop of POST /v1/requests (user key, accounting on), c=64;
//   2. added time to first token, queued vs direct: streamed chat completions at c=8, alternating
//      x-sluice-mode direct/queued, ROUNDS rounds (direct runs the model in the gateway);
//   3. token delivery latency, worker append -> listener receive: native SSE token events'
//      `timestamp` (stamped at append in the worker) vs receive time (same clock), light load
//      (10 requests × 2 listeners, 100 tokens 20 ms apart);
//   4. RSS per concurrent listener on the gateway: 10 requests × 100 listeners, 50 tokens 100 ms apart.
// Models are in-process simulators (sim://) so the figures are Sluice's and the services', not a model's.
// env: TOPOLOGIES (amqp,nats-queue,nats-all), ROUNDS (3), TTFT_REQUESTS (200), ACCEPT_SECONDS (5)
import { isolatedNames, removeIsolated, SERVICES } from '../test/helpers/services.ts';
import { bearer, closedLoopPost, createUserKey, freshPostgres, onCleanup, get, listen, log, main, MASTER_KEY, pct, r2, rssMiB, sleep, startSluice, streamTtft, submit, table, type ListenerResult, type Proc } from './lib.ts';

const { redis: REDIS, rabbitmq: AMQP, nats: NATS } = SERVICES;
type Topology = { queue: 'amqp' | 'nats'; bus: 'redis' | 'nats'; QUEUE_URL: string; BUS_URL: string; LIMITER_URL: string };
const TOPOLOGIES: Record<string, Topology> = {
  amqp: { queue: 'amqp', bus: 'redis', QUEUE_URL: AMQP, BUS_URL: REDIS, LIMITER_URL: REDIS },
  'nats-queue': { queue: 'nats', bus: 'redis', QUEUE_URL: NATS, BUS_URL: REDIS, LIMITER_URL: REDIS },
  'nats-all': { queue: 'nats', bus: 'nats', QUEUE_URL: NATS, BUS_URL: NATS, LIMITER_URL: REDIS },
};
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const TTFT_N = Number(process.env.TTFT_REQUESTS ?? 200);
const ACCEPT_S = Number(process.env.ACCEPT_SECONDS ?? 5);
const FAST = 'sim://?ttft_ms=0&itl_ms=0';

async function listenerPhase(gw: Proc, key: string, requests: number, per: number, tokens: number): Promise<{ results: ListenerResult[]; rssBefore: number; rssConnected: number; rssPeak: number }> {
  const ids: string[] = [];
  for (let i = 0; i < requests; i++) ids.push(await submit(gw, key, tokens));
  await sleep(200);
  const rssBefore = rssMiB(gw.pid);
  let connected = 0;
  const all: Promise<ListenerResult>[] = [];
  for (let i = 0; i < per; i++) {
    for (const id of ids) all.push(listen(gw.url, id, key, { lag: true, onConnected: () => { connected++; } }));
    if (i % 10 === 9) await sleep(20);
  }
  const t0 = Date.now();
  while (connected < requests * per && Date.now() - t0 < 10_000) await sleep(50);
  await sleep(200);
  const rssConnected = rssMiB(gw.pid);
  let rssPeak = rssConnected;
  const sampler = setInterval(() => { try { rssPeak = Math.max(rssPeak, rssMiB(gw.pid)); } catch { /* exited */ } }, 250);
  const results = await Promise.all(all);
  clearInterval(sampler);
  return { results, rssBefore, rssConnected, rssPeak };
}

const completeCount = (rs: ListenerResult[]) => rs.filter((r) => r.completed && r.completionTokens !== null && r.seqs.size === r.completionTokens).length;

async function runTopology(name: string): Promise<Record<string, string | number | null>> {
  const { queue, bus, ...services } = TOPOLOGIES[name]!;
  const base = `sluice_bench_${name.replace('-', '_')}_${process.pid}`;
  const db = await freshPostgres(base);
  // Own queue, stream and key names, removed afterwards, so a run leaves nothing on the shared services.
  const names = isolatedNames(base);
  onCleanup(async () => { for (const f of await removeIsolated(names, { queue, bus })) log(`cleanup: ${String(f)}`); });
  const common = { DATABASE_URL: db, ...services, ...names, SLUICE_DELIVERY_MODE: 'queued', SSE_PING_MS: '60000' };
  const gw = await startSluice({ ...common, SLUICE_ROLE: 'gateway', MODEL_URL: FAST }, `${name}-gateway`);
  const startWorker = (model: string) => startSluice({ ...common, SLUICE_ROLE: 'worker', MODEL_URL: model, WORKER_CONCURRENCY: '32' }, `${name}-worker`);
  // A user per run: the Redis limiter's counters outlive the database.
  const key = await createUserKey(gw, `bench_${name.replace('-', '_')}_${process.pid}`);
  log(`[${name}] gateway ${gw.url} (pid ${gw.pid}); ${JSON.stringify(services)}; store ${db}`);

  // 1 + 2: fast model.
  let worker = await startWorker(FAST);
  const body = JSON.stringify({ model: 'sim', max_tokens: 8, messages: [{ role: 'user', content: 'hello there' }] });
  await closedLoopPost(`${gw.url}/v1/requests`, key, body, 16, 1); // warm-up
  const acc = await closedLoopPost(`${gw.url}/v1/requests`, key, body, 64, ACCEPT_S);
  log(`[${name}] accepted ${acc.rps.toFixed(0)}/s (p50 ${acc.p50.toFixed(1)} p99 ${acc.p99.toFixed(1)} ms), errors ${acc.errors}${acc.firstError ? ` (${acc.firstError})` : ''}`);
  const t0 = Date.now();
  // The gateway has no worker metrics; drain = no request left queued or running, read from the store.
  for (;;) {
    const q = await get(`${gw.url}/admin/requests?status=queued&limit=1`, bearer(MASTER_KEY));
    const r = await get(`${gw.url}/admin/requests?status=running&limit=1`, bearer(MASTER_KEY));
    const busy = (JSON.parse(q.body) as { data: unknown[] }).data.length + (JSON.parse(r.body) as { data: unknown[] }).data.length;
    if (!busy) break;
    if (Date.now() - t0 > 90_000) { log(`[${name}] backlog not drained after 90 s`); break; }
    await sleep(250);
  }
  const drainS = (Date.now() - t0) / 1000;
  log(`[${name}] backlog drained in ${drainS.toFixed(1)} s (${(acc.accepted / (ACCEPT_S + drainS)).toFixed(0)} completed/s overall)`);

  const h = bearer(key);
  await streamTtft(`${gw.url}/v1/chat/completions`, { ...h, 'x-sluice-mode': 'queued' }, 8, 50, 16);
  await streamTtft(`${gw.url}/v1/chat/completions`, { ...h, 'x-sluice-mode': 'direct' }, 8, 50, 16);
  const addP50: number[] = [], addP99: number[] = [], dP: string[] = [], qP: string[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const d = await streamTtft(`${gw.url}/v1/chat/completions`, { ...h, 'x-sluice-mode': 'direct' }, 8, TTFT_N, 16);
    const q = await streamTtft(`${gw.url}/v1/chat/completions`, { ...h, 'x-sluice-mode': 'queued' }, 8, TTFT_N, 16);
    if (d.errors || q.errors) log(`[${name}] errors direct ${d.errors} (${d.firstError}) queued ${q.errors} (${q.firstError})`);
    const dp50 = pct(d.ttft, 0.5), dp99 = pct(d.ttft, 0.99), qp50 = pct(q.ttft, 0.5), qp99 = pct(q.ttft, 0.99);
    addP50.push(qp50 - dp50); addP99.push(qp99 - dp99);
    dP.push(`${r2(dp50)}/${r2(dp99)}`); qP.push(`${r2(qp50)}/${r2(qp99)}`);
    log(`[${name}] round ${r}: ttft direct p50 ${dp50.toFixed(2)} p99 ${dp99.toFixed(2)} (${d.rps.toFixed(0)} req/s), queued p50 ${qp50.toFixed(2)} p99 ${qp99.toFixed(2)} ms (${q.rps.toFixed(0)} req/s)`);
  }
  await worker.stop();

  // 3: delivery latency under light load.
  worker = await startWorker('sim://?ttft_ms=3000&itl_ms=20');
  const light = await listenerPhase(gw, key, 10, 2, 100);
  const lightLag = light.results.flatMap((r) => r.lagMs);
  log(`[${name}] light: ${completeCount(light.results)}/${light.results.length} complete listeners, lag p50 ${pct(lightLag, 0.5)} p99 ${pct(lightLag, 0.99)} max ${pct(lightLag, 1)} ms`);
  await worker.stop();

  // 4: 1,000 listeners on the gateway.
  worker = await startWorker('sim://?ttft_ms=8000&itl_ms=100');
  const heavy = await listenerPhase(gw, key, 10, 100, 50);
  const heavyLag = heavy.results.flatMap((r) => r.lagMs);
  const n = heavy.results.length;
  log(`[${name}] heavy: ${completeCount(heavy.results)}/${n} complete, gateway RSS ${heavy.rssBefore.toFixed(1)} -> ${heavy.rssConnected.toFixed(1)} (peak ${heavy.rssPeak.toFixed(1)}) MiB, lag p50 ${pct(heavyLag, 0.5)} p99 ${pct(heavyLag, 0.99)} ms`);
  await worker.stop();
  await gw.stop();

  const med = (a: number[]) => r2(pct(a, 0.5));
  return {
    topology: name, 'accepted/s': Math.round(acc.rps), 'accept p99 ms': r2(acc.p99),
    'ttft direct p50/p99 (per round)': dP.join(' '), 'ttft queued p50/p99 (per round)': qP.join(' '),
    'added ttft p50 (median)': med(addP50), 'added ttft p99 (median)': med(addP99),
    'delivery lag p50/p99/max ms (20 listeners)': `${pct(lightLag, 0.5)}/${pct(lightLag, 0.99)}/${pct(lightLag, 1)}`,
    'complete (light)': `${completeCount(light.results)}/${light.results.length}`,
    'delivery lag p50/p99 ms (1000 listeners)': `${pct(heavyLag, 0.5)}/${pct(heavyLag, 0.99)}`,
    'complete (1000)': `${completeCount(heavy.results)}/${n}`,
    'KiB/listener (connected)': r2(((heavy.rssConnected - heavy.rssBefore) * 1024) / n),
    'KiB/listener (peak)': r2(((heavy.rssPeak - heavy.rssBefore) * 1024) / n),
  };
}

main('distributed', 15 * 60_000, async () => {
  const names = (process.env.TOPOLOGIES ?? 'amqp,nats-queue,nats-all').split(',').filter((n) => TOPOLOGIES[n]);
  const rows: Record<string, string | number | null>[] = [];
  for (const name of names) rows.push(await runTopology(name));
  console.log('\nQueued mode over real services (gateway and worker in separate processes)');
  for (const row of rows) console.log(table(Object.entries(row).map(([k, v]) => ({ metric: k, value: v }))));
  console.log(JSON.stringify({ bench: 'distributed', rounds: ROUNDS, results: rows }));
});
