// Usage (GET /v1/usage) and the admin API: users, API keys, tiers, per-user quotas, requests and
// the usage export for billing. Admin routes need an admin key; every change drops the auth cache.
// Every number an admin sends is bounded to what its column holds, every string (body, query,
// path) is storable text, and tiers are looked up by own name only: bad input is a 400, not a
// database error.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { generateApiKey } from '../core/api-keys.ts';
import { INSPECTION_MODES, tierOf } from '../config.ts';
import { fail } from '../core/chat-request.ts';
import { SluiceError } from '../core/errors.ts';
import { effectiveModels } from '../core/model-access.ts';
import { periodsAt, windowLimits, windowStart } from '../core/quota-windows.ts';
import { assertStorableText } from '../core/text.ts';
import type { ApiKeyRecord, QuotaOverride, UserRecord } from '../ports/store.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { requestView } from './render.ts';
import { principalOf } from './server.ts';
import { pageQuery, requestPage } from './request-routes.ts';

/** The largest value of a PostgreSQL `integer` column (max_tokens, concurrent_streams). */
const INT4_MAX = 2 ** 31 - 1;
/** Window limits are `bigint` columns, but they are counted in JS numbers: exact up to 2^53 - 1. */
const limitField = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).nullable().optional();
const int4Field = z.number().int().positive().max(INT4_MAX).nullable().optional();
const quotaBody = z.object({
  requests_per_day: limitField, tokens_per_day: limitField, requests_per_month: limitField, tokens_per_month: limitField,
  max_tokens: int4Field, concurrent_streams: int4Field,
  priority: z.number().int().min(0).max(9).nullable().optional(),
}).strict();
const userBody = z.object({ id: z.string().regex(/^[A-Za-z0-9_.@-]{1,50}$/, 'id: 1-50 of A-Z a-z 0-9 _ . @ -').optional(), name: z.string().max(100).nullable().optional(), email: z.string().max(100).nullable().optional(), tier: z.string().optional() }).strict();
const userPatch = z.object({ name: z.string().max(100).nullable().optional(), email: z.string().max(100).nullable().optional(), tier: z.string().optional(), active: z.boolean().optional() }).strict();
/** A key's own allow-list: model ids (as clients send them in `model`); null or absent = its tier's list. */
const MAX_KEY_MODELS = 256;
const keyModels = z.array(z.string().min(1).max(256)).min(1, 'models must name at least one model; omit it (or send null) for the tier\'s list')
  .max(MAX_KEY_MODELS, `models holds at most ${MAX_KEY_MODELS} model ids`).nullable().optional();
const keyBody = z.object({
  user_id: z.string().min(1), name: z.string().max(100).nullable().optional(), admin: z.boolean().optional(), models: keyModels,
  /** The key's own content-inspection mode; absent or null = its tier's. */
  inspection_mode: z.enum(INSPECTION_MODES).nullable().optional(),
}).strict();

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  assertStorableText(body);
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  return fail(r.error);
}

const userView = (u: UserRecord) => ({ id: u.id, name: u.name, email: u.email, tier: u.tier, active: u.active, created_at: u.createdAt.toISOString() });
const keyView = (k: ApiKeyRecord) => ({ id: k.id, user_id: k.userId, prefix: k.prefix, name: k.name, admin: k.admin, models: k.models, inspection_mode: k.inspectionMode, created_at: k.createdAt.toISOString(), revoked_at: k.revokedAt?.toISOString() ?? null });
/** Sums of many small costs: rounded so that reports do not show 0.30000000000000004. */
const usd = (v: number | null) => (v === null ? null : Number(v.toFixed(10)));
/** A cost in plain decimal notation for the CSV (String(1.25e-7) would be exponent notation). */
const usdText = (v: number | null) => (v === null ? null : v.toFixed(10).replace(/\.?0+$/, ''));
const overrideView = (q: QuotaOverride | null) => q && ({ requests_per_day: q.requestsPerDay, tokens_per_day: q.tokensPerDay, requests_per_month: q.requestsPerMonth, tokens_per_month: q.tokensPerMonth, max_tokens: q.maxTokens, concurrent_streams: q.concurrentStreams, priority: q.priority });

