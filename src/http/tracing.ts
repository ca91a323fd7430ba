// The gateway's span per HTTP request (tracing on): a child of the client's W3C traceparent when it
// sent one, ended when the response (a stream included) ends. Submissions pass its traceparent on,
// so admission, the queued job and the worker's spans join the same trace.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Span, Tracer } from '../ports/tracer.ts';

const spans = new WeakMap<FastifyRequest, Span>();

/** The traceparent of the request's span; undefined when tracing is off. */
export function traceparentOf(req: FastifyRequest): string | undefined {
  return spans.get(req)?.traceparent || undefined;
}

export function registerTracing(app: FastifyInstance, tracer: Tracer): void {
  if (!tracer.enabled) return;
  app.addHook('onRequest', async (req) => {
    const header = req.headers.traceparent;
    const route = req.routeOptions.url ?? 'unmatched';
    spans.set(req, tracer.start(`${req.method} ${route}`, {
      parent: typeof header === 'string' ? header : undefined, kind: 'server',
      attributes: { 'http.request.method': req.method, 'http.route': route },
    }));
  });
  app.addHook('onResponse', async (req, reply) => {
    const span = spans.get(req);
    if (!span) return;
    span.setAttributes({ 'http.response.status_code': reply.statusCode });
    const id = reply.getHeader('x-request-id');
    if (typeof id === 'string') span.setAttributes({ 'sluice.request_id': id });
    if (reply.statusCode >= 500) span.fail({ code: String(reply.statusCode) });
    span.end();
  });
}
