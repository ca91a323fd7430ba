// Asynchronous requests: POST /v1/requests (202 + id), GET status, GET events (native or OpenAI
// SSE, resumable with Last-Event-ID), DELETE (cancel). Status reads never spend request quota;
// they have their own cheap per-user rate limit.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { fail, parseChatBody } from '../core/chat-request.ts';
import { SluiceError } from '../core/errors.ts';
import { followed, lastEventId, streamNative, streamOpenAI, withSse } from './delivery.ts';
import { traceparentOf } from './tracing.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { idempotencyKeyOf, modeOf } from './openai-routes.ts';
import { requestView } from './render.ts';
import { principalOf } from './server.ts';
import { assertStorableText } from '../core/text.ts';
import type { RequestRecord, Store } from '../ports/store.ts';

/** The longest page GET /v1/requests returns (and its default). */
export const MAX_PAGE = 100;
const DEFAULT_PAGE = 20;

/** `limit`, `before` and the filters of a request list: each at most once, bounded, storable. */
export const pageQuery = (maxLimit: number) => z.object({
  limit: z.string().regex(/^\d{1,4}$/, `limit must be an integer from 1 to ${maxLimit}`).transform(Number)
    .pipe(z.number().min(1, `limit must be an integer from 1 to ${maxLimit}`).max(maxLimit, `limit must be an integer from 1 to ${maxLimit}`)).optional(),
  before: z.string().min(1).max(200).optional(),
  status: z.enum(['queued', 'running', 'completed', 'failed', 'cancelled']).optional(),
  model: z.string().min(1).max(256).optional(),
});

export function parseQuery<T>(schema: z.ZodType<T>, query: unknown): T {
  assertStorableText(query);
  const r = schema.safeParse(query ?? {});
  return r.success ? r.data : fail(r.error);
}

/**
 * One page, newest first: `limit` rows and whether more are older (one extra row is read to
 * know). `next_before` is the cursor of the next page: the last row's id, or null at the end.
 */
export async function requestPage(store: Store, q: { userId?: string; status?: RequestRecord['status']; model?: string; before?: string; limit: number }, view: (r: RequestRecord) => Record<string, unknown>) {
  const rows = await store.listRequests({ ...q, limit: q.limit + 1 });
  const page = rows.slice(0, q.limit);
  const hasMore = rows.length > q.limit;
  return { object: 'list', data: page.map(view), has_more: hasMore, next_before: hasMore ? page.at(-1)!.id : null };
}

export function registerRequestRoutes(app: FastifyInstance, deps: GatewayDeps): void {
  const user = { config: { auth: 'user' as const } };

  async function pollLimit(req: FastifyRequest): Promise<void> {
    const p = principalOf(req);
    if (p.unlimited) return;
    const { limit, windowMs } = deps.config.statusRateLimit;
    const r = await deps.limiter.hit(`poll:${p.userId}`, limit, windowMs);
    if (!r.ok) throw new SluiceError('SLUICE_ERR_RATE_LIMITED', `More than ${limit} status reads in ${windowMs / 1000}s`, { headers: { 'retry-after': String(Math.max(1, Math.ceil(r.retryAfterMs / 1000))) } });
  }

  app.post('/v1/requests', user, async (req, reply) => {
    const input = parseChatBody(req.body);
    const key = idempotencyKeyOf(req);
    // Validates a requested mode, but an async request always runs on a worker: direct mode needs a live caller.
    modeOf(req, input, 'queued');
    const { record, created, admitted } = await deps.requests.submit(principalOf(req), input, { idempotencyKey: key, mode: 'queued', traceparent: traceparentOf(req) });
    reply.headers({ 'x-request-id': record.id, location: `/v1/requests/${record.id}`, ...admitted.headers, ...(admitted.degraded && { 'x-sluice-degraded': '1' }) });
    if (!created) reply.header('idempotent-replayed', 'true');
    return reply.code(202).send(requestView(record));
  });

  // The caller's own requests, newest first, in pages: ?limit= (1-100, default 20), ?before= (the
  // previous page's next_before), ?status=, ?model=. A cursor must be one of the caller's requests.
  app.get('/v1/requests', user, async (req) => {
    await pollLimit(req);
    const q = parseQuery(pageQuery(MAX_PAGE), req.query);
    const p = principalOf(req);
    if (q.before !== undefined) {
      const cursor = await deps.store.getRequest(q.before);
      if (!cursor || cursor.userId !== p.userId) throw new SluiceError('SLUICE_ERR_VALIDATION', 'before must be the id of one of your requests (a page\'s next_before)', { param: 'before' });
    }
    return requestPage(deps.store, { ...q, userId: p.userId, limit: q.limit ?? DEFAULT_PAGE }, requestView);
  });

  app.get('/v1/requests/:id', user, async (req) => {
    await pollLimit(req);
    const { id } = req.params as { id: string };
    return requestView(await deps.requests.get(principalOf(req), id));
  });

  app.get('/v1/requests/:id/events', user, async (req, reply) => {
    const { id } = req.params as { id: string };
    const q = req.query as { last_event_id?: string; format?: string; include_usage?: string };
    const after = lastEventId(req.headers['last-event-id'], q.last_event_id);
    if (q.format !== undefined && q.format !== 'native' && q.format !== 'openai') throw new SluiceError('SLUICE_ERR_VALIDATION', 'format must be "native" or "openai"', { param: 'format' });
    const principal = principalOf(req);
    // Only what the stream needs is kept for its length, not the record read (see FollowedRequest).
    const record = followed(await deps.requests.getToFollow(principal, id));
    const lease = await deps.leases.acquire(principal, crypto.randomUUID());
    try {
      await withSse(deps, reply, { 'x-request-id': record.id }, (sse) => (q.format === 'openai'
        ? streamOpenAI(deps, sse, record, after, { includeUsage: q.include_usage !== 'false' })
        : streamNative(deps, sse, record, after)));
    } finally {
      await lease.release();
    }
  });

  app.delete('/v1/requests/:id', user, async (req) => {
    const { id } = req.params as { id: string };
    return requestView(await deps.requests.cancel(principalOf(req), id));
  });
}
