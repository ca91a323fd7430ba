// Wires one Sluice process from its configuration: adapters chosen by URL scheme, the core
// services, and the roles this process plays (gateway, worker, ledger, or all of them; an edge is
// a gateway whose events come through a NATS leaf node from the origin's stream).
import type { FastifyInstance } from 'fastify';
import type { Config } from './config.ts';
import { createBus } from './adapters/bus/factory.ts';
import { createLimiter } from './adapters/limiter/factory.ts';
import { createRouter, type ModelRouter } from './adapters/model/router.ts';
import { createQueue } from './adapters/queue/factory.ts';
import { createStore } from './adapters/store/factory.ts';
import { createTracer } from './adapters/tracing/factory.ts';
import { createInspector } from './adapters/inspector/factory.ts';
import { inspectPrompt } from './core/inspection.ts';
import { redact } from './adapters/url-scheme.ts';
import { Admission } from './core/admission.ts';
import { resolveMasterKey } from './core/api-keys.ts';
import { AttemptRunner } from './core/attempt-runner.ts';
import { Drain } from './core/drain.ts';
import { Authenticator } from './core/auth.ts';
import { BacklogGauges } from './core/backlog.ts';
import { Ledger } from './core/ledger.ts';
import { createLogger, type Logger } from './core/logger.ts';
import { createMetrics, type Metrics } from './core/metrics.ts';
import { ModelCatalog } from './core/model-catalog.ts';
import { priceOf } from './core/pricing.ts';
import { QueueDepth } from './core/queue-depth.ts';
import { RequestService } from './core/requests.ts';
import { StreamLeases } from './core/stream-leases.ts';
import { FollowHubs } from './core/follow-hub.ts';
import { Sweeper } from './core/sweeper.ts';
import { Worker } from './core/worker.ts';
import { buildOpsServer, buildServer } from './http/server.ts';
import { checkAdapterUrls, checkPortFree, listenError } from './preflight.ts';
import type { Bus } from './ports/bus.ts';
import type { Limiter } from './ports/limiter.ts';
import type { ModelBackend } from './ports/model.ts';
import type { Queue } from './ports/queue.ts';
import type { Store } from './ports/store.ts';

