// GET /v1/ws: many requests on one WebSocket. In: auth, submit, resume {request_id, after}, cancel.
// Out: authenticated, accepted, token, restart, completed, cancelled, error — each event with the
// log sequence, so a client that reconnects resumes with `after` = the last sequence it saw.
// The key comes from Authorization / x-api-key, or a first {"type":"auth"} message; ?api_key= in
// the URL still works but is discouraged (URLs end up in proxy and browser logs).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Authenticator } from '../core/auth.ts';
import { SluiceError } from '../core/errors.ts';
import { CorsPolicy } from './cors.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { WsSession } from './ws-session.ts';

function presentedKey(req: FastifyRequest): string | null {
  const q = req.query as { api_key?: unknown };
  return Authenticator.keyFrom(req.headers) ?? (typeof q.api_key === 'string' && q.api_key !== '' ? q.api_key : null);
}

export function registerWebSocketRoutes(app: FastifyInstance, deps: GatewayDeps): void {
  // The same allow-list as CORS ('*' = any, empty = none).
  const origins = new CorsPolicy(deps.config.corsOrigins);
  app.route({
    method: 'GET',
    url: '/v1/ws',
    // Non-browser clients send no Origin and are unaffected; a browser's must be on the allow-list,
    // or any web page could drive the API with a key the browser holds.
    onRequest: async (req) => {
      const origin = req.headers.origin;
      if (req.ws && origin !== undefined && !origins.allows(origin)) {
        throw new SluiceError('SLUICE_ERR_ORIGIN_NOT_ALLOWED', `Origin ${origin.slice(0, 200)} may not open WebSockets here (see SLUICE_CORS_ORIGINS)`);
      }
    },
    handler: async () => {
      throw new SluiceError('SLUICE_ERR_UPGRADE_REQUIRED', undefined, { headers: { upgrade: 'websocket' } });
    },
    wsHandler: (socket, req) => { new WsSession(socket, deps).open(presentedKey(req)); },
  });
}
