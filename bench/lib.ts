// Shared plumbing for the benchmarks: spawn the shared upstream simulator, the floor proxy and
// Sluice as child processes on free loopback ports, run the shared load generator, read RSS,
// small HTTP helpers, statistics. Every process a benchmark starts is stopped by `cleanup()`.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/helpers/process.ts';
import { createDatabase, dropDatabase } from '../test/helpers/services.ts';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The shared bench tools live beside the repo (CI layout); SLUICE_SHARED_BENCH overrides. */
export const SHARED = resolve(process.env.SLUICE_SHARED_BENCH ?? join(REPO, '..', 'shared', 'bench'));
export const MASTER_KEY = 'bench-master-key-0123456789';
/** How long a Sluice may take to answer /healthz after it is spawned (a saturated machine starts PGlite slowly): SLUICE_BENCH_START_MS. */
const START_MS = Number(process.env.SLUICE_BENCH_START_MS ?? 180_000);

if (!existsSync(join(SHARED, 'load.mjs'))) {
  console.error(`shared bench tools not found in ${SHARED}; set SLUICE_SHARED_BENCH`);
  process.exit(2);
}

export const log = (...a: unknown[]): void => { console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...a); };
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Proc { name: string; child: ChildProcess; pid: number; port: number; url: string; stop(): Promise<void> }
const procs = new Set<Proc>();
const tmpDirs: string[] = [];
const cleanups: (() => Promise<void>)[] = [];

export function tmpDir(prefix: string): string { const d = mkdtempSync(join(tmpdir(), prefix)); tmpDirs.push(d); return d; }
export function onCleanup(fn: () => Promise<void>): void { cleanups.push(fn); }

function spawnNode(name: string, args: string[], env: Record<string, string>, port: number, cwd = REPO): Proc {
  const child = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  const keep = (c: Buffer) => { tail = (tail + c.toString()).slice(-4000); };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('exit', (code, sig) => { if (!stopping.has(child)) log(`${name} exited (${code ?? sig}); last output:\n${tail}`); });
  const p: Proc = {
    name, child, pid: child.pid ?? 0, port, url: `http://127.0.0.1:${port}`,
    async stop() {
      procs.delete(p);
      if (child.exitCode !== null || child.signalCode !== null) return;
      stopping.add(child);
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 8000);
      await gone;
      clearTimeout(t);
    },
  };
  procs.add(p);
  return p;
}
const stopping = new WeakSet<ChildProcess>();

async function waitHttp(url: string, p: Proc, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (p.child.exitCode !== null) throw new Error(`${p.name} exited before it was ready`);
    try { const r = await get(url); if (r.status < 500) return; } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`${p.name} not ready at ${url} after ${timeoutMs} ms`);
}

export async function startUpstream(env: Record<string, string> = {}): Promise<Proc> {
  const port = await freePort();
  const p = spawnNode('upstream', [join(SHARED, 'upstream.mjs')], { PORT: String(port), ...env }, port);
  await waitHttp(`${p.url}/v1/models`, p);
  return p;
}

export async function startFloor(upstream: Proc): Promise<Proc> {
  const port = await freePort();
  const p = spawnNode('floor', [join(SHARED, 'floor-proxy.mjs')], { PORT: String(port), UPSTREAM: upstream.url }, port);
  await waitHttp(`${p.url}/v1/models`, p);
  return p;
}

/**
 * Portkey's gateway (the peer) from PORTKEY_DIR (the @portkey-ai/gateway package directory; not a
 * dependency), on its defaults, with the headers that point a request at `upstream`; undefined, with
 * a message, when PORTKEY_DIR is not set or holds no build.
 */