/**
 * Usage export bounds: dates JS, PostgreSQL timestamptz and an ISO file name all hold with a
 * four-digit year (a far-future `to` such as +275760-09-13 is a valid JS date PostgreSQL refuses).
 */
const EARLIEST = Date.UTC(1970, 0, 1);
const LATEST = Date.UTC(10000, 0, 1);

function parseDate(v: string | undefined, name: string, fallback: Date): Date {
  if (v === undefined || v === '') return fallback;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw new SluiceError('SLUICE_ERR_VALIDATION', `${name} must be an ISO date or date-time`, { param: name });
  if (d.getTime() < EARLIEST || d.getTime() > LATEST) throw new SluiceError('SLUICE_ERR_VALIDATION', `${name} must be between 1970-01-01 and 10000-01-01`, { param: name });
  return d;
}

/** A query's parameters, each at most once (a repeated `?a=1&a=2` arrives as an array). */
const single = z.string().optional();
const keysQuery = z.object({ user_id: single });
const requestsQuery = pageQuery(1000).extend({ user_id: single });
const usageQuery = z.object({ from: single, to: single, user_id: single });

/** Path and query strings reach store calls: refused like body text when they cannot be stored. */
async function storableParams(req: FastifyRequest): Promise<void> {
  assertStorableText(req.params);
  assertStorableText(req.query);
}

const csvCell = (v: unknown) => { const s = v === null || v === undefined ? '' : String(v); return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s; };
/** Settled requests a usage view lists, newest first. */
const RECENT_ROWS = 50;

