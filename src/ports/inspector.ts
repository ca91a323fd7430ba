// Content inspection: a window of text in, findings out. The built-in PII detector and an HTTP
// inspector implement it; core/stream-inspection.ts drives it over a stream of tokens.

/** What to do with a finding: replace its span, or stop the request. */
export type FindingAction = 'redact' | 'block';

/** One match in the inspected text. `start`/`end` are UTF-16 offsets into `InspectInput.text`. */
export interface Finding {
  /** What was found: 'email', 'phone', 'card', 'iban', 'ip', 'secret', or an HTTP inspector's own name. */
  type: string;
  start: number;
  end: number;
  /** The text delivered instead of the span (redact). */
  replacement: string;
  action: FindingAction;
}

export interface InspectInput {
  /** Already released context (`text.slice(0, from)`) followed by the text to inspect. */
  text: string;
  /** Where the text to inspect starts; findings starting before it are ignored. */
  from: number;
  /** True when no more text follows (end of the answer, or a prompt): nothing can be held. */
  final: boolean;
  requestId: string;
  kind: 'completion' | 'prompt';
}

export interface Inspection {
  findings: Finding[];
  /**
   * Offset from which the text could still be the start of a finding once more text arrives:
   * the caller holds it back. `text.length` holds nothing.
   */
  hold: number;
}

export interface Inspector {
  /** Names the inspector in logs and metrics. */
  readonly name: string;
  /** Inspects one window; throws InspectorError when it cannot give a verdict. */
  inspect(input: InspectInput, signal?: AbortSignal): Promise<Inspection>;
  close(): Promise<void>;
}

export type InspectorFailure = 'timeout' | 'unavailable' | 'bad_response' | 'circuit_open';

/** The inspector gave no verdict: inline and hybrid modes fail closed on it. */
export class InspectorError extends Error {
  override readonly name = 'InspectorError';
  constructor(readonly kind: InspectorFailure, message: string, options?: { cause?: unknown }) { super(message, options); }
}