export async function startPortkey(upstream: Proc): Promise<{ proc: Proc; headers: Record<string, string> } | undefined> {
  const dir = process.env.PORTKEY_DIR;
  if (!dir || !existsSync(join(dir, 'build', 'start-server.js'))) {
    log(`PORTKEY_DIR ${dir ? `(${dir}) has no build/start-server.js` : 'not set'}: the Portkey (peer) legs are skipped`);
    return undefined;
  }
  const proc = await startNodeServer('portkey', dir, 'build/start-server.js', (port) => [`--port=${port}`, '--headless'], '/');
  return { proc, headers: { authorization: 'Bearer unused', 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${upstream.url}/v1` } };
}

/**
 * One Sluice process (role all unless SLUICE_ROLE is given), embedded PGlite unless DATABASE_URL is.
 * `cwd` runs another checkout's `bin/sluice.mjs` (an earlier version, for a side-by-side baseline);
 * `nodeArgs` go before the script (`--cpu-prof`, which NODE_OPTIONS does not accept).
 */
export async function startSluice(env: Record<string, string>, name = 'sluice', cwd = REPO, nodeArgs: string[] = []): Promise<Proc> {
  const port = await freePort();
  const dir = tmpDir('sluice-bench-');
  const p = spawnNode(name, [...nodeArgs, 'bin/sluice.mjs', 'start'], {
    // Every bench client connects from 127.0.0.1 (up to ~2,000 listeners): no per-address cap.
    PORT: String(port), HOST: '127.0.0.1', SLUICE_MASTER_KEY: MASTER_KEY, LOG_LEVEL: 'warn', SLUICE_MAX_CONNECTIONS_PER_IP: '0',
    SLUICE_DATA_DIR: dir, DATABASE_URL: `pglite://${dir}/db`, ...env,
  }, port, cwd);
  if (env.SLUICE_ROLE === 'worker' || env.SLUICE_ROLE === 'ledger') await waitOutput(p, /started/, START_MS);
  else await waitHttp(`${p.url}/healthz`, p, START_MS);
  return p;
}

/** Any Node server started as `node <script> <args>` in `cwd`, ready when `readyPath` answers below 500. */
export async function startNodeServer(name: string, cwd: string, script: string, args: (port: number) => string[], readyPath: string, env: Record<string, string> = {}): Promise<Proc> {
  const port = await freePort();
  const p = spawnNode(name, [script, ...args(port)], env, port, cwd);
  await waitHttp(`${p.url}${readyPath}`, p, 60_000);
  return p;
}

async function waitOutput(p: Proc, re: RegExp, timeoutMs: number): Promise<void> {
  let seen = '';
  await new Promise<void>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`${p.name} did not print ${re} within ${timeoutMs} ms: ${seen.slice(-500)}`)), timeoutMs);
    const on = (c: Buffer) => { seen += c.toString(); if (re.test(seen)) { clearTimeout(t); p.child.stdout?.off('data', on); res(); } };
    p.child.stdout?.on('data', on);
    p.child.once('exit', () => { clearTimeout(t); rej(new Error(`${p.name} exited: ${seen.slice(-500)}`)); });
  });
}

/** A memory field of /proc/PID/status in MiB: VmRSS (resident now), VmHWM (peak resident so far). */
export function procStatusMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

export const rssMiB = (pid: number): number => procStatusMiB(pid, 'VmRSS');

export interface LoadResult { ok: number; errors: number; first_error?: string; rps: number; ttfb_p50: number; ttfb_p99: number; total_p50: number; total_p99: number; sse_events: number }

/** Runs the shared load generator (a separate process, so it does not share our event loop). */
export async function runLoad(url: string, concurrency: number, requests: number, headers: Record<string, string> = {}, env: Record<string, string> = {}): Promise<LoadResult> {
  const args = [join(SHARED, 'load.mjs'), url, String(concurrency), String(requests), ...Object.entries(headers).map(([k, v]) => `${k}=${v}`)];
  const child = spawn(process.execPath, args, { env: { ...process.env, MODEL: 'sim', ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
  const killer = setTimeout(() => child.kill('SIGKILL'), 180_000);
  await new Promise<void>((r) => child.once('exit', () => r()));
  clearTimeout(killer);
  const line = out.trim().split('\n').pop() ?? '';
  try { return JSON.parse(line) as LoadResult; } catch { throw new Error(`load.mjs printed no result: ${out.slice(0, 500)}`); }
}

export interface HttpResult { status: number; body: string; headers: http.IncomingHttpHeaders }
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

export function request(method: string, url: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  return new Promise((res, rej) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(url, { method, agent, headers: { ...(data && { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(data)) }), ...headers } }, (r) => {
      let b = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => { b += c; });
      r.on('end', () => res({ status: r.statusCode ?? 0, body: b, headers: r.headers }));
      r.on('error', rej);
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`timeout ${method} ${url}`)));
    req.on('error', rej);
    req.end(data);
  });
}
export const get = (url: string, headers: Record<string, string> = {}): Promise<HttpResult> => request('GET', url, undefined, headers);
export const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

