// `npm run bench`: the side-by-side suite of issue #13 in one command, one table. Sluice on its
// defaults (embedded store, queued mode by default, MODEL_URL = the shared upstream simulator) with a
// USER key (quota accounting on; never the master key) and the realistic chat body of the routing
// bench, against the floor proxy (a bare pass-through) over the same upstream, legs alternating
// (rotated order each round), medians over ROUNDS:
//
//   1. 1,000 concurrent slow streams (64 tokens, 20 ms apart): Sluice direct and queued vs the floor:
//      req/s, time to first token (first `data:` frame) p50/p99, errors.
//   2. streaming, concurrency 8 (64 tokens, no pacing): req/s, and CPU per streamed request of the
//      gateway process (all threads, /proc/PID/stat) for Sluice direct and the floor.
//   3. non-streaming, concurrency 8: req/s.
//
// The one setting that is not a default: SLUICE_MAX_CONNECTIONS_PER_IP=0 (bench/lib.ts
// startSluice), since every client here is 127.0.0.1 and the default allows 256 per address.
// Phase 1 and phase 2 use separate upstream/floor/Sluice processes (20 ms vs no pacing); only one
// Sluice runs at a time. Bounded: a few minutes; hard stop at 15.
//
// With PORTKEY_DIR (the @portkey-ai/gateway package directory, not a dependency) Portkey's gateway
// runs the same legs as the peer: its figures are rows of their own, beside the floor's.
//
// env: PORTKEY_DIR, ROUNDS (3), STREAMS (1000), SLOW_REQUESTS per leg (= STREAMS: one wave), WARM_REQUESTS (300), FAST_REQUESTS (1000),
//      PLAIN_REQUESTS (2000), CONCURRENCY (8), TOKENS (64), ITL_MS (20), RAMP_MS (1000: the 1,000
//      callers start spread over this long, as a listen backlog of 511 drops a simultaneous burst), PARTS (slow,fast)
import { bearer, chatLoop, cpuMs, createUserKey, log, main, median, pct, r2, realisticChatBody, startFloor, startPortkey, startSluice, startUpstream, table, streamTtft, type ChatLoopResult, type Proc } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const STREAMS = Number(process.env.STREAMS ?? 1000);
const SLOW_N = Number(process.env.SLOW_REQUESTS ?? STREAMS);
const WARM_N = Number(process.env.WARM_REQUESTS ?? 300);
const FAST_N = Number(process.env.FAST_REQUESTS ?? 1000);
const PLAIN_N = Number(process.env.PLAIN_REQUESTS ?? 2000);
const C = Number(process.env.CONCURRENCY ?? 8);
const TOKENS = Number(process.env.TOKENS ?? 64);
const ITL_MS = Number(process.env.ITL_MS ?? 20);
const RAMP_MS = Number(process.env.RAMP_MS ?? 1000);
/** A stream still open after this long is counted as an error and dropped, so a leg always ends. */
const STREAM_TIMEOUT_MS = Number(process.env.STREAM_TIMEOUT_MS ?? 120_000);
const PARTS = new Set((process.env.PARTS ?? 'slow,fast').split(',').map((s) => s.trim()));

interface SlowResult { rps: number; ttftP50: number; ttftP99: number; errors: number; firstError: string }
interface Row { case: string; floor: string; sluice: string; ratio: string; target: string; met: string }

/** Legs in a rotated order per round (no leg always first), each run once per round. */
async function alternate<T>(legs: [string, () => Promise<T>][], rounds: number, describe: (name: string, r: T) => string): Promise<Map<string, T[]>> {
  const out = new Map<string, T[]>(legs.map(([n]) => [n, []]));
  for (let round = 1; round <= rounds; round++) {
    for (let i = 0; i < legs.length; i++) {
      const [name, run] = legs[(i + round - 1) % legs.length]!;
      const r = await run();
      log(`round ${round} ${name}: ${describe(name, r)}`);
      out.get(name)!.push(r);
    }
  }
  return out;
}

