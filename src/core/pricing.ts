// What a settled request costs, from the catalogue's price of its public model id. Quotas stay in
// tokens: the cost is recorded for billing and reports, never checked against a limit.
import type { Config } from '../config.ts';
import type { Usage } from '../ports/bus.ts';

export interface Price { inputPerMillion: number; outputPerMillion: number }

/** The model's price, or undefined when it has none (or is not in the catalogue). */
export function priceOf(catalogue: Config['catalogue'], model: string): Price | undefined {
  return Object.hasOwn(catalogue, model) ? catalogue[model]!.price : undefined;
}

/**
 * USD for a charge: prompt tokens at the input price plus completion tokens at the output price;
 * 0 for a request that was not charged (a refund), null when the model has no price.
 */
export function costOf(price: Price | undefined, usage: Pick<Usage, 'promptTokens' | 'completionTokens'>, charged: boolean): number | null {
  if (!price) return null;
  if (!charged) return 0;
  return (usage.promptTokens * price.inputPerMillion + usage.completionTokens * price.outputPerMillion) / 1e6;
}
