// Configuration: parsed once from an optional JSON file (SLUICE_CONFIG, default ./sluice.config.json)
// and the environment (which wins), validated, frozen and passed in. Nothing else reads process.env.
import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { SluiceError } from './core/errors.ts';
import { checkCatalogue, parseCatalogueEnv, parseModelsEnv } from './config-catalogue.ts';

/** A public model id, as clients send it in `model`. */
const modelId = z.string().min(1).max(256);

/** How a request's answer is inspected (docs/architecture.md, "Content inspection"). */
export const INSPECTION_MODES = ['disabled', 'inline', 'async', 'hybrid'] as const;
export type InspectionMode = (typeof INSPECTION_MODES)[number];
const inspectionMode = z.enum(INSPECTION_MODES);

const tierSchema = z.object({
  requestsPerDay: z.number().int().nonnegative(),
  tokensPerDay: z.number().int().nonnegative(),
  requestsPerMonth: z.number().int().nonnegative(),
  tokensPerMonth: z.number().int().nonnegative(),
  maxTokens: z.number().int().positive(),
  concurrentStreams: z.number().int().positive(),
  priority: z.number().int().min(0).max(9),
  /**
   * Requests one user may have queued or running at once (fair sharing: one user cannot fill the
   * queue). Optional so existing config files parse: see withInFlightDefault.
   */
  maxInFlight: z.number().int().positive().optional(),
  /** Model ids this tier may call; absent = every model. A key may narrow it further. */
  models: z.array(modelId).optional(),
  /** Content inspection of this tier's answers; absent = the global INSPECTION_MODE. A key may override it. */
  inspection: inspectionMode.optional(),
});
export type Tier = Omit<z.infer<typeof tierSchema>, 'maxInFlight'> & { maxInFlight: number };

/** maxInFlight of the built-in tiers; a tier of another name without one gets 8 per concurrent stream. */
const DEFAULT_MAX_IN_FLIGHT: Record<string, number> = { free: 8, pro: 64, enterprise: 1024 };

function withInFlightDefault(name: string, t: z.infer<typeof tierSchema>): Tier {
  return { ...t, maxInFlight: t.maxInFlight ?? (Object.hasOwn(DEFAULT_MAX_IN_FLIGHT, name) ? DEFAULT_MAX_IN_FLIGHT[name]! : 8 * t.concurrentStreams) };
}

/**
 * A tier name: lower-case letters, digits, '_' and '-', and not a property every object has
 * ('constructor'), so a name never means something else than a configured tier. Tiers are still
 * only looked up with tierOf (own entries), never by indexing the record.
 */
const tierName = z.string()
  .regex(/^[a-z][a-z0-9_-]{0,31}$/, 'a tier name is 1-32 of a-z 0-9 _ -, starting with a letter')
  .refine((name) => !(name in Object.prototype), 'a tier name must not be a built-in object property');

const DEFAULT_TIERS: Record<string, Tier> = {
  free: { requestsPerDay: 200, tokensPerDay: 100_000, requestsPerMonth: 3_000, tokensPerMonth: 1_000_000, maxTokens: 1024, concurrentStreams: 2, priority: 1, maxInFlight: 8 },
  pro: { requestsPerDay: 10_000, tokensPerDay: 5_000_000, requestsPerMonth: 200_000, tokensPerMonth: 100_000_000, maxTokens: 4096, concurrentStreams: 10, priority: 5, maxInFlight: 64 },
  enterprise: { requestsPerDay: 1_000_000, tokensPerDay: 500_000_000, requestsPerMonth: 20_000_000, tokensPerMonth: 10_000_000_000, maxTokens: 16384, concurrentStreams: 100, priority: 9, maxInFlight: 1024 },
};

const int = (min = 0) => z.coerce.number().int().min(min);



/**
 * One backend serving a catalogue model. The API key is never in the file: `apiKeyEnv` names the
 * environment variable that holds it.
 */
