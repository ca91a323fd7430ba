// The fuzz properties over every JSON route and every WebSocket message type, shared by the test
// (test/security/fuzz.test.ts: a bounded number of cases, shrunk to a minimal counterexample) and
// the bench (bench/fuzz.ts: 100,000 cases, every distinct failure counted). Each property is an
// arbitrary input plus a check that throws a Violation; the gateway runs in a child process, so a
// crash is observed (and the gateway restarted) instead of taking the runner down.
//
// What every case asserts: no 5xx; every non-2xx body is the catalogue's {error:{code,message,type,
// param}} with a known code whose status and type match; SSE responses are well-formed frames;
// WebSocket replies are JSON and errors carry catalogue codes; the process is alive afterwards.
import http from 'node:http';
import fc from 'fast-check';
import WebSocket from 'ws';
import { catalogue } from '../../src/core/errors.ts';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.ts';

export const DEFAULT_FUZZ_SEED = 20261203;

/** A broken promise: the route, what went wrong, and a signature that groups equal failures. */
export class Violation extends Error {
  override readonly name = 'Violation';
  constructor(readonly signature: string, detail: string) { super(`${signature}\n${detail}`); }
}

/** Responses by property and outcome (`200`, `404 SLUICE_ERR_REQUEST_NOT_FOUND`, `ws error SLUICE_ERR_VALIDATION`). */
export class Tally {
  readonly counts = new Map<string, number>();
  add(outcome: string): void { this.counts.set(outcome, (this.counts.get(outcome) ?? 0) + 1); }
  get total(): number { let n = 0; for (const c of this.counts.values()) n += c; return n; }
  table(): string {
    const rows = [...this.counts.entries()].sort((a, b) => a[0].localeCompare(b[0]));
    const width = Math.max(8, ...rows.map(([k]) => k.length));
    return [`${'outcome'.padEnd(width)}  count`, ...rows.map(([k, n]) => `${k.padEnd(width)}  ${String(n).padStart(5)}`)].join('\n');
  }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test and its fixtures (a user with a key, a completed request).

export interface Fixtures { userId: string; userKey: string; requestId: string }

/** The gateway, restarted with fresh fixtures when a case killed it. */
export class FuzzTarget {
  gateway!: GatewayProcess;
  fixtures!: Fixtures;
  restarts = 0;
  private serial = 0;
  /** A start in progress: stop() waits for it, so no gateway outlives the run. */
  private starting: Promise<void> | null = null;
  constructor(private readonly env: Record<string, string> = {}) {}

  get url(): string { return this.gateway.url; }
  get masterKey(): string { return this.gateway.masterKey; }
  /** A fresh name for a user a case creates. */
  nextId(prefix: string): string { return `${prefix}${process.pid}_${++this.serial}`; }

  start(): Promise<void> {
    this.starting ??= (async () => {
      try {
        this.gateway = await startGatewayProcess({ env: { WORKER_CONCURRENCY: '8', LOG_LEVEL: 'error', ...this.env } });
        this.fixtures = await makeFixtures(this);
      } finally { this.starting = null; }
    })();
    return this.starting;
  }

  /** Restarts the gateway if the previous case took it down. */
  async ensure(): Promise<void> {
    if (this.starting) return this.starting;
    if (this.gateway.alive()) return;
    await this.gateway.stop();
    this.restarts++;
    await this.start();
  }

  async stop(): Promise<void> {
    await this.starting?.catch(() => {});
    await this.gateway?.stop();
  }

  /** Whether the gateway is alive and /healthz answers 200 (within a generous bound). */
  async healthy(timeoutMs = 10_000): Promise<boolean> {
    if (!this.gateway.alive()) return false;
    try { return (await send(this, { method: 'GET', path: '/healthz' }, timeoutMs)).status === 200; } catch { return false; }
  }

