// Tracer port: spans of one request's trace across processes, parented by W3C traceparent strings
// (carried in the HTTP headers, the stored request and the model call), so no context has to
// flow through async calls. The default is a no-op that costs nothing; OTLP export is an adapter.

export type SpanAttributes = Record<string, string | number | boolean>;

export interface Span {
  /** W3C traceparent naming this span, to parent spans in other processes; '' when not recording. */
  readonly traceparent: string;
  setAttributes(attributes: SpanAttributes): void;
  /** Marks the span failed, with the error's code or message. */
  fail(error: unknown): void;
  /** Ends the span (at `endTime`, ms since epoch, or now). */
  end(endTime?: number): void;
}

export interface SpanOptions {
  /** The parent's traceparent; absent or invalid = a new trace. */
  parent?: string | undefined;
  /** Start time, ms since epoch (a span that began before it was known: the queue wait). */
  startTime?: number;
  kind?: 'server' | 'client' | 'internal' | 'consumer' | 'producer';
  attributes?: SpanAttributes;
}

export interface Tracer {
  /** False for the no-op tracer: callers may skip work done only for spans. */
  readonly enabled: boolean;
  start(name: string, opts?: SpanOptions): Span;
  /** Exports what is buffered and stops. */
  close(): Promise<void>;
}

const NOOP_SPAN: Span = { traceparent: '', setAttributes() {}, fail() {}, end() {} };

/** The default: records nothing. */
export const NOOP_TRACER: Tracer = { enabled: false, start: () => NOOP_SPAN, close: async () => {} };

/** Runs `fn` inside a span that ends when it settles (failed if it throws). */
export async function inSpan<T>(tracer: Tracer, name: string, opts: SpanOptions, fn: (span: Span) => Promise<T>): Promise<T> {
  if (!tracer.enabled) return fn(NOOP_SPAN);
  const span = tracer.start(name, opts);
  try { return await fn(span); } catch (err) { span.fail(err); throw err; } finally { span.end(); }
}
