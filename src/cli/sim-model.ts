// A standalone OpenAI-compatible server over the simulated model (`sluice sim-model`): a stand-in
// for vLLM, Ollama or an authenticated provider in benchmarks and distributed tests. It behaves
// like a real server on the chat surface Sluice forwards: tool-call deltas when tools are given,
// JSON under response_format, n choices, logprobs, usage in the stream when asked, embeddings;
// and it can check a bearer key, fail with HTTP 500 before the first token at a given rate, and
// leave usage out (as servers that ignore include_usage do). Plain node:http keeps it a fair baseline.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { SimModel } from '../adapters/model/sim.ts';
import { mulberry32 } from '../adapters/model/sim-answer.ts';
import { countTextTokens } from '../core/tokens.ts';
import { ModelError, type ChatMessage, type FinishReason, type ModelChunk, type ModelRequest, type ToolCall } from '../ports/model.ts';

/** The subset of a pino logger the server uses. */
export interface SimServerLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface SimModelServerOptions {
  host: string;
  port: number;
  ttftMs: number;
  itlMs: number;
  logger?: SimServerLogger;
  /** A bearer key every request must carry (401 otherwise); absent = no check. */
  apiKey?: string;
  /** Chance that a completion or embeddings request fails with HTTP 500 before its first token. */
  failRate?: number;
  /** Seed of the failure draws, so a run's pattern is reproducible. */
  failSeed?: number;
  /** Whether usage is sent (in the stream only when include_usage asks); false acts as a server that never reports it. */
  reportUsage?: boolean;
  /** Dimensions of an embedding when the request names none. */
  embeddingDim?: number;
  /** Model ids served besides `sim`. */
  models?: string[];
}

const MAX_BODY_BYTES = 32 * 1024 * 1024;
const DEFAULT_MAX_TOKENS = 128;
const MAX_TOKENS_LIMIT = 1_000_000;
const MAX_CHOICES = 16;
const MAX_EMBEDDING_INPUTS = 2_048;
const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'developer']);
/** Chat fields the simulator acts on, passed to it under their OpenAI names. */
const CHAT_PARAMS = ['tools', 'tool_choice', 'parallel_tool_calls', 'response_format', 'logprobs', 'top_logprobs'] as const;

/** An OpenAI-shaped client error. */
class BadRequest extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
}

/** What a request handler needs besides the request. */
interface Sim { model: SimModel; options: SimModelServerOptions; fails: () => boolean }