  /** Throws a Violation naming the case when the gateway died or stopped answering /healthz. */
  async assertAlive(route: string, input: unknown): Promise<void> {
    if (await this.healthy()) return;
    // An unhandled rejection takes a moment to end the process: wait for the exit to tell a crash from a stall.
    for (let i = 0; i < 20 && this.gateway.alive(); i++) await sleep(50);
    const how = this.gateway.exitReason();
    const tail = this.gateway.output().trim().split('\n').slice(-8).join('\n');
    throw new Violation(how ? `${route}: gateway process exited` : `${route}: /healthz does not answer`, `${how ?? 'still running'} after ${show(input)}\n${tail}`);
  }
}

async function makeFixtures(t: FuzzTarget): Promise<Fixtures> {
  const admin = (method: string, path: string, json?: unknown) => sendJson(t, method, path, json, t.masterKey);
  const userId = t.nextId('fuzz_');
  const u = await admin('POST', '/admin/users', { id: userId, tier: 'enterprise' });
  if (u.status !== 201) throw new Error(`fixture user: ${u.status} ${u.body}`);
  const k = await admin('POST', '/admin/keys', { user_id: userId });
  if (k.status !== 201) throw new Error(`fixture key: ${k.status} ${k.body}`);
  const userKey = (JSON.parse(k.body) as { key: string }).key;
  const r = await sendJson(t, 'POST', '/v1/requests', { model: 'sim', max_tokens: 8, messages: [{ role: 'user', content: 'fixture' }] }, userKey);
  if (r.status !== 202) throw new Error(`fixture request: ${r.status} ${r.body}`);
  const requestId = (JSON.parse(r.body) as { request_id: string }).request_id;
  for (let i = 0; i < 200; i++) {
    const s = await sendJson(t, 'GET', `/v1/requests/${requestId}`, undefined, userKey);
    if ((JSON.parse(s.body) as { status: string }).status === 'completed') break;
    await sleep(25);
  }
  return { userId, userKey, requestId };
}

// ---------------------------------------------------------------------------------------------
// A small HTTP client on node:http: raw bodies, any header, and SSE read only a bounded while.

interface HttpCall { method: string; path: string; headers?: Record<string, string>; body?: string | Buffer }
export interface HttpAnswer { status: number; contentType: string; body: string; truncated: boolean }

// A new connection per call: a case that makes the server close its socket must not fail the next one.
const agent = new http.Agent({ keepAlive: false, maxSockets: 16 });
/** Bytes of an SSE response read before the client hangs up (keeps streaming cases short). */
const SSE_READ_BYTES = 16 * 1024;
const SSE_READ_MS = 1500;

function send(t: FuzzTarget, call: HttpCall, timeoutMs = 30_000): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...call.headers };
    if (call.body !== undefined) headers['content-length'] = String(Buffer.byteLength(call.body));
    const req = http.request(t.url + call.path, { method: call.method, headers, agent }, (res) => {
      const contentType = String(res.headers['content-type'] ?? '');
      const sse = contentType.startsWith('text/event-stream');
      const chunks: Buffer[] = [];
      let bytes = 0;
      let done = false;
      const finish = (truncated: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(sseTimer);
        resolve({ status: res.statusCode ?? 0, contentType, body: Buffer.concat(chunks).toString('utf8'), truncated });
        if (truncated) req.destroy();
      };
      const sseTimer = sse ? setTimeout(() => finish(true), SSE_READ_MS) : undefined;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        bytes += c.length;
        if (sse && bytes >= SSE_READ_BYTES) finish(true);
      });
      res.on('end', () => finish(false));
      res.on('error', (err) => { if (!done) { done = true; clearTimeout(sseTimer); reject(err); } });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(call.body);
  });
}

function sendJson(t: FuzzTarget, method: string, path: string, json: unknown, key: string | null): Promise<HttpAnswer> {
  const headers: Record<string, string> = key ? { authorization: `Bearer ${key}` } : {};
  if (json === undefined) return send(t, { method, path, headers });
  return send(t, { method, path, headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(json) });
}

// ---------------------------------------------------------------------------------------------
// Checks shared by every case.

type CatalogueCode = keyof typeof catalogue;
const isCode = (c: unknown): c is CatalogueCode => typeof c === 'string' && Object.hasOwn(catalogue, c);

/** A short, printable rendering of an input for failure messages (long strings cut). */
export function show(v: unknown): string {
  const s = fc.stringify(v);
  return s.length > 600 ? `${s.slice(0, 600)}… (${s.length} chars)` : s;
}

/** The catalogue code of an error body, or a description of how the body is not catalogue-shaped. */
function errorShape(status: number, a: HttpAnswer): { code: CatalogueCode } | { wrong: string } {
  if (!a.contentType.startsWith('application/json')) return { wrong: `content-type "${a.contentType}"` };
  let j: unknown;
  try { j = JSON.parse(a.body); } catch { return { wrong: 'body is not JSON' }; }
  const e = (j as { error?: Record<string, unknown> } | null)?.error;
  if (typeof e !== 'object' || e === null) return { wrong: 'no error object' };
  if (!isCode(e.code)) return { wrong: `code ${JSON.stringify(e.code)} not in the catalogue` };
  if (typeof e.message !== 'string') return { wrong: 'message is not a string' };
  if (e.type !== catalogue[e.code].type) return { wrong: `type ${JSON.stringify(e.type)} is not ${catalogue[e.code].type}` };
  if (!(e.param === null || typeof e.param === 'string')) return { wrong: 'param is neither null nor a string' };
  if (catalogue[e.code].status !== status) return { wrong: `status ${status} is not the catalogue's ${catalogue[e.code].status} for ${e.code}` };
  return { code: e.code };
}

/** Every complete SSE frame is made of id/event/data/retry lines or comments; data is JSON or [DONE]. */
function sseProblem(body: string, truncated: boolean): string | null {
  const frames = body.split('\n\n');
  if (truncated || !body.endsWith('\n\n')) frames.pop(); // the frame being written when we hung up
  for (const frame of frames) {
    if (frame === '') continue;
    for (const line of frame.split('\n')) {
      const m = /^(id|event|data|retry): (.*)$/.exec(line);
      if (!m) { if (line.startsWith(':')) continue; return `bad SSE line ${JSON.stringify(line.slice(0, 80))}`; }
      if (m[1] === 'data' && m[2] !== '[DONE]') { try { JSON.parse(m[2]!); } catch { return `SSE data is not JSON: ${m[2]!.slice(0, 80)}`; } }
      if ((m[1] === 'id' || m[1] === 'retry') && !/^\d+$/.test(m[2]!)) return `SSE ${m[1]} is not a number: ${m[2]!.slice(0, 40)}`;
    }
  }
  return null;
}

