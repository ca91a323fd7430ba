// Admission: decide whether a request may run and reserve its quota, atomically, before anything
// is written. estimate = prompt tokens (real tokenizer, chat template, tools and media included)
// + n x effective max_tokens (an embeddings request: its input tokens, nothing to generate); one
// limiter call reserves 1 request and the estimate in every window, or refuses and leaves every
// counter as it was.
import type { Config } from '../config.ts';
import type { Limiter, WindowState } from '../ports/limiter.ts';
import type { RequestPayload } from '../ports/store.ts';
import { NOOP_TRACER, type Tracer } from '../ports/tracer.ts';
import type { Principal } from './auth.ts';
import type { ChatInput } from './chat-request.ts';
import type { EmbeddingInput } from './embedding-request.ts';
import { SluiceError } from './errors.ts';
import type { Metrics } from './metrics.ts';
import { assertMayUse, assertServes, type ModelKind } from './model-access.ts';
import type { ModelCatalog } from './model-catalog.ts';
import type { QueueSlot } from './queue-depth.ts';
import { windowLimits } from './quota-windows.ts';
import { countPromptTokens, countTextTokens } from './tokens.ts';

export interface Admitted {
  payload: RequestPayload;
  promptTokens: number;
  estimatedTokens: number;
  priority: number;
  /** max_tokens was capped because the queue is over its degradation threshold. */
  degraded: boolean;
  /** x-ratelimit-* headers describing the caller's windows after this reservation. */
  headers: Record<string, string>;
  /** This admission made a reservation (not a duplicate of another's): if the request is never stored, it releases it. */
  reserved: boolean;
  /** The request's place in the queue depth (queued mode): stored with its row, or released. */
  slot?: QueueSlot;
}

/** The queue depth as admission sees it (core/queue-depth.ts). */
export interface QueuePressure { depth(): number; take?(): QueueSlot }

export class Admission {
  constructor(private readonly deps: {
    config: Config; limiter: Limiter; models: ModelCatalog; pressure: QueuePressure; metrics: Metrics; now: () => number; tracer?: Tracer;
    /** Whether a model's deployment takes fields Sluice does not know (vendor extensions); absent = none does. */
    allowsPassthrough?: (model: string) => boolean;
  }) {}

  /** The caller may use the model, it exists, and it serves this kind of request. */
  private async assertModel(principal: Principal, model: string, kind: ModelKind): Promise<void> {
    assertMayUse(principal.models, model);
    await this.deps.models.assertKnown(model);
    assertServes(this.deps.config.catalogue, model, kind);
  }

  /**
   * `queued`: the request will wait in the queue, so it takes a place in the queue depth.
   * `traceparent`: the admission's span, parent of the reservation's (tracing on).
   */
  async admit(principal: Principal, input: ChatInput, requestId: string, opts: { queued?: boolean; traceparent?: string | undefined } = {}): Promise<Admitted> {
    const { config, metrics } = this.deps;
    await this.assertModel(principal, input.model, 'chat');
    // Direct mode calls the model in this request: when every deployment is full (or unhealthy),
    // refuse now with Retry-After, before any quota is reserved, instead of holding the client.
    if (!opts.queued) this.deps.models.assertAvailable(input.model);
    const params = this.forwarded(input);
    const limits = principal.limits;
    if (input.maxTokens !== undefined && input.maxTokens > limits.maxTokens) {
      throw new SluiceError('SLUICE_ERR_MAX_TOKENS_TOO_LARGE', `max_tokens ${input.maxTokens} exceeds ${limits.maxTokens}, the limit of tier "${principal.tier}"`, { param: 'max_tokens' });
    }
    const depth = this.deps.pressure.depth();
    if (depth >= config.queueMaxDepth) {
      metrics.quotaRejections.inc({ reason: 'queue_full' });
      throw new SluiceError('SLUICE_ERR_QUEUE_FULL', undefined, { headers: { 'retry-after': '5' } });
    }
    // Taken in the same synchronous step as the check: concurrent admissions in this process
    // cannot all pass it before any of them counts.
    const slot = opts.queued ? this.deps.pressure.take?.() : undefined;
    try {
      return { ...await this.estimateAndReserve(principal, input, requestId, depth, params, opts.traceparent), ...(slot && { slot }) };
    } catch (err) {
      slot?.release();
      throw err;
    }
  }

  /** The estimate (prompt + n x max_tokens, capped under queue pressure) and its reservation. */
  private async estimateAndReserve(principal: Principal, input: ChatInput, requestId: string, depth: number,
    params: Record<string, unknown> | undefined, traceparent: string | undefined): Promise<Admitted> {
    const { config } = this.deps;
    const limits = principal.limits;
    let maxTokens = input.maxTokens ?? limits.maxTokens;
    const degraded = depth >= config.degrade.queueDepth && maxTokens > config.degrade.maxTokens;
    if (degraded) maxTokens = config.degrade.maxTokens;

    const n = input.n ?? 1;
    const promptTokens = countPromptTokens(input.messages, params?.tools);
    // Every choice may run to max_tokens.
    const estimatedTokens = promptTokens + n * maxTokens;
    const payload: RequestPayload = {
      messages: input.messages, maxTokens,
      ...(input.temperature !== undefined && { temperature: input.temperature }),
      ...(input.topP !== undefined && { topP: input.topP }),
      ...(input.stop !== undefined && { stop: input.stop }),
      ...(input.seed !== undefined && { seed: input.seed }),
      ...(n > 1 && { n }),
      ...(params && { params }),
    };
    const base = { payload, promptTokens, estimatedTokens, priority: limits.priority, degraded };
    const need = { what: `This request needs ${estimatedTokens} tokens (prompt ${promptTokens} + ${n > 1 ? `n ${n} x ` : ''}max_tokens ${maxTokens})`, advice: 'lower max_tokens' };
    return { ...base, ...await this.reserve(principal, requestId, estimatedTokens, need, traceparent) };
  }