const deploymentSchema = z.object({
  /** Names the deployment in metrics, /readyz and request records; default `<model id>#<index>`. */
  id: z.string().regex(/^[A-Za-z0-9._:#-]{1,64}$/, 'a deployment id is 1-64 of A-Z a-z 0-9 . _ : # -').optional(),
  /** `http(s)://host:port/v1` (any OpenAI-compatible server) or `sim://…` (the built-in simulator). */
  url: z.string().min(1),
  /** The backend's own name for the model; default the public id. */
  model: z.string().min(1).optional(),
  /** Environment variable holding the bearer key for this backend. */
  apiKeyEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'apiKeyEnv names an environment variable').optional(),
  /** Share of traffic relative to the model's other deployments (least outstanding requests, weighted). */
  weight: z.number().positive().default(1),
  /** Concurrent requests this deployment takes; a full deployment is skipped. */
  maxConcurrency: int(1).optional(),
  /** Longest wait to connect, for response headers (includes prompt processing), and between two body chunks. */
  connectTimeoutMs: int(1).optional(),
  headersTimeoutMs: int(1).optional(),
  bodyTimeoutMs: int(1).optional(),
  /** Forward body fields Sluice does not know (vLLM's guided_json, top_k, min_p, …); off = 400 naming the field. */
  passthrough: z.boolean().default(false),
});

const catalogueModelSchema = z.object({
  deployments: z.array(deploymentSchema).min(1),
  /** Other model ids to try, in order, when every deployment of this one failed before the first token. */
  fallbacks: z.array(modelId).default([]),
  /** USD per million tokens; every settled request's cost is stored (quotas stay in tokens). */
  price: z.object({ inputPerMillion: z.number().nonnegative(), outputPerMillion: z.number().nonnegative() }).optional(),
  /** What the model serves: chat completions, embeddings, or both. */
  kinds: z.array(z.enum(['chat', 'embeddings'])).min(1).default(['chat']),
});
export type CatalogueModel = z.infer<typeof catalogueModelSchema>;
export type Deployment = z.infer<typeof deploymentSchema>;

export const configSchema = z.object({
  /**
   * What this process does. 'edge': a gateway near the users (the whole client API) that admits
   * requests itself against the origin's store, limiter and queue, and reads their events through
   * a NATS leaf node (BUS_URL nats://leaf:4222?domain=hub); it never calls a model.
   */
  role: z.enum(['all', 'gateway', 'worker', 'ledger', 'edge']).default('all'),
  host: z.string().default('127.0.0.1'),
  port: int().max(65535).default(8080),
  /** Where this instance keeps its files: the development key and, by default, the embedded store. */
  dataDir: z.string().min(1).default('./.sluice'),
  /** Default: the embedded store under dataDir (pglite://<dataDir>/db), so two data dirs never share one store. */
  databaseUrl: z.string().min(1).optional(),
  limiterUrl: z.string().default('memory://'),
  queueUrl: z.string().default('memory://'),
  busUrl: z.string().default('memory://'),
  modelUrl: z.string().default('sim://'),
  /** How long connecting to PostgreSQL, Redis, RabbitMQ or NATS may take at start before it fails, named. */
  connectTimeoutMs: int(100).default(5000),
  /** Names that let deployments (or test runs) share one broker/Redis: queue name, bus key/subject prefix, limiter key prefix. */
  queueName: z.string().min(1).optional(),
  busPrefix: z.string().min(1).optional(),
  /**
   * NATS bus: the JetStream domain of the server that holds the event stream, when it is not the
   * server BUS_URL names (an edge behind a leaf node: 'hub'). `?domain=` in BUS_URL wins.
   */
  busDomain: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a JetStream domain is 1-64 of A-Z a-z 0-9 _ -').optional(),
  /**
   * NATS bus: a followed request whose live subject has been quiet this long has its log's last
   * event read, so events lost on the way (a leaf node cut from its hub) are fetched from the log
   * instead of leaving the stream waiting. Default: 2000 on an edge, 0 (off) elsewhere.
   */
  busIdleProbeMs: int(0).optional(),
  limiterPrefix: z.string().optional(),
  /** Model ids accepted when the backend cannot list them; empty = ask the backend. */
  models: z.array(z.string()).default([]),
  /** Bearer key for MODEL_URL's backend (the one-backend shorthand). */
  modelApiKey: z.string().min(1).optional(),
  /**
   * The model catalogue: public model id -> deployments, fallbacks, price. Empty = MODEL_URL alone
   * serves every model (the one-backend shorthand).
   */
  catalogue: z.record(modelId, catalogueModelSchema).default({}),
  /** Health and capacity of the catalogue's deployments (and of MODEL_URL's backend). */
  routing: z.object({
    /** Consecutive transient failures (errors, timeouts, 5xx, 429) that open a deployment's circuit. */
    failureThreshold: int(1).default(5),
    /** How long an open circuit keeps its deployment out before one trial request (half-open). */
    coolDownMs: int(100).default(10_000),
    /** Period of the GET {url}/models probe of each http(s) deployment; 0 = no active probe. */
    probeIntervalMs: int(0).default(30_000),
    /** Longest wait for a probe's answer. */
    probeTimeoutMs: int(100).default(5_000),
    /** Retry-After (seconds) of a direct-mode request refused because every deployment is full. */
    busyRetryAfterS: int(1).default(1),
    /**
     * Concurrent calls per process to a deployment without its own maxConcurrency, and to the
     * MODEL_URL shorthand's backend: its capacity, and the size of its HTTP connection pool. An LLM
     * call is I/O-bound (a stream holds its connection for seconds), so this is large; set it to
     * what the backend can take (docs/operations.md, "Capacity").
     */
    maxConcurrency: int(1).default(1024),
  }).prefault({}),
  masterKey: z.string().min(16).optional(),
  /**
   * Where the embedded store (pglite://) runs: on the process's main thread, or in a worker thread
   * of its own (off the event loop that serves requests, at the cost of a message per statement;
   * slower on a 2-core machine, see docs/benchmarks.md). Not used by postgres://.
   */
  pgliteThread: z.enum(['main', 'worker']).default('main'),
  /** Apply pending SQL migrations at start-up (under an advisory lock); off when a migrate job does it. */
  migrateOnStart: z.boolean().default(true),
  deliveryMode: z.enum(['queued', 'direct']).default('queued'),
  bodyLimitBytes: int(1024).default(1024 * 1024),
  /**
   * Browser origins allowed to call the API (CORS) and to open WebSockets; empty = none (closed).
   * '*' allows any origin. Exact origins such as 'https://console.example.com'.
   */
  corsOrigins: z.array(z.string().min(1)).default([]),
  /** HTTP transport limits: slow or hoarding clients must not hold sockets (and file descriptors) open. */
  http: z.object({
    /** Whole request, headers and body, from its first byte. */
    requestTimeoutMs: int(100).default(30_000),
    /** Headers alone; at most requestTimeoutMs. */
    headersTimeoutMs: int(100).default(10_000),
    /** Open connections per client address; 0 = unlimited. Behind a proxy every client has the proxy's address. */
    maxConnectionsPerIp: int(0).default(256),
    /**
     * Open connections of the process; 0 = unlimited. 'auto': the descriptor limit (ulimit -n)
     * less a reserve for the process's own connections and files, so that client sockets cannot
     * take the descriptors the store, bus and queue need (they failed with EMFILE: answers 500).
     */
    maxConnections: z.union([z.literal('auto'), int(0)]).default('auto'),
    /**
     * Connections the kernel queues before the gateway accepts them (capped by net.core.somaxconn).
     * Node's 511 overflowed when thousands of listeners connected at once: SYNs dropped and retried
     * seconds later, some connections reset.
     */
    backlog: int(1).default(4096),
  }).prefault({}),
  /**
   * Users who get their own `user` label on sluice_spend_usd_total in one process; later users
   * share user="other", so a large user base cannot grow the metric without bound. 0 = only "other".
   */
  metricsSpendUsers: int(0).default(100),
  /**
   * OpenTelemetry tracing, off unless an OTLP/HTTP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT,
   * e.g. http://otel-collector:4318: spans go to <endpoint>/v1/traces as JSON).
   */
  tracing: z.object({ endpoint: z.string().url().optional(), serviceName: z.string().min(1).default('sluice') }).prefault({}),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /**
   * One info line per HTTP request on a gateway (request id, user, route, status, duration,
   * tokens where known): 'off', 'on', or the share of requests to log (0..1, e.g. 0.01).
   */
  accessLog: z.union([z.enum(['off', 'on']), z.coerce.number().min(0).max(1)]).default('off'),
  sim: z.object({ ttftMs: int().default(20), itlMs: int().default(5), promptTokensOverhead: int().default(0) }).prefault({}),
  worker: z.object({
    /**
     * Jobs this worker holds at once (its queue prefetch). Absent (the default) = the model
     * catalogue's capacity: the sum of every deployment's maxConcurrency (at most 65,535, AMQP's
     * prefetch limit). Whether a job runs now is the capacity of its model's deployments; a job
     * whose model is full is deferred (busyDeferMs), not held. Set it to cap a worker below that.
     */
    concurrency: int(1).optional(),
    /** A job whose model has every deployment at maxConcurrency is deferred this long (doubling on each redelivery, at most 16x), not claimed. */
    busyDeferMs: int(1).default(100),
    claimMs: int(100).default(15_000),
    maxAttempts: int(1).default(3),
    retryBaseMs: int(1).default(500),
    requestTimeoutMs: int(1000).default(600_000),
    /**
     * Fair sharing on FIFO brokers: a job whose user already holds its share of this worker's
     * slots (concurrency / users seen lately) while jobs wait is deferred by this long, not run
     * and not counted as an attempt. 0 = never defer.
     */
    fairDeferMs: int(0).default(100),
    /** A user counts towards the share while one of its jobs reached this worker this recently. */
    fairWindowMs: int(100).default(2_000),
  }).prefault({}),
  eventLog: z.object({ ttlSeconds: int(1).default(3600), maxLen: int(100).default(100_000), memoryMaxEvents: int(1000).default(1_000_000) }).prefault({}),
  sse: z.object({
    pingMs: int(10).default(15_000),
    retryMs: int(0).default(3000),
    /** Unsent bytes a listener may hold; past it the listener is dropped (it resumes from the log). */
    maxBufferedBytes: int(1024).default(1024 * 1024),
    /** A listener that has not taken a byte for this long while data waits is dropped too. */
    stallMs: int(100).default(10_000),
  }).prefault({}),
  /** What one WebSocket may hold and send: bounds so that no client can grow the gateway without limit. */
  ws: z.object({
    /** Open follows (a submit's, or a resume's) on one socket, for keys without a stream limit (master). */
    maxFollowsPerSocket: int(1).default(32),
    /** Control messages per second per socket (token bucket), and the burst allowed above that rate. */
    messagesPerSecond: int(1).default(20),
    messageBurst: int(1).default(50),
    /** Unsent bytes above which deliveries to a socket pause; 4x this closes the socket (1013). */
    maxBufferedBytes: int(1024).default(1024 * 1024),
    /** A socket that stays above maxBufferedBytes this long is closed (1013). */
    slowCloseMs: int(100).default(10_000),
    /** A socket opened without a key must send {"type":"auth"} within this long. */
    authTimeoutMs: int(100).default(10_000),
  }).prefault({}),
  /** Content inspection of answers (and optionally prompts): docs/operations.md, "Content inspection". */
  inspection: z.object({
    /** Default mode; a tier's `inspection` and a key's inspection_mode override it. */
    mode: inspectionMode.default('disabled'),
    /** Hybrid: how long tokens gather ahead of delivery before their window is inspected. */
    bufferMs: int(0).default(150),
    /** The built-in PII detector and redactor: 'pii' (on) or 'none'. */
    builtin: z.enum(['pii', 'none']).default('pii'),
    /** An HTTP inspector (POST, JSON schema in docs/operations.md), used beside the built-in one. */
    endpoint: z.string().url().optional(),
    /** Longest wait for the HTTP inspector's answer. */
    timeoutMs: int(10).default(1000),
    /** Consecutive HTTP inspector failures that open its circuit, and how long it stays open. */
    circuitFailures: int(1).default(5),
    circuitCoolDownMs: int(100).default(10_000),
    /** Prompts: 'off', 'block' (refuse a prompt with a finding, 422) or 'redact' (send it redacted). */
    prompts: z.enum(['off', 'block', 'redact']).default('off'),
  }).prefault({}),
  tiers: z.record(tierName, tierSchema).default(DEFAULT_TIERS)
    .transform((tiers) => Object.fromEntries(Object.entries(tiers).map(([name, t]) => [name, withInFlightDefault(name, t)]))),
  defaultTier: z.string().default('free'),
  /** IANA time zone whose midnight (and first of month) resets the daily (monthly) windows. */
  timeZone: z.string().default('UTC'),
  limiterFailure: z.enum(['fallback', 'refuse']).default('fallback'),
  statusRateLimit: z.object({ limit: int(1).default(600), windowMs: int(100).default(60_000) }).prefault({}),
  leaseTtlMs: int(1000).default(30_000),
  sweepIntervalMs: int(100).default(5_000),
  /** A queued request no worker has claimed after this long is published again (jobs are idempotent). */
  requeueAfterMs: int(100).default(30_000),
  /** Grace after a request's own deadline before its reservation is reclaimed. */
  reservationGraceMs: int(0).default(60_000),
  /**
   * An open reservation this old whose request already has its ledger row (its worker died between
   * ending the request and settling the limiter) is settled by the sweeper with the row's charge,
   * instead of waiting for the reservation's deadline. Longer than a normal settle takes.
   */
  reservationSettleAfterMs: int(100).default(5_000),
  queueMaxDepth: int(1).default(100_000),
  /** How often each process reads the queue depth (queued requests) from the store. */
  queueDepthSampleMs: int(50).default(1_000),
  /**
   * On SIGTERM: how long live streams and running attempts may take to finish before what is left
   * is handed to another process (docs/operations.md, "Draining").
   */
  drainMs: int(0).default(30_000),
  degrade: z.object({ queueDepth: int(1).default(10_000), maxTokens: int(1).default(256) }).prefault({}),
  /**
   * Test-only: exit abruptly at a named point ('after-insert' = between store insert and queue
   * publish; 'after-finish' = between ending a request in the store and settling it in the limiter),
   * or 'uncaught-after-start': throw from a timer and reject a promise nobody handles once serving.
   */
  crashPoint: z.enum(['after-insert', 'after-finish', 'uncaught-after-start']).optional(),
});

export type Config = Readonly<Omit<z.infer<typeof configSchema>, 'databaseUrl'> & { databaseUrl: string }>;

/** The embedded store inside the data directory ('./.sluice' gives 'pglite://./.sluice/db'). */
export function defaultDatabaseUrl(dataDir: string): string {
  return `pglite://${dataDir.replace(/\/+$/, '')}/db`;
}

/** The configured tier of that name; only the record's own entries count ('toString' is no tier). */
export function tierOf(config: Pick<Config, 'tiers'>, name: string): Tier | undefined {
  return Object.hasOwn(config.tiers, name) ? config.tiers[name] : undefined;
}

const ENV: Record<string, (v: string) => Record<string, unknown>> = {
  SLUICE_ROLE: (v) => ({ role: v }),
  HOST: (v) => ({ host: v }),
  PORT: (v) => ({ port: v }),
  SLUICE_DATA_DIR: (v) => ({ dataDir: v }),
  DATABASE_URL: (v) => ({ databaseUrl: v }),
  SLUICE_PGLITE_THREAD: (v) => ({ pgliteThread: v }),
  LIMITER_URL: (v) => ({ limiterUrl: v }),
  QUEUE_URL: (v) => ({ queueUrl: v }),
  BUS_URL: (v) => ({ busUrl: v }),
  MODEL_URL: (v) => ({ modelUrl: v }),
  MODEL_API_KEY: (v) => ({ modelApiKey: v }),
  SLUICE_CONNECT_TIMEOUT_MS: (v) => ({ connectTimeoutMs: v }),
  QUEUE_NAME: (v) => ({ queueName: v }),
  BUS_PREFIX: (v) => ({ busPrefix: v }),
  BUS_DOMAIN: (v) => ({ busDomain: v }),
  BUS_IDLE_PROBE_MS: (v) => ({ busIdleProbeMs: v }),
  LIMITER_PREFIX: (v) => ({ limiterPrefix: v }),
  MODEL_NAMES: (v) => ({ models: v.split(',').map((s) => s.trim()).filter(Boolean) }),
  SLUICE_MASTER_KEY: (v) => ({ masterKey: v }),
  SLUICE_MIGRATE: (v) => ({ migrateOnStart: !['false', '0', 'no', 'off'].includes(v.toLowerCase()) }),
  SLUICE_DELIVERY_MODE: (v) => ({ deliveryMode: v }),
  SLUICE_BODY_LIMIT: (v) => ({ bodyLimitBytes: v }),
  SLUICE_CORS_ORIGINS: (v) => ({ corsOrigins: v.split(',').map((s) => s.trim()).filter(Boolean) }),
  LOG_LEVEL: (v) => ({ logLevel: v }),
  SLUICE_METRICS_SPEND_USERS: (v) => ({ metricsSpendUsers: v }),
  SLUICE_ACCESS_LOG: (v) => ({ accessLog: v }),
  SLUICE_TIME_ZONE: (v) => ({ timeZone: v }),
  SLUICE_LIMITER_FAILURE: (v) => ({ limiterFailure: v }),
  SLUICE_DEFAULT_TIER: (v) => ({ defaultTier: v }),
  SLUICE_CRASH_POINT: (v) => ({ crashPoint: v }),
  SLUICE_SWEEP_INTERVAL_MS: (v) => ({ sweepIntervalMs: v }),
  SLUICE_REQUEUE_AFTER_MS: (v) => ({ requeueAfterMs: v }),
  SLUICE_RESERVATION_GRACE_MS: (v) => ({ reservationGraceMs: v }),
  SLUICE_RESERVATION_SETTLE_AFTER_MS: (v) => ({ reservationSettleAfterMs: v }),
  SLUICE_QUEUE_MAX_DEPTH: (v) => ({ queueMaxDepth: v }),
  SLUICE_QUEUE_DEPTH_SAMPLE_MS: (v) => ({ queueDepthSampleMs: v }),
  SLUICE_DRAIN_MS: (v) => ({ drainMs: v }),
};
const NESTED_ENV: Record<string, [string, string]> = {
  SLUICE_REQUEST_TIMEOUT_MS: ['http', 'requestTimeoutMs'], SLUICE_HEADERS_TIMEOUT_MS: ['http', 'headersTimeoutMs'],
  SLUICE_MAX_CONNECTIONS_PER_IP: ['http', 'maxConnectionsPerIp'], SLUICE_MAX_CONNECTIONS: ['http', 'maxConnections'], SLUICE_LISTEN_BACKLOG: ['http', 'backlog'],
  OTEL_EXPORTER_OTLP_ENDPOINT: ['tracing', 'endpoint'], OTEL_SERVICE_NAME: ['tracing', 'serviceName'],
  INSPECTION_MODE: ['inspection', 'mode'], INSPECTION_BUFFER_MS: ['inspection', 'bufferMs'], INSPECTION_BUILTIN: ['inspection', 'builtin'],
  INSPECTION_ENDPOINT: ['inspection', 'endpoint'], INSPECTION_TIMEOUT_MS: ['inspection', 'timeoutMs'], INSPECTION_PROMPTS: ['inspection', 'prompts'],
  INSPECTION_CIRCUIT_FAILURES: ['inspection', 'circuitFailures'], INSPECTION_CIRCUIT_COOL_DOWN_MS: ['inspection', 'circuitCoolDownMs'],
  SIM_TTFT_MS: ['sim', 'ttftMs'], SIM_ITL_MS: ['sim', 'itlMs'],
  WORKER_CONCURRENCY: ['worker', 'concurrency'], WORKER_CLAIM_MS: ['worker', 'claimMs'],
  WORKER_MAX_ATTEMPTS: ['worker', 'maxAttempts'], WORKER_RETRY_BASE_MS: ['worker', 'retryBaseMs'],
  WORKER_FAIR_DEFER_MS: ['worker', 'fairDeferMs'], WORKER_FAIR_WINDOW_MS: ['worker', 'fairWindowMs'],
  EVENT_LOG_TTL_SECONDS: ['eventLog', 'ttlSeconds'], EVENT_LOG_MEMORY_MAX_EVENTS: ['eventLog', 'memoryMaxEvents'], SSE_PING_MS: ['sse', 'pingMs'],
  SSE_MAX_BUFFERED_BYTES: ['sse', 'maxBufferedBytes'], SSE_STALL_MS: ['sse', 'stallMs'],
  WS_MAX_FOLLOWS_PER_SOCKET: ['ws', 'maxFollowsPerSocket'], WS_MESSAGES_PER_SECOND: ['ws', 'messagesPerSecond'],
  WS_MESSAGE_BURST: ['ws', 'messageBurst'], WS_MAX_BUFFERED_BYTES: ['ws', 'maxBufferedBytes'],
  WS_SLOW_CLOSE_MS: ['ws', 'slowCloseMs'], WS_AUTH_TIMEOUT_MS: ['ws', 'authTimeoutMs'],
  SLUICE_CIRCUIT_FAILURES: ['routing', 'failureThreshold'], SLUICE_CIRCUIT_COOL_DOWN_MS: ['routing', 'coolDownMs'],
  SLUICE_PROBE_INTERVAL_MS: ['routing', 'probeIntervalMs'], SLUICE_PROBE_TIMEOUT_MS: ['routing', 'probeTimeoutMs'],
  SLUICE_MAX_CONCURRENCY: ['routing', 'maxConcurrency'], WORKER_BUSY_DEFER_MS: ['worker', 'busyDeferMs'],
};

/** The catalogue from the environment (SLUICE_MODELS or SLUICE_CATALOGUE); it replaces the file's whole. */
function catalogueFromEnv(env: NodeJS.ProcessEnv): unknown {
  const compact = env.SLUICE_MODELS;
  const json = env.SLUICE_CATALOGUE;
  if (compact && json) throw new SluiceError('SLUICE_ERR_CONFIG', 'set SLUICE_MODELS or SLUICE_CATALOGUE, not both');
  if (compact) return parseModelsEnv(compact);
  if (json) return parseCatalogueEnv(json);
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> { return typeof v === 'object' && v !== null && !Array.isArray(v); }

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const cur = out[k];
    out[k] = isObject(cur) && isObject(v) ? merge(cur, v) : v;
  }
  return out;
}