async function slowPhase(rows: Row[], json: Record<string, unknown>): Promise<void> {
  log(`phase 1: ${STREAMS} concurrent streams, ${TOKENS} tokens ${ITL_MS} ms apart, ${SLOW_N} requests per leg`);
  const upstream = await startUpstream({ TOKENS: String(TOKENS), ITL_MS: String(ITL_MS) });
  const floor = await startFloor(upstream);
  const sluice = await startSluice({ MODEL_URL: `${upstream.url}/v1` });
  const key = await createUserKey(sluice);
  const body = realisticChatBody(true, TOKENS);
  const chat = (p: Proc) => `${p.url}/v1/chat/completions`;
  const run = (url: string, headers: Record<string, string>, n: number) => async (): Promise<SlowResult> => {
    const x = await streamTtft(url, headers, STREAMS, n, TOKENS, body, RAMP_MS, STREAM_TIMEOUT_MS);
    return { rps: r2(x.rps), ttftP50: r2(pct(x.ttft, 0.5)), ttftP99: r2(pct(x.ttft, 0.99)), errors: x.errors, firstError: x.firstError };
  };
  const legs: [string, () => Promise<SlowResult>][] = [
    ['floor', run(chat(floor), {}, SLOW_N)],
    ['sluice direct', run(chat(sluice), { ...bearer(key), 'x-sluice-mode': 'direct' }, SLOW_N)],
    ['sluice queued', run(chat(sluice), { ...bearer(key), 'x-sluice-mode': 'queued' }, SLOW_N)],
  ];
  const peer = await startPortkey(upstream);
  if (peer) legs.push(['portkey', run(chat(peer.proc), peer.headers, SLOW_N)]);
  log(`warm-up: ${WARM_N} requests per Sluice leg, not counted`);
  for (const mode of ['direct', 'queued']) {
    const w = await run(chat(sluice), { ...bearer(key), 'x-sluice-mode': mode }, WARM_N)();
    log(`  sluice ${mode}: ${w.rps} req/s, ttft p50 ${w.ttftP50} ms${w.errors ? `, ${w.errors} errors (${w.firstError})` : ''}`);
  }
  const res = await alternate(legs, ROUNDS, (_, r) => `${r.rps} req/s, ttft p50 ${r.ttftP50} p99 ${r.ttftP99} ms${r.errors ? `, ${r.errors} errors (${r.firstError})` : ''}`);
  const f = res.get('floor')!;
  const fRps = median(f.map((x) => x.rps)), fT50 = median(f.map((x) => x.ttftP50)), fT99 = median(f.map((x) => x.ttftP99));
  for (const mode of ['direct', 'queued']) {
    const s = res.get(`sluice ${mode}`)!;
    const rps = median(s.map((x) => x.rps)), t50 = median(s.map((x) => x.ttftP50)), t99 = median(s.map((x) => x.ttftP99));
    const errors = s.reduce((n, x) => n + x.errors, 0);
    const perRound = s.map((x, i) => r2(x.rps / f[i]!.rps)).join(' ');
    const ratio = median(s.map((x, i) => x.rps / f[i]!.rps));
    rows.push({ case: `${STREAMS} slow streams, ${mode}: req/s`, floor: String(r2(fRps)), sluice: String(r2(rps)), ratio: `${r2(ratio)} (rounds ${perRound})`, target: '>= 0.9', met: ratio >= 0.9 ? 'yes' : 'no' });
    const tRatio = median(s.map((x, i) => x.ttftP50 / f[i]!.ttftP50));
    rows.push({ case: `${STREAMS} slow streams, ${mode}: first token p50 / p99 ms`, floor: `${r2(fT50)} / ${r2(fT99)}`, sluice: `${r2(t50)} / ${r2(t99)}`, ratio: String(r2(tRatio)), target: 'p50 <= 2x', met: tRatio <= 2 ? 'yes' : 'no' });
    rows.push({ case: `${STREAMS} slow streams, ${mode}: errors`, floor: String(f.reduce((n, x) => n + x.errors, 0)), sluice: String(errors), ratio: '', target: '0', met: errors === 0 ? 'yes' : 'no' });
  }
  const p = res.get('portkey');
  if (p) {
    const ratio = median(p.map((x, i) => x.rps / f[i]!.rps));
    rows.push({ case: `${STREAMS} slow streams, Portkey (peer): req/s; first token p50 / p99 ms; errors`, floor: `${r2(fRps)}; ${r2(fT50)} / ${r2(fT99)}`, sluice: `Portkey ${r2(median(p.map((x) => x.rps)))}; ${r2(median(p.map((x) => x.ttftP50)))} / ${r2(median(p.map((x) => x.ttftP99)))}; ${p.reduce((n, x) => n + x.errors, 0)}`, ratio: `${r2(ratio)} (rounds ${p.map((x, i) => r2(x.rps / f[i]!.rps)).join(' ')})`, target: 'peer', met: '' });
  }
  json.slow = Object.fromEntries(res);
  await peer?.proc.stop(); await sluice.stop(); await floor.stop(); await upstream.stop();
}