/** Asserts one HTTP answer; counts it in the tally under the property's name. */
function judge(ctx: FuzzContext, route: string, a: HttpAnswer, input: unknown): void {
  const shape = a.status >= 300 ? errorShape(a.status, a) : null;
  ctx.tally.add(`${route} ${a.status}${shape && 'code' in shape ? ` ${shape.code}` : ''}`);
  if (a.status >= 500) {
    const code = shape && 'code' in shape ? shape.code : 'not catalogue-shaped';
    throw new Violation(`${route}: ${a.status} ${code}`, `input ${show(input)}\nbody ${a.body.slice(0, 400)}`);
  }
  if (shape && 'wrong' in shape) throw new Violation(`${route}: ${a.status} not catalogue-shaped (${shape.wrong.replace(/"[^"]*"/g, '"…"')})`, `${shape.wrong}\ninput ${show(input)}\nbody ${a.body.slice(0, 400)}`);
  if (a.contentType.startsWith('text/event-stream')) {
    const p = sseProblem(a.body, a.truncated);
    if (p) throw new Violation(`${route}: malformed SSE`, `${p}\ninput ${show(input)}`);
  } else if (a.status < 300 && a.contentType.startsWith('application/json')) {
    try { JSON.parse(a.body); } catch { throw new Violation(`${route}: ${a.status} body is not JSON`, `input ${show(input)}\nbody ${a.body.slice(0, 400)}`); }
  }
}

export interface FuzzContext { target: FuzzTarget; tally: Tally }

/** Sends one call and judges its answer; a dropped connection is checked against the process's life. */
async function call(ctx: FuzzContext, route: string, c: HttpCall, input: unknown): Promise<HttpAnswer> {
  let a: HttpAnswer;
  try { a = await send(ctx.target, c); } catch (err) {
    await ctx.target.assertAlive(route, input);
    ctx.tally.add(`${route} connection error`);
    throw new Violation(`${route}: connection error (${(err as Error).message.replace(/\d+/g, 'N')})`, `input ${show(input)}`);
  }
  judge(ctx, route, a, input);
  return a;
}

// ---------------------------------------------------------------------------------------------
// Generators.

/** Strings that break naive code: NUL, lone surrogates, RTL override, prototype names, huge. */
const nastyString = fc.constantFrom('\u0000', '\ud800', '\udfff', 'a\u0000b', '\u202e', '\uffff', '\u{1d54f}', '\r\n', '"', '\\', '%00', '../..', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'prototype', '', ' ', '0', '-1', '1e15', 'NaN', 'null');
/** Strings within URL and header limits (query values, path ids, header values). */
export const shortString: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.string({ unit: 'binary', maxLength: 30 }), weight: 3 },
  { arbitrary: fc.string({ maxLength: 30 }), weight: 2 },
  { arbitrary: nastyString, weight: 3 },
  { arbitrary: fc.tuple(fc.string({ maxLength: 8 }), nastyString, fc.string({ unit: 'binary', maxLength: 8 })).map(([a, b, c]) => a + b + c), weight: 2 },
);
/** Strings for JSON bodies: also long ones (up to 40,000 characters). */
export const weirdString: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: shortString, weight: 10 },
  { arbitrary: fc.integer({ min: 200, max: 40_000 }).map((n) => 'x'.repeat(n)), weight: 1 },
);
const weirdNumber: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(0, -1, 1, 1e15, 1e300, -1e300, 2 ** 31, 2 ** 53, 2 ** 53 + 2, 0.5, 1.5, -0.5, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 4097, 16385, 1e21),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);
/**
 * A value nested `depth` arrays deep (deep bodies within the body limit). Kept as a marker until the
 * body is written: fast-check (and JSON.stringify) would overflow the stack printing the real thing.
 */
interface DeepNest { $deep: number }
const deepValue = fc.integer({ min: 50, max: 200_000 }).map((depth): DeepNest => ({ $deep: depth }));
const isDeep = (v: unknown): v is DeepNest => typeof v === 'object' && v !== null && Object.keys(v).length === 1 && typeof (v as DeepNest).$deep === 'number';
/** JSON text of a value whose deep markers become real nesting. */
export function jsonText(v: unknown): string {
  const text = JSON.stringify(v, (_k, x: unknown) => (isDeep(x) ? `\u0001deep:${x.$deep}\u0001` : x)) ?? '';
  return text.replace(/"\\u0001deep:(\d+)\\u0001"/g, (_m, d: string) => '['.repeat(Number(d)) + ']'.repeat(Number(d)));
}
export const weirdValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: weirdString, weight: 4 },
  { arbitrary: weirdNumber, weight: 4 },
  { arbitrary: fc.constantFrom(null, true, false, [], {}, [null], { '': null }), weight: 2 },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 3 },
  { arbitrary: deepValue, weight: 1 },
);
/** Field names beyond the schema's: prototype keys and strangers. */
const strangeKey = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', '', 'sluice_mode', 'n', 'tools', 'response_format'), fc.string({ maxLength: 12 }));

type Path = readonly (string | number)[];
type Mutation = { op: 'drop'; path: Path } | { op: 'set'; path: Path; value: unknown };

/** Up to three drops or replacements of fields of a valid body (known paths or strange keys). */
function mutations(paths: readonly Path[]): fc.Arbitrary<Mutation[]> {
  const path = fc.oneof({ arbitrary: fc.constantFrom(...paths), weight: 4 }, { arbitrary: strangeKey.map((k) => [k] as Path), weight: 1 });
  const m: fc.Arbitrary<Mutation> = fc.oneof(
    { arbitrary: path.map((p) => ({ op: 'drop' as const, path: p })), weight: 1 },
    { arbitrary: fc.tuple(path, weirdValue).map(([p, value]) => ({ op: 'set' as const, path: p, value })), weight: 4 },
  );
  return fc.array(m, { minLength: 1, maxLength: 3 });
}

