// Builds the configured inspector: the built-in PII detector, the HTTP inspector, or both (their
// findings merged, the earlier hold kept). Null when inspection has nothing to run.
import type { Config } from '../../config.ts';
import type { Finding, InspectInput, Inspection, Inspector } from '../../ports/inspector.ts';
import { HttpInspector } from './http.ts';
import { PiiInspector } from './pii.ts';

/** Several inspectors as one: each sees the same window; overlapping findings keep the first listed. */
export class CompositeInspector implements Inspector {
  readonly name: string;
  constructor(private readonly parts: readonly Inspector[]) { this.name = parts.map((p) => p.name).join('+'); }

  async inspect(input: InspectInput, signal?: AbortSignal): Promise<Inspection> {
    const verdicts = await Promise.all(this.parts.map((p) => p.inspect(input, signal)));
    const findings: Finding[] = [];
    for (const v of verdicts) {
      for (const f of v.findings) if (!findings.some((k) => f.start < k.end && k.start < f.end)) findings.push(f);
    }
    return { findings: findings.sort((a, b) => a.start - b.start), hold: Math.min(...verdicts.map((v) => v.hold)) };
  }

  async close(): Promise<void> { await Promise.all(this.parts.map((p) => p.close())); }
}

export function createInspector(config: Pick<Config, 'inspection'>, opts: { fetch?: typeof fetch; now?: () => number } = {}): Inspector | null {
  const c = config.inspection;
  const parts: Inspector[] = [];
  if (c.builtin === 'pii') parts.push(new PiiInspector());
  if (c.endpoint) {
    parts.push(new HttpInspector({
      endpoint: c.endpoint, timeoutMs: c.timeoutMs, failures: c.circuitFailures, coolDownMs: c.circuitCoolDownMs,
      ...(opts.fetch && { fetch: opts.fetch }), ...(opts.now && { now: opts.now }),
    }));
  }
  if (parts.length === 0) return null;
  return parts.length === 1 ? parts[0]! : new CompositeInspector(parts);
}
