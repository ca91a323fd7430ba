// Prometheus metrics (DESIGN §7). One registry per process; names are part of the public API
// (dashboards and KEDA triggers query them), so change them only with a migration note.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The `user` label value of spend: the first `max` users seen keep their id, later ones are "other". */
export function boundedUserLabel(max: number): (userId: string) => string {
  const named = new Set<string>();
  return (userId) => {
    if (named.has(userId)) return userId;
    if (named.size >= max) return 'other';
    named.add(userId);
    return userId;
  };
}

const PROCESS_PREFIX = 'sluice_process_';

/**
 * prom-client's defaults include three gauges named like counters (`…_total`), which
 * `promtool check metrics` rejects. Each is the sum of a labelled gauge that stays
 * (`sluice_process_nodejs_active_handles{type}` etc.): query `sum(…)` of that instead.
 */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function createMetrics(opts: { spendUsers?: number } = {}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: PROCESS_PREFIX });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(PROCESS_PREFIX + name);
  const registers = [registry];
  /**
   * Run before each scrape: the model router refreshes its deployments' state gauge (states change
   * with the clock) and their outstanding calls (counted per call, read only here).
   */
  const beforeScrape = new Set<() => void>();
  const metrics = {
    beforeScrape,
    registry,
    httpRequests: new Counter({ name: 'sluice_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'], registers }),
    httpDuration: new Histogram({ name: 'sluice_http_request_duration_seconds', help: 'HTTP time to response headers', labelNames: ['method', 'route'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers }),
    queueDepth: new Gauge({ name: 'sluice_queue_depth', help: 'Requests accepted and waiting for a worker: queued in the store as last sampled, plus the admissions of this process since', registers }),
    tokens: new Counter({ name: 'ml_tokens_processed_total', help: 'Tokens processed (prompt and completion) by settled requests', labelNames: ['model', 'kind'], registers }),
    ttft: new Histogram({ name: 'sluice_time_to_first_token_seconds', help: 'From acceptance to the first token or tool-call fragment appended', labelNames: ['mode'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers }),
    interToken: new Histogram({ name: 'sluice_inter_token_seconds', help: 'Gap between the tokens of one attempt: per read from the model after the first, the time since the previous read divided by the tokens and tool-call fragments it brought', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers }),
    activeStreams: new Gauge({ name: 'sluice_active_streams', help: 'Listeners currently streaming from this gateway', registers }),
    quotaRejections: new Counter({ name: 'sluice_quota_rejections_total', help: 'Admissions refused', labelNames: ['reason'], registers }),
    requestsFinished: new Counter({ name: 'sluice_requests_finished_total', help: 'Requests settled, by terminal status', labelNames: ['status'], registers }),
    attempts: new Counter({ name: 'sluice_worker_attempts_total', help: 'Model call attempts by outcome', labelNames: ['outcome'], registers }),
    limiterDegraded: new Gauge({ name: 'sluice_limiter_degraded', help: '1 while the durable limiter (Redis) is unreachable: per-process fallback or refusing admissions, by SLUICE_LIMITER_FAILURE', registers }),
    uncaughtErrors: new Counter({ name: 'sluice_uncaught_errors_total', help: 'Exceptions and rejections nothing handled, caught by the last-resort handlers (the process kept serving)', labelNames: ['kind'], registers }),
    connectionsRefused: new Counter({ name: 'sluice_connections_refused_total', help: 'Client connections refused with a 503 before any request was read: reason address (SLUICE_MAX_CONNECTIONS_PER_IP) or process (SLUICE_MAX_CONNECTIONS, below the descriptor limit)', labelNames: ['reason'], registers }),
    wsClosed: new Counter({ name: 'sluice_ws_policy_closes_total', help: 'WebSockets the gateway closed to protect itself, by reason', labelNames: ['reason'], registers }),
    deploymentState: new Gauge({
      name: 'sluice_deployment_state', help: 'Health of each model deployment: 1 for its current state (healthy, open, half-open, unreachable), 0 for the others',
      labelNames: ['deployment', 'model', 'state'], registers,
      collect() { for (const refresh of beforeScrape) refresh(); },
    }),
    deploymentOutstanding: new Gauge({
      name: 'sluice_deployment_outstanding_requests', help: 'Model calls this process has open on each deployment (capacity: its maxConcurrency)',
      labelNames: ['deployment', 'model'], registers,
      collect() { for (const refresh of beforeScrape) refresh(); },
    }),
    deploymentRequests: new Counter({ name: 'sluice_deployment_requests_total', help: 'Model calls per deployment by outcome: ok, transient (failure or timeout: counts towards its circuit), permanent (refused as malformed), aborted (cancelled or cut)', labelNames: ['deployment', 'model', 'outcome'], registers }),
    deploymentFailovers: new Counter({ name: 'sluice_deployment_failovers_total', help: 'Requests that failed on a deployment before their first token and moved on (to another deployment, or a fallback model)', labelNames: ['deployment', 'model'], registers }),
    sweeperActions: new Counter({ name: 'sluice_sweeper_actions_total', help: 'Sweeper repairs by kind', labelNames: ['action'], registers }),
    spend: new Counter({ name: 'sluice_spend_usd_total', help: 'USD charged by settled requests of priced models, by model and user (users past the per-process bound are "other")', labelNames: ['model', 'user'], registers }),
    /** The `user` label for spend (bounded: see config metricsSpendUsers). */
    spendUser: boundedUserLabel(opts.spendUsers ?? 100),
    sweeperFailures: new Counter({ name: 'sluice_sweeper_failures_total', help: 'Sweeper passes that failed (store, queue or limiter unreachable); the next pass tries again', registers }),
    busyDeferrals: new Counter({ name: 'sluice_worker_busy_deferrals_total', help: 'Jobs a worker deferred unclaimed because every deployment of their model was at its maxConcurrency', registers }),
    deadLetters: new Counter({ name: 'sluice_dead_letters_total', help: 'Jobs moved to the dead-letter destination after their last attempt (the request failed and was refunded)', registers }),
    queueOldestAge: new Gauge({ name: 'sluice_queue_oldest_age_seconds', help: 'Age of the oldest request still queued in the store (0 when none), sampled by the ledger role', registers }),
    inspectionLatency: new Histogram({ name: 'sluice_inspection_duration_seconds', help: 'Time one inspection of a window (or a prompt) took, by mode', labelNames: ['mode'], buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers }),
    inspectionFindings: new Counter({ name: 'sluice_inspection_findings_total', help: 'Findings of content inspection, by type (email, card, …) and where (completion, prompt)', labelNames: ['type', 'kind'], registers }),
    inspectionStopped: new Counter({ name: 'sluice_inspection_stopped_total', help: 'Requests content inspection stopped or refused, by reason (blocked: a finding in async mode or a blocking finding; failed: no verdict, inline/hybrid fail closed; prompt: refused before admission)', labelNames: ['reason'], registers }),
    inspectionFailures: new Counter({ name: 'sluice_inspection_failures_total', help: 'Inspections that gave no verdict (timeout, unavailable, bad_response, circuit_open)', labelNames: ['kind'], registers }),
    settlementBacklog: new Gauge({ name: 'sluice_settlement_backlog', help: 'Quota reservations still open past their deadline (their request should have settled by then), sampled by the ledger role, counted up to 500', registers }),
  };
  initialiseLabels(metrics);
  return metrics;
}

