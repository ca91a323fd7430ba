// The access log: one line per HTTP request (request id, user, route, status, duration, tokens
// where the gateway saw them), off by default or sampled (config.accessLog). And the level of an
// error's log line: refusals an operator expects under load are info lines without a stack.
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { EventBody, Usage } from '../ports/bus.ts';
import type { ErrorCode } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';

/** Refusals by design (back-pressure, a policy): worth counting, not worth a stack trace. */
export const EXPECTED_REFUSALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'SLUICE_ERR_QUEUE_FULL', 'SLUICE_ERR_LIMITER_UNAVAILABLE', 'SLUICE_ERR_TOO_MANY_CONNECTIONS', 'SLUICE_ERR_CONNECTION_LIMIT', 'SLUICE_ERR_NOT_READY',
]);

/** 'off', 'on', or the share of requests logged (0..1). */
export type AccessLogSetting = 'off' | 'on' | number;

/** The share of requests an access-log setting logs. */
export function accessLogRate(setting: AccessLogSetting): number {
  return setting === 'on' ? 1 : setting === 'off' ? 0 : setting;
}

/**
 * What the routes learnt about a response that its headers do not show (a hijacked stream's).
 * Only a response the access log will write a line for has an entry (its onRequest hook makes
 * one), so with the log off, or this request not sampled, noting costs one lookup.
 */
interface Noted { requestId?: string; usage?: Usage }
const noted = new WeakMap<ServerResponse, Noted>();

/** Remembers the Sluice request a response is about, and its usage once known, for its access-log line. */
export function noteResponse(res: ServerResponse, what: Noted): void {
  const entry = noted.get(res);
  if (entry) Object.assign(entry, what);
}

/** Notes the usage carried by a burst's terminal event (a stream's last burst). */
export function noteTerminal(res: ServerResponse, events: readonly EventBody[]): void {
  const last = events[events.length - 1];
  if (last && (last.type === 'completed' || last.type === 'error') && last.usage) noteResponse(res, { usage: last.usage });
}

/**
 * Logs each finished request with probability `rate`: `request_id` is the Sluice request the
 * response is about (x-request-id) when there is one, else the HTTP request's own id.
 */
export function registerAccessLog(app: FastifyInstance, setting: AccessLogSetting, logger: Logger, random: () => number = Math.random): void {
  const rate = accessLogRate(setting);
  if (rate <= 0) return;
  // Sampled as the request starts, so the routes note only what a line will be written for.
  app.addHook('onRequest', async (_req, reply) => {
    if (rate >= 1 || random() < rate) noted.set(reply.raw, {});
  });
  app.addHook('onResponse', async (req, reply) => {
    if (!noted.has(reply.raw)) return;
    const header = reply.getHeader('x-request-id');
    const { requestId, usage } = noted.get(reply.raw) ?? {};
    logger.info({
      request_id: requestId ?? (typeof header === 'string' ? header : req.id),
      user: req.principal?.userId ?? null,
      method: req.method,
      route: req.routeOptions.url ?? 'unmatched',
      status: reply.statusCode,
      duration_ms: Math.round(reply.elapsedTime * 10) / 10,
      ...(usage && { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens }),
    }, 'access');
  });
}
