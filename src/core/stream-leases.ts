// Per-user concurrent-stream limit: a lease with a TTL, refreshed while the stream lives,
// released on end, cancel or disconnect. If the process dies the lease simply expires.
import type { Limiter } from '../ports/limiter.ts';
import type { Principal } from './auth.ts';
import { SluiceError } from './errors.ts';
import type { Metrics } from './metrics.ts';

export interface Lease { release(): Promise<void> }

const NO_LEASE: Lease = { release: async () => {} };

export class StreamLeases {
  constructor(private readonly limiter: Limiter, private readonly ttlMs: number, private readonly metrics: Metrics) {}

  async acquire(principal: Principal, leaseId: string): Promise<Lease> {
    if (principal.unlimited) return NO_LEASE;
    const { userId } = principal;
    const limit = principal.limits.concurrentStreams;
    const got = await this.limiter.acquireLease(userId, leaseId, limit, this.ttlMs);
    if (!got.ok) {
      this.metrics.quotaRejections.inc({ reason: 'concurrent_streams' });
      throw new SluiceError('SLUICE_ERR_STREAM_LIMIT', `Too many concurrent streams: ${got.active} of ${got.limit} in use`, { headers: { 'retry-after': '1' }, limit: 'concurrent_streams' });
    }
    const refresh = setInterval(() => { void this.limiter.refreshLease(userId, leaseId, this.ttlMs).catch(() => {}); }, Math.max(100, Math.floor(this.ttlMs / 3)));
    refresh.unref();
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(refresh);
        await this.limiter.releaseLease(userId, leaseId).catch(() => {});
      },
    };
  }
}
