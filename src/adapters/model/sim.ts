// The built-in simulated model (`sim://`): deterministic, readable English at a configurable pace,
// so the whole gateway runs and is testable with no model server at all. It behaves like a real
// server on the whole chat surface: tool calls, JSON mode, n choices, logprobs, embeddings.
//
// Guarantees:
// - The answer is a pure function of the seed: `req.seed`, or a hash of the messages when absent.
//   A given seed yields the same text whatever the prompt, and a shorter `maxTokens` yields a prefix.
//   Choice 0 reads as the single answer does; choice i has its own seed derived from the request's.
// - Text: exactly `maxTokens` tokens per choice, then finishReason 'length' — unless
//   `stopProbability` (default 0) ends the answer at a sentence end, or a `req.stop` string would
//   appear (that token is withheld), both with 'stop'.
// - With tools (and tool_choice not `none`): a call to the named function, else the first tool (the
//   first two with parallel_tool_calls: true), arguments valid JSON holding the function's required
//   parameters, streamed in fragments; finishReason 'tool_calls' ('length' if maxTokens cuts it).
//   After a tool result (the last message has role 'tool'): text, unless tool_choice is
//   `required` or names a function.
// - With response_format json_object / json_schema: a JSON object (the schema's required
//   properties) in token-sized pieces, finishReason 'stop' ('length' if maxTokens cuts it).
// - With logprobs: an OpenAI logprobs entry for each text token (top_logprobs alternatives).
// - The usage chunk says 'reported'; completionTokens is the number of pieces yielded over every
//   choice (a text token, or a tool-call fragment).
// - Aborting the signal ends the iterator promptly *without* a usage chunk and without throwing;
//   the caller already knows it cancelled.
// - Injected failures (for tests) throw ModelError('transient') from a per-backend seeded PRNG.
import {
  ModelError, type ChatMessage, type EmbeddingRequest, type EmbeddingResult, type FinishReason, type ModelBackend,
  type ModelChunk, type ModelRequest, type ToolCallDelta,
} from '../../ports/model.ts';
import { countPromptTokens, countTextTokens, messageText } from '../../core/tokens.ts';
import {
  argumentFragments, callId, choiceSeed, embeddingOf, fnv1a, jsonPieces, logprobEntry, mulberry32, plannedCalls, plannedJson,
  schemaValue, simText,
} from './sim-answer.ts';

export interface SimModelOptions {
  /** Delay before the first token. */
  ttftMs: number;
  /** Delay between tokens; 0 still yields to the event loop now and then. */
  itlMs: number;
  /** Extra model ids served besides `sim`. */
  models?: string[];
  /** Chance of ending at each sentence end with 'stop' (0 = always run to maxTokens). */
  stopProbability?: number;
  /** Failure injection: chance that a stream fails (1 when only `failAfter` is set). */
  failRate?: number;
  /** Failure injection: tokens yielded before the injected failure (default 0 = before the first). */
  failAfter?: number;
  /** Failure injection: at most this many failures over the backend's life (default unlimited). */
  failCount?: number;
  /** Failure injection: kind of the injected ModelError (default transient). */
  failKind?: 'transient' | 'permanent';
  /** Seed of the failure-injection PRNG, so a test run's failure pattern is reproducible. */
  failSeed?: number;
  /** Dimensions of an embedding when the request names none (default 256). */
  embeddingDim?: number;
}

/** The seed used when a request brings none. */
function hashMessages(messages: readonly ChatMessage[]): number {
  return fnv1a(messages.flatMap((m) => [m.role, messageText(m), m.name ?? '']));
}

/** One piece of one choice: a text token or a tool-call fragment. */
type Piece = { text: string; call?: undefined } | { call: ToolCallDelta; text?: undefined };

/** The pieces of choice `index`, in order; returns its finish reason. */
function* choicePieces(req: ModelRequest, index: number, seed: number, stopProbability: number): Generator<Piece, FinishReason> {
  const own = choiceSeed(seed, index);
  const random = mulberry32(own ^ 0x5bd1e995);
  let emitted = 0;
  const calls = plannedCalls(req);
  if (calls.length > 0) {
    for (let k = 0; k < calls.length; k++) {
      const { name, parameters } = calls[k]!;
      const id = callId(random);
      const fragments = argumentFragments(JSON.stringify(schemaValue(parameters ?? {}, random)), random);
      for (let f = 0; f < fragments.length; f++) {
        if (emitted >= req.maxTokens) return 'length';
        yield { call: f === 0 ? { call: k, id, name, arguments: fragments[0]! } : { call: k, arguments: fragments[f]! } };
        emitted++;
      }
    }
    return 'tool_calls';
  }
  const json = plannedJson(req, random);
  if (json !== undefined) {
    for (const piece of jsonPieces(json)) {
      if (emitted >= req.maxTokens) return 'length';
      yield { text: piece };
      emitted++;
    }
    return 'stop';
  }
  const stops = (req.stop ?? []).filter((s) => s.length > 0);
  const longestStop = Math.max(0, ...stops.map((s) => s.length));
  const text = simText(own);
  let tail = '';
  while (emitted < req.maxTokens) {
    const piece = text.next().value;
    if (stops.length > 0) {
      tail += piece;
      if (stops.some((s) => tail.includes(s))) return 'stop';
      tail = tail.slice(-longestStop);
    }
    yield { text: piece };
    emitted++;
    if (stopProbability > 0 && isSentenceEnd(piece) && random() < stopProbability) return 'stop';
  }
  return 'length';
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => { clearTimeout(timer); resolve(false); };
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(true); }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
/** With no inter-token delay, a long answer would otherwise starve the event loop (and aborts). */
const TOKENS_PER_TURN = 64;
const DEFAULT_EMBEDDING_DIM = 256;
const MAX_EMBEDDING_DIM = 8_192;

