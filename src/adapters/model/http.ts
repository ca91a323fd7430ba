// Any OpenAI-compatible upstream (`http(s)://host:port/v1`: vLLM, Ollama, llama.cpp server, TGI, …).
//
// Guarantees:
// - Tokens are yielded as soon as the upstream read that completed them is parsed: no buffering
//   between upstream and caller, and the tokens of one read travel on as one chunk.
// - The last chunk is always `usage`; when the upstream omits usage (or a field of it), prompt and
//   completion tokens are counted locally so billing never sees 0 for real work.
// - Failures are ModelErrors: network errors, timeouts, 408/425/429/5xx and streams that end before
//   `[DONE]` or a finish reason are `transient`; other 4xx are `permanent` with the upstream's message.
// - Aborting the signal (or leaving the loop early) closes the upstream request at once; an aborted
//   stream ends without a usage chunk and without throwing, like the simulator.
import { Pool } from 'undici';
import { ModelError, type FinishReason, type ModelBackend, type ModelChunk, type ModelRequest } from '../../ports/model.ts';
import { countPromptTokens, countTextTokens } from '../../core/tokens.ts';
import { sseDataBatches } from './sse-data.ts';

export interface HttpModelOptions {
  /** Base URL including the API prefix, e.g. `http://vllm:8000/v1`. */
  baseUrl: string;
  /** Returned by models() when the upstream cannot list its own. */
  models: string[];
  apiKey?: string;
  /** Concurrent upstream connections; each live stream holds one for its whole length. */
  connections?: number;
  /** Longest wait for response headers (time to first byte includes prompt processing). */
  headersTimeoutMs?: number;
  /** Longest silence between two body chunks. */
  bodyTimeoutMs?: number;
}

const MODELS_CACHE_MS = 30_000;
const MODELS_TIMEOUT_MS = 5_000;
const MAX_ERROR_BODY_CHARS = 2_000;

export class HttpModel implements ModelBackend {
  private readonly pool: Pool;
  private readonly basePath: string;
  private readonly headers: Record<string, string>;
  private modelsCache: { ids: string[]; at: number } | undefined;

  constructor(private readonly options: HttpModelOptions) {
    const url = new URL(options.baseUrl);
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.pool = new Pool(url.origin, {
      connections: options.connections ?? 256,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
      headersTimeout: options.headersTimeoutMs ?? 300_000,
      bodyTimeout: options.bodyTimeoutMs ?? 300_000,
      connect: { timeout: 10_000 },
    });
    this.headers = { 'content-type': 'application/json', accept: 'text/event-stream' };
    if (options.apiKey) this.headers.authorization = `Bearer ${options.apiKey}`;
  }