export interface Sluice {
  config: Config; logger: Logger; metrics: Metrics;
  store: Store; limiter: Limiter; queue: Queue; bus: Bus;
  /** The model catalogue's router (MODEL_URL alone: one deployment serving every model id). */
  model: ModelRouter;
  auth: Authenticator; requests: RequestService; runner: AttemptRunner; ledger: Ledger; sweeper: Sweeper;
  worker: Worker | null;
  /** The followers of the requests this process delivers from the log (core/follow-hub.ts): one per request, shared by its listeners. */
  hubs: FollowHubs;
  /** Requests waiting for a worker, as admission sees them. */
  queueDepth: QueueDepth;
  /** The HTTP server: the whole API on a gateway, probes and metrics on other roles. */
  server: FastifyInstance;
  /** http://host:port of the gateway, when this process is one. */
  url: string | null;
  masterKey: string;
  /** True when the key was generated for development (no SLUICE_MASTER_KEY). */
  devKey: boolean;
  /**
   * Graceful drain (SIGTERM): readiness goes 503 and new work is refused; live streams and running
   * attempts get up to `graceMs` (config.drainMs) to finish; what is left is handed to other
   * processes. Call close() after it.
   */
  drain(graceMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** An edge's default BUS_IDLE_PROBE_MS: how long a followed request may be silent before its log's tip is read. */
const EDGE_IDLE_PROBE_MS = 2_000;

/** How long the hand-off itself may take: claims given back, jobs published, streams ended. */
const HANDOFF_MS = 5_000;
/** How long close() waits for the publishes of requests already answered 202 (the sweeper has the rest). */
const SETTLE_PUBLISHES_MS = 5_000;

export interface StartOptions {
  now?: () => number;
  logger?: Logger;
  /** Start-up progress in plain lines ("store: migrating…"); `sluice start` prints them. */
  onProgress?: (line: string) => void;
  /** Where deployments' apiKeyEnv variables are read, once at start (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** A model backend to use instead of the one MODEL_URL names (tests: a fake that yields what an upstream would). */
  model?: ModelBackend;
}

export async function startSluice(config: Config, opts: StartOptions = {}): Promise<Sluice> {
  const now = opts.now ?? Date.now;
  const progress = opts.onProgress ?? (() => {});
  // Before anything opens: a wrong scheme or a taken port costs milliseconds, not a store boot.
  checkAdapterUrls(config);
  await checkPortFree(config.host, config.port);
  const logger = opts.logger ?? createLogger(config.logLevel, config.role);
  const metrics = createMetrics({ spendUsers: config.metricsSpendUsers });
  const { key: masterKey, dev } = resolveMasterKey(config);
  // An edge serves the gateway's API; what differs is its bus (the origin's stream, through a leaf node).
  const edge = config.role === 'edge';
  const roles = new Set(config.role === 'all' ? ['gateway', 'worker', 'ledger'] : edge ? ['gateway'] : [config.role]);

  // What start-up opened, closed again if a later step fails, so a failed start leaves nothing running.
  const connectTimeoutMs = config.connectTimeoutMs;
  const opening = (service: string, url: string) => <T>(it: T): T => { progress(`${service}: ${startedAs(service, url)} (${redact(url)})`); return it; };
  progress(`store: opening ${redact(config.databaseUrl)}${config.databaseUrl.startsWith('pglite:') ? ' (embedded PGlite: a first start creates the database, a few seconds)' : ''}`);
  const storeReady = createStore(config.databaseUrl, {
    migrate: false, connectTimeoutMs, pgliteWorker: config.pgliteThread === 'worker',
    onMaintenanceError: (err) => logger.warn({ err }, 'embedded store maintenance (VACUUM/ANALYZE) failed; retrying'),
  }).then(opening('store', config.databaseUrl)).then(async (store) => {
    if (!config.migrateOnStart) return store;
    progress('store: migrating…');
    try {
      const applied = await store.migrate();
      progress(applied.length > 0 ? `store: applied ${applied.join(', ')}` : 'store: schema up to date');
      return store;
    } catch (e) { await store.close().catch(() => {}); throw e; }
  });
  const env = opts.env ?? process.env;
  if (Object.keys(config.catalogue).length > 0 && (config.modelUrl !== 'sim://' || config.models.length > 0)) {
    logger.warn('the model catalogue is set: MODEL_URL, MODEL_API_KEY and MODEL_NAMES are not used');
  }
  const services = [
    storeReady,
    createLimiter(config.limiterUrl, {
      ...(config.limiterPrefix !== undefined && { prefix: config.limiterPrefix }),
      failurePolicy: config.limiterFailure,
      onDegraded: (reason) => {
        metrics.limiterDegraded.set(1);
        logger.warn({ reason, policy: config.limiterFailure }, config.limiterFailure === 'fallback'
          ? 'limiter degraded: using the per-process fallback'
          : 'limiter degraded: refusing user admissions (503) until it answers');
      },
      onRecovered: () => { metrics.limiterDegraded.set(0); logger.info({ policy: config.limiterFailure }, 'limiter recovered: using the durable limiter again'); },
    }).then(opening('limiter', config.limiterUrl)),
    createQueue(config.queueUrl, { ...(config.queueName && { name: config.queueName }), retryBaseMs: config.worker.retryBaseMs, connectTimeoutMs }).then(opening('queue', config.queueUrl)),
    createBus(config.busUrl, {
      ttlSeconds: config.eventLog.ttlSeconds, maxLen: config.eventLog.maxLen, memoryMaxEvents: config.eventLog.memoryMaxEvents,
      ...(config.busPrefix && { prefix: config.busPrefix }), connectTimeoutMs,
      ...(config.busDomain && { natsDomain: config.busDomain }),
      // The origin owns the stream's settings; an edge only makes sure it exists.
      ...(edge && { streamOwnership: 'use' as const }),
      idleProbeMs: config.busIdleProbeMs ?? (edge ? EDGE_IDLE_PROBE_MS : 0),
    }).then(opening('bus', config.busUrl)),
    createRouter({ config, secret: (name) => env[name], logger, metrics, now, ...(opts.model && { backend: opts.model }) })
      .then(opening('model', Object.keys(config.catalogue).length > 0 ? `catalogue (${Object.keys(config.catalogue).length} models)` : config.modelUrl)),
  ] as const;
  // Opened side by side, so an unreachable broker is reported while the embedded store still
  // boots. The first failure stops the start; whatever else opens is closed as it arrives.
  let opened: [Store, Limiter, Queue, Bus, ModelRouter];
  try {
    opened = await Promise.all(services);
  } catch (e) {
    for (const s of services) s.then((it) => it.close(), () => {}).catch(() => {});
    throw e;
  }
  const [store, limiter, queue, bus, model] = opened;
  // What start-up opened, closed again if a later step fails, so a failed start leaves nothing running.
  const undo: Array<{ close(): Promise<unknown> }> = [model, bus, queue, limiter, store];
  const orUndo = async <T>(step: Promise<T>): Promise<T> => {
    try { return await step; } catch (e) {
      for (const o of undo) await o.close().catch(() => {});
      throw e;
    }
  };

  // Requests waiting for a worker, from the store, plus this process's admissions since the last
  // sample (core/queue-depth.ts): admission pays no round trip, and a burst cannot overshoot.
  const depth = new QueueDepth(() => store.countQueued(), (n) => metrics.queueDepth.set(n));
  await orUndo(depth.sample());
  depth.start(config.queueDepthSampleMs);
  undo.unshift({ close: async () => depth.stop() });

  const tracer = await createTracer({ endpoint: config.tracing.endpoint, serviceName: config.tracing.serviceName, role: config.role });

  const models = new ModelCatalog(model, model.catalogueModels() ?? config.models, now);
  const auth = new Authenticator(store, config, masterKey, now);
  const crash = config.crashPoint
    ? (point: string) => { if (point === config.crashPoint) { logger.fatal({ point }, 'crash point reached (test)'); process.kill(process.pid, 'SIGKILL'); } }
    : undefined;
  const ledger = new Ledger({ store, limiter, metrics, logger, priceOf: (m) => priceOf(config.catalogue, m), ...(crash && { crash }) });
  const inspector = createInspector(config);
  undo.unshift({ close: async () => inspector?.close() });
  const runner = new AttemptRunner({ config, store, bus, model, ledger, metrics, logger, now, tracer, inspector });
  const checkPrompt = inspector && config.inspection.prompts !== 'off'
    ? (messages: Parameters<typeof inspectPrompt>[1], id: string) => inspectPrompt({ config, inspector, metrics, logger }, messages, id)
    : undefined;
  const admission = new Admission({ config, limiter, models, pressure: depth, metrics, now, tracer, allowsPassthrough: (m) => model.allowsPassthrough(m) });
  const drainState = new Drain();
  const requests = new RequestService({ config, store, queue, bus, limiter, admission, runner, logger, tracer, drain: drainState, ...(crash && { crash }), ...(checkPrompt && { checkPrompt }) });
  const sweeper = new Sweeper({ config, store, queue, limiter, ledger, logger, metrics, now });
  const leases = new StreamLeases(limiter, config.leaseTtlMs, metrics);
  const hubs = new FollowHubs(bus);

  // Embedded: this process owns the store and the in-memory queue, so it recovers what the previous one left.
  if (config.role === 'all' && config.queueUrl.startsWith('memory:')) {
    await orUndo(sweeper.recover({ rebuildLimiter: !limiter.durable }));
  }

  // Model health decides readiness only where models are called (workers; gateways in direct
  // mode): a queued-mode gateway keeps accepting work that waits for the backends to come back.
  const callsModels = roles.has('worker') || config.deliveryMode === 'direct';
  const readiness = async () => {
    // First, so a load balancer stops sending here as soon as the drain begins.
    if (drainState.draining) return { ok: false, checks: { draining: 'yes' } };
    const checks: Record<string, string> = {};
    try { await queue.depth(); checks.queue = 'ok'; } catch { checks.queue = 'unavailable'; }
    try { await store.getRequest('00000000-0000-0000-0000-000000000000'); checks.store = 'ok'; } catch { checks.store = 'unavailable'; }
    const health = model.health();
    for (const [id, state] of Object.entries(health.models)) checks[`model:${id}`] = state;
    const ok = Object.entries(checks).every(([name, c]) => c === 'ok' || (!callsModels && name.startsWith('model:')));
    return { ok, checks, deployments: health.deployments };
  };
  // Every role listens on PORT: the gateway with the whole API, workers and ledgers with probes and metrics.
  // It listens before the worker consumes: a port lost since the preflight check stops the start
  // before any job is taken.
  const server = await orUndo(roles.has('gateway')
    ? buildServer({ config, auth, logger, metrics, requests, store, bus, hubs, limiter, runner, leases, models, now, readiness, tracer, drain: drainState })
    : buildOpsServer({ logger, metrics, readiness, http: config.http }));
  undo.unshift(server);
  await orUndo(server.listen({ host: config.host, port: config.port, backlog: config.http.backlog }).catch((e: unknown) => { throw listenError(e, config.host, config.port); }));

  let worker: Worker | null = null;
  if (roles.has('worker')) { worker = new Worker({ config, store, queue, runner, ledger, logger, metrics, now, model }); await orUndo(worker.start()); }
  const backlog = new BacklogGauges({ store, limiter, metrics, logger, now, intervalMs: config.sweepIntervalMs });
  if (roles.has('ledger')) { sweeper.start(); await backlog.sampleOnce(); backlog.start(); }

  const addr = server.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const url = roles.has('gateway') ? `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}` : null;

  let draining: Promise<void> | undefined;
  const drain = (graceMs = config.drainMs) => draining ??= (async () => {
    drainState.begin();
    logger.info({ grace_ms: graceMs, responses: drainState.active, jobs: worker?.active ?? 0 }, 'draining: new work is refused; live work may finish');
    await worker?.pause();
    await Promise.all([drainState.idle(graceMs), worker?.idle(graceMs)]);
    const left = { responses: drainState.active, jobs: worker?.active ?? 0 };
    if (left.responses + left.jobs > 0) logger.warn(left, 'grace period over: handing the rest to other processes');
    // Always: WebSockets are not waited for, and close here with 1012.
    drainState.handOff();
    worker?.handOff();
    await Promise.all([drainState.idle(HANDOFF_MS), worker?.idle(HANDOFF_MS)]);
    logger.info('drained');
  })();

  const close = async () => {
    depth.stop();
    await server.close();
    // Jobs of requests answered 202 whose publish the queue has not confirmed yet (core/requests.ts).
    await requests.settlePublishes(SETTLE_PUBLISHES_MS);
    await worker?.stop();
    await sweeper.stop();
    await backlog.stop();
    await Promise.allSettled([queue.close(), bus.close(), limiter.close(), model.close()]);
    await store.close();
    await tracer.close().catch((err: unknown) => logger.warn({ err }, 'tracing: exporting the last spans failed'));
  };
  return { config, logger, metrics, store, limiter, queue, bus, model, auth, requests, runner, ledger, sweeper, worker, hubs, queueDepth: depth, server, url, masterKey, devKey: dev, drain, close };
}

/** How the banner-to-be says a service came up: in-process, opened on disk, or connected over the network. */
function startedAs(service: string, url: string): string {
  if (url.startsWith('memory:')) return 'in-process';
  if (url.startsWith('pglite:')) return 'open';
  if (url.startsWith('sim:')) return 'simulated';
  if (service === 'limiter') return 'using'; // it starts even when Redis does not answer (a warning follows)
  if (service === 'model') return 'upstream';
  return 'connected';
}