/** Applies mutations to a copy; own properties are defined (so `__proto__` becomes a real key). */
function applyMutations(base: unknown, ms: readonly Mutation[]): unknown {
  const root = structuredClone(base) as Record<string, unknown>;
  for (const m of ms) {
    let node: unknown = root;
    for (const k of m.path.slice(0, -1)) node = typeof node === 'object' && node !== null ? (node as Record<string | number, unknown>)[k] : undefined;
    if (typeof node !== 'object' || node === null) continue;
    const last = m.path[m.path.length - 1]!;
    if (m.op === 'drop') delete (node as Record<string | number, unknown>)[last];
    // A copy: constants such as [] are shared between cases, and a later mutation of this case
    // could write into one (even make it contain itself).
    else Object.defineProperty(node, last, { value: structuredClone(m.value), enumerable: true, writable: true, configurable: true });
  }
  return root;
}

/** A request body: mostly a valid one mutated, sometimes any JSON, raw garbage or deep nesting. */
export type BodyCase = { kind: 'json'; value: unknown } | { kind: 'raw'; text: string };
function bodies(base: unknown, paths: readonly Path[]): fc.Arbitrary<BodyCase> {
  return fc.oneof(
    { arbitrary: mutations(paths).map((ms) => ({ kind: 'json' as const, value: applyMutations(base, ms) })), weight: 8 },
    { arbitrary: fc.jsonValue({ maxDepth: 4 }).map((value) => ({ kind: 'json' as const, value })), weight: 2 },
    { arbitrary: fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), fc.constantFrom('', '{', '{"a":', 'null', '[]', '{"__proto__":{"admin":true}}', '\u0000')).map((text) => ({ kind: 'raw' as const, text })), weight: 1 },
    { arbitrary: deepValue.map((value) => ({ kind: 'json' as const, value })), weight: 1 },
  );
}
const bodyText = (b: BodyCase): string => (b.kind === 'raw' ? b.text : jsonText(b.value));

/** Who calls: mostly the master key or a user key; sometimes none or a wrong one. */
export type Caller = 'master' | 'user' | 'none' | 'wrong';
const caller: fc.Arbitrary<Caller> = fc.constantFrom<Caller>('master', 'master', 'user', 'user', 'none', 'wrong');
function authHeader(t: FuzzTarget, who: Caller): Record<string, string> {
  switch (who) {
    case 'master': return { authorization: `Bearer ${t.masterKey}` };
    case 'user': return { authorization: `Bearer ${t.fixtures.userKey}` };
    case 'wrong': return { authorization: 'Bearer sk-not-a-key-0000000000000000' };
    case 'none': return {};
  }
}

/** Header values a client may send (visible ASCII). */
const headerValue = fc.oneof(
  { arbitrary: fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 30 }), weight: 6 },
  { arbitrary: fc.constantFrom('0', '-1', '1e3', '99999999999999999999', '3 ', ' 7', '0x10', ''), weight: 3 },
);
/** Header values up to past Node's 16 KiB header limit. */
const longHeaderValue = fc.oneof({ arbitrary: headerValue, weight: 2 }, { arbitrary: fc.integer({ min: 1000, max: 40_000 }).map((n) => 'a'.repeat(n)), weight: 1 });

/** An id for a path segment: the fixture's, or anything (long ones included), percent-encoded. */
type IdCase = { known: true } | { known: false; id: string };
const idCase: fc.Arbitrary<IdCase> = fc.oneof(
  { arbitrary: fc.constant({ known: true as const }), weight: 1 },
  { arbitrary: fc.oneof(shortString, fc.uuid()).map((id) => ({ known: false as const, id })), weight: 3 },
);
const segment = (c: IdCase, known: string) => encodeSegment(c.known ? known : c.id);

/**
 * Percent-encodes a path segment; a lone surrogate (which encodeURIComponent refuses) becomes the
 * bytes of its WTF-8 form, i.e. invalid UTF-8 for the server to cope with.
 */
export function encodeSegment(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c >= 0xd800 && c <= 0xdfff) out += `%${(0xe0 | (c >> 12)).toString(16)}%${(0x80 | ((c >> 6) & 0x3f)).toString(16)}%${(0x80 | (c & 0x3f)).toString(16)}`.toUpperCase();
    else out += encodeURIComponent(ch);
  }
  return out;
}

/** A query string of arbitrary names and values (percent-encoded). */
function query(names: readonly string[]): fc.Arbitrary<string> {
  const value = fc.oneof(shortString, fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), weirdNumber.map(String), fc.constantFrom('275760-09-13T00:00:00.000Z', '+275760-09-13', '9999-12-31', '0000-01-01', '-000001-01-01T00:00:00Z', '2026-02-30', '1e15'));
  const name = fc.oneof({ arbitrary: fc.constantFrom(...names), weight: 4 }, { arbitrary: fc.string({ maxLength: 8 }), weight: 1 });
  return fc.array(fc.tuple(name, value), { maxLength: 4 }).map((pairs) => (pairs.length ? `?${new URLSearchParams(pairs).toString()}` : ''));
}

// ---------------------------------------------------------------------------------------------
// The properties.

export interface FuzzProperty { name: string; arbitrary: fc.Arbitrary<unknown>; check(ctx: FuzzContext, input: unknown): Promise<void> }