  /**
   * An embeddings request: its input tokens are the estimate (nothing is generated), reserved
   * with one request like a chat request's. It runs in the gateway, not through the queue.
   */
  async admitEmbedding(principal: Principal, input: EmbeddingInput, requestId: string): Promise<Admitted> {
    await this.assertModel(principal, input.model, 'embeddings');
    let promptTokens = 0;
    for (const text of input.input) promptTokens += countTextTokens(text);
    const payload: RequestPayload = {
      messages: [], maxTokens: 0, embedding: { input: input.input },
      ...(Object.keys(input.params).length > 0 && { params: input.params }),
    };
    const base = { payload, promptTokens, estimatedTokens: promptTokens, priority: principal.limits.priority, degraded: false };
    const need = { what: `This request needs ${promptTokens} tokens (its input)`, advice: 'send fewer or shorter inputs' };
    return { ...base, ...await this.reserve(principal, requestId, promptTokens, need) };
  }

  /**
   * Reserves 1 request and `estimatedTokens` in every window of the caller, or refuses (429) and
   * changes nothing; `need` words the refusal of a request larger than a whole window.
   */
  private async reserve(principal: Principal, requestId: string, estimatedTokens: number, need: { what: string; advice: string }, traceparent?: string): Promise<{ headers: Record<string, string>; reserved: boolean }> {
    if (principal.unlimited) return { headers: {}, reserved: false };
    const { config, limiter, metrics, now } = this.deps;
    const limits = principal.limits;
    const t = now();
    const windows = windowLimits(limits, t, config.timeZone);
    const tracer = this.deps.tracer ?? NOOP_TRACER;
    const span = tracer.start('sluice.reservation', { parent: traceparent, attributes: { 'sluice.request_id': requestId, 'sluice.estimated_tokens': estimatedTokens } });
    const result = await limiter.reserve({
      requestId, userId: principal.userId, tokens: estimatedTokens, windows,
      deadlineAt: t + config.worker.requestTimeoutMs + config.reservationGraceMs,
      maxInFlight: limits.maxInFlight,
    }).finally(() => span.end());
    if (!result.ok && result.reason === 'in_flight') {
      metrics.quotaRejections.inc({ reason: 'in_flight' });
      const { open, limit } = result.inFlight;
      // A slot frees when any of the user's requests ends; there is no reset time to point at.
      throw new SluiceError('SLUICE_ERR_IN_FLIGHT_LIMIT',
        `Too many requests in flight: ${open} of ${limit} queued or running, the limit of tier "${principal.tier}"; retry when one has finished`,
        { headers: { 'retry-after': '1', ...rateLimitHeaders(result.windows, t) }, limit: 'in_flight' });
    }
    if (!result.ok) {
      const { exceeded } = result;
      metrics.quotaRejections.inc({ reason: `${exceeded.window}_${exceeded.metric}` });
      const retryAfter = Math.max(1, Math.ceil((exceeded.resetAt - t) / 1000));
      const tooBig = exceeded.metric === 'tokens' && estimatedTokens > exceeded.limit;
      throw new SluiceError('SLUICE_ERR_QUOTA_EXCEEDED',
        tooBig
          ? `${need.what}, more than your ${exceeded.window} token limit of ${exceeded.limit}; ${need.advice}`
          : `${exceeded.window} ${exceeded.metric} quota exceeded: ${exceeded.used} of ${exceeded.limit} used; resets in ${retryAfter}s`,
        { headers: { 'retry-after': String(retryAfter), ...rateLimitHeaders(result.windows, t) }, window: exceeded.window, metric: exceeded.metric });
    }
    // A duplicate is another submission's reservation (a concurrent replay of the same key): not ours to give back.
    return { headers: rateLimitHeaders(result.windows, t), reserved: !result.duplicate };
  }

  /** The fields to forward: the known ones, plus unknown ones if the model's deployment takes them (else a 400 naming the first). */
  private forwarded(input: ChatInput): Record<string, unknown> | undefined {
    if (!input.extra) return input.params;
    const unknown = Object.keys(input.extra)[0];
    if (unknown === undefined) return input.params;
    if (!(this.deps.allowsPassthrough?.(input.model) ?? false)) {
      throw new SluiceError('SLUICE_ERR_UNSUPPORTED_PARAM', `${unknown}: not a field Sluice supports, and the deployment of model "${input.model}" does not allow passthrough`, { param: unknown });
    }
    return { ...input.extra, ...input.params };
  }
}

/** OpenAI-style headers; for each metric the window with the least room is the one reported. */
export function rateLimitHeaders(windows: WindowState[], now: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const metric of ['requests', 'tokens'] as const) {
    const tightest = windows.filter((w) => w.metric === metric).sort((a, b) => a.remaining - b.remaining)[0];
    if (!tightest) continue;
    out[`x-ratelimit-limit-${metric}`] = String(tightest.limit);
    out[`x-ratelimit-remaining-${metric}`] = String(Math.max(0, tightest.remaining));
    out[`x-ratelimit-reset-${metric}`] = `${Math.max(0, Math.ceil((tightest.resetAt - now) / 1000))}s`;
  }
  return out;
}
