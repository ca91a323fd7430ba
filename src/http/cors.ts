// CORS from the configured origin list (config.corsOrigins): closed when empty, '*' for any
// origin, else exact origins. Sluice authenticates with bearer keys, never cookies, so no
// credentials are ever allowed and '*' can be answered literally.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { SluiceError } from '../core/errors.ts';

/** Request headers a browser may send: authentication, JSON bodies, idempotency, resume, delivery mode. */
const ALLOWED_HEADERS = 'authorization, content-type, x-api-key, idempotency-key, last-event-id, x-sluice-mode';
const ALLOWED_METHODS = 'GET, POST, PUT, PATCH, DELETE, OPTIONS';
/** Response headers scripts may read: ids, quota state, back-off and degradation hints. */
const EXPOSED_HEADERS = [
  'x-request-id', 'x-sluice-mode', 'x-sluice-degraded', 'idempotent-replayed', 'retry-after', 'location',
  ...['limit', 'remaining', 'reset'].flatMap((k) => [`x-ratelimit-${k}-requests`, `x-ratelimit-${k}-tokens`]),
].join(', ');
/** Browsers cache a preflight this long (Chromium caps it at 2 hours). */
const PREFLIGHT_MAX_AGE_S = '600';

export class CorsPolicy {
  private readonly anyOrigin: boolean;
  private readonly origins: ReadonlySet<string>;

  constructor(origins: readonly string[]) {
    this.anyOrigin = origins.includes('*');
    this.origins = new Set(origins);
  }

  allows(origin: string): boolean { return this.anyOrigin || this.origins.has(origin); }

  /** Headers for an actual (non-preflight) response to an allowed origin. */
  responseHeaders(origin: string): Record<string, string> {
    return { 'access-control-allow-origin': this.anyOrigin ? '*' : origin, 'access-control-expose-headers': EXPOSED_HEADERS, vary: 'origin' };
  }

  /** Headers of the answer to an allowed origin's preflight. */
  preflightHeaders(origin: string): Record<string, string> {
    return {
      'access-control-allow-origin': this.anyOrigin ? '*' : origin,
      'access-control-allow-methods': ALLOWED_METHODS,
      'access-control-allow-headers': ALLOWED_HEADERS,
      'access-control-max-age': PREFLIGHT_MAX_AGE_S,
      vary: 'origin',
    };
  }
}

/** A browser's CORS preflight: OPTIONS with Origin and Access-Control-Request-Method. */
function isPreflight(req: FastifyRequest): boolean {
  return req.method === 'OPTIONS' && typeof req.headers.origin === 'string' && req.headers['access-control-request-method'] !== undefined;
}

/**
 * Answers preflights before authentication (browsers send no key on them) and marks responses to
 * allowed origins. A disallowed origin's preflight is refused with a catalogue error; its other
 * requests get no CORS headers, so the browser withholds the response from the page.
 */
export function registerCors(app: FastifyInstance, origins: readonly string[]): void {
  const policy = new CorsPolicy(origins);
  app.addHook('onRequest', async (req, reply) => {
    const origin = req.headers.origin;
    if (isPreflight(req)) {
      if (!origin || !policy.allows(origin)) throw new SluiceError('SLUICE_ERR_ORIGIN_NOT_ALLOWED', `Origin ${origin ?? '(none)'} is not allowed to call this API`);
      return reply.code(204).headers(policy.preflightHeaders(origin)).send();
    }
    if (origin && policy.allows(origin)) reply.headers(policy.responseHeaders(origin));
    return undefined;
  });
}