/** A user on the enterprise tier with a quota override far above anything a benchmark spends. */
export async function createUserKey(sluice: Proc, userId = 'bench'): Promise<string> {
  const admin = bearer(MASTER_KEY);
  const u = await request('POST', `${sluice.url}/admin/users`, { id: userId, tier: 'enterprise' }, admin);
  if (u.status !== 201) throw new Error(`create user: ${u.status} ${u.body}`);
  const big = 1_000_000_000;
  const q = await request('PUT', `${sluice.url}/admin/quotas/${userId}`, {
    requests_per_day: big, tokens_per_day: big, requests_per_month: big, tokens_per_month: big, concurrent_streams: 10_000,
  }, admin);
  if (q.status !== 200) throw new Error(`quota override: ${q.status} ${q.body}`);
  const k = await request('POST', `${sluice.url}/admin/keys`, { user_id: userId }, admin);
  if (k.status !== 201) throw new Error(`create key: ${k.status} ${k.body}`);
  return (JSON.parse(k.body) as { key: string }).key;
}

export function pct(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const a = [...values].sort((x, y) => x - y);
  return a[Math.min(a.length - 1, Math.floor(q * a.length))]!;
}
export const median = (v: number[]): number => pct(v, 0.5);
export const r2 = (n: number): number => Math.round(n * 100) / 100;

/** A fresh PostgreSQL database; dropped at cleanup. */
export async function freshPostgres(name: string): Promise<string> {
  await dropDatabase(name); // left by an interrupted run
  const url = await createDatabase(name);
  onCleanup(() => dropDatabase(name).catch((e: Error) => log(`drop ${name}: ${e.message}`)));
  return url;
}

export async function cleanup(): Promise<void> {
  await Promise.allSettled([...procs].map((p) => p.stop()));
  for (const fn of cleanups.reverse()) await fn().catch((e: Error) => log(`cleanup: ${e.message}`));
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
}

/** Runs a benchmark with a hard time bound; always cleans up and exits. */
export function main(name: string, maxMs: number, fn: () => Promise<void>): void {
  const t = setTimeout(() => { log(`${name}: time bound of ${maxMs / 1000}s reached; stopping`); void cleanup().finally(() => process.exit(3)); }, maxMs);
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => { void cleanup().finally(() => process.exit(130)); });
  fn().then(async () => { clearTimeout(t); await cleanup(); process.exit(typeof process.exitCode === "number" ? process.exitCode : 0); }, async (err: unknown) => {
    clearTimeout(t);
    console.error(err);
    await cleanup();
    process.exit(1);
  });
}

export function table(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return '';
  const cols = Object.keys(rows[0]!);
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  const line = (vals: string[]) => `| ${vals.map((v, i) => v.padEnd(w[i]!)).join(' | ')} |`;
  return [line(cols), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.map((r) => line(cols.map((c) => String(r[c] ?? ''))))].join('\n');
}

/** A tiny keep-alive POST client: one request, resolves with status and latency (ms). */
export function makePoster(url: string, headers: Record<string, string>, maxSockets: number): { post(body: string): Promise<{ status: number; ms: number; body: string }>; close(): void } {
  const u = new URL(url);
  const a = new http.Agent({ keepAlive: true, maxSockets });
  return {
    post(body: string) {
      const t0 = performance.now();
      return new Promise((res) => {
        const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent: a,
          headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers } }, (r) => {
          let b = '';
          r.setEncoding('utf8');
          r.on('data', (c: string) => { b += c; });
          r.on('end', () => res({ status: r.statusCode ?? 0, ms: performance.now() - t0, body: b }));
          r.on('error', () => res({ status: 0, ms: performance.now() - t0, body: '' }));
        });
        req.on('error', (e) => res({ status: 0, ms: performance.now() - t0, body: e.message }));
        req.end(body);
      });
    },
    close() { a.destroy(); },
  };
}

/** The sum of a Prometheus counter (all label sets) from /metrics. */
export async function metricSum(p: Proc, name: string): Promise<number> {
  const r = await get(`${p.url}/metrics`);
  let s = 0;
  for (const line of r.body.split('\n')) if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) s += Number(line.slice(line.lastIndexOf(' ') + 1));
  return s;
}

export interface ListenerResult { status: number; connected: boolean; tokens: number; seqs: Set<number>; completed: boolean; completionTokens: number | null; error: string; lagMs: number[] }

/**
 * One native-SSE listener on GET /v1/requests/{id}/events over its own socket. Counts token
 * events and distinct sequences, and, when `lag` is set, records receive time minus the event's
 * `timestamp` (stamped at append by whoever ran the model; same machine clock).
 */