function deepFreeze<T>(o: T): T {
  if (isObject(o) || Array.isArray(o)) { for (const v of Object.values(o as object)) deepFreeze(v); Object.freeze(o); }
  return o;
}

/** Builds the configuration from file + environment + explicit overrides (tests, CLI flags). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Record<string, unknown> = {}): Config {
  let raw: Record<string, unknown> = {};
  const file = env.SLUICE_CONFIG ?? './sluice.config.json';
  if (existsSync(file)) {
    try { raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>; } catch (e) {
      throw new SluiceError('SLUICE_ERR_CONFIG', `${file}: ${(e as Error).message}`);
    }
  } else if (env.SLUICE_CONFIG) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `config file ${file} does not exist`);
  }
  for (const [name, set] of Object.entries(ENV)) { const v = env[name]; if (v !== undefined && v !== '') raw = merge(raw, set(v)); }
  for (const [name, [group, key]] of Object.entries(NESTED_ENV)) { const v = env[name]; if (v !== undefined && v !== '') raw = merge(raw, { [group]: { [key]: v } }); }
  const catalogue = catalogueFromEnv(env);
  if (catalogue !== undefined) raw = { ...raw, catalogue };
  return parseConfig(merge(raw, overrides));
}

/** A record key's issue says only "Invalid key in record"; its own first issue says why. */
function issueMessage(issue: z.core.$ZodIssue): string {
  return issue.code === 'invalid_key' ? issue.issues[0]?.message ?? issue.message : issue.message;
}

