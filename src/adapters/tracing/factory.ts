// Tracing is off unless an OTLP endpoint is configured; the OpenTelemetry SDK is imported only then.
import { NOOP_TRACER, type Tracer } from '../../ports/tracer.ts';

export interface TracingOptions { endpoint?: string | undefined; serviceName: string; role: string }

export async function createTracer(opts: TracingOptions): Promise<Tracer> {
  if (!opts.endpoint) return NOOP_TRACER;
  const { createOtlpTracer } = await import('./otlp.ts');
  return createOtlpTracer({ endpoint: opts.endpoint, serviceName: opts.serviceName, resource: { 'sluice.role': opts.role } });
}
