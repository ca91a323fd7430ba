// Any OpenAI-compatible upstream (`http(s)://host:port/v1`: vLLM, Ollama, llama.cpp server, TGI, …).
//
// Guarantees:
// - The request is forwarded whole: the validated chat fields (`params`: tools, tool_choice,
//   response_format, logprobs, penalties, …, and passthrough fields) in their OpenAI names, plus
//   model, messages, max_tokens, n and the sampling fields.
// - Tokens are yielded as soon as the upstream read that completed them is parsed: no buffering
//   between upstream and caller, and the tokens of one read travel on as one chunk per choice
//   (consecutive deltas of one choice share a chunk). Every choice is read, not only choice 0;
//   tool-call deltas become `tool_calls` chunks, logprobs travel parallel to the texts when asked.
// - The last chunk is always `usage`, with every choice's finish reason (tool_calls and
//   content_filter kept). When the upstream omits usage (or a field of it), prompt and completion
//   tokens are counted locally (tools and tool-call arguments included) so billing never sees 0
//   for real work, and `usageSource` says `counted`.
// - A caller that does not stream (`req.stream === false`) gets one non-streaming upstream call,
//   its answer turned into the same chunks; that answer is read up to a bound.
// - Failures are ModelErrors: network errors, timeouts, 408/425/429/5xx and streams that end before
//   `[DONE]` or every choice's finish reason are `transient`; other 4xx are `permanent` with the
//   upstream's message.
// - Aborting the signal (or leaving the loop early) closes the upstream request at once; an aborted
//   stream ends without a usage chunk and without throwing, like the simulator.
import { Pool } from 'undici';
import {
  ModelError, type EmbeddingRequest, type EmbeddingResult, type FinishReason, type ModelBackend, type ModelChunk,
  type ModelRequest, type ToolCallDelta,
} from '../../ports/model.ts';
import { countPromptTokens, countTextTokens } from '../../core/tokens.ts';
import { sseDataBatches } from './sse-data.ts';

export interface HttpModelOptions {
  /** Base URL including the API prefix, e.g. `http://vllm:8000/v1`. */
  baseUrl: string;
  /** Returned by models() when the upstream cannot list its own. */
  models: string[];
  apiKey?: string;
  /**
   * Concurrent upstream connections; each live stream holds one for its whole length. The router
   * sets it to the deployment's maxConcurrency (so an admitted call never waits for a connection);
   * default DEFAULT_CONNECTIONS.
   */
  connections?: number;
  /** Longest wait to establish a connection (TCP and TLS). */
  connectTimeoutMs?: number;
  /** Longest wait for response headers (time to first byte includes prompt processing). */
  headersTimeoutMs?: number;
  /** Longest silence between two body chunks. */
  bodyTimeoutMs?: number;
}

/** Connections per upstream when the caller passes none; the router always passes the deployment's capacity (routing.maxConcurrency by default, the same figure). */
export const DEFAULT_CONNECTIONS = 1024;
const MODELS_CACHE_MS = 30_000;
const MODELS_TIMEOUT_MS = 5_000;
const MAX_ERROR_BODY_CHARS = 2_000;
/** Largest non-streaming chat answer read. */
const MAX_COMPLETION_BYTES = 16 * 1024 * 1024;
/** Largest embeddings answer read (2,048 inputs of 3,072 dimensions is about 120 MB of JSON: batch below that). */
const MAX_EMBEDDINGS_BYTES = 64 * 1024 * 1024;
/** Choice indexes an upstream may use; others are a broken answer and are ignored. */
const MAX_CHOICE_INDEX = 127;

export class HttpModel implements ModelBackend {
  private readonly pool: Pool;
  private readonly basePath: string;
  private readonly streamHeaders: Record<string, string>;
  private readonly jsonHeaders: Record<string, string>;
  private modelsCache: { ids: string[]; at: number } | undefined;