  async *stream(req: ModelRequest, signal: AbortSignal): AsyncGenerator<ModelChunk> {
    if (signal.aborted) return;
    let response: Awaited<ReturnType<Pool['request']>>;
    try {
      response = await this.pool.request({
        method: 'POST', path: `${this.basePath}/chat/completions`, body: requestBody(req), signal,
        headers: req.traceparent ? { ...this.headers, traceparent: req.traceparent } : this.headers,
      });
    } catch (e) {
      if (signal.aborted) return;
      throw toModelError(e);
    }
    const { statusCode, body } = response;
    if (statusCode < 200 || statusCode >= 300) throw await httpError(statusCode, body);

    const upstream = new UpstreamEvents();
    let bodyEnded = false;
    try {
      for await (const batch of sseDataBatches(body)) {
        if (upstream.done) continue; // after [DONE], read the body to its end (keep-alive) and ignore it
        const { texts, failure } = upstream.read(batch);
        // Tokens that came before a failure in the same read were produced: they are logged and billed.
        if (texts.length > 0) yield { type: 'tokens', texts };
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
    const { done, finishReason, usage, pieces } = upstream;
    if (!done && finishReason === undefined) {
      throw new ModelError('transient', 'upstream stream ended before [DONE] or a finish reason');
    }
    yield {
      type: 'usage',
      promptTokens: usage?.promptTokens ?? countPromptTokens(req.messages),
      completionTokens: usage?.completionTokens ?? countTextTokens(pieces.join('')),
      finishReason: toFinishReason(finishReason),
    };
  }

  async models(): Promise<string[]> {
    const cached = this.modelsCache;
    if (cached && Date.now() - cached.at < MODELS_CACHE_MS) return cached.ids;
    try {
      const { statusCode, body } = await this.pool.request({
        method: 'GET', path: `${this.basePath}/models`, headers: this.headers, signal: AbortSignal.timeout(MODELS_TIMEOUT_MS),
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

function requestBody(req: ModelRequest): string {
  return JSON.stringify({
    model: req.model,
    messages: req.messages,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: req.maxTokens,
    temperature: req.temperature,
    top_p: req.topP,
    stop: req.stop && req.stop.length > 0 ? req.stop : undefined,
    seed: req.seed,
  });
}

interface UpstreamUsage { promptTokens?: number; completionTokens?: number }
interface StreamEvent { content?: string; finishReason?: string; usage?: UpstreamUsage; error?: string }

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function count(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined;
}

/** What an upstream stream's events have said so far. */
class UpstreamEvents {
  done = false;
  finishReason: string | undefined;
  usage: UpstreamUsage | undefined;
  /** Every token text, for counting usage when the upstream reports none. */
  readonly pieces: string[] = [];

  /** The token texts of one read's events. A failure after some of them is returned with them, not thrown. */
  read(batch: readonly string[]): { texts: string[]; failure?: unknown } {
    const texts: string[] = [];
    try {
      for (const data of batch) {
        if (data === '[DONE]') { this.done = true; break; }
        const event = parseEvent(data);
        if (event.error !== undefined) throw new ModelError('transient', `upstream stream error: ${event.error}`);
        if (event.content) texts.push(event.content);
        if (event.finishReason) this.finishReason = event.finishReason;
        if (event.usage) this.usage = event.usage;
      }
      return { texts };
    } catch (failure) {
      return { texts, failure };
    } finally {
      for (const t of texts) this.pieces.push(t);
    }
  }
}

/** Picks what Sluice needs from one `chat.completion.chunk` (only choice 0 is used). */
function parseEvent(data: string): StreamEvent {
  let json: unknown;
  try { json = JSON.parse(data); } catch (e) {
    throw new ModelError('transient', 'upstream sent an SSE event that is not JSON', undefined, { cause: e });
  }
  if (!isRecord(json)) return {};
  if (json.error !== undefined) return { error: errorMessage(json) ?? 'unknown error' };
  const event: StreamEvent = {};
  const choice = choiceZero(json.choices);
  if (choice) {
    const delta = choice.delta;
    if (isRecord(delta) && typeof delta.content === 'string' && delta.content !== '') event.content = delta.content;
    if (typeof choice.finish_reason === 'string') event.finishReason = choice.finish_reason;
  }
  if (isRecord(json.usage)) {
    event.usage = {};
    const promptTokens = count(json.usage.prompt_tokens);
    const completionTokens = count(json.usage.completion_tokens);
    if (promptTokens !== undefined) event.usage.promptTokens = promptTokens;
    if (completionTokens !== undefined) event.usage.completionTokens = completionTokens;
  }
  return event;
}

/** Choice 0 of a chunk (runs once per token: a plain loop, no closure). */
function choiceZero(choices: unknown): Record<string, unknown> | undefined {
  if (!Array.isArray(choices)) return undefined;
  for (const c of choices) if (isRecord(c) && (c.index ?? 0) === 0) return c;
  return undefined;
}

function toFinishReason(upstream: string | undefined): FinishReason {
  // content_filter, tool_calls and friends are all a model that chose to stop.
  return upstream === 'length' ? 'length' : 'stop';
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
