// Routing overhead and non-streaming throughput, side by side in one run, alternating legs, over
// the shared upstream simulator (64-token replies), a user key (quota accounting on), a realistic
// chat body (system prompt, history, two tools, sampling fields, `user`) and default settings.
//
// (a) Streaming, concurrency 8: Sluice with MODEL_URL (one backend) vs the same Sluice with a
//     one-deployment catalogue (SLUICE_MODELS) vs the floor proxy, in direct and in queued mode.
//     With BASELINE_DIR (a checkout of an earlier Sluice, e.g. before the router), that version
//     runs the same legs beside them.
// (b) Non-streaming, direct mode, concurrency 8: Sluice (MODEL_URL) vs the floor proxy vs Portkey's
//     gateway (PORTKEY_DIR: the @portkey-ai/gateway package directory, started with
//     `node build/start-server.js --port=N --headless`, pointed at the upstream with
//     x-portkey-provider: openai and x-portkey-custom-host). Without PORTKEY_DIR that column is
//     skipped with a message. The issue's target: Sluice at least 1.5x Portkey's requests/s.
//
// env: ROUNDS (3), REQUESTS per streaming leg (1000), REQUESTS_PLAIN per non-streaming leg (2000),
//      CONCURRENCY (8), TOKENS (64), PORTKEY_DIR, BASELINE_DIR, STORE=postgres (each Sluice on a
//      fresh database on 127.0.0.1:5432 instead of the embedded PGlite default), PARTS (a,b: `b`
//      runs only the non-streaming comparison)
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bearer, chatLoop, createUserKey, realisticChatBody, freshPostgres, get, log, main, median, r2, type ChatLoopResult, startFloor, startPortkey, startSluice, startUpstream, table, type Proc } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const N_STREAM = Number(process.env.REQUESTS ?? 1000);
const N_PLAIN = Number(process.env.REQUESTS_PLAIN ?? 2000);
const C = Number(process.env.CONCURRENCY ?? 8);
const TOKENS = Number(process.env.TOKENS ?? 64);
const BASELINE_DIR = process.env.BASELINE_DIR;
const STORE = process.env.STORE ?? 'embedded';
const PARTS = new Set((process.env.PARTS ?? 'a,b').split(',').map((p) => p.trim()));

type LegResult = ChatLoopResult;

const leg = (url: string, headers: Record<string, string>, body: string, requests: number): Promise<LegResult> => chatLoop(url, headers, body, requests, C);

interface Leg { part: 'a' | 'b'; name: string; run: (n: number) => Promise<LegResult>; requests: number }

