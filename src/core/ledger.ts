// Settlement: ends a request once, writes its ledger row, and replaces its quota reservation by
// the actual charge. The store's finishRequest is the exactly-once guard (one transaction: the
// terminal status and the usage_ledger row whose primary key is the request id); the limiter's
// settle is idempotent by request id, so replays and duplicate deliveries change nothing.
import type { Usage } from '../ports/bus.ts';
import type { Limiter, SettleResult } from '../ports/limiter.ts';
import { endedRecord, type Outcome, type RequestRecord, type Store, type TerminalStatus, type UsageRow } from '../ports/store.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { costOf, type Price } from './pricing.ts';
import { toStorableJson, toStorableText } from './text.ts';

/**
 * What a request is charged. Completed: everything. Cancelled or cut: what the model produced
 * (the prompt was processed); cancelled before any processing: nothing. Failed: refunded.
 */
export function chargeFor(status: TerminalStatus, usage: Usage): { tokens: number; requests: 0 | 1 } {
  if (status === 'failed') return { tokens: 0, requests: 0 };
  if (status === 'cancelled' && usage.totalTokens === 0) return { tokens: 0, requests: 0 };
  return { tokens: usage.totalTokens, requests: 1 };
}

export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens };
}

/** How an attempt ended; the ledger derives the charge and its cost. */
export type Ending = Omit<Outcome, 'chargedTokens' | 'chargedRequests' | 'costUsd'>;

export class Ledger {
  constructor(private readonly deps: {
    store: Store; limiter: Limiter; metrics: Metrics; logger: Logger;
    /** The catalogue price of a public model id (undefined: unpriced, the cost is null). */
    priceOf?: (model: string) => Price | undefined;
    /** Test-only crash points (config.crashPoint). */
    crash?: (point: string) => void;
  }) {}

  /**
   * The request as this call ended it, or null when it had ended already (then another call
   * publishes its terminal event). The ended record is what the store now holds, so its caller
   * need not read it back.
   */
  async settle(record: RequestRecord, ending: Ending): Promise<RequestRecord | null> {
    const charged = chargeFor(ending.status, ending.usage);
    const costUsd = costOf(this.deps.priceOf?.(record.model), ending.usage, charged.requests === 1);
    // A model may produce text the store cannot hold (NUL, a surrogate cut in half): the answer is
    // stored with U+FFFD there rather than failing the write, which would retry and lose it. Every
    // string of the output too: contents, tool-call ids, names and arguments, logprobs entries.
    const outcome: Outcome = {
      ...ending, result: toStorableText(ending.result), chargedTokens: charged.tokens, chargedRequests: charged.requests, costUsd,
      ...(ending.output && { output: toStorableJson(ending.output) }),
      deployment: ending.deployment ?? ending.output?.served?.deployment ?? null,
      ...(ending.error && { error: { ...ending.error, message: toStorableText(ending.error.message) } }),
    };
    const first = await this.deps.store.finishRequest(record.id, outcome);
    if (!first) return null;
    this.deps.crash?.('after-finish');
    await this.settleQuota(record.id, charged);
    const { metrics } = this.deps;
    metrics.requestsFinished.inc({ status: ending.status });
    metrics.tokens.inc({ model: record.model, kind: 'prompt' }, ending.usage.promptTokens);
    metrics.tokens.inc({ model: record.model, kind: 'completion' }, ending.usage.completionTokens);
    if (costUsd) metrics.spend.inc({ model: record.model, user: metrics.spendUser(record.userId) }, costUsd);
    return endedRecord(record, outcome, new Date());
  }

  /**
   * Applies the charge to the limiter. A failure here leaves the reservation in place; the
   * sweeper settles it from the ledger row (settleFromRow), so it is logged, not thrown.
   */
  async settleQuota(requestId: string, charged: { tokens: number; requests: 0 | 1 }): Promise<SettleResult | 'failed'> {
    try {
      return await this.deps.limiter.settle(requestId, charged);
    } catch (err) {
      this.deps.logger.warn({ request_id: requestId, err }, 'quota settle failed; the sweeper will settle it');
      return 'failed';
    }
  }

  /**
   * Applies an ended request's ledger row to the limiter: the row is what the request was billed,
   * so the windows must end on the same charge (for a worker that died between finishRequest and
   * settleQuota). The limiter settles once per id, so calling this after a normal settle, or twice,
   * changes nothing ('already-settled'). 'no-row' while the request has not ended (or was never stored).
   */
  async settleFromRow(requestId: string): Promise<SettleResult | 'failed' | 'no-row'> {
    const row = await this.deps.store.ledgerRow(requestId);
    if (!row) return 'no-row';
    return this.settleWithRow(row);
  }

  /** settleFromRow with the row already read. */
  settleWithRow(row: UsageRow): Promise<SettleResult | 'failed'> {
    return this.settleQuota(row.requestId, { tokens: row.chargedTokens, requests: row.chargedRequests > 0 ? 1 : 0 });
  }
}
