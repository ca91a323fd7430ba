// Authentication: resolves an API key to a principal (user, key, admin right, effective limits).
// The master key (SLUICE_MASTER_KEY, or the generated development key) has every right and no
// quota, as LiteLLM's master key does. Other keys live in the store, hashed; lookups are cached
// for a few seconds because they sit on every request's path (revocation in this process clears
// the cache at once; other processes see it within the cache TTL).
import { tierOf, type Config, type InspectionMode, type Tier } from '../config.ts';
import type { QuotaOverride, Store } from '../ports/store.ts';
import { timingSafeEqual } from 'node:crypto';
import { hashApiKey } from './api-keys.ts';
import { SluiceError } from './errors.ts';
import { effectiveModels, type ModelAllowList } from './model-access.ts';

export type EffectiveLimits = Tier;

export interface Principal {
  userId: string;
  keyId: string | null;
  admin: boolean;
  /** Master key: no quota reservation (usage is still recorded in the ledger). */
  unlimited: boolean;
  tier: string;
  limits: EffectiveLimits;
  /** The models this key may use (its tier's list narrowed by its own); null = every model. */
  models: ModelAllowList;
  /** The key's own content-inspection mode; absent or null = its tier's (core/inspection.ts). */
  inspection?: InspectionMode | null;
}

const CACHE_TTL_MS = 5_000;
const CACHE_MAX = 10_000;

export class Authenticator {
  private readonly cache = new Map<string, { principal: Principal; until: number }>();

  constructor(
    private readonly store: Store,
    private readonly config: Config,
    masterKey: string,
    private readonly now: () => number = Date.now,
  ) {
    this.masterHash = Buffer.from(hashApiKey(masterKey), 'hex');
    this.masterPrincipal = masterPrincipal(config);
  }

  /** Hashed once: a presented key is hashed once per request and compared in constant time. */
  private readonly masterHash: Buffer;
  private readonly masterPrincipal: Principal;

  /** Reads the key from `Authorization: Bearer …` or `x-api-key`. */
  static keyFrom(headers: Record<string, string | string[] | undefined>): string | null {
    const auth = headers.authorization;
    if (typeof auth === 'string') {
      const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
      if (m?.[1]) return m[1].trim();
    }
    const x = headers['x-api-key'];
    return typeof x === 'string' && x.trim() ? x.trim() : null;
  }

  async authenticate(key: string | null): Promise<Principal> {
    if (!key) throw new SluiceError('SLUICE_ERR_MISSING_API_KEY');
    const hash = hashApiKey(key);
    if (timingSafeEqual(Buffer.from(hash, 'hex'), this.masterHash)) return this.masterPrincipal;
    const hit = this.cache.get(hash);
    if (hit && hit.until > this.now()) return hit.principal;
    const principal = await this.lookup(hash);
    if (this.cache.size >= CACHE_MAX) this.cache.clear();
    this.cache.set(hash, { principal, until: this.now() + CACHE_TTL_MS });
    return principal;
  }

  /** Forget cached principals (after an admin change to keys, users, tiers or quotas). */
  invalidate(): void { this.cache.clear(); }

  async limitsFor(userId: string, tier: string): Promise<EffectiveLimits> {
    return this.effectiveLimits(tier, await this.store.getQuotaOverride(userId));
  }

  /** A tier's limits with an override's non-null fields on top. */
  effectiveLimits(tier: string, o: QuotaOverride | null): EffectiveLimits {
    const base = tierOf(this.config, tier) ?? tierOf(this.config, this.config.defaultTier);
    if (!base) throw new SluiceError('SLUICE_ERR_UNKNOWN_TIER', `Unknown tier "${tier}"`);
    if (!o) return base;
    return {
      requestsPerDay: o.requestsPerDay ?? base.requestsPerDay,
      tokensPerDay: o.tokensPerDay ?? base.tokensPerDay,
      requestsPerMonth: o.requestsPerMonth ?? base.requestsPerMonth,
      tokensPerMonth: o.tokensPerMonth ?? base.tokensPerMonth,
      maxTokens: o.maxTokens ?? base.maxTokens,
      concurrentStreams: o.concurrentStreams ?? base.concurrentStreams,
      priority: o.priority ?? base.priority,
      // Every live stream is in flight: a raised stream limit must stay reachable.
      maxInFlight: Math.max(base.maxInFlight, o.concurrentStreams ?? 0),
    };
  }

  private async lookup(hash: string): Promise<Principal> {
    const found = await this.store.findApiKey(hash);
    if (!found) throw new SluiceError('SLUICE_ERR_INVALID_API_KEY');
    const { key, user } = found;
    if (key.revokedAt) throw new SluiceError('SLUICE_ERR_REVOKED_API_KEY');
    if (!user.active) throw new SluiceError('SLUICE_ERR_USER_INACTIVE');
    const limits = await this.limitsFor(user.id, user.tier);
    const tierModels = (tierOf(this.config, user.tier) ?? tierOf(this.config, this.config.defaultTier))?.models;
    return { userId: user.id, keyId: key.id, admin: key.admin, unlimited: false, tier: user.tier, limits, models: effectiveModels(tierModels, key.models), inspection: key.inspectionMode };
  }
}

/** The master key's principal: every right, no quota, the largest tier's max_tokens. */
function masterPrincipal(config: Config): Principal {
  const top = Object.values(config.tiers).reduce((a, b) => (b.maxTokens > a.maxTokens ? b : a));
  return { userId: 'master', keyId: null, admin: true, unlimited: true, tier: 'master', limits: { ...top, priority: 9, concurrentStreams: 1_000_000, maxInFlight: Number.MAX_SAFE_INTEGER }, models: null };
}