  constructor(private readonly options: HttpModelOptions) {
    const url = new URL(options.baseUrl);
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.pool = new Pool(url.origin, {
      connections: options.connections ?? DEFAULT_CONNECTIONS,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
      headersTimeout: options.headersTimeoutMs ?? 300_000,
      bodyTimeout: options.bodyTimeoutMs ?? 300_000,
      connect: { timeout: options.connectTimeoutMs ?? 10_000 },
    });
    const auth: Record<string, string> = options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {};
    this.streamHeaders = { 'content-type': 'application/json', accept: 'text/event-stream', ...auth };
    this.jsonHeaders = { 'content-type': 'application/json', accept: 'application/json', ...auth };
  }

  async *stream(req: ModelRequest, signal: AbortSignal): AsyncGenerator<ModelChunk> {
    if (signal.aborted) return;
    if (req.stream === false) { yield* this.complete(req, signal); return; }
    const body = await this.post('/chat/completions', this.withTrace(this.streamHeaders, req), requestBody(req, true), signal);
    if (body === undefined) return;

    const upstream = new UpstreamEvents(req.params?.logprobs === true);
    let bodyEnded = false;
    try {
      for await (const batch of sseDataBatches(body)) {
        if (upstream.done) continue; // after [DONE], read the body to its end (keep-alive) and ignore it
        const { chunks, failure } = upstream.read(batch);
        // Tokens that came before a failure in the same read were produced: they are logged and billed.
        for (const chunk of chunks) yield chunk;
        if (failure !== undefined) throw failure;
      }
      bodyEnded = true;
    } catch (e) {
      if (signal.aborted) return;
      throw toModelError(e);
    } finally {
      // Leaving early (abort, break, error) must drop the upstream connection, not drain it.
      if (!bodyEnded) body.destroy();
    }
    if (signal.aborted) return;
    if (!upstream.done && !upstream.allFinished(req.n ?? 1)) {
      throw new ModelError('transient', 'upstream stream ended before [DONE] or a finish reason');
    }
    yield upstream.usage(req);
  }

  /** One non-streaming upstream call, its `chat.completion` turned into chunks. */
  private async *complete(req: ModelRequest, signal: AbortSignal): AsyncGenerator<ModelChunk> {
    const body = await this.post('/chat/completions', this.withTrace(this.jsonHeaders, req), requestBody(req, false), signal);
    if (body === undefined) return;
    let json: unknown;
    try {
      json = parseJson(await readBounded(body, MAX_COMPLETION_BYTES), 'chat completion');
    } catch (e) {
      if (signal.aborted) return;
      throw toModelError(e);
    }
    if (signal.aborted) return;
    const upstream = new UpstreamEvents(req.params?.logprobs === true);
    const { chunks, failure } = upstream.readCompletion(json);
    if (failure !== undefined) throw failure;
    yield* chunks;
    yield upstream.usage(req);
  }

  /** Embeddings (POST {base}/embeddings); the usage the upstream reports, else counted locally. */
  async embed(req: EmbeddingRequest, signal: AbortSignal): Promise<EmbeddingResult> {
    const body = await this.post('/embeddings', this.jsonHeaders, JSON.stringify({ ...req.params, model: req.model, input: req.input }), signal);
    if (body === undefined) throw new ModelError('transient', 'embeddings request aborted');
    let json: unknown;
    try { json = parseJson(await readBounded(body, MAX_EMBEDDINGS_BYTES), 'embeddings answer'); } catch (e) { throw toModelError(e); }
    if (!isRecord(json) || !Array.isArray(json.data)) throw new ModelError('transient', 'upstream embeddings answer has no data list');
    const data: EmbeddingResult['data'] = [];
    for (const [position, item] of json.data.entries()) {
      if (!isRecord(item) || !(Array.isArray(item.embedding) || typeof item.embedding === 'string')) {
        throw new ModelError('transient', `upstream embeddings answer: data[${position}] has no embedding`);
      }
      data.push({ index: count(item.index) ?? position, embedding: item.embedding as number[] | string });
    }
    const reported = isRecord(json.usage) ? count(json.usage.prompt_tokens) : undefined;
    if (reported !== undefined) return { data, promptTokens: reported, usageSource: 'reported' };
    let counted = 0;
    for (const text of req.input) counted += countTextTokens(text);
    return { data, promptTokens: counted, usageSource: 'counted' };
  }

  /** The headers with the model call's traceparent, when tracing is on. */
  private withTrace(headers: Record<string, string>, req: ModelRequest): Record<string, string> {
    return req.traceparent ? { ...headers, traceparent: req.traceparent } : headers;
  }