async function fastPhase(rows: Row[], json: Record<string, unknown>): Promise<void> {
  log(`phase 2: concurrency ${C}, ${TOKENS}-token replies without pacing; ${FAST_N} streaming / ${PLAIN_N} non-streaming requests per leg`);
  const upstream = await startUpstream({ TOKENS: String(TOKENS) });
  const floor = await startFloor(upstream);
  const sluice = await startSluice({ MODEL_URL: `${upstream.url}/v1` });
  const key = await createUserKey(sluice);
  const streamBody = realisticChatBody(true, TOKENS), plainBody = realisticChatBody(false, TOKENS);
  const chat = (p: Proc) => `${p.url}/v1/chat/completions`;
  const user = { ...bearer(key), 'x-sluice-mode': 'direct' };
  type Measured = ChatLoopResult & { cpuPerReq: number };
  /** A leg; Sluice's and the floor's stop the run on an error, the peer's are counted (a row says so). */
  const measured = (p: Proc, headers: Record<string, string>, body: string, n: number, tolerate = false) => async (): Promise<Measured> => {
    const c0 = cpuMs(p.pid);
    const x = await chatLoop(chat(p), headers, body, n, C);
    if (x.errors && !tolerate) throw new Error(`${x.errors} errors (${x.firstError})`);
    return { ...x, cpuPerReq: r2((cpuMs(p.pid) - c0) / Math.max(1, x.ok)) };
  };
  log('warm-up: 300 requests per Sluice leg, not counted');
  await chatLoop(chat(sluice), user, streamBody, 300, C);
  await chatLoop(chat(sluice), user, plainBody, 300, C);
  const legs: [string, () => Promise<Measured>][] = [
    ['floor stream', measured(floor, {}, streamBody, FAST_N)],
    ['sluice stream', measured(sluice, user, streamBody, FAST_N)],
    ['floor plain', measured(floor, {}, plainBody, PLAIN_N)],
    ['sluice plain', measured(sluice, user, plainBody, PLAIN_N)],
  ];
  const peer = await startPortkey(upstream);
  if (peer) legs.push(['portkey stream', measured(peer.proc, peer.headers, streamBody, FAST_N, true)], ['portkey plain', measured(peer.proc, peer.headers, plainBody, PLAIN_N, true)]);
  const res = await alternate(legs, ROUNDS, (_, r) => `${r.rps} req/s, latency p50 ${r.p50} p99 ${r.p99} ms, CPU ${r.cpuPerReq} ms/request`);
  const m = (name: string, k: 'rps' | 'cpuPerReq') => median(res.get(name)!.map((x) => x[k]));
  const perRound = (a: string, b: string) => res.get(a)!.map((x, i) => r2(x.rps / res.get(b)![i]!.rps)).join(' ');
  /** The median of the per-round ratios (each round's legs ran back to back). */
  const ratio = (a: string, b: string, k: 'rps' | 'cpuPerReq' = 'rps') => median(res.get(a)!.map((x, i) => x[k] / res.get(b)![i]![k]));
  const sRps = m('sluice stream', 'rps'), fRps = m('floor stream', 'rps'), sPlain = m('sluice plain', 'rps'), fPlain = m('floor plain', 'rps');
  rows.push({ case: `streaming c=${C}, direct: req/s`, floor: String(r2(fRps)), sluice: String(r2(sRps)), ratio: `${r2(ratio('sluice stream', 'floor stream'))} (rounds ${perRound('sluice stream', 'floor stream')})`, target: '>= 0.6', met: ratio('sluice stream', 'floor stream') >= 0.6 ? 'yes' : 'no' });
  rows.push({ case: `non-streaming c=${C}, direct: req/s`, floor: String(r2(fPlain)), sluice: String(r2(sPlain)), ratio: `${r2(ratio('sluice plain', 'floor plain'))} (rounds ${perRound('sluice plain', 'floor plain')})`, target: '>= 0.5', met: ratio('sluice plain', 'floor plain') >= 0.5 ? 'yes' : 'no' });
  const sCpu = m('sluice stream', 'cpuPerReq'), fCpu = m('floor stream', 'cpuPerReq');
  rows.push({ case: 'CPU per streamed request, ms (gateway process)', floor: String(fCpu), sluice: String(sCpu), ratio: String(r2(ratio('sluice stream', 'floor stream', 'cpuPerReq'))), target: '<= 2x', met: ratio('sluice stream', 'floor stream', 'cpuPerReq') <= 2 ? 'yes' : 'no' });
  if (peer) {
    for (const [kind, floorLeg] of [['stream', 'floor stream'], ['plain', 'floor plain']] as const) {
      const legs = res.get(`portkey ${kind}`)!;
      const errors = legs.reduce((n, x) => n + x.errors, 0);
      rows.push({ case: `${kind === 'stream' ? 'streaming' : 'non-streaming'} c=${C}, Portkey (peer): req/s; CPU ms/request; errors`, floor: `${r2(m(floorLeg, 'rps'))}; ${m(floorLeg, 'cpuPerReq')}`, sluice: `Portkey ${r2(m(`portkey ${kind}`, 'rps'))}; ${m(`portkey ${kind}`, 'cpuPerReq')}; ${errors}${errors ? ` (${legs.find((x) => x.errors)!.firstError.slice(0, 80)})` : ''}`, ratio: `${r2(ratio(`portkey ${kind}`, floorLeg))} (rounds ${perRound(`portkey ${kind}`, floorLeg)})`, target: 'peer', met: '' });
    }
  }
  json.fast = Object.fromEntries(res);
  await peer?.proc.stop(); await sluice.stop(); await floor.stop(); await upstream.stop();
}

main('bench', 15 * 60_000, async () => {
  const t0 = Date.now();
  const rows: Row[] = [];
  const json: Record<string, unknown> = { bench: 'suite', rounds: ROUNDS, streams: STREAMS, tokens: TOKENS, itlMs: ITL_MS, concurrency: C };
  if (PARTS.has('slow')) await slowPhase(rows, json);
  if (PARTS.has('fast')) await fastPhase(rows, json);
  console.log(`\nSluice (defaults, user key, realistic body) vs the floor proxy, same run, legs alternating, medians of ${ROUNDS} rounds (ratio: the median of per-round ratios); `
    + `${Math.round((Date.now() - t0) / 1000)} s; the machine may be shared: compare ratios, not absolute figures`);
  console.log(table(rows.map((r) => ({ ...r }))));
  console.log(JSON.stringify({ ...json, rows }));
});