export async function startSimModelServer(opts: SimModelServerOptions): Promise<{ url: string; close(): Promise<void> }> {
  const model = new SimModel({ ttftMs: opts.ttftMs, itlMs: opts.itlMs, models: opts.models ?? [], ...(opts.embeddingDim !== undefined && { embeddingDim: opts.embeddingDim }) });
  const failRandom = mulberry32(opts.failSeed ?? 1);
  const sim: Sim = { model, options: opts, fails: () => (opts.failRate ?? 0) > 0 && failRandom() < (opts.failRate ?? 0) };
  const inFlight = new Set<AbortController>();
  const server = http.createServer((req, res) => {
    const abort = new AbortController();
    inFlight.add(abort);
    // The client hanging up must stop generation at once, as a real model server does.
    res.on('close', () => { abort.abort(); inFlight.delete(abort); });
    route(req, res, sim, abort.signal).catch((e: unknown) => {
      if (e instanceof BadRequest) return sendError(res, e.status, e.message, e.param, e.code);
      opts.logger?.warn({ err: e, url: req.url }, 'sim-model request failed');
      return sendError(res, 500, 'internal error in the simulated model', null, null);
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => { server.off('error', reject); resolve(); });
  });
  const { port } = server.address() as AddressInfo;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const url = `http://${host}:${port}/v1`;
  opts.logger?.info({ url, ttftMs: opts.ttftMs, itlMs: opts.itlMs }, 'simulated model listening');
  return {
    url,
    close: async () => {
      for (const a of inFlight) a.abort();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

async function route(req: IncomingMessage, res: ServerResponse, sim: Sim, signal: AbortSignal): Promise<void> {
  const path = (req.url ?? '/').split('?')[0]?.replace(/\/+$/, '') ?? '';
  const { model } = sim;
  const routes: Record<string, { method: string; handle: () => Promise<void> }> = {
    '/v1/models': { method: 'GET', handle: async () => sendJson(res, 200, await modelList(model)) },
    '/v1/chat/completions': { method: 'POST', handle: async () => chatCompletions(res, sim, parseChat(await readJson(req)), signal) },
    '/v1/completions': { method: 'POST', handle: async () => textCompletions(res, sim, parseCompletion(await readJson(req)), signal) },
    '/v1/embeddings': { method: 'POST', handle: async () => embeddings(res, sim, await readJson(req), signal) },
  };
  const entry = routes[path];
  if (!entry) throw new BadRequest(404, `No route ${req.method ?? ''} ${path}`, null, 'not_found');
  if (req.method !== entry.method) throw new BadRequest(405, `Use ${entry.method} for ${path}`, null, 'method_not_allowed');
  checkKey(req, sim.options.apiKey);
  await entry.handle();
}

/** A bearer key check as OpenAI answers it: 401 invalid_api_key. */
function checkKey(req: IncomingMessage, key: string | undefined): void {
  if (key === undefined) return;
  const header = req.headers.authorization ?? '';
  const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
  const wanted = Buffer.from(key);
  if (given.length === 0) throw new BadRequest(401, "You didn't provide an API key. Send it as Authorization: Bearer <key>.", null, 'invalid_api_key');
  if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) throw new BadRequest(401, 'Incorrect API key provided.', null, 'invalid_api_key');
}

/** The injected failure: HTTP 500 before the first token, as an overloaded server answers. */
function injectFailure(sim: Sim): void {
  if (sim.fails()) throw new BadRequest(500, 'The simulated server had an error while processing your request (injected failure).', null, 'server_error');
}

async function modelList(model: SimModel): Promise<object> {
  const created = Math.floor(Date.now() / 1000);
  return { object: 'list', data: (await model.models()).map((id) => ({ id, object: 'model', created, owned_by: 'sluice' })) };
}

// ---- request parsing ----------------------------------------------------------------------

interface ParsedRequest { request: ModelRequest; stream: boolean; includeUsage: boolean; model: string }

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new BadRequest(413, `Request body exceeds ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  let json: unknown;
  try { json = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch {
    throw new BadRequest(400, 'We could not parse the JSON body of your request.');
  }
  if (!isRecord(json)) throw new BadRequest(400, 'The request body must be a JSON object.');
  return json;
}

/** Content may be a string or an array of parts; only text parts mean anything to the simulator. */
function messageContent(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (Array.isArray(content)) {
    return content.map((part) => (isRecord(part) && typeof part.text === 'string' ? part.text : '')).join('');
  }
  throw new BadRequest(400, `Invalid type for '${param}': expected a string or an array of content parts.`, param);
}

function parseCommon(body: Record<string, unknown>, maxChoices: number): Omit<ParsedRequest, 'request'> & Omit<ModelRequest, 'messages'> {
  const model = body.model === undefined ? 'sim' : body.model;
  if (typeof model !== 'string' || model === '') throw new BadRequest(400, "'model' must be a non-empty string.", 'model');
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? DEFAULT_MAX_TOKENS;
  if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > MAX_TOKENS_LIMIT) {
    throw new BadRequest(400, `'max_tokens' must be an integer between 1 and ${MAX_TOKENS_LIMIT}.`, 'max_tokens');
  }
  const n = body.n ?? 1;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > maxChoices) {
    throw new BadRequest(400, maxChoices === 1 ? "Only 'n': 1 is supported." : `'n' must be an integer between 1 and ${maxChoices}.`, 'n');
  }
  const optionalNumber = (name: string): number | undefined => {
    const v = body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new BadRequest(400, `'${name}' must be a number.`, name);
    return v;
  };
  const seed = optionalNumber('seed');
  if (seed !== undefined && !Number.isInteger(seed)) throw new BadRequest(400, "'seed' must be an integer.", 'seed');
  let stop: string[] | undefined;
  if (typeof body.stop === 'string') stop = [body.stop];
  else if (Array.isArray(body.stop) && body.stop.every((s) => typeof s === 'string')) stop = body.stop as string[];
  else if (body.stop !== undefined && body.stop !== null) throw new BadRequest(400, "'stop' must be a string or an array of strings.", 'stop');
  const streamOptions = body.stream_options;
  const result = {
    model,
    maxTokens,
    stream: body.stream === true,
    includeUsage: isRecord(streamOptions) && streamOptions.include_usage === true,
    temperature: optionalNumber('temperature'),
    topP: optionalNumber('top_p'),
    stop,
    seed,
    n: n > 1 ? n : undefined,
  };
  return Object.fromEntries(Object.entries(result).filter(([, v]) => v !== undefined)) as typeof result;
}

/** The fields the simulator acts on, checked for the shape it reads. */
function chatParams(body: Record<string, unknown>): Record<string, unknown> | undefined {
  const params: Record<string, unknown> = {};
  for (const key of CHAT_PARAMS) if (body[key] !== undefined && body[key] !== null) params[key] = body[key];
  if (params.tools !== undefined && !(Array.isArray(params.tools) && params.tools.every((t) => isRecord(t) && isRecord(t.function) && typeof t.function.name === 'string'))) {
    throw new BadRequest(400, "'tools' must be an array of {type: 'function', function: {name, parameters}}.", 'tools');
  }
  if (params.logprobs !== undefined && typeof params.logprobs !== 'boolean') throw new BadRequest(400, "'logprobs' must be a boolean.", 'logprobs');
  const top = params.top_logprobs;
  if (top !== undefined && (typeof top !== 'number' || !Number.isInteger(top) || top < 0 || top > 20)) throw new BadRequest(400, "'top_logprobs' must be an integer between 0 and 20.", 'top_logprobs');
  if (params.response_format !== undefined && !isRecord(params.response_format)) throw new BadRequest(400, "'response_format' must be an object.", 'response_format');
  return Object.keys(params).length > 0 ? params : undefined;
}

function parseChat(body: Record<string, unknown>): ParsedRequest {
  const { stream, includeUsage, ...common } = parseCommon(body, MAX_CHOICES);
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    throw new BadRequest(400, "'messages' must be a non-empty array.", 'messages');
  }
  const messages = body.messages.map((m, i): ChatMessage => {
    if (!isRecord(m) || typeof m.role !== 'string' || !ROLES.has(m.role)) {
      throw new BadRequest(400, `'messages[${i}].role' must be one of system, user, assistant, tool.`, `messages[${i}].role`);
    }
    const role = (m.role === 'developer' ? 'system' : m.role) as ChatMessage['role'];
    const message: ChatMessage = { role, content: messageContent(m.content, `messages[${i}].content`) };
    if (typeof m.name === 'string') message.name = m.name;
    if (Array.isArray(m.tool_calls)) message.tool_calls = m.tool_calls as ToolCall[];
    if (typeof m.tool_call_id === 'string') message.tool_call_id = m.tool_call_id;
    else if (role === 'tool') throw new BadRequest(400, `'messages[${i}].tool_call_id' is required for a tool message.`, `messages[${i}].tool_call_id`);
    return message;
  });
  const params = chatParams(body);
  return { request: { ...common, messages, ...(params && { params }) }, stream, includeUsage, model: common.model };
}

interface ParsedCompletion extends ParsedRequest { prompt: string }

function parseCompletion(body: Record<string, unknown>): ParsedCompletion {
  const { stream, includeUsage, ...common } = parseCommon(body, 1);
  let prompt: string;
  if (typeof body.prompt === 'string') prompt = body.prompt;
  else if (Array.isArray(body.prompt) && body.prompt.length === 1 && typeof body.prompt[0] === 'string') prompt = body.prompt[0];
  else throw new BadRequest(400, "'prompt' must be a string (or an array holding one string).", 'prompt');
  return { request: { ...common, messages: [{ role: 'user', content: prompt }] }, stream, includeUsage, model: common.model, prompt };
}

// ---- responses ----------------------------------------------------------------------------

interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }
interface Generated { usage: Usage; finishReasons: FinishReason[] }

/** Runs the simulator, handing each chunk on; returns usage, or undefined when the client left. */
type AnswerChunk = Exclude<ModelChunk, { type: 'usage' | 'served' }>;

async function generate(model: SimModel, req: ModelRequest, signal: AbortSignal, onChunk: (chunk: AnswerChunk) => void): Promise<Generated | undefined> {
  try {
    for await (const chunk of model.stream(req, signal)) {
      if (chunk.type === 'served') continue;
      if (chunk.type !== 'usage') { onChunk(chunk); continue; }
      return {
        finishReasons: chunk.choices ? chunk.choices.map((c) => c.finishReason) : [chunk.finishReason],
        usage: { prompt_tokens: chunk.promptTokens, completion_tokens: chunk.completionTokens, total_tokens: chunk.promptTokens + chunk.completionTokens },
      };
    }
  } catch (e) {
    if (e instanceof ModelError) throw new BadRequest(e.status ?? 500, e.message, null, 'model_error');
    throw e;
  }
  return undefined;
}

/** One choice of a non-streaming answer, assembled from the chunks. */
interface AssembledChoice { text: string; calls: ToolCall[]; logprobs: unknown[] | undefined }

/** The whole answer at once (non-streaming responses), every choice assembled. */
async function generateAll(model: SimModel, request: ModelRequest, signal: AbortSignal) {
  const choices: AssembledChoice[] = [];
  const choice = (i: number) => (choices[i] ??= { text: '', calls: [], logprobs: undefined });
  const result = await generate(model, request, signal, (chunk) => {
    const c = choice(chunk.choice ?? 0);
    if (chunk.type === 'tokens') {
      c.text += chunk.texts.join('');
      if (chunk.logprobs) (c.logprobs ??= []).push(...chunk.logprobs);
      return;
    }
    if (chunk.type !== 'tool_calls') return;
    for (const d of chunk.deltas) {
      const call = (c.calls[d.call] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
      if (d.id) call.id = d.id;
      if (d.name) call.function.name = d.name;
      call.function.arguments += d.arguments;
    }
  });
  if (!result) return undefined;
  for (let i = 0; i < result.finishReasons.length; i++) choice(i);
  return { ...result, choices };
}

async function chatCompletions(res: ServerResponse, sim: Sim, parsed: ParsedRequest, signal: AbortSignal): Promise<void> {
  injectFailure(sim);
  const id = `chatcmpl-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, created, model: parsed.model, system_fingerprint: 'sluice-sim' };
  const reportUsage = sim.options.reportUsage !== false;
  if (!parsed.stream) {
    const result = await generateAll(sim.model, parsed.request, signal);
    if (!result) return;
    return sendJson(res, 200, {
      ...base,
      object: 'chat.completion',
      choices: result.choices.map((c, index) => ({
        index,
        message: { role: 'assistant', content: c.calls.length > 0 && c.text === '' ? null : c.text, refusal: null, ...(c.calls.length > 0 && { tool_calls: c.calls }) },
        logprobs: c.logprobs ? { content: c.logprobs, refusal: null } : null,
        finish_reason: result.finishReasons[index] ?? 'stop',
      })),
      ...(reportUsage && { usage: result.usage }),
    });
  }
  const sse = startSse(res);
  const includeUsage = parsed.includeUsage && reportUsage;
  const usageField = includeUsage ? { usage: null } : {};
  const chunk = (index: number, delta: object, finishReason: FinishReason | null, logprobs: unknown = null) =>
    ({ ...base, object: 'chat.completion.chunk', choices: [{ index, delta, logprobs, finish_reason: finishReason }], ...usageField });
  const n = parsed.request.n ?? 1;
  for (let i = 0; i < n; i++) sse.send(chunk(i, { role: 'assistant', content: '' }, null));
  const onChunk = (c: AnswerChunk) => {
    const index = c.choice ?? 0;
    if (c.type === 'tokens') {
      for (let i = 0; i < c.texts.length; i++) {
        sse.send(chunk(index, { content: c.texts[i] }, null, c.logprobs ? { content: [c.logprobs[i]], refusal: null } : null));
      }
    } else if (c.type === 'tool_calls') {
      for (const d of c.deltas) {
        const call = d.id !== undefined
          ? { index: d.call, id: d.id, type: 'function', function: { name: d.name ?? '', arguments: d.arguments } }
          : { index: d.call, function: { arguments: d.arguments } };
        sse.send(chunk(index, { tool_calls: [call] }, null));
      }
    }
  };
  await streamTail(sse, includeUsage, () => generate(sim.model, parsed.request, signal, onChunk),
    (finishReasons) => finishReasons.map((f, i) => chunk(i, {}, f)),
    (usage) => ({ ...base, object: 'chat.completion.chunk', choices: [], usage }));
}

async function textCompletions(res: ServerResponse, sim: Sim, parsed: ParsedCompletion, signal: AbortSignal): Promise<void> {
  injectFailure(sim);
  const id = `cmpl-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, created, model: parsed.model, system_fingerprint: 'sluice-sim' };
  const reportUsage = sim.options.reportUsage !== false;
  // The prompt form has no chat template, so its prompt tokens are the text's own.
  const withPromptTokens = (u: Usage): Usage => {
    const promptTokens = countTextTokens(parsed.prompt);
    return { prompt_tokens: promptTokens, completion_tokens: u.completion_tokens, total_tokens: promptTokens + u.completion_tokens };
  };
  if (!parsed.stream) {
    const result = await generateAll(sim.model, parsed.request, signal);
    if (!result) return;
    return sendJson(res, 200, {
      ...base,
      object: 'text_completion',
      choices: [{ index: 0, text: result.choices[0]?.text ?? '', logprobs: null, finish_reason: result.finishReasons[0] ?? 'stop' }],
      ...(reportUsage && { usage: withPromptTokens(result.usage) }),
    });
  }
  const sse = startSse(res);
  const includeUsage = parsed.includeUsage && reportUsage;
  const usageField = includeUsage ? { usage: null } : {};
  const chunk = (text: string, finishReason: FinishReason | null) =>
    ({ ...base, object: 'text_completion', choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason }], ...usageField });
  await streamTail(sse, includeUsage, () => generate(sim.model, parsed.request, signal, (c) => {
    if (c.type === 'tokens') for (const t of c.texts) sse.send(chunk(t, null));
  }),
  (finishReasons) => [chunk('', finishReasons[0] ?? 'stop')],
  (usage) => ({ ...base, object: 'text_completion', choices: [], usage: withPromptTokens(usage) }));
}

/** POST /v1/embeddings: deterministic unit vectors (`dimensions`, `encoding_format` honoured). */
async function embeddings(res: ServerResponse, sim: Sim, body: Record<string, unknown>, signal: AbortSignal): Promise<void> {
  const model = body.model === undefined ? 'sim' : body.model;
  if (typeof model !== 'string' || model === '') throw new BadRequest(400, "'model' must be a non-empty string.", 'model');
  const input = typeof body.input === 'string' ? [body.input] : body.input;
  if (!Array.isArray(input) || input.length === 0 || input.length > MAX_EMBEDDING_INPUTS || !input.every((s) => typeof s === 'string')) {
    throw new BadRequest(400, `'input' must be a string or an array of 1 to ${MAX_EMBEDDING_INPUTS} strings.`, 'input');
  }
  const dimensions = body.dimensions;
  if (dimensions !== undefined && (typeof dimensions !== 'number' || !Number.isInteger(dimensions) || dimensions < 1 || dimensions > 8192)) {
    throw new BadRequest(400, "'dimensions' must be an integer between 1 and 8192.", 'dimensions');
  }
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') throw new BadRequest(400, "'encoding_format' must be float or base64.", 'encoding_format');
  injectFailure(sim);
  const params = { ...(dimensions !== undefined && { dimensions }), encoding_format: format };
  let result;
  try {
    result = await sim.model.embed({ model, input: input as string[], params }, signal);
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof ModelError) throw new BadRequest(e.status ?? 500, e.message, null, 'model_error');
    throw e;
  }
  sendJson(res, 200, {
    object: 'list', model,
    data: result.data.map((d) => ({ object: 'embedding', index: d.index, embedding: d.embedding })),
    ...(sim.options.reportUsage !== false && { usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens } }),
  });
}

/** Streams the tokens, then the finish chunks, the optional usage chunk and `[DONE]`. */
async function streamTail(
  sse: Sse, includeUsage: boolean, run: () => ReturnType<typeof generate>,
  finishChunks: (finishReasons: FinishReason[]) => object[], usageChunk: (usage: Usage) => object,
): Promise<void> {
  let result: Awaited<ReturnType<typeof generate>>;
  try {
    result = await run();
  } catch (e) {
    // Headers are gone; an error event is how OpenAI-compatible servers fail mid-stream.
    const err = e instanceof BadRequest ? e : new BadRequest(500, 'internal error in the simulated model');
    sse.send({ error: { message: err.message, type: 'server_error', param: null, code: err.code } });
    return sse.end();
  }
  if (!result) return sse.end();
  for (const c of finishChunks(result.finishReasons)) sse.send(c);
  if (includeUsage) sse.send(usageChunk(result.usage));
  sse.done();
}

interface Sse { send(data: object): void; done(): void; end(): void }

function startSse(res: ServerResponse): Sse {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
  res.flushHeaders();
  return {
    send: (data) => { if (!res.writableEnded) res.write(`data: ${JSON.stringify(data)}\n\n`); },
    done: () => { if (!res.writableEnded) res.end('data: [DONE]\n\n'); },
    end: () => { if (!res.writableEnded) res.end(); },
  };
}

function sendJson(res: ServerResponse, status: number, body: object): void {
  if (res.headersSent) { res.end(); return; }
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}

function sendError(res: ServerResponse, status: number, message: string, param: string | null, code: string | null): void {
  const type = status >= 500 ? 'server_error' : status === 404 ? 'not_found_error' : 'invalid_request_error';
  sendJson(res, status, { error: { message, type, param, code } });
}