  /** POSTs and returns the body of a 2xx answer; undefined when aborted. Throws ModelError. */
  private async post(path: string, headers: Record<string, string>, payload: string, signal: AbortSignal) {
    let response: Awaited<ReturnType<Pool['request']>>;
    try {
      response = await this.pool.request({ method: 'POST', path: `${this.basePath}${path}`, headers, body: payload, signal });
    } catch (e) {
      if (signal.aborted) return undefined;
      throw toModelError(e);
    }
    const { statusCode, body } = response;
    if (statusCode < 200 || statusCode >= 300) throw await httpError(statusCode, body);
    return body;
  }

  async models(): Promise<string[]> {
    const cached = this.modelsCache;
    if (cached && Date.now() - cached.at < MODELS_CACHE_MS) return cached.ids;
    try {
      const { statusCode, body } = await this.pool.request({
        method: 'GET', path: `${this.basePath}/models`, headers: this.jsonHeaders, signal: AbortSignal.timeout(MODELS_TIMEOUT_MS),
      });
      const json: unknown = await body.json();
      if (statusCode !== 200) throw new Error(`status ${statusCode}`);
      const ids = modelIds(json);
      if (ids.length === 0) throw new Error('no models listed');
      this.modelsCache = { ids, at: Date.now() };
      return ids;
    } catch {
      return [...this.options.models];
    }
  }

  async close(): Promise<void> {
    // Streams still open at shutdown would keep close() waiting; give them a moment, then cut.
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), 2_000); });
    const outcome = await Promise.race([this.pool.close().then(() => 'closed' as const), deadline]);
    clearTimeout(timer);
    if (outcome === 'timeout') await this.pool.destroy();
  }
}

function requestBody(req: ModelRequest, stream: boolean): string {
  return JSON.stringify({
    ...req.params,
    model: req.model,
    messages: req.messages,
    stream,
    stream_options: stream ? { include_usage: true } : undefined,
    max_tokens: req.maxTokens,
    n: req.n !== undefined && req.n > 1 ? req.n : undefined,
    temperature: req.temperature,
    top_p: req.topP,
    stop: req.stop && req.stop.length > 0 ? req.stop : undefined,
    seed: req.seed,
  });
}

interface UpstreamUsage { promptTokens?: number; completionTokens?: number }

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function count(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined;
}

function parseJson(text: string, what: string): unknown {
  try { return JSON.parse(text); } catch (e) {
    throw new ModelError('transient', `upstream sent a ${what} that is not JSON`, undefined, { cause: e });
  }
}

/** The body as text, up to `limit` bytes; a longer one is a permanent failure (it would be as long again). */
async function readBounded(body: AsyncIterable<unknown> & { destroy(): unknown }, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > limit) { body.destroy(); throw new ModelError('permanent', `upstream answer exceeds ${limit} bytes`); }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * What an upstream's events have said so far, for every choice. Runs once per event: methods and
 * plain loops, no closure per token.
 */
class UpstreamEvents {
  done = false;
  private reported: UpstreamUsage | undefined;
  /** Finish reason by choice index. */
  private readonly finish: (string | undefined)[] = [];
  /** Every text, tool name and argument fragment by choice, for counting usage when the upstream reports none. */
  private readonly pieces: string[][] = [];
  private out: ModelChunk[] = [];

  constructor(private readonly wantLogprobs: boolean) {}

  /** The chunks of one read's events. A failure after some of them is returned with them, not thrown. */
  read(batch: readonly string[]): { chunks: ModelChunk[]; failure?: unknown } {
    this.out = [];
    try {
      for (const data of batch) {
        if (data === '[DONE]') { this.done = true; break; }
        const json = parseJson(data, 'SSE event');
        if (!isRecord(json)) continue;
        if (json.error !== undefined) throw new ModelError('transient', `upstream stream error: ${errorMessage(json) ?? 'unknown error'}`);
        if (Array.isArray(json.choices)) for (const c of json.choices) this.choice(c, 'delta');
        if (isRecord(json.usage)) this.usageOf(json.usage);
      }
      return { chunks: this.out };
    } catch (failure) {
      return { chunks: this.out, failure };
    }
  }