function define<T>(name: string, arbitrary: fc.Arbitrary<T>, check: (ctx: FuzzContext, input: T) => Promise<void>): FuzzProperty {
  return {
    name, arbitrary,
    check: async (ctx, input) => {
      await ctx.target.ensure();
      await check(ctx, input as T);
      if (!ctx.target.gateway.alive()) await ctx.target.assertAlive(name, input);
    },
  };
}

const chatBase = { model: 'sim', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 };
const chatPaths: Path[] = [['model'], ['messages'], ['messages', 0], ['messages', 0, 'role'], ['messages', 0, 'content'], ['messages', 0, 'name'], ['max_tokens'], ['max_completion_tokens'], ['temperature'], ['top_p'], ['stop'], ['seed'], ['stream_options'], ['stream_options', 'include_usage'], ['user'], ['sluice_mode'], ['n'], ['tools']];
const completionBase = { model: 'sim', prompt: 'hi', max_tokens: 4 };
const completionPaths: Path[] = [['model'], ['prompt'], ['prompt', 0], ['max_tokens'], ['temperature'], ['stop'], ['seed'], ['stream'], ['sluice_mode']];

/** Optional request headers of the chat routes. */
const chatHeaders = fc.record({ 'idempotency-key': headerValue, 'x-sluice-mode': fc.oneof(fc.constantFrom('direct', 'queued'), headerValue) }, { requiredKeys: [] });

function chatProperty(name: string, path: string, base: Record<string, unknown>, paths: Path[], stream: boolean | undefined): FuzzProperty {
  const streamBase = stream === undefined ? base : { ...base, stream, ...(stream && { stream_options: { include_usage: true } }) };
  return define(name, fc.record({ who: caller, body: bodies(streamBase, paths), headers: chatHeaders }), async (ctx, c) => {
    const headers = { ...authHeader(ctx.target, c.who), ...c.headers, 'content-type': 'application/json' };
    await call(ctx, name, { method: 'POST', path, headers, body: bodyText(c.body) }, c);
  });
}

const chatCompletions = chatProperty('POST /v1/chat/completions', '/v1/chat/completions', chatBase, chatPaths, false);
const chatCompletionsStream = chatProperty('POST /v1/chat/completions stream', '/v1/chat/completions', chatBase, chatPaths, true);
/** The whole chat surface: tools, tool calls in messages, content parts, response_format, logprobs, n. */
const surfaceBase = {
  model: 'sim', max_tokens: 4, n: 2, logprobs: true, top_logprobs: 2, logit_bias: { 11: 1 }, frequency_penalty: 0.5, parallel_tool_calls: true,
  tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }],
  tool_choice: { type: 'function', function: { name: 'get_weather' } },
  response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object' } } },
  messages: [
    { role: 'user', content: [{ type: 'text', text: 'hi' }, { type: 'image_url', image_url: { url: 'https://example.com/a.png', detail: 'low' } }, { type: 'input_audio', input_audio: { data: 'UklGRg==', format: 'wav' } }] },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: '21C' },
  ],
};
const surfacePaths: Path[] = [['tools'], ['tools', 0], ['tools', 0, 'type'], ['tools', 0, 'function', 'name'], ['tools', 0, 'function', 'parameters'], ['tool_choice'], ['tool_choice', 'function', 'name'],
  ['parallel_tool_calls'], ['response_format'], ['response_format', 'type'], ['response_format', 'json_schema', 'schema'], ['logprobs'], ['top_logprobs'], ['logit_bias'], ['logit_bias', '11'], ['n'],
  ['frequency_penalty'], ['functions'], ['function_call'], ['messages', 0, 'content', 1, 'image_url', 'url'], ['messages', 0, 'content', 2, 'input_audio'], ['messages', 0, 'content', 0, 'type'],
  ['messages', 1, 'content'], ['messages', 1, 'tool_calls', 0, 'function', 'arguments'], ['messages', 1, 'tool_calls', 0, 'id'], ['messages', 2, 'tool_call_id'], ['messages', 2, 'role'], ['top_k']];
const chatSurface = chatProperty('POST /v1/chat/completions (tools, parts, n, logprobs)', '/v1/chat/completions', surfaceBase, surfacePaths, undefined);
const completions = chatProperty('POST /v1/completions', '/v1/completions', completionBase, completionPaths, undefined);
const asyncRequests = chatProperty('POST /v1/requests', '/v1/requests', chatBase, chatPaths, undefined);
const quickChat = chatProperty('POST /chat', '/chat', { message: 'hi', max_tokens: 4 }, [['message'], ['model'], ['max_tokens']], undefined);

const requestStatus = define('GET /v1/requests/:id', fc.record({ who: caller, id: idCase }), async (ctx, c) => {
  await call(ctx, 'GET /v1/requests/:id', { method: 'GET', path: `/v1/requests/${segment(c.id, ctx.target.fixtures.requestId)}`, headers: authHeader(ctx.target, c.who) }, c);
});

const requestEvents = define('GET /v1/requests/:id/events', fc.record({
  who: caller, id: idCase, lastEventId: fc.option(headerValue), query: query(['format', 'last_event_id', 'include_usage']),
  format: fc.option(fc.oneof(fc.constantFrom('native', 'openai'), shortString)),
}), async (ctx, c) => {
  const headers = { ...authHeader(ctx.target, c.who), ...(c.lastEventId !== null && { 'last-event-id': c.lastEventId }) };
  const format = c.format === null ? '' : `${c.query ? '&' : '?'}format=${encodeSegment(c.format)}`;
  await call(ctx, 'GET /v1/requests/:id/events', { method: 'GET', path: `/v1/requests/${segment(c.id, ctx.target.fixtures.requestId)}/events${c.query}${format}`, headers }, c);
});