/** The `type` label of inspection findings: the built-in detector's kinds, and `other` for any an HTTP inspector names. */
export const FINDING_TYPES = ['email', 'phone', 'card', 'iban', 'ip', 'secret', 'other'] as const;
/** A finding's type as a metric label: an HTTP inspector's own names fold into `other`, so it cannot grow the series. */
export const findingLabel = (type: string): string => ((FINDING_TYPES as readonly string[]).includes(type) ? type : 'other');

/**
 * Series with a known, small set of label values start at 0, so that `rate()` and `increase()`
 * see the first event (a series born at 1 has no increase) and dashboards show 0, not "no data".
 */
function initialiseLabels(m: Record<'requestsFinished' | 'attempts' | 'sweeperActions' | 'uncaughtErrors' | 'quotaRejections' | 'wsClosed' | 'connectionsRefused' | 'inspectionStopped' | 'inspectionFailures' | 'inspectionFindings', Counter<string>> & { inspectionLatency: Histogram<string> }): void {
  for (const reason of ['blocked', 'failed', 'prompt']) m.inspectionStopped.inc({ reason }, 0);
  for (const mode of ['inline', 'hybrid', 'async', 'prompt']) m.inspectionLatency.zero({ mode });
  for (const type of FINDING_TYPES) for (const kind of ['completion', 'prompt']) m.inspectionFindings.inc({ type, kind }, 0);
  for (const kind of ['timeout', 'unavailable', 'bad_response', 'circuit_open']) m.inspectionFailures.inc({ kind }, 0);
  for (const status of ['completed', 'failed', 'cancelled']) m.requestsFinished.inc({ status }, 0);
  for (const outcome of ['transient', 'permanent']) m.attempts.inc({ outcome }, 0);
  for (const action of ['requeue_queued', 'requeue_orphaned', 'settle_ended', 'settle_reservation', 'refund_reservation']) m.sweeperActions.inc({ action }, 0);
  for (const kind of ['exception', 'rejection']) m.uncaughtErrors.inc({ kind }, 0);
  for (const reason of ['address', 'process']) m.connectionsRefused.inc({ reason }, 0);
  for (const reason of ['queue_full', 'in_flight', 'concurrent_streams']) m.quotaRejections.inc({ reason }, 0);
  for (const reason of ['auth_timeout', 'flood', 'unauthorized', 'auth_unavailable', 'slow_consumer', 'buffer_overflow']) m.wsClosed.inc({ reason }, 0);
}

export type Metrics = ReturnType<typeof createMetrics>;