export function listen(base: string, id: string, key: string, opts: { lag?: boolean; onConnected?: () => void; signal?: AbortSignal } = {}): Promise<ListenerResult> {
  const res: ListenerResult = { status: 0, connected: false, tokens: 0, seqs: new Set(), completed: false, completionTokens: null, error: '', lagMs: [] };
  return new Promise((resolve) => {
    const req = http.get(`${base}/v1/requests/${id}/events`, { agent: false, headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream' } }, (r) => {
      res.status = r.statusCode ?? 0;
      r.setEncoding('utf8');
      let buf = '';
      r.on('data', (chunk: string) => {
        const now = Date.now();
        buf += chunk;
        let i: number;
        // An answer that is not a stream (an error): its body, for the report.
        if (res.status !== 200) { res.error = buf.slice(0, 200); return; }
        while ((i = buf.indexOf('\n\n')) !== -1) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = 'message', data = '';
          for (const line of frame.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (event === 'connected') { res.connected = true; opts.onConnected?.(); }
          else if (event === 'token') {
            res.tokens++;
            const d = JSON.parse(data) as { sequence: number; timestamp: number };
            res.seqs.add(d.sequence);
            if (opts.lag) res.lagMs.push(now - d.timestamp);
          } else if (event === 'completed') {
            res.completed = true;
            res.completionTokens = (JSON.parse(data) as { usage: { completion_tokens: number } }).usage.completion_tokens;
          } else if (event === 'error') res.error = data.slice(0, 200);
        }
      });
      r.on('end', () => resolve(res));
      r.on('error', (e) => { res.error ||= e.message; resolve(res); });
    });
    opts.signal?.addEventListener('abort', () => req.destroy(new Error('aborted')), { once: true });
    req.on('error', (e) => { res.error ||= e.message; resolve(res); });
  });
}

/** Submits an async request; returns its id. */
export async function submit(sluice: Proc, key: string, maxTokens: number): Promise<string> {
  const r = await request('POST', `${sluice.url}/v1/requests`, { model: 'sim', max_tokens: maxTokens, messages: [{ role: 'user', content: 'hello there' }] }, bearer(key));
  if (r.status !== 202) throw new Error(`POST /v1/requests: ${r.status} ${r.body}`);
  return (JSON.parse(r.body) as { request_id: string }).request_id;
}

/** Closed loop of POSTs: `concurrency` callers back to back for `seconds`; accepted = 202 answers. */
export async function closedLoopPost(url: string, key: string, body: string, concurrency: number, seconds: number): Promise<{ accepted: number; rps: number; p50: number; p99: number; errors: number; firstError: string }> {
  const poster = makePoster(url, bearer(key), concurrency);
  const lat: number[] = [];
  let errors = 0, firstError = '';
  const t0 = performance.now(), end = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      const r = await poster.post(body);
      if (r.status === 202) lat.push(r.ms); else { errors++; firstError ||= `${r.status} ${r.body.slice(0, 200)}`; }
    }
  }));
  const el = (performance.now() - t0) / 1000;
  poster.close();
  return { accepted: lat.length, rps: lat.length / el, p50: pct(lat, 0.5), p99: pct(lat, 0.99), errors, firstError };
}

/**
 * Streaming chat completions at fixed concurrency; time to first token = until the first `data:`
 * frame (Sluice writes its `retry:` preamble and headers before any token, so first byte is not it).
 */
/**
 * `rampMs` spreads the callers' first requests over that long (a thousand connects in the same
 * millisecond overflow a listen backlog of 511 and measure SYN retransmits, not the gateway);
 * `timeoutMs` > 0 ends a stream still open after that long as an error.
 */