const requestCancel = define('DELETE /v1/requests/:id', fc.record({ who: caller, id: idCase }), async (ctx, c) => {
  await call(ctx, 'DELETE /v1/requests/:id', { method: 'DELETE', path: `/v1/requests/${segment(c.id, ctx.target.fixtures.requestId)}`, headers: authHeader(ctx.target, c.who) }, c);
});

const usageAndModels = define('GET /v1/usage, /v1/models, /v1/models/:model', fc.record({
  who: caller, route: fc.constantFrom('usage', 'models', 'model'), model: fc.oneof(fc.constant('sim'), shortString), query: query(['model', 'user_id']),
}), async (ctx, c) => {
  const path = c.route === 'usage' ? '/v1/usage' : c.route === 'models' ? '/v1/models' : `/v1/models/${encodeSegment(c.model)}`;
  await call(ctx, `GET /v1/${c.route === 'model' ? 'models/:model' : c.route}`, { method: 'GET', path: path + c.query, headers: authHeader(ctx.target, c.who) }, c);
});

const admin = (t: FuzzTarget) => ({ authorization: `Bearer ${t.masterKey}`, 'content-type': 'application/json' });

/** Creates a user from a fuzzed body; when created, reads it back, patches it and reads its usage. */
const adminUsers = define('admin users', fc.record({
  fresh: fc.boolean(), body: bodies({ id: 'u', name: 'n', email: 'e@x', tier: 'pro' }, [['id'], ['name'], ['email'], ['tier']]),
  patch: bodies({ name: 'n', tier: 'free', active: true }, [['name'], ['email'], ['tier'], ['active']]), listQuery: query(['user_id', 'limit']),
}), async (ctx, c) => {
  const t = ctx.target;
  // A fresh id keeps the create from being a conflict with an earlier case, unless the body's id is fuzzed.
  const body = c.fresh && c.body.kind === 'json' && typeof c.body.value === 'object' && c.body.value !== null && (c.body.value as { id?: unknown }).id === 'u'
    ? { kind: 'json' as const, value: { ...c.body.value, id: t.nextId('u_') } } : c.body;
  const created = await call(ctx, 'POST /admin/users', { method: 'POST', path: '/admin/users', headers: admin(t), body: bodyText(body) }, c);
  await call(ctx, 'GET /admin/users', { method: 'GET', path: `/admin/users${c.listQuery}`, headers: admin(t) }, c);
  if (created.status !== 201) return;
  const id = encodeURIComponent((JSON.parse(created.body) as { id: string }).id);
  await call(ctx, 'GET /admin/users/:id', { method: 'GET', path: `/admin/users/${id}`, headers: admin(t) }, c);
  await call(ctx, 'GET /admin/users/:id/usage', { method: 'GET', path: `/admin/users/${id}/usage`, headers: admin(t) }, c);
  await call(ctx, 'PATCH /admin/users/:id', { method: 'PATCH', path: `/admin/users/${id}`, headers: admin(t), body: bodyText(c.patch) }, c);
  await call(ctx, 'GET /admin/users/:id/usage', { method: 'GET', path: `/admin/users/${id}/usage`, headers: admin(t) }, c);
  await call(ctx, 'GET /admin/quotas/:userId', { method: 'GET', path: `/admin/quotas/${id}`, headers: admin(t) }, c);
});

/** Arbitrary user ids in the admin paths (unknown, long, NUL, prototype names). */
const adminPathIds = define('admin paths with arbitrary ids', fc.record({
  id: idCase, route: fc.constantFrom('GET /admin/users/:id', 'PATCH /admin/users/:id', 'GET /admin/users/:id/usage', 'GET /admin/quotas/:userId', 'PUT /admin/quotas/:userId', 'DELETE /admin/quotas/:userId', 'DELETE /admin/keys/:id'),
}), async (ctx, c) => {
  const [method, pattern] = c.route.split(' ') as [string, string];
  const path = pattern.replace(/:\w+/, segment(c.id, ctx.target.fixtures.userId));
  const body = method === 'PATCH' ? '{"name":"x"}' : method === 'PUT' ? '{"max_tokens":64}' : undefined;
  await call(ctx, c.route, { method, path, headers: admin(ctx.target), ...(body && { body }) }, c);
});

/** Ids longer than the router's parameter limit (100) on every route with an id. */
const longIds = define('over-long ids on every :id route', fc.record({
  length: fc.integer({ min: 90, max: 4000 }), char: fc.constantFrom('r', '%00', '\u00e9'),
  route: fc.constantFrom('GET /v1/requests/:id', 'GET /v1/requests/:id/events', 'DELETE /v1/requests/:id', 'GET /v1/models/:id', 'GET /admin/users/:id', 'GET /admin/users/:id/usage', 'GET /admin/quotas/:id', 'DELETE /admin/keys/:id'),
}), async (ctx, c) => {
  const [method, pattern] = c.route.split(' ') as [string, string];
  const id = c.char === '%00' ? '%00'.repeat(c.length) : encodeURIComponent(c.char.repeat(c.length));
  await call(ctx, c.route, { method, path: pattern.replace(':id', id), headers: admin(ctx.target) }, c);
});

