// Prometheus metrics (DESIGN §7). One registry per process; names are part of the public API
// (dashboards and KEDA triggers query them), so change them only with a migration note.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'sluice_process_' });
  const registers = [registry];
  return {
    registry,
    httpRequests: new Counter({ name: 'sluice_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'], registers }),
    httpDuration: new Histogram({ name: 'sluice_http_request_duration_seconds', help: 'HTTP time to response headers', labelNames: ['method', 'route'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers }),
    queueDepth: new Gauge({ name: 'sluice_queue_depth', help: 'Requests accepted and waiting for a worker: queued in the store as last sampled, plus the admissions of this process since', registers }),
    tokens: new Counter({ name: 'ml_tokens_processed_total', help: 'Tokens processed (prompt and completion) by settled requests', labelNames: ['model', 'kind'], registers }),
    ttft: new Histogram({ name: 'sluice_time_to_first_token_seconds', help: 'From acceptance to the first token appended', labelNames: ['mode'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers }),
    interToken: new Histogram({ name: 'sluice_inter_token_seconds', help: 'Gap between the tokens of one attempt: per read from the model after the first, the time since the previous read divided by the tokens it brought', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers }),
    activeStreams: new Gauge({ name: 'sluice_active_streams', help: 'Listeners currently streaming from this gateway', registers }),
    quotaRejections: new Counter({ name: 'sluice_quota_rejections_total', help: 'Admissions refused', labelNames: ['reason'], registers }),
    requestsFinished: new Counter({ name: 'sluice_requests_finished_total', help: 'Requests settled, by terminal status', labelNames: ['status'], registers }),
    attempts: new Counter({ name: 'sluice_worker_attempts_total', help: 'Model call attempts by outcome', labelNames: ['outcome'], registers }),
    limiterDegraded: new Gauge({ name: 'sluice_limiter_degraded', help: '1 while the limiter runs on its per-process fallback', registers }),
    uncaughtErrors: new Counter({ name: 'sluice_uncaught_errors_total', help: 'Exceptions and rejections nothing handled, caught by the last-resort handlers (the process kept serving)', labelNames: ['kind'], registers }),
    wsClosed: new Counter({ name: 'sluice_ws_policy_closes_total', help: 'WebSockets the gateway closed to protect itself, by reason', labelNames: ['reason'], registers }),
    sweeperActions: new Counter({ name: 'sluice_sweeper_actions_total', help: 'Sweeper repairs by kind', labelNames: ['action'], registers }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
