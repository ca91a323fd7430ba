// Edge delivery over NATS leaf nodes (issue #16): a private hub nats-server (JetStream, domain
// `hub`) and two leaf nats-servers, each with a Sluice edge (`SLUICE_ROLE=edge`, BUS_URL
// nats://leaf?domain=hub); the origin is a worker (the simulated model) and a gateway, both on the
// hub. For each listener count L (1, 10, 100 by default) one request is submitted at edge A, and L
// native-SSE listeners follow it at each edge and at the origin gateway (the same-run baseline
// without the leaf hop). Reports:
//  - delivery latency, worker append → client (receive time minus the event's append timestamp,
//    same machine clock), p50/p99 at the edges and at the origin gateway;
//  - the hub's messages to each leaf per event of the request, counted by the hub itself (/leafz
//    out_msgs of each leaf connection, read after every listener is connected and before the first
//    token, and again after the end): 1.0 means once per edge, whatever the number of listeners;
//  - every listener got every token once (distinct sequences = completion tokens) and the end.
// Uses PostgreSQL (a fresh database) and Redis (its own key prefix) on 127.0.0.1; the queue is the
// private hub's JetStream. env: LISTENERS (1,10,100), TOKENS (100), ITL_MS (20), TTFT_MS (2500), ROUNDS (1)
import { deleteRedisKeys, SERVICES } from '../test/helpers/services.ts';
import { HUB_DOMAIN, startLeafTopology, type NatsNode } from '../test/helpers/nats-leaf.ts';
import { freshPostgres, listen, log, main, MASTER_KEY, onCleanup, pct, r2, sleep, startSluice, submit, table, type ListenerResult, type Proc } from './lib.ts';

const LISTENERS = (process.env.LISTENERS ?? '1,10,100').split(',').map(Number);
const TOKENS = Number(process.env.TOKENS ?? 100);
const ITL = Number(process.env.ITL_MS ?? 20);
const TTFT = Number(process.env.TTFT_MS ?? 2500);
const ROUNDS = Number(process.env.ROUNDS ?? 1);

interface LeafConn { in_msgs: number; out_msgs: number; subscriptions_list?: string[] }

/** Messages the hub sent to each of its leaf connections so far (in /leafz order). */
async function hubOut(hub: NatsNode): Promise<number[]> {
  return (await hub.json<{ leafs: LeafConn[] }>('/leafz')).leafs.map((l) => l.out_msgs);
}

main('edge', 10 * 60_000, async () => {
  const topo = await startLeafTopology(2);
  onCleanup(() => topo.stop());
  const prefix = `bench_edge_${process.pid}`;
  onCleanup(() => deleteRedisKeys(`${prefix}:*`));
  const shared: Record<string, string> = {
    DATABASE_URL: await freshPostgres(`sluice_bench_edge_${process.pid}`),
    LIMITER_URL: SERVICES.redis, LIMITER_PREFIX: `${prefix}:`,
    QUEUE_URL: topo.hub.url, QUEUE_NAME: `${prefix}.requests`, BUS_PREFIX: prefix,
    SSE_PING_MS: '60000', SLUICE_MIGRATE: 'false',
  };
  const worker = await startSluice({ ...shared, SLUICE_MIGRATE: 'true', SLUICE_ROLE: 'worker', BUS_URL: topo.hub.url, MODEL_URL: `sim://?ttft_ms=${TTFT}&itl_ms=${ITL}`, WORKER_CONCURRENCY: '8' }, 'worker');
  const origin = await startSluice({ ...shared, SLUICE_ROLE: 'gateway', BUS_URL: topo.hub.url }, 'origin');
  const edges: Proc[] = [];
  for (const [i, leaf] of topo.leafs.entries()) edges.push(await startSluice({ ...shared, SLUICE_ROLE: 'edge', BUS_URL: `${leaf.url}?domain=${HUB_DOMAIN}` }, `edge-${'ab'[i]}`));
  log(`hub ${topo.hub.url}, leafs ${topo.leafs.map((l) => l.url).join(' ')}; worker pid ${worker.pid}, origin ${origin.url}, edges ${edges.map((e) => e.url).join(' ')}; ${TOKENS} tokens, itl ${ITL} ms, ttft ${TTFT} ms`);
  log('the machine is shared with other work: latencies are noisy, compare edge and origin within the table');

  const rows: Record<string, unknown>[] = [];
  const json: Record<string, unknown>[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const L of LISTENERS) {
      const id = await submit(edges[0]!, MASTER_KEY, TOKENS);
      const started = Date.now();
      let connected = 0;
      const targets = [...edges, origin];
      const all: Array<{ where: string; p: Promise<ListenerResult> }> = [];
      for (const t of targets) {
        for (let i = 0; i < L; i++) all.push({ where: t.name, p: listen(t.url, id, MASTER_KEY, { lag: true, onConnected: () => { connected++; } }) });
        await sleep(20);
      }
      while (connected < all.length && Date.now() - started < TTFT - 300) await sleep(20);
      if (connected < all.length) log(`WARNING: ${connected}/${all.length} listeners connected before the first token`);
      const before = await hubOut(topo.hub);
      const results = await Promise.all(all.map(async (a) => ({ where: a.where, r: await a.p })));
      await sleep(200);
      const after = await hubOut(topo.hub);
      const events = TOKENS + 1; // tokens and the completed event
      const perLeaf = after.map((n, i) => (n - (before[i] ?? 0)) / events);
      const ok = results.every(({ r }) => r.completed && r.seqs.size === r.completionTokens && r.tokens === r.completionTokens);
      const lagOf = (where: (w: string) => boolean) => results.filter((x) => where(x.where)).flatMap((x) => x.r.lagMs);
      const edgeLag = lagOf((w) => w.startsWith('edge'));
      const originLag = lagOf((w) => w === 'origin');
      const row = {
        listeners_per_edge: L, round: round + 1,
        edge_p50_ms: r2(pct(edgeLag, 0.5)), edge_p99_ms: r2(pct(edgeLag, 0.99)),
        origin_p50_ms: r2(pct(originLag, 0.5)), origin_p99_ms: r2(pct(originLag, 0.99)),
        hub_msgs_per_event_leaf_1: r2(perLeaf[0] ?? NaN), hub_msgs_per_event_leaf_2: r2(perLeaf[1] ?? NaN),
        all_tokens_once: ok ? 'yes' : 'NO',
      };
      log(JSON.stringify(row));
      rows.push(row);
      json.push(row);
      if (!ok) process.exitCode = 1;
    }
  }
  console.log(`\n${table(rows)}\n`);
  console.log(JSON.stringify({ bench: 'edge', tokens: TOKENS, itl_ms: ITL, rows: json }));
});