export async function streamTtft(url: string, headers: Record<string, string>, concurrency: number, requests: number, maxTokens: number, requestBody?: string, rampMs = 0, timeoutMs = 0): Promise<{ ok: number; errors: number; firstError: string; rps: number; ttft: number[]; ttfb: number[] }> {
  const u = new URL(url);
  const a = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const body = requestBody ?? JSON.stringify({ model: 'sim', stream: true, max_tokens: maxTokens, messages: [{ role: 'user', content: 'hello there' }] });
  const ttft: number[] = [], ttfb: number[] = [];
  let ok = 0, errors = 0, firstError = '', next = 0;
  const one = () => new Promise<void>((resolve) => {
    const t0 = performance.now();
    let first = 0, tok = 0;
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent: a,
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers } }, (r) => {
      r.setEncoding('utf8');
      r.on('data', (c: string) => {
        const now = performance.now();
        if (!first) { first = now; ttfb.push(now - t0); }
        if (!tok && c.includes('data:')) { tok = now; ttft.push(now - t0); }
      });
      r.on('end', () => { if ((r.statusCode ?? 0) < 300 && tok) ok++; else { errors++; firstError ||= `HTTP ${r.statusCode}`; } resolve(); });
      r.on('error', (e) => { errors++; firstError ||= e.message; resolve(); });
    });
    req.on('error', (e) => { errors++; firstError ||= e.message; resolve(); });
    // A stream that has not ended after timeoutMs counts as an error (its socket is destroyed).
    if (timeoutMs > 0) { const t = setTimeout(() => req.destroy(new Error(`no end after ${timeoutMs} ms`)), timeoutMs); req.on('close', () => clearTimeout(t)); }
    req.end(body);
  });
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async (_, i) => {
    if (rampMs > 0) await sleep((i * rampMs) / concurrency);
    while (next++ < requests) await one();
  }));
  a.destroy();
  return { ok, errors, firstError, rps: ok / ((performance.now() - t0) / 1000), ttft, ttfb };
}

/** What an agent framework sends: a system prompt, a little history, tools, sampling fields. */
export function realisticChatBody(stream: boolean, maxTokens: number): string {
  return JSON.stringify({
    model: 'sim',
    messages: [
      { role: 'system', content: 'You are a careful travel assistant for a European rail company. Answer in the language of the question, '
        + 'in at most three short paragraphs. When the traveller asks about timetables, prices or the weather, call the matching tool '
        + 'instead of guessing, and say which data you used. Never invent a connection; if none exists, say so and offer the nearest '
        + 'alternative. Prices are in euros, times in the local time of the departure station. Keep a friendly, plain tone.' },
      { role: 'user', content: 'Hello! I am going from Lyon to Milan next Thursday with my two children (8 and 11). Is there a direct train?' },
      { role: 'assistant', content: 'Yes: there is a direct TGV from Lyon Part-Dieu to Milano Porta Garibaldi in the morning, about five '
        + 'hours. Children under 12 travel at a reduced fare. Would you like me to check the exact times and prices for Thursday?' },
      { role: 'user', content: 'Yes please, the earliest one, and tell me what the weather will be in Milan when we arrive.' },
    ],
    tools: [
      { type: 'function', function: { name: 'search_trains', description: 'Timetable and fares between two stations on a date',
        parameters: { type: 'object', properties: { from: { type: 'string' }, to: { type: 'string' }, date: { type: 'string', description: 'YYYY-MM-DD' },
          passengers: { type: 'array', items: { type: 'object', properties: { age: { type: 'integer' } }, required: ['age'] } } }, required: ['from', 'to', 'date'] } } },
      { type: 'function', function: { name: 'get_weather', description: 'Forecast for a city at a time',
        parameters: { type: 'object', properties: { city: { type: 'string' }, at: { type: 'string', description: 'ISO 8601 time' } }, required: ['city'] } } },
    ],
    temperature: 0.7,
    top_p: 0.95,
    max_tokens: maxTokens,
    user: 'traveller-48213',
    stream,
    ...(stream && { stream_options: { include_usage: true } }),
  });
}

/** User + system CPU of a process (all its threads), in ms, from /proc/PID/stat (USER_HZ 100). */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10; // fields 14 and 15 of stat(5)
}

export interface ChatLoopResult { ok: number; errors: number; firstError: string; rps: number; p50: number; p99: number }

/**
 * A closed loop of `requests` chat POSTs at `concurrency` over keep-alive connections; a request
 * counts when it is a 200 whose body is whole: a stream ending in `[DONE]`, or a completion with content.
 */
export async function chatLoop(url: string, headers: Record<string, string>, body: string, requests: number, concurrency: number): Promise<ChatLoopResult> {
  const poster = makePoster(url, headers, concurrency);
  const stream = body.includes('"stream":true');
  const lat: number[] = [];
  let errors = 0, firstError = '', next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < requests) {
      const r = await poster.post(body);
      const whole = r.status === 200 && (stream ? r.body.includes('data: [DONE]') : r.body.includes('"content":"tok'));
      if (whole) lat.push(r.ms);
      else { errors++; firstError ||= `${r.status} ${r.body.slice(0, 200)}`; }
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  poster.close();
  return { ok: lat.length, errors, firstError, rps: r2(lat.length / seconds), p50: r2(pct(lat, 0.5)), p99: r2(pct(lat, 0.99)) };
}