export function registerAccountRoutes(app: FastifyInstance, deps: GatewayDeps): void {
  const { store, auth, config, limiter } = deps;
  const user = { config: { auth: 'user' as const }, preValidation: storableParams };
  const admin = { config: { auth: 'admin' as const }, preValidation: storableParams };
  const tierOrThrow = (tier: string) => { if (!tierOf(config, tier)) throw new SluiceError('SLUICE_ERR_UNKNOWN_TIER', `Unknown tier "${tier}"; configured tiers: ${Object.keys(config.tiers).join(', ')}`, { param: 'tier' }); return tier; };
  const userOrThrow = async (id: string) => { const u = await store.getUser(id); if (!u) throw new SluiceError('SLUICE_ERR_UNKNOWN_USER', `No user "${id}"`); return u; };

  /** This month (the monthly window's period) so far: its bounds, settled requests newest first, and spend per model. */
  async function monthOf(userId: string) {
    const t = deps.now();
    const period = periodsAt(t, config.timeZone).monthly.period;
    const from = new Date(windowStart(period, 'monthly', config.timeZone));
    const to = new Date(t + 1);
    const [recent, byModel, daily] = await Promise.all([
      store.usageRows({ from, to, userId, limit: RECENT_ROWS, newestFirst: true }),
      store.spendByModel(userId, from, to),
      store.usageByDay(userId, from, to, config.timeZone),
    ]);
    // Unpriced models report cost_usd null and add nothing to the total.
    const total = byModel.reduce((sum, m) => sum + (m.costUsd ?? 0), 0);
    return {
      recent: recent.map((r) => ({
        request_id: r.requestId, model: r.model, status: r.status, prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens,
        charged_tokens: r.chargedTokens, cost_usd: r.costUsd, deployment: r.deployment, settled_at: r.settledAt.toISOString(),
      })),
      // Charged tokens and requests per day of the month so far (days with none are absent).
      daily,
      spend: {
        period, from: from.toISOString(), to: new Date(t).toISOString(), currency: 'USD', total_usd: usd(total),
        models: byModel.map((m) => ({ model: m.model, requests: m.requests, prompt_tokens: m.promptTokens, completion_tokens: m.completionTokens, charged_tokens: m.chargedTokens, cost_usd: usd(m.costUsd) })),
      },
    };
  }

  /** The caller's windows (reserved + settled), this month's settled requests and its spend. */
  async function usageOf(userId: string, tier: string) {
    const t = deps.now();
    const limits = await auth.limitsFor(userId, tier);
    const windows = await limiter.usage(userId, windowLimits(limits, t, config.timeZone));
    // The counters hold reserved + settled; the ledger knows the settled part of each period.
    const settledIn = new Map<string, Promise<{ requests: number; tokens: number }>>();
    const settledOf = (w: (typeof windows)[number]) => {
      const key = `${w.window}:${w.period}`;
      if (!settledIn.has(key)) settledIn.set(key, store.usageTotals(userId, new Date(windowStart(w.period, w.window, config.timeZone)), new Date(w.resetAt)));
      return settledIn.get(key)!;
    };
    const [{ recent, spend, daily }, settled, streamsInUse] = await Promise.all([monthOf(userId), Promise.all(windows.map(settledOf)), limiter.activeLeases(userId)]);
    return {
      object: 'sluice.usage', user_id: userId, tier, time_zone: config.timeZone,
      limits: { max_tokens: limits.maxTokens, concurrent_streams: limits.concurrentStreams, priority: limits.priority },
      // Stream slots held now (live streams and direct calls, on every gateway sharing the limiter).
      streams_in_use: streamsInUse,
      windows: windows.map((w, i) => {
        // What requests still running or queued hold: never negative (a settle lands in the ledger
        // a moment before the counter is corrected), never more than the counter.
        const reserved = Math.min(w.used, Math.max(0, w.used - settled[i]![w.metric]));
        return { window: w.window, metric: w.metric, period: w.period, limit: w.limit, used: w.used, reserved, remaining: Math.max(0, w.remaining), reset_at: new Date(w.resetAt).toISOString() };
      }),
      recent, daily, spend,
    };
  }

  app.get('/v1/usage', user, async (req) => {
    const p = principalOf(req);
    // The master key has no quota windows, but what it ran is in the ledger and costs the same.
    if (p.unlimited) return { object: 'sluice.usage', user_id: p.userId, tier: p.tier, unlimited: true, windows: [], ...await monthOf(p.userId) };
    return usageOf(p.userId, p.tier);
  });

  app.get('/admin/tiers', admin, async () => ({ default_tier: config.defaultTier, tiers: config.tiers }));

  app.post('/admin/users', admin, async (req, reply) => {
    const b = parse(userBody, req.body);
    const u = await store.createUser({ id: b.id ?? `user_${randomUUID().slice(0, 8)}`, name: b.name ?? null, email: b.email ?? null, tier: tierOrThrow(b.tier ?? config.defaultTier) });
    return reply.code(201).send(userView(u));
  });
  app.get('/admin/users', admin, async () => ({ object: 'list', data: (await store.listUsers()).map(userView) }));
  app.get('/admin/users/:id', admin, async (req) => userView(await userOrThrow((req.params as { id: string }).id)));
  app.patch('/admin/users/:id', admin, async (req) => {
    const b = parse(userPatch, req.body);
    if (b.tier !== undefined) tierOrThrow(b.tier);
    const u = await store.updateUser((req.params as { id: string }).id, b);
    if (!u) throw new SluiceError('SLUICE_ERR_UNKNOWN_USER');
    auth.invalidate();
    return userView(u);
  });
  app.get('/admin/users/:id/usage', admin, async (req) => {
    const u = await userOrThrow((req.params as { id: string }).id);
    return usageOf(u.id, u.tier);
  });

  app.post('/admin/keys', admin, async (req, reply) => {
    const b = parse(keyBody, req.body);
    const u = await userOrThrow(b.user_id);
    const { key, hash, prefix } = generateApiKey();
    const models = b.models ? [...new Set(b.models)] : null;
    const k = await store.createApiKey({ id: `key_${randomUUID().replaceAll('-', '').slice(0, 16)}`, userId: u.id, hash, prefix, name: b.name ?? null, admin: b.admin ?? false, models, inspectionMode: b.inspection_mode ?? null });
    // What the key may use today: its own list within its user's tier's (which may change later).
    const effective = effectiveModels(tierOf(config, u.tier)?.models, models);
    return reply.code(201).send({ ...keyView(k), effective_models: effective && [...effective], key, note: 'The key is shown once; only its hash is stored.' });
  });
  app.get('/admin/keys', admin, async (req) => {
    const q = parse(keysQuery, req.query);
    return { object: 'list', data: (await store.listApiKeys(q.user_id)).map(keyView) };
  });
  app.delete('/admin/keys/:id', admin, async (req) => {
    const k = await store.revokeApiKey((req.params as { id: string }).id);
    if (!k) throw new SluiceError('SLUICE_ERR_NOT_FOUND', 'No such API key');
    auth.invalidate();
    return keyView(k);
  });

  app.get('/admin/quotas/:userId', admin, async (req) => {
    const u = await userOrThrow((req.params as { userId: string }).userId);
    const o = await store.getQuotaOverride(u.id);
    return { user_id: u.id, tier: u.tier, override: overrideView(o), effective: auth.effectiveLimits(u.tier, o) };
  });
  app.put('/admin/quotas/:userId', admin, async (req) => {
    const u = await userOrThrow((req.params as { userId: string }).userId);
    const b = parse(quotaBody, req.body);
    const q = await store.setQuotaOverride({
      userId: u.id, requestsPerDay: b.requests_per_day ?? null, tokensPerDay: b.tokens_per_day ?? null,
      requestsPerMonth: b.requests_per_month ?? null, tokensPerMonth: b.tokens_per_month ?? null,
      maxTokens: b.max_tokens ?? null, concurrentStreams: b.concurrent_streams ?? null, priority: b.priority ?? null,
    });
    auth.invalidate();
    return { user_id: u.id, tier: u.tier, override: overrideView(q), effective: auth.effectiveLimits(u.tier, q) };
  });
  app.delete('/admin/quotas/:userId', admin, async (req) => {
    const u = await userOrThrow((req.params as { userId: string }).userId);
    const existed = await store.deleteQuotaOverride(u.id);
    auth.invalidate();
    return { user_id: u.id, deleted: existed, effective: auth.effectiveLimits(u.tier, null) };
  });

  app.get('/admin/requests', admin, async (req) => {
    const q = parse(requestsQuery, req.query);
    if (q.before !== undefined && !await store.getRequest(q.before)) throw new SluiceError('SLUICE_ERR_VALIDATION', 'before must be the id of a request (a page\'s next_before)', { param: 'before' });
    return requestPage(store, {
      ...(q.user_id && { userId: q.user_id }), ...(q.status && { status: q.status }), ...(q.model && { model: q.model }),
      ...(q.before && { before: q.before }), limit: q.limit ?? 100,
    }, (r) => ({ ...requestView(r), user_id: r.userId }));
  });

  app.get('/admin/usage.csv', admin, async (req, reply) => {
    const q = parse(usageQuery, req.query);
    const to = parseDate(q.to, 'to', new Date(deps.now() + 1));
    const from = parseDate(q.from, 'from', new Date(to.getTime() - 31 * 86_400_000));
    if (from >= to) throw new SluiceError('SLUICE_ERR_VALIDATION', 'from must be before to', { param: 'from' });
    const rows = await store.usageRows({ from, to, ...(q.user_id && { userId: q.user_id }) });
    // New columns go at the end, so that readers of the earlier columns by position keep working.
    const header = 'request_id,user_id,key_id,model,status,prompt_tokens,completion_tokens,charged_tokens,charged_requests,created_at,settled_at,cost_usd,deployment';
    const lines = rows.map((r) => [r.requestId, r.userId, r.keyId, r.model, r.status, r.promptTokens, r.completionTokens, r.chargedTokens, r.chargedRequests, r.createdAt.toISOString(), r.settledAt.toISOString(), usdText(r.costUsd), r.deployment].map(csvCell).join(','));
    return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="usage-${from.toISOString().slice(0, 10)}-${to.toISOString().slice(0, 10)}.csv"`).send(`${[header, ...lines].join('\n')}\n`);
  });
}
