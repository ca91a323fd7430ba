// The built-in simulated model (`sim://`): deterministic, readable English at a configurable pace,
// so the whole gateway runs and is testable with no model server at all.
//
// Guarantees:
// - The text is a pure function of the seed: `req.seed`, or a hash of the messages when absent.
//   A given seed yields the same text whatever the prompt, and a shorter `maxTokens` yields a prefix.
// - Exactly `maxTokens` tokens, then `usage` with finishReason 'length' — unless `stopProbability`
//   (default 0) ends the answer at a sentence end, or a `req.stop` string would appear (that token is
//   withheld), both with 'stop'. completionTokens is always the number of tokens yielded.
// - Aborting the signal ends the iterator promptly *without* a usage chunk and without throwing;
//   the caller already knows it cancelled.
// - Injected failures (for tests) throw ModelError('transient') from a per-backend seeded PRNG.
import { ModelError, type ChatMessage, type EmbeddingRequest, type EmbeddingResult, type ModelBackend, type ModelChunk, type ModelRequest } from '../../ports/model.ts';
import { countPromptTokens, countTextTokens, messageText } from '../../core/tokens.ts';

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
}

/** mulberry32: tiny, fast, good enough for text; returns floats in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a over the messages; the seed used when a request brings none. */
function hashMessages(messages: readonly ChatMessage[]): number {
  let h = 0x811c9dc5;
  const mix = (s: string) => {
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193); }
    h ^= 0xff; h = Math.imul(h, 0x01000193);
  };
  for (const m of messages) { mix(m.role); mix(messageText(m)); mix(m.name ?? ''); }
  return h >>> 0;
}

const VOCABULARY = (
  'the of and to in is that it was for on are with as at be this have from or one had by word but not ' +
  'what all were when we there can an your which their said if do will each about how up out them then ' +
  'she many some so these would other into has more her two like him see time could no make than first ' +
  'been its who now people my made over did down only way find use may water long little very after ' +
  'words called just where most know get through back much before go good new write our used me man ' +
  'too any day same right look think also around another came come work three word must because does ' +
  'part even place well such here take why things help put years different away again off went old ' +
  'number great tell men say small every found still between name should home big give air line set ' +
  'own under read last never us left end along while might next sound below saw something thought both ' +
  'few those always looked show large often together asked house world going want school important ' +
  'until form food keep children feet land side without boy once animals life enough took sometimes ' +
  'four head above kind began almost live page got earth need far hand high year mother light parts ' +
  'country father let night following picture being study second eyes soon times story boys since ' +
  'white days ever paper hard near sentence better best across during today others however sure means ' +
  'knew try told young miles sun ways thing whole hear example heard several change answer room sea ' +
  'against top turned learn point city play toward five using himself usually money seen car morning ' +
  'river garden window bridge mountain music letter question reason simple quiet bright gentle early ' +
  'morning evening summer winter autumn spring road forest village market table kitchen doctor teacher ' +
  'friend family garden idea problem system service stream token request answer model signal window ' +
  'careful quick slow warm cold green blue golden silver open closed ready certain clear strong'
).split(' ');

const SENTENCE_ENDS = ['.', '.', '.', '.', '.', '!', '?'];

/** Endless word pieces forming sentences: "The", " river", " was", ",", " quiet", "." … */
function* simText(seed: number): Generator<string, never> {
  const random = mulberry32(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  let first = true;
  for (;;) {
    const length = 5 + Math.floor(random() * 12);
    for (let w = 0; w < length; w++) {
      let word = pick(VOCABULARY);
      if (w === 0) word = word.charAt(0).toUpperCase() + word.slice(1);
      yield first ? word : ` ${word}`;
      first = false;
      if (w > 1 && w < length - 2 && random() < 0.08) yield ',';
    }
    yield pick(SENTENCE_ENDS);
  }
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
    const stopProbability = this.options.stopProbability ?? 0;
    const stops = (req.stop ?? []).filter((s) => s.length > 0);
    const longestStop = Math.max(0, ...stops.map((s) => s.length));
    const seed = req.seed ?? hashMessages(req.messages);
    const random = mulberry32(seed ^ 0x5bd1e995);
    const text = simText(seed);
    let emitted = 0;
    let tail = '';
    let finishReason: 'stop' | 'length' = 'length';
    // Tokens produced without a pause between them leave together, as an upstream read would bring them.
    let batch: string[] = [];
    while (emitted < req.maxTokens) {
      if (failAt === emitted) break;
      if (emitted > 0 && this.pausesBeforeNext()) {
        if (batch.length > 0) { yield { type: 'tokens', texts: batch }; batch = []; }
        if (!(await this.delay(this.options.itlMs, signal))) return;
      }
      const piece = text.next().value;
      if (stops.length > 0) {
        tail += piece;
        if (stops.some((s) => tail.includes(s))) { finishReason = 'stop'; break; }
        tail = tail.slice(-longestStop);
      }
      if (signal.aborted) return;
      batch.push(piece);
      emitted++;
      if (stopProbability > 0 && isSentenceEnd(piece) && random() < stopProbability) { finishReason = 'stop'; break; }
    }
    if (batch.length > 0) yield { type: 'tokens', texts: batch };
    if (failAt === emitted && finishReason === 'length') throw this.injectedError(emitted);
    if (signal.aborted) return;
    yield { type: 'usage', promptTokens: countPromptTokens(req.messages), completionTokens: emitted, finishReason };
  }

  /**
   * Embeddings: per input, a unit vector of `dimensions` (default 16) floats that is a pure
   * function of the text, after the time-to-first-token delay; base64 (little-endian float32, as
   * OpenAI sends it) when asked. Usage is the input's tokens, reported. Injected failures apply.
   */
  async embed(req: EmbeddingRequest, signal: AbortSignal): Promise<EmbeddingResult> {
    const failAt = this.plannedFailure();
    if (!(await this.delay(this.options.ttftMs, signal))) throw new ModelError('transient', 'embedding aborted');
    if (failAt >= 0) throw this.injectedError(0);
    const dimensions = typeof req.params?.dimensions === 'number' ? req.params.dimensions : SIM_EMBEDDING_DIMENSIONS;
    const base64 = req.params?.encoding_format === 'base64';
    let promptTokens = 0;
    const data = req.input.map((text, index) => {
      promptTokens += countTextTokens(text);
      const vector = simEmbedding(text, dimensions);
      return { index, embedding: base64 ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector };
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

const SIM_EMBEDDING_DIMENSIONS = 16;

/** A unit vector seeded by the text's FNV-1a hash. */
function simEmbedding(text: string, dimensions: number): number[] {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 0x01000193); }
  const random = mulberry32(h >>> 0);
  const v = Array.from({ length: dimensions }, () => random() * 2 - 1);
  let squares = 0;
  for (const x of v) squares += x * x;
  const norm = Math.sqrt(squares) || 1;
  return v.map((x) => x / norm);
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
  });
}

function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