  /** The chunks of a whole `chat.completion` (a non-streaming answer). */
  readCompletion(json: unknown): { chunks: ModelChunk[]; failure?: unknown } {
    this.out = [];
    this.done = true;
    if (!isRecord(json) || json.error !== undefined || !Array.isArray(json.choices)) {
      return { chunks: [], failure: new ModelError('transient', `upstream answer is not a chat completion: ${errorMessage(json) ?? 'no choices'}`) };
    }
    for (const c of json.choices) this.choice(c, 'message');
    if (isRecord(json.usage)) this.usageOf(json.usage);
    return { chunks: this.out };
  }

  allFinished(n: number): boolean {
    const choices = Math.max(n, this.finish.length);
    for (let i = 0; i < choices; i++) if (this.finish[i] === undefined) return false;
    return true;
  }

  /** The closing usage chunk: reported figures, else counted ones; every choice's finish reason. */
  usage(req: ModelRequest): Extract<ModelChunk, { type: 'usage' }> {
    const reported = this.reported;
    let completionTokens = reported?.completionTokens;
    if (completionTokens === undefined) {
      completionTokens = 0;
      for (const pieces of this.pieces) if (pieces) completionTokens += countTextTokens(pieces.join(''));
    }
    const choices = Math.max(req.n ?? 1, this.finish.length, this.pieces.length);
    const finishReason = toFinishReason(this.finish[0]);
    const chunk: Extract<ModelChunk, { type: 'usage' }> = {
      type: 'usage',
      promptTokens: reported?.promptTokens ?? countPromptTokens(req.messages, req.params?.tools),
      completionTokens,
      finishReason,
      usageSource: reported?.promptTokens !== undefined && reported.completionTokens !== undefined ? 'reported' : 'counted',
    };
    if (choices > 1) {
      chunk.choices = [];
      for (let i = 0; i < choices; i++) chunk.choices.push({ index: i, finishReason: toFinishReason(this.finish[i]) });
    }
    return chunk;
  }

  private usageOf(u: Record<string, unknown>): void {
    const usage: UpstreamUsage = {};
    const promptTokens = count(u.prompt_tokens);
    const completionTokens = count(u.completion_tokens);
    if (promptTokens !== undefined) usage.promptTokens = promptTokens;
    if (completionTokens !== undefined) usage.completionTokens = completionTokens;
    this.reported = usage;
  }

  /** One choice of a chunk (`delta`) or of a whole answer (`message`). */
  private choice(c: unknown, field: 'delta' | 'message'): void {
    if (!isRecord(c)) return;
    const index = c.index === undefined ? 0 : count(c.index);
    if (index === undefined || index > MAX_CHOICE_INDEX) return;
    const delta = c[field];
    if (isRecord(delta)) {
      if (typeof delta.content === 'string' && delta.content !== '') {
        this.text(index, delta.content, this.wantLogprobs && isRecord(c.logprobs) ? c.logprobs.content : undefined);
      }
      if (Array.isArray(delta.tool_calls)) {
        for (let i = 0; i < delta.tool_calls.length; i++) this.toolCall(index, delta.tool_calls[i], i);
      }
    }
    if (typeof c.finish_reason === 'string') this.finish[index] = c.finish_reason;
  }

  private piecesOf(choice: number): string[] {
    let pieces = this.pieces[choice];
    if (pieces === undefined) { pieces = []; this.pieces[choice] = pieces; }
    return pieces;
  }

  /** The tokens chunk of `choice` at the end of this read's chunks (a new one if the last is another's). */
  private tokensChunk(choice: number): Extract<ModelChunk, { type: 'tokens' }> {
    const last = this.out[this.out.length - 1];
    if (last?.type === 'tokens' && (last.choice ?? 0) === choice) return last;
    const chunk: Extract<ModelChunk, { type: 'tokens' }> = { type: 'tokens', texts: [] };
    if (choice !== 0) chunk.choice = choice;
    if (this.wantLogprobs) chunk.logprobs = [];
    this.out.push(chunk);
    return chunk;
  }

