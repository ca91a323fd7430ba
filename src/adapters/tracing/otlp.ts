// OpenTelemetry tracer exporting spans over OTLP/HTTP (JSON) to `<endpoint>/v1/traces`. Loaded only
// when tracing is configured (factory.ts), so the default start loads none of the SDK.
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span as OtelSpan } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { Span, SpanAttributes, SpanOptions, Tracer } from '../../ports/tracer.ts';

const KINDS = { server: SpanKind.SERVER, client: SpanKind.CLIENT, internal: SpanKind.INTERNAL, consumer: SpanKind.CONSUMER, producer: SpanKind.PRODUCER };
const w3c = new W3CTraceContextPropagator();

export interface OtlpTracerOptions {
  /** OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://collector:4318. */
  endpoint: string;
  serviceName: string;
  /** Attributes of every span's resource (the role). */
  resource?: SpanAttributes;
}

function parentContext(traceparent: string | undefined): Context {
  if (!traceparent) return ROOT_CONTEXT;
  return w3c.extract(ROOT_CONTEXT, { traceparent }, { get: (c, k) => c[k as 'traceparent'], keys: (c) => Object.keys(c) });
}

function traceparentOf(span: OtelSpan): string {
  const carrier: Record<string, string> = {};
  w3c.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, { set: (c, k, v) => { c[k] = v; } });
  return carrier.traceparent ?? '';
}

class OtlpSpan implements Span {
  readonly traceparent: string;
  constructor(private readonly span: OtelSpan) { this.traceparent = span.isRecording() ? traceparentOf(span) : ''; }
  setAttributes(attributes: SpanAttributes): void { this.span.setAttributes(attributes); }
  fail(error: unknown): void {
    const e = error as { code?: unknown; message?: unknown };
    this.span.setStatus({ code: SpanStatusCode.ERROR, message: String(e?.code ?? e?.message ?? error) });
  }
  end(endTime?: number): void { this.span.end(endTime); }
}

export function createOtlpTracer(opts: OtlpTracerOptions): Tracer {
  const exporter = new OTLPTraceExporter({ url: `${opts.endpoint.replace(/\/+$/, '')}/v1/traces` });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': opts.serviceName, ...opts.resource }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 1000 })],
  });
  // Only for libraries that inject through the global API; Sluice passes traceparents itself.
  propagation.setGlobalPropagator(w3c);
  const tracer = provider.getTracer('sluice');
  return {
    enabled: true,
    start(name: string, o: SpanOptions = {}): Span {
      const span = tracer.startSpan(name, {
        kind: KINDS[o.kind ?? 'internal'], ...(o.startTime !== undefined && { startTime: o.startTime }), ...(o.attributes && { attributes: o.attributes }),
      }, parentContext(o.parent) ?? context.active());
      return new OtlpSpan(span);
    },
    close: () => provider.shutdown(),
  };
}