export function parseConfig(raw: unknown): Config {
  // The record schema silently drops a '__proto__' key (JSON.parse makes it an own key): say so.
  if (isObject(raw) && isObject(raw.tiers) && Object.hasOwn(raw.tiers, '__proto__')) {
    throw new SluiceError('SLUICE_ERR_CONFIG', 'invalid configuration: tiers.__proto__: a tier name is 1-32 of a-z 0-9 _ -, starting with a letter');
  }
  if (isObject(raw) && isObject(raw.catalogue) && Object.hasOwn(raw.catalogue, '__proto__')) {
    throw new SluiceError('SLUICE_ERR_CONFIG', 'invalid configuration: catalogue.__proto__ cannot be a model id');
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${issueMessage(i)}`).join('; ');
    throw new SluiceError('SLUICE_ERR_CONFIG', `invalid configuration: ${issues}`);
  }
  const cfg = {
    ...parsed.data, databaseUrl: parsed.data.databaseUrl ?? defaultDatabaseUrl(parsed.data.dataDir),
    catalogue: checkCatalogue(parsed.data.catalogue),
  };
  for (const [name, t] of Object.entries(cfg.tiers)) {
    if (t.maxInFlight < t.concurrentStreams) throw new SluiceError('SLUICE_ERR_CONFIG', `tiers.${name}: maxInFlight (${t.maxInFlight}) must be at least concurrentStreams (${t.concurrentStreams}): every live stream is a request in flight`);
  }
  const inspects = cfg.inspection.mode !== 'disabled' || cfg.inspection.prompts !== 'off' || Object.values(cfg.tiers).some((t) => t.inspection !== undefined && t.inspection !== 'disabled');
  if (inspects && cfg.inspection.builtin === 'none' && !cfg.inspection.endpoint) {
    throw new SluiceError('SLUICE_ERR_CONFIG', 'content inspection is on (INSPECTION_MODE, a tier\'s inspection or INSPECTION_PROMPTS) but has no inspector: set INSPECTION_BUILTIN=pii or INSPECTION_ENDPOINT');
  }
  if (!tierOf(cfg, cfg.defaultTier)) throw new SluiceError('SLUICE_ERR_CONFIG', `defaultTier "${cfg.defaultTier}" is not among the configured tiers`);
  if (cfg.http.headersTimeoutMs > cfg.http.requestTimeoutMs) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `http.headersTimeoutMs (${cfg.http.headersTimeoutMs}) must not exceed http.requestTimeoutMs (${cfg.http.requestTimeoutMs})`);
  }
  if (cfg.role === 'edge') checkEdge(cfg);
  try { new Intl.DateTimeFormat('en-US', { timeZone: cfg.timeZone }); } catch {
    throw new SluiceError('SLUICE_ERR_CONFIG', `timeZone "${cfg.timeZone}" is not a valid IANA time zone`);
  }
  return deepFreeze(cfg);
}

/**
 * An edge shares the origin's state and reads events through a leaf node: its store, limiter and
 * queue must be the origin's network services (an in-process one would be a separate deployment),
 * its bus NATS, and it hands every request to the origin's workers (queued delivery).
 */
function checkEdge(cfg: { databaseUrl: string; limiterUrl: string; queueUrl: string; busUrl: string; deliveryMode: string }): void {
  const local = (url: string) => url.startsWith('memory:') || url.startsWith('pglite:');
  const fields: Array<[string, string]> = [['DATABASE_URL', cfg.databaseUrl], ['LIMITER_URL', cfg.limiterUrl], ['QUEUE_URL', cfg.queueUrl]];
  const wrong = fields.filter(([, url]) => local(url)).map(([name]) => name);
  if (wrong.length > 0) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `role edge: ${wrong.join(', ')} must name the origin's shared service (an in-process or embedded one would make this edge a deployment of its own)`);
  }
  if (!cfg.busUrl.startsWith('nats:')) {
    throw new SluiceError('SLUICE_ERR_CONFIG', 'role edge: BUS_URL must be nats:// (the NATS leaf node the edge reads events from, e.g. nats://leaf:4222?domain=hub)');
  }
  if (cfg.deliveryMode !== 'queued') {
    throw new SluiceError('SLUICE_ERR_CONFIG', 'role edge: SLUICE_DELIVERY_MODE must be queued (an edge never calls a model; the origin\'s workers do)');
  }
}
