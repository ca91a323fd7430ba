// GET /v1/ws: many requests on one WebSocket. In: submit, resume {request_id, after}, cancel.
// Out: accepted, token, restart, completed, error — each with the log sequence, so a client
// that reconnects resumes with `after` = the last sequence it saw.
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import type { Principal } from '../core/auth.ts';
import { Authenticator } from '../core/auth.ts';
import { parseChatBody } from '../core/chat-request.ts';
import { SluiceError, isSluiceError } from '../core/errors.ts';
import type { LogEvent } from '../ports/bus.ts';
import type { RequestRecord } from '../ports/store.ts';
import { deliverEvents } from './delivery.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { openaiUsage, requestView } from './render.ts';

type Incoming =
  | { type: 'submit'; id?: string; request: unknown; idempotency_key?: string }
  | { type: 'resume'; request_id: string; after?: number }
  | { type: 'cancel'; request_id: string };

function wsEvent(e: LogEvent, requestId: string): Record<string, unknown> {
  switch (e.type) {
    case 'token': return { type: 'token', request_id: requestId, sequence: e.seq, attempt: e.attempt, token: e.text };
    case 'restart': return { type: 'restart', request_id: requestId, sequence: e.seq, attempt: e.attempt };
    case 'completed': return { type: 'completed', request_id: requestId, sequence: e.seq, finish_reason: e.finishReason, usage: openaiUsage(e.usage) };
    case 'error': return { type: 'error', request_id: requestId, sequence: e.seq, status: e.status, error: { code: e.code, message: e.message }, usage: openaiUsage(e.usage) };
  }
}

export function registerWebSocketRoutes(app: FastifyInstance, deps: GatewayDeps): void {
  app.get('/v1/ws', { websocket: true }, async (socket: WebSocket, req) => {
    const send = (msg: Record<string, unknown>) => { if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(msg)); };
    const fail = (err: unknown, ref: Record<string, unknown> = {}) => {
      const se = isSluiceError(err) ? err : new SluiceError('SLUICE_ERR_INTERNAL');
      if (!isSluiceError(err)) deps.logger.error({ err }, 'websocket message failed');
      send({ type: 'error', ...ref, error: se.toJSON().error });
    };
    let principal: Principal;
    try {
      const q = req.query as { api_key?: string };
      principal = await deps.auth.authenticate(Authenticator.keyFrom(req.headers) ?? q.api_key ?? null);
    } catch (err) {
      fail(err);
      socket.close(4401, 'unauthorized');
      return;
    }
    const following = new Map<string, AbortController>();
    socket.on('close', () => { for (const ac of following.values()) ac.abort(); });

    const follow = (record: RequestRecord, after: number) => {
      following.get(record.id)?.abort();
      const ac = new AbortController();
      following.set(record.id, ac);
      void deliverEvents(deps, record, after, ac.signal, (events) => { for (const e of events) send(wsEvent(e, record.id)); })
        .then(async (end) => {
          if (end === 'stored') { const r = await deps.store.getRequest(record.id); if (r) send({ type: r.status === 'completed' ? 'completed' : 'error', ...requestView(r), replayed_from: 'store' }); }
        })
        .catch((err) => fail(err, { request_id: record.id }))
        .finally(() => { if (following.get(record.id) === ac) following.delete(record.id); });
    };

    socket.on('message', (raw) => {
      void (async () => {
        let msg: Incoming;
        try { msg = JSON.parse(String(raw)) as Incoming; } catch { return fail(new SluiceError('SLUICE_ERR_BAD_JSON')); }
        const ref = { ...('id' in msg && msg.id !== undefined && { id: msg.id }), ...('request_id' in msg && { request_id: msg.request_id }) };
        try {
          if (msg.type === 'submit') {
            const input = parseChatBody(msg.request);
            const { record } = await deps.requests.submit(principal, input, { idempotencyKey: msg.idempotency_key, mode: 'queued' });
            send({ type: 'accepted', ...ref, request_id: record.id, status: record.status });
            follow(record, 0);
          } else if (msg.type === 'resume') {
            const after = msg.after ?? 0;
            if (!Number.isInteger(after) || after < 0) throw new SluiceError('SLUICE_ERR_BAD_LAST_EVENT_ID', 'after must be a non-negative integer', { param: 'after' });
            follow(await deps.requests.get(principal, String(msg.request_id)), after);
          } else if (msg.type === 'cancel') {
            const r = await deps.requests.cancel(principal, String(msg.request_id));
            send({ type: 'cancelled', request_id: r.id, status: r.status });
          } else {
            throw new SluiceError('SLUICE_ERR_VALIDATION', 'type must be submit, resume or cancel', { param: 'type' });
          }
        } catch (err) { fail(err, ref); }
      })();
    });
  });
}
