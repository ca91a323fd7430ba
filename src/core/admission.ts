// Admission: decide whether a request may run and reserve its quota, atomically, before anything
// is written. estimate = prompt tokens (real tokenizer, chat template included) + effective
// max_tokens; one limiter call reserves 1 request and the estimate in every window, or refuses
// and leaves every counter as it was.
import type { Config } from '../config.ts';
import type { Limiter, WindowState } from '../ports/limiter.ts';
import type { RequestPayload } from '../ports/store.ts';
import type { Principal } from './auth.ts';
import type { ChatInput } from './chat-request.ts';
import { SluiceError } from './errors.ts';
import type { Metrics } from './metrics.ts';
import type { ModelCatalog } from './model-catalog.ts';
import type { QueueSlot } from './queue-depth.ts';
import { windowLimits } from './quota-windows.ts';
import { countPromptTokens } from './tokens.ts';

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
    config: Config; limiter: Limiter; models: ModelCatalog; pressure: QueuePressure; metrics: Metrics; now: () => number;
  }) {}

  /** `queued`: the request will wait in the queue, so it takes a place in the queue depth. */
  async admit(principal: Principal, input: ChatInput, requestId: string, opts: { queued?: boolean } = {}): Promise<Admitted> {
    const { config, metrics } = this.deps;
    await this.deps.models.assertKnown(input.model);
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
      return { ...await this.reserve(principal, input, requestId, depth), ...(slot && { slot }) };
    } catch (err) {
      slot?.release();
      throw err;
    }
  }

  private async reserve(principal: Principal, input: ChatInput, requestId: string, depth: number): Promise<Admitted> {
    const { config, limiter, metrics, now } = this.deps;
    const limits = principal.limits;
    let maxTokens = input.maxTokens ?? limits.maxTokens;
    const degraded = depth >= config.degrade.queueDepth && maxTokens > config.degrade.maxTokens;
    if (degraded) maxTokens = config.degrade.maxTokens;

    const promptTokens = countPromptTokens(input.messages);
    const estimatedTokens = promptTokens + maxTokens;
    const payload: RequestPayload = {
      messages: input.messages, maxTokens,
      ...(input.temperature !== undefined && { temperature: input.temperature }),
      ...(input.topP !== undefined && { topP: input.topP }),
      ...(input.stop !== undefined && { stop: input.stop }),
      ...(input.seed !== undefined && { seed: input.seed }),
    };
    const base = { payload, promptTokens, estimatedTokens, priority: limits.priority, degraded };
    if (principal.unlimited) return { ...base, headers: {}, reserved: false };

    const t = now();
    const windows = windowLimits(limits, t, config.timeZone);
    const result = await limiter.reserve({
      requestId, userId: principal.userId, tokens: estimatedTokens, windows,
      deadlineAt: t + config.worker.requestTimeoutMs + config.reservationGraceMs,
      maxInFlight: limits.maxInFlight,
    });
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
          ? `This request needs ${estimatedTokens} tokens (prompt ${promptTokens} + max_tokens ${maxTokens}), more than your ${exceeded.window} token limit of ${exceeded.limit}; lower max_tokens`
          : `${exceeded.window} ${exceeded.metric} quota exceeded: ${exceeded.used} of ${exceeded.limit} used; resets in ${retryAfter}s`,
        { headers: { 'retry-after': String(retryAfter), ...rateLimitHeaders(result.windows, t) }, window: exceeded.window, metric: exceeded.metric });
    }
    // A duplicate is another submission's reservation (a concurrent replay of the same key): not ours to give back.
    return { ...base, headers: rateLimitHeaders(result.windows, t), reserved: !result.duplicate };
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
