// Content inspection: what each mode adds to streaming, measured in one run against `disabled`.
// One in-process Sluice (embedded store, sim model at SIM_TTFT_MS/SIM_ITL_MS), one tier per mode,
// direct-mode streaming chat (/v1/chat/completions) with the same seed for every request, so every
// mode streams the same text at the same pace. Rounds alternate the modes. Per request:
//   ttft    time from sending the request to the first content character;
//   delay   per character, its arrival time minus the same character's arrival in the disabled
//           request of the same round, averaged over the answer (the added per-token latency).
// A 'control' leg (a second disabled request per round) shows the noise floor of the machine.
// A second process adds an HTTP inspector (a local server answering "no findings") beside the
// built-in one, for inline and hybrid: the seed's "+10-50 ms/token" assumed a remote inspector.
// Env: ROUNDS (7), TOKENS (120), SIM_TTFT_MS (20), SIM_ITL_MS (5), BUFFER_MS (150).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createUserKey, startTestSluice, type TestSluice } from '../test/helpers/app.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 7);
const TOKENS = Number(process.env.TOKENS ?? 120);
const TTFT = Number(process.env.SIM_TTFT_MS ?? 20);
const ITL = Number(process.env.SIM_ITL_MS ?? 5);
const BUFFER = Number(process.env.BUFFER_MS ?? 150);
const HARD_LIMIT_MS = 10 * 60_000;
setTimeout(() => { console.error('bench/inspection: hard time limit reached'); process.exit(3); }, HARD_LIMIT_MS).unref();

const TIER = { requestsPerDay: 1_000_000, tokensPerDay: 1_000_000_000, requestsPerMonth: 10_000_000, tokensPerMonth: 10_000_000_000, maxTokens: 4096, concurrentStreams: 100, priority: 5 };
const MODES = ['disabled', 'inline', 'hybrid', 'async'] as const;

interface Sample { ttft: number; arrivals: number[]; text: string }

/** One streaming request; per character of content, when it arrived (ms since the send). */
async function stream(url: string, key: string): Promise<Sample> {
  const started = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim', stream: true, max_tokens: TOKENS, seed: 42, messages: [{ role: 'user', content: 'Tell me a story' }] }),
  });
  if (!res.ok || !res.body) throw new Error(`status ${res.status}: ${await res.text()}`);
  const decoder = new TextDecoder();
  let buf = '';
  let text = '';
  const arrivals: number[] = [];
  for await (const chunk of res.body) {
    const at = performance.now() - started;
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = frame.split('\n').find((l) => l.startsWith('data: '))?.slice(6);
      if (!data || data === '[DONE]') continue;
      const delta = (JSON.parse(data) as { choices?: { delta?: { content?: string } }[] }).choices?.[0]?.delta?.content ?? '';
      for (let c = 0; c < delta.length; c++) arrivals.push(at);
      text += delta;
    }
  }
  return { ttft: arrivals[0] ?? NaN, arrivals, text };
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN; };
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function setUp(withHttp: string | undefined): Promise<{ app: TestSluice; keys: Record<string, string> }> {
  const tiers = Object.fromEntries(MODES.map((m) => [m, { ...TIER, inspection: m }]));
  const app = await startTestSluice({
    deliveryMode: 'direct', sim: { ttftMs: TTFT, itlMs: ITL }, defaultTier: 'disabled', tiers,
    inspection: { bufferMs: BUFFER, ...(withHttp && { endpoint: withHttp, timeoutMs: 2000 }) },
  });
  const keys: Record<string, string> = {};
  for (const m of MODES) keys[m] = await createUserKey(app.url, { id: `bench-${m}`, tier: m });
  return { app, keys };
}

async function measure(label: string, app: TestSluice, keys: Record<string, string>, modes: readonly string[]): Promise<Record<string, unknown>[]> {
  const ttft: Record<string, number[]> = {};
  const delay: Record<string, number[]> = {};
  for (const m of modes) { ttft[m] = []; delay[m] = []; }
  await stream(app.url, keys.disabled!); // warm-up
  for (let round = 0; round < ROUNDS; round++) {
    const base = await stream(app.url, keys.disabled!);
    ttft.disabled!.push(base.ttft);
    for (const m of modes) {
      if (m === 'disabled') continue;
      const s = await stream(app.url, keys[m === 'control' ? 'disabled' : m]!);
      ttft[m]!.push(s.ttft);
      const n = Math.min(s.arrivals.length, base.arrivals.length);
      const d: number[] = [];
      for (let c = 0; c < n; c++) d.push(s.arrivals[c]! - base.arrivals[c]!);
      delay[m]!.push(mean(d));
    }
    console.log(`[${label}] round ${round + 1}/${ROUNDS} done`);
  }
  const metrics = await (await fetch(`${app.url}/metrics`)).text();
  const inspectUs = (mode: string) => {
    const sum = Number(new RegExp(`sluice_inspection_duration_seconds_sum\\{mode="${mode}"\\} ([0-9.e-]+)`).exec(metrics)?.[1] ?? NaN);
    const count = Number(new RegExp(`sluice_inspection_duration_seconds_count\\{mode="${mode}"\\} ([0-9]+)`).exec(metrics)?.[1] ?? NaN);
    return count > 0 ? Math.round((sum / count) * 1e6) : null;
  };
  const base = median(ttft.disabled!);
  return modes.map((m) => ({
    setup: label, mode: m, ttft_p50_ms: +median(ttft[m]!).toFixed(1), added_ttft_ms: +(median(ttft[m]!) - base).toFixed(1),
    added_per_token_ms: m === 'disabled' ? 0 : +median(delay[m]!).toFixed(1), inspection_us: m === 'disabled' || m === 'control' ? null : inspectUs(m),
  }));
}

const rows: Record<string, unknown>[] = [];
const first = await setUp(undefined);
// 'control' is a second disabled request per round: its figures are the noise floor of the machine.
try { rows.push(...await measure('pii', first.app, first.keys, [...MODES, 'control'])); } finally { await first.app.stop(); }

const inspector = createServer((req, res) => { req.resume(); req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"findings":[]}')); });
await new Promise<void>((r) => inspector.listen(0, '127.0.0.1', r));
const endpoint = `http://127.0.0.1:${(inspector.address() as AddressInfo).port}/inspect`;
const second = await setUp(endpoint);
try { rows.push(...await measure('pii+http', second.app, second.keys, ['disabled', 'inline', 'hybrid', 'control'])); } finally {
  await second.app.stop();
  inspector.closeAllConnections();
  inspector.close();
}

console.log(`\nsim model: ttft ${TTFT} ms, ${ITL} ms/token, ${TOKENS} tokens; INSPECTION_BUFFER_MS=${BUFFER}; ${ROUNDS} rounds, modes alternating; medians`);
console.table(rows);
console.log(JSON.stringify({ bench: 'inspection', rounds: ROUNDS, tokens: TOKENS, ttftMs: TTFT, itlMs: ITL, bufferMs: BUFFER, rows }));
