// A standalone OpenAI-compatible server over the simulated model (`sluice sim-model`): a stand-in
// for vLLM or Ollama in benchmarks and distributed tests. Plain node:http keeps it a fair baseline.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { SimModel } from '../adapters/model/sim.ts';
import { countTextTokens } from '../core/tokens.ts';
import { ModelError, type ChatMessage, type FinishReason, type ModelRequest } from '../ports/model.ts';

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
}

const MAX_BODY_BYTES = 32 * 1024 * 1024;
const DEFAULT_MAX_TOKENS = 128;
const MAX_TOKENS_LIMIT = 1_000_000;
const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'developer']);

/** An OpenAI-shaped client error. */
class BadRequest extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
}

export async function startSimModelServer(opts: SimModelServerOptions): Promise<{ url: string; close(): Promise<void> }> {
  const model = new SimModel({ ttftMs: opts.ttftMs, itlMs: opts.itlMs });
  const inFlight = new Set<AbortController>();
  const server = http.createServer((req, res) => {
    const abort = new AbortController();
    inFlight.add(abort);
    // The client hanging up must stop generation at once, as a real model server does.
    res.on('close', () => { abort.abort(); inFlight.delete(abort); });
    route(req, res, model, abort.signal).catch((e: unknown) => {
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

async function route(req: IncomingMessage, res: ServerResponse, model: SimModel, signal: AbortSignal): Promise<void> {
  const path = (req.url ?? '/').split('?')[0]?.replace(/\/+$/, '') ?? '';
  const routes: Record<string, { method: string; handle: () => Promise<void> }> = {
    '/v1/models': { method: 'GET', handle: async () => sendJson(res, 200, await modelList(model)) },
    '/v1/chat/completions': { method: 'POST', handle: async () => chatCompletions(res, model, parseChat(await readJson(req)), signal) },
    '/v1/completions': { method: 'POST', handle: async () => textCompletions(res, model, parseCompletion(await readJson(req)), signal) },
  };
  const entry = routes[path];
  if (!entry) throw new BadRequest(404, `No route ${req.method ?? ''} ${path}`, null, 'not_found');
  if (req.method !== entry.method) throw new BadRequest(405, `Use ${entry.method} for ${path}`, null, 'method_not_allowed');
  await entry.handle();
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

function parseCommon(body: Record<string, unknown>): Omit<ParsedRequest, 'request'> & Omit<ModelRequest, 'messages'> {
  const model = body.model === undefined ? 'sim' : body.model;
  if (typeof model !== 'string' || model === '') throw new BadRequest(400, "'model' must be a non-empty string.", 'model');
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? DEFAULT_MAX_TOKENS;
  if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > MAX_TOKENS_LIMIT) {
    throw new BadRequest(400, `'max_tokens' must be an integer between 1 and ${MAX_TOKENS_LIMIT}.`, 'max_tokens');
  }
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw new BadRequest(400, "Only 'n': 1 is supported.", 'n');
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
  };
  return Object.fromEntries(Object.entries(result).filter(([, v]) => v !== undefined)) as typeof result;
}

function parseChat(body: Record<string, unknown>): ParsedRequest {
  const { stream, includeUsage, ...common } = parseCommon(body);
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
    return message;
  });
  return { request: { ...common, messages }, stream, includeUsage, model: common.model };
}

interface ParsedCompletion extends ParsedRequest { prompt: string }

function parseCompletion(body: Record<string, unknown>): ParsedCompletion {
  const { stream, includeUsage, ...common } = parseCommon(body);
  let prompt: string;
  if (typeof body.prompt === 'string') prompt = body.prompt;
  else if (Array.isArray(body.prompt) && body.prompt.length === 1 && typeof body.prompt[0] === 'string') prompt = body.prompt[0];
  else throw new BadRequest(400, "'prompt' must be a string (or an array holding one string).", 'prompt');
  return { request: { ...common, messages: [{ role: 'user', content: prompt }] }, stream, includeUsage, model: common.model, prompt };
}

// ---- responses ----------------------------------------------------------------------------

interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }

/** Runs the simulator; calls `onToken` per piece; returns usage, or undefined when the client left. */
async function generate(
  model: SimModel, req: ModelRequest, signal: AbortSignal, onToken: (text: string) => void,
): Promise<{ usage: Usage; finishReason: FinishReason } | undefined> {
  try {
    for await (const chunk of model.stream(req, signal)) {
      if (chunk.type === 'tokens') { for (const text of chunk.texts) onToken(text); continue; }
      if (chunk.type !== 'usage') continue;
      return {
        finishReason: chunk.finishReason,
        usage: { prompt_tokens: chunk.promptTokens, completion_tokens: chunk.completionTokens, total_tokens: chunk.promptTokens + chunk.completionTokens },
      };
    }
  } catch (e) {
    if (e instanceof ModelError) throw new BadRequest(e.status ?? 500, e.message, null, 'model_error');
    throw e;
  }
  return undefined;
}

/** The whole answer at once (non-streaming responses). */
async function generateText(model: SimModel, request: Parameters<typeof generate>[1], signal: AbortSignal) {
  const pieces: string[] = [];
  const result = await generate(model, request, signal, (t) => pieces.push(t));
  return result && { ...result, text: pieces.join('') };
}

async function chatCompletions(res: ServerResponse, model: SimModel, parsed: ParsedRequest, signal: AbortSignal): Promise<void> {
  const id = `chatcmpl-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, created, model: parsed.model, system_fingerprint: 'sluice-sim' };
  if (!parsed.stream) {
    const result = await generateText(model, parsed.request, signal);
    if (!result) return;
    return sendJson(res, 200, {
      ...base,
      object: 'chat.completion',
      choices: [{ index: 0, message: { role: 'assistant', content: result.text, refusal: null }, logprobs: null, finish_reason: result.finishReason }],
      usage: result.usage,
    });
  }
  const sse = startSse(res);
  const usageField = parsed.includeUsage ? { usage: null } : {};
  const chunk = (delta: object, finishReason: FinishReason | null) =>
    ({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }], ...usageField });
  sse.send(chunk({ role: 'assistant', content: '' }, null));
  await streamTail(sse, parsed, () => generate(model, parsed.request, signal, (t) => sse.send(chunk({ content: t }, null))),
    (finishReason) => chunk({}, finishReason),
    (usage) => ({ ...base, object: 'chat.completion.chunk', choices: [], usage }));
}

async function textCompletions(res: ServerResponse, model: SimModel, parsed: ParsedCompletion, signal: AbortSignal): Promise<void> {
  const id = `cmpl-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, created, model: parsed.model, system_fingerprint: 'sluice-sim' };
  // The prompt form has no chat template, so its prompt tokens are the text's own.
  const withPromptTokens = (u: Usage): Usage => {
    const promptTokens = countTextTokens(parsed.prompt);
    return { prompt_tokens: promptTokens, completion_tokens: u.completion_tokens, total_tokens: promptTokens + u.completion_tokens };
  };
  if (!parsed.stream) {
    const result = await generateText(model, parsed.request, signal);
    if (!result) return;
    return sendJson(res, 200, {
      ...base,
      object: 'text_completion',
      choices: [{ index: 0, text: result.text, logprobs: null, finish_reason: result.finishReason }],
      usage: withPromptTokens(result.usage),
    });
  }
  const sse = startSse(res);
  const usageField = parsed.includeUsage ? { usage: null } : {};
  const chunk = (text: string, finishReason: FinishReason | null) =>
    ({ ...base, object: 'text_completion', choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason }], ...usageField });
  await streamTail(sse, parsed, () => generate(model, parsed.request, signal, (t) => sse.send(chunk(t, null))),
    (finishReason) => chunk('', finishReason),
    (usage) => ({ ...base, object: 'text_completion', choices: [], usage: withPromptTokens(usage) }));
}

/** Streams the tokens, then the finish chunk, the optional usage chunk and `[DONE]`. */
async function streamTail(
  sse: Sse, parsed: ParsedRequest, run: () => ReturnType<typeof generate>,
  finishChunk: (finishReason: FinishReason) => object, usageChunk: (usage: Usage) => object,
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
  sse.send(finishChunk(result.finishReason));
  if (parsed.includeUsage) sse.send(usageChunk(result.usage));
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
