// The gateway's HTTP server: error mapping into the catalogue, authentication, metrics, and the
// route modules (OpenAI-compatible, asynchronous requests, WebSocket, usage and admin, ops).
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import type { Config } from '../config.ts';
import { Authenticator, type Principal } from '../core/auth.ts';
import { drainingError } from '../core/drain.ts';
import { SluiceError, isSluiceError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { registerOpenAIRoutes } from './openai-routes.ts';
import { registerEmbeddingRoutes } from './embedding-routes.ts';
import { registerRequestRoutes } from './request-routes.ts';
import { registerWebSocketRoutes } from './ws-routes.ts';
import { registerAccountRoutes } from './account-routes.ts';
import { registerConsoleRoutes } from './console-routes.ts';
import { guardConnections, processCap } from './connection-guard.ts';
import { registerCors } from './cors.ts';
import { EXPECTED_REFUSALS, registerAccessLog } from './access-log.ts';
import { registerTracing } from './tracing.ts';
import { NOOP_TRACER, type Tracer } from '../ports/tracer.ts';
import { SECURITY_HEADERS } from './response-headers.ts';
import { clientErrorHandler, isClientAbort, transportOptions } from './transport.ts';

export type AuthLevel = 'none' | 'user' | 'admin';

declare module 'fastify' {
  interface FastifyRequest { principal: Principal | null }
  interface FastifyContextConfig { auth?: AuthLevel }
}

/** The authenticated caller of a route registered with auth 'user' or 'admin'. */
export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw new SluiceError('SLUICE_ERR_MISSING_API_KEY');
  return req.principal;
}

/** Maps Fastify's and Node's own failures into the catalogue, in one place. */
function toSluiceError(err: unknown): SluiceError {
  if (isSluiceError(err)) return err;
  if (isClientAbort(err)) return new SluiceError('SLUICE_ERR_CLIENT_ABORTED');
  const e = err as { code?: string; statusCode?: number; message?: string; validation?: unknown };
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new SluiceError('SLUICE_ERR_BODY_TOO_LARGE');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new SluiceError('SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return new SluiceError('SLUICE_ERR_BAD_JSON', 'Request body is empty; send a JSON object');
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return new SluiceError('SLUICE_ERR_BAD_JSON');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH': return new SluiceError('SLUICE_ERR_BAD_JSON', 'Content-Length does not match the body');
    // Ids are short: one longer than any route accepts names nothing that exists.
    case 'FST_ERR_MAX_PARAM_LENGTH': return new SluiceError('SLUICE_ERR_NOT_FOUND', 'No such resource: the id in the path is too long');
    case 'FST_ERR_BAD_URL': return new SluiceError('SLUICE_ERR_BAD_REQUEST', 'The URL path is not validly encoded');
    default: break;
  }
  if (err instanceof SyntaxError) return new SluiceError('SLUICE_ERR_BAD_JSON', `Request body is not valid JSON: ${err.message}`);
  if (e.statusCode === 413) return new SluiceError('SLUICE_ERR_BODY_TOO_LARGE');
  if (e.statusCode === 405) return new SluiceError('SLUICE_ERR_METHOD_NOT_ALLOWED');
  if (e.statusCode === 400 && e.validation) return new SluiceError('SLUICE_ERR_VALIDATION', e.message);
  return new SluiceError('SLUICE_ERR_INTERNAL', undefined, undefined, { cause: err });
}

export function sendError(reply: FastifyReply, err: SluiceError): FastifyReply {
  if (err.details?.headers) reply.headers(err.details.headers);
  return reply.code(err.status).type('application/json').send(err.toJSON());
}

/**
 * Headers on every response (security), and `connection: close` on one sent before its request's
 * body was read (an early 401 or 413): the socket closes after the answer instead of staying open
 * while the client trickles a body nobody will use.
 */
function registerResponseHeaders(app: FastifyInstance): void {
  app.addHook('onRequest', async (_req, reply) => { reply.headers(SECURITY_HEADERS); });
  app.addHook('onSend', async (req, reply) => { if (!req.raw.complete) reply.header('connection', 'close'); });
}

/** Failures before routing (bad URL encoding, an over-long path parameter) get the catalogue shape too. */
function frameworkError(err: Error, _req: FastifyRequest, reply: FastifyReply): FastifyReply {
  reply.headers(SECURITY_HEADERS);
  return sendError(reply, toSluiceError(err));
}

/** No per-request log lines: they would cost more than the request on the hot path; errors are still logged. */
const quietRequests = () => new LogController({ disableRequestLogging: true });

/** checks: each dependency 'ok' or not; deployments: each model deployment's state and load (model routers). */
type Readiness = () => Promise<{ ok: boolean; checks: Record<string, string>; deployments?: Record<string, unknown> }>;

