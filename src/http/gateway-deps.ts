// What the gateway's routes need, wired once in app.ts.
import type { Config } from '../config.ts';
import type { AttemptRunner } from '../core/attempt-runner.ts';
import type { Drain } from '../core/drain.ts';
import type { FollowHubs } from '../core/follow-hub.ts';
import type { Authenticator } from '../core/auth.ts';
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { ModelCatalog } from '../core/model-catalog.ts';
import type { RequestService } from '../core/requests.ts';
import type { StreamLeases } from '../core/stream-leases.ts';
import type { Bus } from '../ports/bus.ts';
import type { Limiter } from '../ports/limiter.ts';
import type { Store } from '../ports/store.ts';

export interface GatewayDeps {
  config: Config;
  auth: Authenticator;
  logger: Logger;
  metrics: Metrics;
  requests: RequestService;
  store: Store;
  bus: Bus;
  /** The followers of the requests this process delivers from the log: one per request, shared by its listeners. */
  hubs: FollowHubs;
  limiter: Limiter;
  runner: AttemptRunner;
  leases: StreamLeases;
  models: ModelCatalog;
  /** Whether this process drains (refuse new work) and when it hands its streams off. */
  drain: Drain;
  readiness(): Promise<{ ok: boolean; checks: Record<string, string>; deployments?: Record<string, unknown> }>;
  now(): number;
}