type TokensChunk = Extract<ModelChunk, { type: 'tokens' }>;
type CallsChunk = Extract<ModelChunk, { type: 'tool_calls' }>;

/** The pieces of one pause-free stretch, by choice, to leave together as an upstream read would bring them. */
class Pending {
  private tokens: (TokensChunk | undefined)[] = [];
  private calls: (CallsChunk | undefined)[] = [];
  private readonly logprobRandoms: (() => number)[] | undefined;

  constructor(n: number, seed: number, private readonly topLogprobs: number | undefined) {
    if (topLogprobs === undefined) return;
    this.logprobRandoms = [];
    for (let i = 0; i < n; i++) this.logprobRandoms.push(mulberry32(choiceSeed(seed, i) ^ 0x27d4eb2d));
  }

  add(choice: number, piece: Piece): void {
    if (piece.call) {
      let chunk = this.calls[choice];
      if (!chunk) { chunk = choice === 0 ? { type: 'tool_calls', deltas: [] } : { type: 'tool_calls', choice, deltas: [] }; this.calls[choice] = chunk; }
      chunk.deltas.push(piece.call);
      return;
    }
    let chunk = this.tokens[choice];
    if (!chunk) {
      chunk = { type: 'tokens', texts: [] };
      if (choice !== 0) chunk.choice = choice;
      if (this.logprobRandoms) chunk.logprobs = [];
      this.tokens[choice] = chunk;
    }
    chunk.texts.push(piece.text);
    if (this.logprobRandoms) chunk.logprobs!.push(logprobEntry(piece.text, this.logprobRandoms[choice]!, this.topLogprobs ?? 0));
  }

  /** The chunks gathered, in choice order, and a fresh start. */
  take(): ModelChunk[] {
    const out: ModelChunk[] = [];
    const choices = Math.max(this.tokens.length, this.calls.length);
    for (let i = 0; i < choices; i++) {
      if (this.tokens[i]) out.push(this.tokens[i]!);
      if (this.calls[i]) out.push(this.calls[i]!);
    }
    this.tokens = [];
    this.calls = [];
    return out;
  }
}

export class SimModel implements ModelBackend {
  private readonly failRandom: () => number;
  private failuresLeft: number;
  private turn = 0;

  constructor(private readonly options: SimModelOptions) {
    this.failRandom = mulberry32(options.failSeed ?? 1);
    this.failuresLeft = options.failCount ?? Number.POSITIVE_INFINITY;
  }

  async models(): Promise<string[]> {
    return ['sim', ...(this.options.models ?? []).filter((m) => m !== 'sim')];
  }

  async close(): Promise<void> {}

  async *stream(req: ModelRequest, signal: AbortSignal): AsyncGenerator<ModelChunk> {
    const failAt = this.plannedFailure();
    if (!(await this.delay(this.options.ttftMs, signal))) return;
    const n = Math.max(1, req.n ?? 1);
    const seed = req.seed ?? hashMessages(req.messages);
    const choices: Generator<Piece, FinishReason>[] = [];
    for (let i = 0; i < n; i++) choices.push(choicePieces(req, i, seed, this.options.stopProbability ?? 0));
    const top = req.params?.top_logprobs;
    const pending = new Pending(n, seed, req.params?.logprobs === true ? (typeof top === 'number' ? top : 0) : undefined);
    const finish: FinishReason[] = [];
    let emitted = 0;
    let failed = false;
    const step: { choice: number; piece: Piece }[] = [];
    while (!failed) {
      // One piece of every unfinished choice: choices are generated side by side.
      step.length = 0;
      for (let i = 0; i < n; i++) {
        if (finish[i] !== undefined) continue;
        const next = choices[i]!.next();
        if (next.done) finish[i] = next.value;
        else step.push({ choice: i, piece: next.value });
      }
      if (step.length === 0) break;
      if (emitted > 0 && this.pausesBeforeNext()) {
        yield* pending.take();
        if (!(await this.delay(this.options.itlMs, signal))) return;
      }
      for (const { choice, piece } of step) {
        if (failAt === emitted) { failed = true; break; }
        if (signal.aborted) return;
        pending.add(choice, piece);
        emitted++;
      }
    }
    yield* pending.take();
    if (failed || (failAt === emitted && finish.every((f) => f === 'length'))) throw this.injectedError(emitted);
    if (signal.aborted) return;
    const usage: Extract<ModelChunk, { type: 'usage' }> = {
      type: 'usage', promptTokens: countPromptTokens(req.messages, req.params?.tools), completionTokens: emitted,
      finishReason: finish[0] ?? 'length', usageSource: 'reported',
    };
    if (n > 1) usage.choices = finish.map((finishReason, index) => ({ index, finishReason }));
    yield usage;
  }