main('routing', 20 * 60_000, async () => {
  const upstream = await startUpstream({ TOKENS: String(TOKENS) });
  const floor = await startFloor(upstream);
  const common = { LOG_LEVEL: 'warn' };
  const store = async (name: string): Promise<Record<string, string>> => (STORE === 'postgres' ? { DATABASE_URL: await freshPostgres(`sluice_bench_routing_${name}_${process.pid}`) } : {});
  const single = await startSluice({ ...common, ...(await store('single')), MODEL_URL: `${upstream.url}/v1` }, 'sluice-model-url');
  const catalogue = await startSluice({ ...common, ...(await store('catalogue')), SLUICE_MODELS: `sim=${upstream.url}/v1` }, 'sluice-catalogue');
  const sluices: [string, Proc][] = [['model-url', single], ['catalogue', catalogue]];
  if (BASELINE_DIR) {
    if (!existsSync(join(BASELINE_DIR, 'bin', 'sluice.mjs'))) throw new Error(`BASELINE_DIR=${BASELINE_DIR} holds no bin/sluice.mjs`);
    sluices.push(['baseline', await startSluice({ ...common, ...(await store('baseline')), MODEL_URL: `${upstream.url}/v1` }, 'sluice-baseline', BASELINE_DIR)]);
  } else log('BASELINE_DIR not set: no earlier Sluice beside this one');
  log(`store: ${STORE === 'postgres' ? 'PostgreSQL (a fresh database per Sluice)' : 'embedded PGlite (the default)'}`);
  const peer = await startPortkey(upstream);
  const portkey = peer?.proc;
  const keys = new Map<Proc, string>();
  for (const [, p] of sluices) keys.set(p, await createUserKey(p));
  log(`upstream ${upstream.url}, floor ${floor.url}, ${sluices.map(([n, p]) => `${n} ${p.url}`).join(', ')}${portkey ? `, portkey ${portkey.url}` : ''}`);

  const streamBody = realisticChatBody(true, TOKENS), plainBody = realisticChatBody(false, TOKENS);
  log(`body: ${Buffer.byteLength(streamBody)} bytes streaming, ${Buffer.byteLength(plainBody)} non-streaming`);
  const chat = (p: Proc) => `${p.url}/v1/chat/completions`;
  const user = (p: Proc, mode: string) => ({ ...bearer(keys.get(p)!), 'x-sluice-mode': mode });
  const legs: Leg[] = [];
  if (PARTS.has('a')) {
    legs.push({ part: 'a', name: 'floor', run: (n) => leg(chat(floor), {}, streamBody, n), requests: N_STREAM });
    for (const mode of ['direct', 'queued']) {
      for (const [name, p] of sluices) legs.push({ part: 'a', name: `${name} ${mode}`, run: (n) => leg(chat(p), user(p, mode), streamBody, n), requests: N_STREAM });
    }
  }
  if (PARTS.has('b')) legs.push({ part: 'b', name: 'floor', run: (n) => leg(chat(floor), {}, plainBody, n), requests: N_PLAIN });
  if (PARTS.has('b')) for (const [name, p] of sluices) legs.push({ part: 'b', name: `${name} direct`, run: (n) => leg(chat(p), user(p, 'direct'), plainBody, n), requests: N_PLAIN });
  if (portkey && PARTS.has('b')) {
    legs.push({ part: 'b', name: 'portkey', run: (n) => leg(chat(portkey!), peer!.headers, plainBody, n), requests: N_PLAIN });
  }

  log('warm-up (300 requests per gateway leg, not counted)');
  for (const l of legs) if (l.name !== 'floor') { const w = await l.run(300); log(`  (${l.part}) ${l.name}: ${w.rps} req/s${w.errors ? `, ${w.errors} errors (${w.firstError})` : ''}`); }

  const results = new Map<Leg, LegResult[]>(legs.map((l) => [l, []]));
  for (let r = 1; r <= ROUNDS; r++) {
    // Each round in a rotated order, so no leg always runs first (or right after the same one).
    const order = legs.map((_, i) => legs[(i + r - 1) % legs.length]!);
    for (const l of order) {
      const x = await l.run(l.requests);
      if (x.errors) throw new Error(`(${l.part}) ${l.name}: ${x.errors} errors (${x.firstError})`);
      log(`round ${r} (${l.part}) ${l.name}: ${x.rps} req/s, latency p50 ${x.p50} p99 ${x.p99} ms`);
      results.get(l)!.push(x);
    }
  }

  // The accounting was on: each user key's request window counts every request that was sent.
  for (const [name, p] of sluices) {
    const u = await get(`${p.url}/v1/usage`, bearer(keys.get(p)!));
    const windows = (JSON.parse(u.body) as { windows: { window: string; metric: string; used: number }[] }).windows;
    const sent = legs.filter((l) => l.name.startsWith(`${name} `)).reduce((s, l) => s + 300 + ROUNDS * l.requests, 0);
    log(`${name}: daily requests used ${windows.find((w) => w.window === 'daily' && w.metric === 'requests')?.used} (sent ${sent})`);
  }

  const medianOf = (part: 'a' | 'b', name: string) => {
    const l = legs.find((x) => x.part === part && x.name === name);
    return l ? median(results.get(l)!.map((x) => x.rps)) : NaN;
  };
  const rows = legs.map((l) => {
    const rs = results.get(l)!;
    const rps = median(rs.map((x) => x.rps));
    const row: Record<string, unknown> = {
      part: l.part === 'a' ? '(a) stream' : '(b) non-stream', leg: l.name,
      ...Object.fromEntries(rs.map((x, i) => [`r${i + 1} req/s`, x.rps])),
      'median req/s': r2(rps), 'p50 ms': r2(median(rs.map((x) => x.p50))), 'p99 ms': r2(median(rs.map((x) => x.p99))),
      'vs floor': r2(rps / medianOf(l.part, 'floor')),
    };
    const mode = l.name.split(' ')[1];
    row['catalogue / model-url'] = l.part === 'a' && l.name.startsWith('catalogue') ? r2(rps / medianOf('a', `model-url ${mode}`)) : '';
    row['vs portkey'] = l.part === 'b' && portkey && l.name !== 'portkey' ? r2(rps / medianOf('b', 'portkey')) : '';
    return row;
  });
  // The same ratios round by round: how far one round's noise goes.
  const perRound = (num: Leg | undefined, den: Leg | undefined) => (num && den ? results.get(num)!.map((x, i) => r2(x.rps / results.get(den)![i]!.rps)).join(' ') : '');
  const find = (part: 'a' | 'b', name: string) => legs.find((x) => x.part === part && x.name === name);
  const spread = {
    'catalogue/model-url direct, per round': perRound(find('a', 'catalogue direct'), find('a', 'model-url direct')),
    'catalogue/model-url queued, per round': perRound(find('a', 'catalogue queued'), find('a', 'model-url queued')),
    ...(BASELINE_DIR && { 'model-url/baseline direct, per round': perRound(find('a', 'model-url direct'), find('a', 'baseline direct')) }),
    ...(portkey && { 'sluice/portkey non-stream, per round': perRound(find('b', 'model-url direct'), find('b', 'portkey')) }),
  };
  console.log(`\nRouting and non-streaming, store ${STORE}, ${TOKENS}-token replies, realistic body (${Buffer.byteLength(streamBody)} bytes), user key, concurrency ${C}, `
    + `${N_STREAM} streaming / ${N_PLAIN} non-streaming requests per leg, ${ROUNDS} rounds, legs alternating (rps in requests/s)`);
  console.log(table(rows));
  for (const [k, v] of Object.entries(spread)) console.log(`${k}: ${v}`);
  if (!portkey) console.log('Portkey: skipped (set PORTKEY_DIR to the @portkey-ai/gateway package directory)');
  console.log(JSON.stringify({ bench: 'routing', store: STORE, tokens: TOKENS, concurrency: C, rounds: ROUNDS, rows, spread }));
});