const adminKeys = define('admin keys', fc.record({
  body: bodies({ user_id: 'U', name: 'k', admin: false }, [['user_id'], ['name'], ['admin']]), listQuery: query(['user_id']), who: caller,
}), async (ctx, c) => {
  const t = ctx.target;
  const body = c.body.kind === 'json' && typeof c.body.value === 'object' && c.body.value !== null && (c.body.value as { user_id?: unknown }).user_id === 'U'
    ? { kind: 'json' as const, value: { ...c.body.value, user_id: t.fixtures.userId } } : c.body;
  const headers = { ...authHeader(t, c.who), 'content-type': 'application/json' };
  const created = await call(ctx, 'POST /admin/keys', { method: 'POST', path: '/admin/keys', headers, body: bodyText(body) }, c);
  await call(ctx, 'GET /admin/keys', { method: 'GET', path: `/admin/keys${c.listQuery}`, headers: authHeader(t, c.who) }, c);
  if (created.status === 201) {
    const id = encodeURIComponent((JSON.parse(created.body) as { id: string }).id);
    await call(ctx, 'DELETE /admin/keys/:id', { method: 'DELETE', path: `/admin/keys/${id}`, headers: admin(t) }, c);
  }
});

/** Sets a fuzzed quota override on a fresh user, then reads it back and spends through a key of that user. */
const quotaBase = { requests_per_day: 1000, tokens_per_day: 100_000, requests_per_month: 10_000, tokens_per_month: 1_000_000, max_tokens: 64, concurrent_streams: 4, priority: 3 };
const adminQuotas = define('admin quotas', fc.record({
  body: bodies(quotaBase, Object.keys(quotaBase).map((k) => [k])), maxTokens: fc.oneof(fc.constant(undefined), fc.integer({ min: 1, max: 64 })),
}), async (ctx, c) => {
  const t = ctx.target;
  const userId = t.nextId('q_');
  const u = await sendJson(t, 'POST', '/admin/users', { id: userId, tier: 'pro' }, t.masterKey);
  if (u.status !== 201) throw new Violation('admin quotas: fixture user not created', `${u.status} ${u.body}`);
  const put = await call(ctx, 'PUT /admin/quotas/:userId', { method: 'PUT', path: `/admin/quotas/${userId}`, headers: admin(t), body: bodyText(c.body) }, c);
  await call(ctx, 'GET /admin/quotas/:userId', { method: 'GET', path: `/admin/quotas/${userId}`, headers: admin(t) }, c);
  await call(ctx, 'GET /admin/users/:id/usage', { method: 'GET', path: `/admin/users/${userId}/usage`, headers: admin(t) }, c);
  if (put.status !== 200) return;
  const k = await sendJson(t, 'POST', '/admin/keys', { user_id: userId }, t.masterKey);
  const key = (JSON.parse(k.body) as { key: string }).key;
  const body = JSON.stringify({ model: 'sim', messages: [{ role: 'user', content: 'q' }], ...(c.maxTokens && { max_tokens: c.maxTokens }) });
  await call(ctx, 'POST /v1/requests (overridden quota)', { method: 'POST', path: '/v1/requests', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body }, c);
  await call(ctx, 'GET /v1/usage (overridden quota)', { method: 'GET', path: '/v1/usage', headers: { authorization: `Bearer ${key}` } }, c);
  await call(ctx, 'DELETE /admin/quotas/:userId', { method: 'DELETE', path: `/admin/quotas/${userId}`, headers: admin(t) }, c);
});

const adminRequests = define('GET /admin/requests', fc.record({ query: query(['user_id', 'status', 'limit']), who: caller }), async (ctx, c) => {
  await call(ctx, 'GET /admin/requests', { method: 'GET', path: `/admin/requests${c.query}`, headers: authHeader(ctx.target, c.who) }, c);
});

const usageCsv = define('GET /admin/usage.csv', fc.record({ query: query(['from', 'to', 'user_id']) }), async (ctx, c) => {
  await call(ctx, 'GET /admin/usage.csv', { method: 'GET', path: `/admin/usage.csv${c.query}`, headers: admin(ctx.target) }, c);
});

/** Any route with strange headers: huge ones past Node's limit, garbage keys, odd content types. */
const anyRoute = fc.constantFrom('GET /v1/models', 'GET /v1/usage', 'POST /v1/requests', 'GET /admin/users', 'GET /healthz', 'GET /nowhere', 'PUT /v1/models', 'OPTIONS /v1/requests', 'GET /v1/ws');
const headerFuzz = define('headers on any route', fc.record({
  route: anyRoute, authorization: fc.option(longHeaderValue), apiKey: fc.option(longHeaderValue), contentType: fc.option(headerValue), padding: fc.option(longHeaderValue),
}), async (ctx, c) => {
  const [method, path] = c.route.split(' ') as [string, string];
  const headers: Record<string, string> = {
    authorization: c.authorization === null ? `Bearer ${ctx.target.masterKey}` : c.authorization,
    ...(c.apiKey !== null && { 'x-api-key': c.apiKey }), ...(c.contentType !== null && { 'content-type': c.contentType }), ...(c.padding !== null && { 'x-padding': c.padding }),
  };
  const body = method === 'POST' || method === 'PUT' ? JSON.stringify(chatBase) : undefined;
  await call(ctx, `${c.route} (fuzzed headers)`, { method, path, headers, ...(body && { body }) }, c);
});

