// OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models, and the edge quick
// test POST /chat. Streaming responses carry `id:` lines (log sequences) and x-request-id, so the
// same stream resumes at /v1/requests/{id}/events?format=openai with Last-Event-ID.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Principal } from '../core/auth.ts';
import { parseChatBody, parseCompletionBody, parseQuickChat, type ChatInput } from '../core/chat-request.ts';
import { SluiceError, catalogue, type ErrorCode } from '../core/errors.ts';
import { mayUse } from '../core/model-access.ts';
import { usageOf } from '../core/ledger.ts';
import type { Lease } from '../core/stream-leases.ts';
import { isEnded, type DeliveryMode, type RequestRecord } from '../ports/store.ts';
import { drainingError } from '../core/drain.ts';
import { awaitEnd, directSource, logSource, streamNative, streamOpenAI, withSse, type EventSource } from './delivery.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { noteResponse } from './access-log.ts';
import { traceparentOf } from './tracing.ts';
import { completionBody } from './render.ts';
import { principalOf } from './server.ts';

/** Delivery mode: the body's sluice_mode, else the x-sluice-mode header, else configuration. */
export function modeOf(req: FastifyRequest, input: ChatInput, fallback: DeliveryMode): DeliveryMode {
  if (input.mode) return input.mode;
  const h = req.headers['x-sluice-mode'];
  if (h === 'direct' || h === 'queued') return h;
  if (h !== undefined) throw new SluiceError('SLUICE_ERR_VALIDATION', 'x-sluice-mode must be "queued" or "direct"', { param: 'x-sluice-mode' });
  return fallback;
}

export function idempotencyKeyOf(req: FastifyRequest): string | undefined {
  const k = req.headers['idempotency-key'];
  if (k === undefined) return undefined;
  if (typeof k !== 'string' || k.length === 0 || k.length > 255) throw new SluiceError('SLUICE_ERR_VALIDATION', 'Idempotency-Key must be 1 to 255 characters', { param: 'Idempotency-Key' });
  return k;
}

/**
 * Aborts when the client goes away before its response is complete. Listens on the response, not
 * the socket: a keep-alive socket outlives thousands of requests and must not collect listeners.
 */
export function clientGone(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) ac.abort(); });
  return ac.signal;
}

interface Started { record: RequestRecord; headers: Record<string, string>; lease: Lease; source: EventSource }

/** Admits, persists and starts a synchronous request; the caller delivers its events. A live listener or a direct call holds a stream lease. */
async function start(deps: GatewayDeps, req: FastifyRequest, reply: FastifyReply, principal: Principal, input: ChatInput, live: boolean): Promise<Started> {
  const mode = modeOf(req, input, deps.config.deliveryMode);
  const leaseId = crypto.randomUUID();
  // Direct mode runs the model in this gateway, outside the worker pool: a lease for the whole call
  // (streaming or not) is what bounds one user's concurrent direct model calls.
  const needsLease = live || mode === 'direct';
  const lease = needsLease ? await deps.leases.acquire(principal, leaseId) : { release: async () => {} };
  try {
    const { record, created, admitted } = await deps.requests.submit(principal, input, { idempotencyKey: idempotencyKeyOf(req), mode, traceparent: traceparentOf(req) });
    // Direct mode runs here, for this caller; a replayed request (same Idempotency-Key) is followed in its log.
    const source = mode === 'direct' && created ? directSource(deps, record) : logSource(deps, record, 0);
    const headers = { 'x-request-id': record.id, 'x-sluice-mode': mode, ...admitted.headers, ...(admitted.degraded && { 'x-sluice-degraded': '1' }) };
    return { record, headers, lease, source };
  } catch (err) {
    await lease.release();
    throw err;
  }
}

async function respond(deps: GatewayDeps, req: FastifyRequest, reply: FastifyReply, input: ChatInput, kind: 'chat' | 'text'): Promise<FastifyReply | void> {
  const principal = principalOf(req);
  const s = await start(deps, req, reply, principal, input, input.stream);
  try {
    if (input.stream) {
      const object = kind === 'text' ? 'text_completion' : 'chat.completion.chunk';
      await withSse(deps, reply, s.headers, (sse) => streamOpenAI(deps, sse, s.record, 0, { includeUsage: input.includeUsage, object, source: s.source }));
      return;
    }
    const done = await awaitEnd(deps, s.record, clientGone(reply), s.source);
    reply.headers(s.headers);
    if (!isEnded(done) && deps.drain.handoff.aborted) {
      throw drainingError(`This instance is shutting down; request ${done.id} goes on elsewhere: read its result at /v1/requests/${done.id}`);
    }
    noteResponse(reply.raw, { usage: usageOf(done.promptTokens, done.completionTokens ?? 0) });
    if (done.status === 'completed') return reply.send(completionBody(done, kind));
    const code = done.error?.code ?? '';
    throw new SluiceError(code in catalogue ? (code as ErrorCode) : 'SLUICE_ERR_INTERNAL', done.error?.message);
  } finally {
    await s.lease.release();
  }
}


export function registerOpenAIRoutes(app: FastifyInstance, deps: GatewayDeps): void {
  const user = { config: { auth: 'user' as const } };

  // Only the models the caller may use; one it may not is as unknown as one that does not exist.
  app.get('/v1/models', user, async (req) => {
    const allowed = principalOf(req).models;
    const ids = (await deps.models.list()).filter((id) => mayUse(allowed, id));
    return { object: 'list', data: ids.map((id) => ({ id, object: 'model', created: 0, owned_by: 'sluice' })) };
  });
  app.get('/v1/models/:model', user, async (req) => {
    const { model } = req.params as { model: string };
    if (!mayUse(principalOf(req).models, model)) throw new SluiceError('SLUICE_ERR_UNKNOWN_MODEL', `The model "${model}" does not exist; see GET /v1/models`, { param: 'model' });
    await deps.models.assertKnown(model);
    return { id: model, object: 'model', created: 0, owned_by: 'sluice' };
  });

  app.post('/v1/chat/completions', user, (req, reply) => respond(deps, req, reply, parseChatBody(req.body), 'chat'));
  app.post('/v1/completions', user, (req, reply) => respond(deps, req, reply, parseCompletionBody(req.body), 'text'));

  // The edge quick test: {"message": "…"} streams native SSE.
  app.post('/chat', user, async (req, reply) => {
    const principal = principalOf(req);
    // The default model is the first the caller may use (admission refuses one it may not).
    const models = (await deps.models.list()).filter((id) => mayUse(principal.models, id));
    const configured = deps.config.models.find((id) => mayUse(principal.models, id));
    const input = parseQuickChat(req.body, configured ?? models[0] ?? 'sim');
    const s = await start(deps, req, reply, principal, input, true);
    try { await withSse(deps, reply, s.headers, (sse) => streamNative(deps, sse, s.record, 0, s.source)); } finally { await s.lease.release(); }
  });
}