  /** Deterministic unit vectors, one per input; `params.dimensions` and `encoding_format: base64` honoured. */
  async embed(req: EmbeddingRequest, signal: AbortSignal): Promise<EmbeddingResult> {
    const failAt = this.plannedFailure();
    if (!(await this.delay(this.options.ttftMs, signal))) throw new ModelError('transient', 'embeddings request aborted');
    if (failAt >= 0) throw this.injectedError(0);
    const asked = req.params?.dimensions;
    const dimensions = typeof asked === 'number' && Number.isInteger(asked) && asked >= 1 && asked <= MAX_EMBEDDING_DIM
      ? asked : this.options.embeddingDim ?? DEFAULT_EMBEDDING_DIM;
    const base64 = req.params?.encoding_format === 'base64';
    let promptTokens = 0;
    const data = req.input.map((text, index) => {
      promptTokens += countTextTokens(text);
      const v = embeddingOf(text, dimensions);
      return { index, embedding: base64 ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v };
    });
    return { data, promptTokens, usageSource: 'reported' };
  }

  /** Token index at which this stream fails, or -1. Decided up front so retries see fresh draws. */
  private plannedFailure(): number {
    const { failRate, failAfter } = this.options;
    if (failRate === undefined && failAfter === undefined) return -1;
    if (this.failuresLeft <= 0) return -1;
    if (this.failRandom() >= (failRate ?? 1)) return -1;
    this.failuresLeft--;
    return failAfter ?? 0;
  }

  private injectedError(afterTokens: number): ModelError {
    const kind = this.options.failKind ?? 'transient';
    return new ModelError(kind, `simulated ${kind} model failure after ${afterTokens} tokens`, kind === 'transient' ? 503 : 400);
  }

  /** Whether the stream waits before its next token: always with a delay, else every TOKENS_PER_TURN. */
  private pausesBeforeNext(): boolean {
    if (this.options.itlMs > 0) return true;
    this.turn = (this.turn + 1) % TOKENS_PER_TURN;
    return this.turn === 0;
  }

  private async delay(ms: number, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return false;
    if (ms > 0) return pause(ms, signal);
    await yieldToEventLoop();
    return !signal.aborted;
  }
}

function isSentenceEnd(piece: string): boolean {
  return piece === '.' || piece === '!' || piece === '?';
}

/** Reads failure injection and pacing overrides from a `sim://?ttft_ms=…` URL. */
export function simOptionsFromUrl(url: URL, defaults: SimModelOptions): SimModelOptions {
  const q = url.searchParams;
  const num = (name: string, min: number, max = Number.POSITIVE_INFINITY): number | undefined => {
    const raw = q.get(name);
    if (raw === null || raw === '') return undefined;
    const value = Number(raw);
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new RangeError(`sim:// option ${name}=${raw} must be a number in [${min}, ${max}]`);
    }
    return value;
  };
  const int = (name: string): number | undefined => {
    const v = num(name, 0);
    if (v !== undefined && !Number.isInteger(v)) throw new RangeError(`sim:// option ${name} must be an integer`);
    return v;
  };
  const positive = (name: string, max: number): number | undefined => {
    const v = num(name, 1, max);
    if (v !== undefined && !Number.isInteger(v)) throw new RangeError(`sim:// option ${name} must be an integer`);
    return v;
  };
  const kind = q.get('fail_kind');
  if (kind !== null && kind !== 'transient' && kind !== 'permanent') {
    throw new RangeError('sim:// option fail_kind must be transient or permanent');
  }
  const extraModels = (q.get('models') ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return dropUndefined({
    ...defaults,
    ttftMs: num('ttft_ms', 0) ?? defaults.ttftMs,
    itlMs: num('itl_ms', 0) ?? defaults.itlMs,
    models: [...(defaults.models ?? []), ...extraModels],
    stopProbability: num('stop_probability', 0, 1) ?? defaults.stopProbability,
    failRate: num('fail_rate', 0, 1) ?? defaults.failRate,
    failAfter: int('fail_after') ?? defaults.failAfter,
    failCount: int('fail_count') ?? defaults.failCount,
    failKind: kind ?? defaults.failKind,
    failSeed: int('fail_seed') ?? defaults.failSeed,
    embeddingDim: positive('embedding_dim', MAX_EMBEDDING_DIM) ?? defaults.embeddingDim,
  });
}

function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