// ---------------------------------------------------------------------------------------------
// WebSocket: 1-4 frames on one socket (submit, resume, cancel, auth, any JSON, garbage, binary).

type WsFrame = { text: string } | { binary: number[] };
const wsMessage: fc.Arbitrary<WsFrame> = fc.oneof(
  { arbitrary: bodies({ type: 'submit', id: 'c1', request: chatBase }, [['type'], ['id'], ['request'], ['request', 'model'], ['request', 'messages'], ['request', 'max_tokens'], ['request', 'messages', 0, 'content'], ['idempotency_key']]).map((b) => ({ text: bodyText(b) })), weight: 3 },
  { arbitrary: bodies({ type: 'resume', request_id: 'KNOWN', after: 0 }, [['type'], ['request_id'], ['after']]).map((b) => ({ text: bodyText(b) })), weight: 3 },
  { arbitrary: bodies({ type: 'cancel', request_id: 'KNOWN' }, [['type'], ['request_id']]).map((b) => ({ text: bodyText(b) })), weight: 2 },
  { arbitrary: bodies({ type: 'auth', api_key: 'KEY' }, [['type'], ['api_key']]).map((b) => ({ text: bodyText(b) })), weight: 2 },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => ({ text: JSON.stringify(v) })), weight: 2 },
  { arbitrary: fc.constantFrom('null', '1', '"x"', 'true', '[]', '{}', '{"type":5}', '{"type":"resume","request_id":{}}').map((text) => ({ text })), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }).map((text) => ({ text })), weight: 1 },
  { arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => ({ binary: [...b] })), weight: 1 },
);
const WS_IDLE_MS = 150;
const WS_MAX_MS = 3000;

const wsCaller = fc.constantFrom<Caller>('master', 'user', 'user');
/** One frame per socket: a crash shrinks to its one message quickly (each shrink step restarts the gateway). */
const wsMessage1 = define('WS /v1/ws one message', fc.record({ who: wsCaller, frames: fc.tuple(wsMessage) }), (ctx, c) => wsCase(ctx, c));
const wsMessages = define('WS /v1/ws message sequences', fc.record({ who: wsCaller, frames: fc.array(wsMessage, { minLength: 2, maxLength: 5 }) }), (ctx, c) => wsCase(ctx, c));

async function wsCase(ctx: FuzzContext, c: { who: Caller; frames: readonly WsFrame[] }): Promise<void> {
  const t = ctx.target;
  const replies = await wsExchange(t, c.who, c.frames.map((f) => ('text' in f
    ? f.text.replaceAll('"KNOWN"', JSON.stringify(t.fixtures.requestId)).replaceAll('"KEY"', JSON.stringify(t.fixtures.userKey))
    : Buffer.from(f.binary))), c);
  for (const raw of replies) {
    let m: { type?: unknown; error?: { code?: unknown; type?: unknown; message?: unknown } };
    try { m = JSON.parse(raw) as typeof m; } catch { throw new Violation('WS: reply is not JSON', `${raw.slice(0, 200)}\ninput ${show(c)}`); }
    if (m.type !== 'error') { ctx.tally.add(`WS ${String(m.type)}`); continue; }
    const code = m.error?.code;
    ctx.tally.add(`WS error ${String(code)}`);
    if (!isCode(code) || m.error?.type !== catalogue[code].type || typeof m.error?.message !== 'string') throw new Violation('WS: error not catalogue-shaped', `${raw.slice(0, 300)}\ninput ${show(c)}`);
    if (code === 'SLUICE_ERR_INTERNAL') throw new Violation('WS: SLUICE_ERR_INTERNAL', `${raw.slice(0, 300)}\ninput ${show(c)}`);
  }
  await t.assertAlive('WS /v1/ws', c);
}

/** Sends frames on one socket and collects the replies until the socket is quiet (bounded). */
function wsExchange(t: FuzzTarget, who: Caller, frames: (string | Buffer)[], input: unknown): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${t.url.replace('http', 'ws')}/v1/ws`, { headers: authHeader(t, who) });
    const replies: string[] = [];
    let idle: NodeJS.Timeout | undefined;
    const done = () => { clearTimeout(idle); clearTimeout(cap); ws.terminate(); resolve(replies); };
    const quiet = () => { clearTimeout(idle); idle = setTimeout(done, WS_IDLE_MS); };
    const cap = setTimeout(done, WS_MAX_MS);
    ws.on('open', () => { for (const f of frames) ws.send(f); quiet(); });
    ws.on('message', (data) => { replies.push(String(data)); quiet(); });
    ws.on('close', () => done());
    ws.on('error', (err) => { clearTimeout(idle); clearTimeout(cap); t.assertAlive('WS /v1/ws', input).then(() => reject(new Violation(`WS: socket error (${err.message.replace(/\d+/g, 'N')})`, `input ${show(input)}`)), reject); });
  });
}

/** Every property, in the order the test runs them. */
export const fuzzProperties: readonly FuzzProperty[] = [
  chatCompletions, chatCompletionsStream, chatSurface, completions, asyncRequests, quickChat,
  requestStatus, requestEvents, requestCancel, usageAndModels,
  adminUsers, adminPathIds, adminKeys, adminQuotas, adminRequests, usageCsv, longIds, headerFuzz, wsMessage1, wsMessages,
];

/** Starts a target gateway for fuzzing (a child process, embedded adapters, instant sim model). */
export async function startFuzzTarget(): Promise<FuzzTarget> {
  const t = new FuzzTarget();
  await t.start();
  return t;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