const OPS_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * Draining (core/drain.ts): every API request is refused with 503 SLUICE_ERR_DRAINING and
 * Retry-After, on a connection that then closes (the client reconnects, through its load balancer,
 * to another instance); probes and metrics still answer. Until then, each response is tracked, so
 * the drain can wait for the ones being served. WebSockets are not waited for: the hand-off closes
 * them with 1012 (they resume with `after`).
 */
function registerDrain(app: FastifyInstance, drain: GatewayDeps['drain']): void {
  app.addHook('onRequest', async (req, reply) => {
    if (OPS_ROUTES.has(req.routeOptions.url ?? '')) return;
    if (drain.draining) {
      reply.header('connection', 'close');
      return sendError(reply, drainingError());
    }
    if (req.ws) return;
    drain.track(reply.raw);
  });
}

/** Probes and metrics: every role serves these, so workers and ledgers are scraped and probed too. */
function registerOpsRoutes(app: FastifyInstance, deps: { metrics: Metrics; readiness: Readiness }): void {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const ready = await deps.readiness();
    return reply.code(ready.ok ? 200 : 503).send(ready);
  });
  app.get('/metrics', async (_req, reply) => reply.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics()));
}

/** The HTTP server of a worker or ledger process: probes and metrics only. */
export async function buildOpsServer(deps: { logger: Logger; metrics: Metrics; readiness: Readiness; http: Config['http'] }): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger, logController: quietRequests(), forceCloseConnections: true,
    ...transportOptions(deps.http),
    clientErrorHandler: clientErrorHandler(deps.logger), frameworkErrors: frameworkError,
  });
  registerResponseHeaders(app);
  registerOpsRoutes(app, deps);
  app.setNotFoundHandler((req, reply) => sendError(reply, new SluiceError('SLUICE_ERR_ROUTE_NOT_FOUND', `No route ${req.method} ${req.url.split('?')[0]} (this process serves only /healthz, /readyz and /metrics)`)));
  return app;
}

export async function buildServer(deps: GatewayDeps & { config: Config; auth: Authenticator; logger: Logger; metrics: Metrics; tracer?: Tracer }): Promise<FastifyInstance> {
  const { config, auth, logger, metrics } = deps;
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: quietRequests(),
    bodyLimit: config.bodyLimitBytes,
    genReqId: () => crypto.randomUUID(),
    return503OnClosing: true,
    forceCloseConnections: true,
    keepAliveTimeout: 65_000,
    ...transportOptions(config.http),
    clientErrorHandler: clientErrorHandler(logger),
    frameworkErrors: frameworkError,
  });
  guardConnections(app.server, {
    maxPerAddress: config.http.maxConnectionsPerIp,
    maxTotal: processCap(config.http.maxConnections),
    onRefused: (reason) => metrics.connectionsRefused.inc({ reason }),
  });
  app.decorateRequest('principal', null);

  // Any content type is read as JSON (curl -d sends form encoding by default); the body limit applies.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.length === 0) return done(null, undefined);
    try { done(null, JSON.parse(text)); } catch (err) { done(new SluiceError('SLUICE_ERR_BAD_JSON', `Request body is not valid JSON: ${(err as Error).message}`), undefined); }
  });

  app.setErrorHandler((err, req, reply) => {
    const se = toSluiceError(err);
    if (se.code === 'SLUICE_ERR_CLIENT_ABORTED') req.log.debug({ request_id: req.id, code: se.code }, 'client went away mid-request');
    else if (EXPECTED_REFUSALS.has(se.code)) req.log.info({ request_id: req.id, code: se.code, status: se.status, route: req.routeOptions.url }, 'request refused');
    else if (se.status >= 500) req.log.error({ err, req, request_id: req.id, code: se.code }, 'request failed');
    return sendError(reply, se);
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, new SluiceError('SLUICE_ERR_ROUTE_NOT_FOUND', `No route ${req.method} ${req.url.split('?')[0]}`)));

  // Before any hook that may answer (CORS, draining, authentication): every response gets its line.
  registerAccessLog(app, config.accessLog, logger);
  registerResponseHeaders(app);
  // First, so the span covers authentication too.
  registerTracing(app, deps.tracer ?? NOOP_TRACER);
  // Before authentication: a preflight carries no key.
  registerCors(app, config.corsOrigins);
  registerDrain(app, deps.drain);
  app.addHook('onRequest', async (req) => {
    const level = req.routeOptions.config.auth ?? 'none';
    if (level === 'none') return;
    const principal = await auth.authenticate(Authenticator.keyFrom(req.headers));
    if (level === 'admin' && !principal.admin) throw new SluiceError('SLUICE_ERR_ADMIN_REQUIRED');
    req.principal = principal;
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  await app.register(websocket, { options: { maxPayload: config.bodyLimitBytes } });

  registerOpsRoutes(app, deps);

  registerOpenAIRoutes(app, deps);
  registerEmbeddingRoutes(app, deps);
  registerRequestRoutes(app, deps);
  registerWebSocketRoutes(app, deps);
  registerAccountRoutes(app, deps);
  registerConsoleRoutes(app);
  return app;
}