  /**
   * A content delta. With logprobs, each text gets its entry: a delta whose entries spell it is
   * split into their tokens; otherwise it travels whole with its first entry (null if none).
   */
  private text(choice: number, text: string, entries: unknown): void {
    const chunk = this.tokensChunk(choice);
    this.piecesOf(choice).push(text);
    if (!chunk.logprobs) { chunk.texts.push(text); return; }
    if (Array.isArray(entries) && entries.length > 1 && spells(entries, text)) {
      for (const e of entries) { chunk.texts.push((e as { token: string }).token); chunk.logprobs.push(e); }
      return;
    }
    chunk.texts.push(text);
    chunk.logprobs.push(Array.isArray(entries) && entries.length > 0 ? entries[0] : null);
  }

  private toolCall(choice: number, tc: unknown, position: number): void {
    if (!isRecord(tc)) return;
    const fn = isRecord(tc.function) ? tc.function : {};
    const delta: ToolCallDelta = { call: count(tc.index) ?? position, arguments: typeof fn.arguments === 'string' ? fn.arguments : '' };
    if (typeof tc.id === 'string' && tc.id !== '') delta.id = tc.id;
    if (typeof fn.name === 'string' && fn.name !== '') delta.name = fn.name;
    if (delta.id === undefined && delta.name === undefined && delta.arguments === '') return;
    const pieces = this.piecesOf(choice);
    if (delta.name !== undefined) pieces.push(delta.name);
    if (delta.arguments !== '') pieces.push(delta.arguments);
    const last = this.out[this.out.length - 1];
    if (last?.type === 'tool_calls' && (last.choice ?? 0) === choice) { last.deltas.push(delta); return; }
    this.out.push(choice === 0 ? { type: 'tool_calls', deltas: [delta] } : { type: 'tool_calls', choice, deltas: [delta] });
  }
}

/** Whether logprobs entries' tokens put together are `text`. */
function spells(entries: readonly unknown[], text: string): boolean {
  let joined = '';
  for (const e of entries) {
    if (!isRecord(e) || typeof e.token !== 'string') return false;
    joined += e.token;
  }
  return joined === text;
}

function toFinishReason(upstream: string | undefined): FinishReason {
  switch (upstream) {
    case 'length': return 'length';
    case 'tool_calls': case 'function_call': return 'tool_calls';
    case 'content_filter': return 'content_filter';
    // stop, eos, abort and vendor reasons: a model that chose to stop.
    default: return 'stop';
  }
}

function modelIds(json: unknown): string[] {
  if (!isRecord(json) || !Array.isArray(json.data)) return [];
  return json.data.flatMap((m) => (isRecord(m) && typeof m.id === 'string' ? [m.id] : []));
}

function errorMessage(json: unknown): string | undefined {
  if (!isRecord(json)) return undefined;
  const err = json.error;
  if (typeof err === 'string') return err;
  if (isRecord(err) && typeof err.message === 'string') return err.message;
  if (typeof json.message === 'string') return json.message;
  if (typeof json.detail === 'string') return json.detail;
  return undefined;
}

/** Classifies a non-2xx answer; the upstream's own message is kept for the caller. */
async function httpError(status: number, body: { text(): Promise<string> }): Promise<ModelError> {
  let text = '';
  try { text = await body.text(); } catch { /* the status alone classifies it */ }
  let message: string | undefined;
  try { message = errorMessage(JSON.parse(text)); } catch { /* not JSON: use the raw text */ }
  message = (message ?? text).slice(0, MAX_ERROR_BODY_CHARS) || `HTTP ${status}`;
  const transient = status === 408 || status === 425 || status === 429 || status >= 500;
  return new ModelError(transient ? 'transient' : 'permanent', `upstream HTTP ${status}: ${message}`, status);
}

/** The one place native failures become ModelErrors; by code, never by message. */
function toModelError(e: unknown): ModelError {
  if (e instanceof ModelError) return e;
  const code = isRecord(e) && typeof e.code === 'string' ? e.code : 'UNKNOWN';
  const detail = e instanceof Error ? e.message : String(e);
  // Every network-level failure (refused, reset, DNS, TLS, timeouts, closed socket) may heal on retry.
  return new ModelError('transient', `upstream request failed (${code}): ${detail}`, undefined, { cause: e });
}
