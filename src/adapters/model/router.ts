// The model catalogue as one ModelBackend: each public model id maps to its deployments (an
// HttpModel or a SimModel each), and every call goes to one of them.
//
// Guarantees:
// - Balancing: the deployment with the fewest outstanding calls per unit of weight, among those
//   with a closed (or half-open, trial free) circuit and room under maxConcurrency; ties go by
//   smooth weighted round robin, so even one call at a time spreads by weight. A deployment the
//   probe found unreachable is used only when its model has no other.
// - When every usable deployment of the model is full, stream() waits (first come, first served)
//   until one has room or the signal aborts (the request's deadline, cancel, claim loss). The
//   waiters are bounded by the calls this process makes at once (the worker's concurrency, the
//   direct-mode requests admitted): direct mode asks availability() first and refuses with 503.
// - Failover: a transient failure before the first chunk moves the call to the next deployment of
//   the model, then to each fallback model in order (each deployment tried at most once per call);
//   after the first chunk, or on a permanent error, the failure propagates. Waiting and failover
//   both stay within the signal, which carries the request's deadline.
// - The final usage chunk names the deployment that served and the backend's model name (`served`).
// - Health: `failureThreshold` consecutive transient failures open a deployment's circuit for
//   `coolDownMs`, then one trial call decides (see circuit.ts); http(s) deployments are probed with
//   GET {url}/models every `probeIntervalMs`, and once at start, where an unreachable one is a
//   warning naming its URL and the cause.
// - maxConcurrency and the counts are per process: N workers each allow maxConcurrency. A
//   deployment without one (and the MODEL_URL shorthand's) gets routing.maxConcurrency (1024);
//   an http(s) deployment's connection pool is sized to its maxConcurrency, so every admitted call
//   has a connection and none waits inside the HTTP client. capacity() is their sum: the jobs a
//   worker takes at once by default.
import type { Config } from '../../config.ts';
import { SluiceError } from '../../core/errors.ts';
import type { Logger } from '../../core/logger.ts';
import type { Metrics } from '../../core/metrics.ts';
import {
  ModelError, type EmbeddingRequest, type EmbeddingResult, type ModelAvailability, type ModelBackend, type ModelChunk, type ModelRequest,
} from '../../ports/model.ts';
import { Circuit, type DeploymentState } from './circuit.ts';
import { createModel } from './factory.ts';
import { probeModels } from './probe.ts';

type Kind = 'chat' | 'embeddings';

/** One deployment as the router runs it. */
interface Route {
  id: string;
  /** The public model id it serves; '*' for the MODEL_URL shorthand. */
  publicModel: string;
  /** The backend's own model name; null = the request's (the shorthand serves every id as is). */
  backendModel: string | null;
  url: string;
  /** http(s) deployments are probed; sim:// ones are not. */
  http: boolean;
  apiKey: string | undefined;
  weight: number;
  maxConcurrency: number;
  backend: ModelBackend;
  circuit: Circuit;
  outstanding: number;
  /** Smooth weighted round robin: this deployment's running credit among tied candidates. */
  credit: number;
}

interface Waiter { tried: ReadonlySet<Route>; resolve: (lease: Lease | null) => void }

/** One public model: its deployments, fallbacks, what it serves, and the calls waiting for room. */
interface Entry {
  id: string;
  routes: Route[];
  fallbacks: string[];
  kinds: readonly Kind[];
  passthrough: boolean;
  waiters: Waiter[];
}

/** A call's hold on a deployment: one outstanding slot, released exactly once with a verdict. */
interface Lease { route: Route; trial: boolean }

type Choice = Route | 'full' | 'none';

export interface DeploymentHealth { model: string; state: DeploymentState; outstanding: number; maxConcurrency: number | null }
export interface RouterHealth {
  /** Every model has at least one deployment in state healthy or half-open. */
  ok: boolean;
  models: Record<string, 'ok' | 'unavailable'>;
  deployments: Record<string, DeploymentHealth>;
}

export interface RouterOptions {
  config: Pick<Config, 'catalogue' | 'modelUrl' | 'modelApiKey' | 'models' | 'sim' | 'routing'>;
  /** Reads the environment variable a deployment's apiKeyEnv names (resolved once, at start). */
  secret: (name: string) => string | undefined;
  logger: Logger;
  metrics: Metrics;
  now?: () => number;
  /** Tests: the shorthand's one deployment is this backend instead of the one MODEL_URL names. */
  backend?: ModelBackend;
}

/** The id of the MODEL_URL shorthand's one deployment. */
export const SHORTHAND_DEPLOYMENT = 'default';
const SHORTHAND = '*';
const MODELS_CACHE_MS = 30_000;

export async function createRouter(opts: RouterOptions): Promise<ModelRouter> {
  const { config } = opts;
  const now = opts.now ?? Date.now;
  const circuit = () => new Circuit(config.routing.failureThreshold, config.routing.coolDownMs, now);
  const entries: Entry[] = [];
  const built: ModelBackend[] = [];
  try {
    if (Object.keys(config.catalogue).length === 0) {
      const max = config.routing.maxConcurrency;
      const backend = opts.backend ?? await createModel(config.modelUrl, {
        ttftMs: config.sim.ttftMs, itlMs: config.sim.itlMs, models: [...config.models], connections: max, ...(config.modelApiKey && { apiKey: config.modelApiKey }),
      });
      built.push(backend);
      entries.push({
        id: SHORTHAND, fallbacks: [], kinds: ['chat', 'embeddings'], passthrough: false, waiters: [],
        routes: [newRoute(SHORTHAND_DEPLOYMENT, SHORTHAND, null, config.modelUrl, config.modelApiKey, 1, max, backend, circuit())],
      });
    } else {
      for (const [modelId, model] of Object.entries(config.catalogue)) {
        const routes: Route[] = [];
        for (const [i, d] of model.deployments.entries()) {
          const id = d.id ?? `${modelId}#${i + 1}`;
          const apiKey = d.apiKeyEnv === undefined ? undefined : opts.secret(d.apiKeyEnv);
          if (d.apiKeyEnv !== undefined && !apiKey) {
            throw new SluiceError('SLUICE_ERR_CONFIG', `deployment "${id}" of model "${modelId}": environment variable ${d.apiKeyEnv} (its apiKeyEnv) is not set`);
          }
          const max = d.maxConcurrency ?? config.routing.maxConcurrency;
          const backend = await createModel(d.url, {
            ttftMs: config.sim.ttftMs, itlMs: config.sim.itlMs, models: [d.model ?? modelId], source: `deployment "${id}"`,
            ...(apiKey && { apiKey }),
            connections: max,
            ...(d.connectTimeoutMs !== undefined && { connectTimeoutMs: d.connectTimeoutMs }),
            ...(d.headersTimeoutMs !== undefined && { headersTimeoutMs: d.headersTimeoutMs }),
            ...(d.bodyTimeoutMs !== undefined && { bodyTimeoutMs: d.bodyTimeoutMs }),
          });
          built.push(backend);
          routes.push(newRoute(id, modelId, d.model ?? modelId, d.url, apiKey, d.weight, max, backend, circuit()));
        }
        entries.push({
          id: modelId, routes, fallbacks: [...model.fallbacks], kinds: [...model.kinds], waiters: [],
          passthrough: model.deployments.length > 0 && model.deployments.every((d) => d.passthrough),
        });
      }
    }
  } catch (e) {
    await Promise.allSettled(built.map((b) => b.close()));
    throw e;
  }
  return new ModelRouter(entries, opts, now);
}

function newRoute(id: string, publicModel: string, backendModel: string | null, url: string, apiKey: string | undefined, weight: number, maxConcurrency: number, backend: ModelBackend, circuit: Circuit): Route {
  const http = url.startsWith('http:') || url.startsWith('https:');
  return { id, publicModel, backendModel, url, http, apiKey, weight, maxConcurrency, backend, circuit, outstanding: 0, credit: 0 };
}

export class ModelRouter implements ModelBackend {
  private readonly entries = new Map<string, Entry>();
  private readonly routes: Route[];
  private readonly shorthand: Entry | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing: Promise<void> | undefined;
  private readonly refreshGauges = () => this.updateGauges();
  private shorthandModels: { ids: string[]; at: number } | undefined;
  /** The start-up probe (tests wait for its warnings). */
  readonly started: Promise<void>;

  constructor(entries: Entry[], private readonly opts: RouterOptions, private readonly now: () => number) {
    for (const e of entries) this.entries.set(e.id, e);
    this.shorthand = this.entries.get(SHORTHAND);
    this.routes = entries.flatMap((e) => e.routes);
    opts.metrics.beforeScrape.add(this.refreshGauges);
    this.started = this.probeAll(true);
    const every = opts.config.routing.probeIntervalMs;
    if (every > 0 && this.routes.some((r) => r.http)) {
      this.probeTimer = setInterval(() => { this.probing ??= this.probeAll(false).finally(() => { this.probing = undefined; }); }, every);
      this.probeTimer.unref();
    }
  }

  async models(): Promise<string[]> {
    if (!this.shorthand) return [...this.entries.keys()];
    return this.shorthandModelIds();
  }

  /** Whether the model's deployments all take body fields Sluice does not know (admission's passthrough hook). */
  allowsPassthrough(model: string): boolean {
    return this.entries.get(model)?.passthrough ?? false;
  }

  /** The catalogue's model ids, or null for the MODEL_URL shorthand (the backend lists its own). */
  catalogueModels(): string[] | null {
    return this.shorthand ? null : [...this.entries.keys()];
  }

  /** The model calls this process may have open at once: the sum of every deployment's maxConcurrency. */
  capacity(): number {
    let sum = 0;
    for (const r of this.routes) sum += r.maxConcurrency;
    return sum;
  }

  availability(model: string): ModelAvailability {
    const chain = this.chain(model, 'chat');
    if (chain.length === 0) return { ok: true }; // unknown: admission says so
    const [first] = chain;
    if (first!.waiters.length > 0) return this.busy();
    let reopens = Number.POSITIVE_INFINITY;
    for (const entry of chain) {
      const pick = this.pick(entry, new Set(), true);
      if (pick === 'full') return this.busy();
      if (pick !== 'none') return { ok: true };
      for (const r of entry.routes) { const at = r.circuit.reopensAt(); if (at > 0) reopens = Math.min(reopens, at); }
    }
    const retryAfterS = Number.isFinite(reopens) ? Math.max(1, Math.ceil((reopens - this.now()) / 1000)) : Math.ceil(this.opts.config.routing.coolDownMs / 1000);
    return { ok: false, reason: 'unavailable', retryAfterS };
  }

  async *stream(req: ModelRequest, signal: AbortSignal): AsyncGenerator<ModelChunk> {
    const chain = this.chain(req.model, 'chat');
    if (chain.length === 0) throw this.notServed(req.model, 'chat');
    const tried = new Set<Route>();
    let failure: ModelError | undefined;
    let failedOn: Route | undefined;
    for (const entry of chain) {
      for (;;) {
        const lease = await this.acquire(entry, tried, signal);
        if (signal.aborted) { if (lease) this.release(lease, 'aborted'); return; }
        if (!lease) break;
        const { route } = lease;
        tried.add(route);
        if (failedOn) { this.opts.metrics.deploymentFailovers.inc({ deployment: failedOn.id, model: failedOn.publicModel }); failedOn = undefined; }
        let verdict: Verdict = 'aborted';
        let yielded = false;
        try {
          const upstreamReq = route.backendModel === null ? req : { ...req, model: route.backendModel };
          for await (const chunk of route.backend.stream(upstreamReq, signal)) {
            if (chunk.type === 'usage') {
              verdict = 'ok';
              yield { ...chunk, served: { deployment: route.id, model: upstreamReq.model } };
              return;
            }
            if (!yielded) { yielded = true; yield { type: 'served', deployment: route.id, model: upstreamReq.model }; }
            yield chunk;
          }
          if (signal.aborted) return;
          throw new ModelError('transient', `deployment "${route.id}" ended its stream without usage`);
        } catch (e) {
          if (signal.aborted) throw e;
          const me = asModelError(e);
          verdict = me.kind;
          if (me.kind === 'permanent' || yielded) throw me;
          failure = me;
          failedOn = route;
          this.opts.logger.warn({ deployment: route.id, model: route.publicModel, err: me.message }, 'deployment failed before the first token; trying the next');
        } finally {
          this.release(lease, verdict);
        }
      }
    }
    throw failure ?? this.unavailable(req.model);
  }

  async embed(req: EmbeddingRequest, signal: AbortSignal): Promise<EmbeddingResult> {
    const chain = this.chain(req.model, 'embeddings');
    if (chain.length === 0) throw this.notServed(req.model, 'embeddings');
    const tried = new Set<Route>();
    let failure: ModelError | undefined;
    for (const entry of chain) {
      for (;;) {
        const lease = await this.acquire(entry, tried, signal);
        if (signal.aborted) { if (lease) this.release(lease, 'aborted'); throw new ModelError('transient', 'embedding request aborted'); }
        if (!lease) break;
        const { route } = lease;
        tried.add(route);
        let verdict: Verdict = 'aborted';
        try {
          if (!route.backend.embed) { verdict = 'permanent'; throw new ModelError('permanent', `deployment "${route.id}" does not serve embeddings`, 400); }
          const upstreamReq = route.backendModel === null ? req : { ...req, model: route.backendModel };
          const result = await route.backend.embed(upstreamReq, signal);
          verdict = 'ok';
          return { ...result, served: { deployment: route.id, model: upstreamReq.model } };
        } catch (e) {
          if (signal.aborted) throw e;
          const me = asModelError(e);
          verdict = me.kind;
          if (me.kind === 'permanent') throw me;
          failure = me;
        } finally {
          this.release(lease, verdict);
        }
      }
    }
    throw failure ?? this.unavailable(req.model);
  }

  /** Each deployment's state and load, and whether every model has a usable one (for /readyz). */
  health(): RouterHealth {
    const deployments: Record<string, DeploymentHealth> = {};
    const models: Record<string, 'ok' | 'unavailable'> = {};
    for (const entry of this.entries.values()) {
      let usable = false;
      for (const r of entry.routes) {
        const state = r.circuit.state();
        if (state === 'healthy' || state === 'half-open') usable = true;
        deployments[r.id] = { model: entry.id, state, outstanding: r.outstanding, maxConcurrency: Number.isFinite(r.maxConcurrency) ? r.maxConcurrency : null };
      }
      models[entry.id] = usable ? 'ok' : 'unavailable';
    }
    return { ok: Object.values(models).every((m) => m === 'ok'), models, deployments };
  }

  async close(): Promise<void> {
    clearInterval(this.probeTimer);
    this.opts.metrics.beforeScrape.delete(this.refreshGauges);
    for (const entry of this.entries.values()) for (const w of entry.waiters.splice(0)) w.resolve(null);
    await Promise.allSettled(this.routes.map((r) => r.backend.close()));
  }

  /** The model's entry then its fallbacks', those that serve `kind`; the shorthand serves everything. */
  private chain(model: string, kind: Kind): Entry[] {
    if (this.shorthand) return [this.shorthand];
    const first = this.entries.get(model);
    if (!first || !first.kinds.includes(kind)) return [];
    const out = [first];
    for (const f of first.fallbacks) {
      const e = this.entries.get(f);
      if (e && e.kinds.includes(kind) && !out.includes(e)) out.push(e);
    }
    return out;
  }

  /**
   * A free deployment of `entry` not yet tried by this call ('none' when it has none left that
   * may take calls, 'full' when the ones that may are all at capacity). `peek` (availability)
   * only looks: it must not advance the round robin, or every check before a call would shift
   * which deployment the call then gets (direct mode and the worker both check first).
   */
  private pick(entry: Entry, tried: ReadonlySet<Route>, peek = false): Choice {
    let admitting = false;
    let reachableOnly = false;
    let best: Route[] = [];
    for (const r of entry.routes) {
      if (tried.has(r) || !r.circuit.admits()) continue;
      const reachable = r.circuit.state() !== 'unreachable';
      if (reachable && !reachableOnly) { reachableOnly = true; best = []; } // an unreachable one only when no other may take calls
      if (!reachable && reachableOnly) continue;
      admitting = true;
      if (r.outstanding >= r.maxConcurrency) continue;
      const head = best[0];
      // fewest outstanding per unit of weight, compared without division
      const cmp = head === undefined ? -1 : r.outstanding * head.weight - head.outstanding * r.weight;
      if (cmp < 0) best = [r]; else if (cmp === 0) best.push(r);
    }
    if (best.length > 0) return best.length === 1 || peek ? best[0]! : this.roundRobin(best);
    return admitting ? 'full' : 'none';
  }

  /** Smooth weighted round robin among tied deployments (nginx's): each gains its weight, the richest is picked and pays the total. */
  private roundRobin(tied: Route[]): Route {
    let total = 0;
    let chosen = tied[0]!;
    for (const r of tied) {
      r.credit += r.weight;
      total += r.weight;
      if (r.credit > chosen.credit) chosen = r;
    }
    chosen.credit -= total;
    return chosen;
  }

  /** Takes a slot on a deployment of `entry`: at once, after waiting for room, or null when none is left. */
  private acquire(entry: Entry, tried: ReadonlySet<Route>, signal: AbortSignal): Promise<Lease | null> {
    if (signal.aborted) return Promise.resolve(null);
    const pick = entry.waiters.length > 0 ? 'full' : this.pick(entry, tried);
    if (pick === 'none') return Promise.resolve(null);
    if (pick !== 'full') return Promise.resolve(this.take(pick));
    return new Promise((resolve) => {
      const waiter: Waiter = {
        tried,
        resolve: (lease) => { signal.removeEventListener('abort', onAbort); resolve(lease); },
      };
      const onAbort = () => {
        const i = entry.waiters.indexOf(waiter);
        if (i !== -1) entry.waiters.splice(i, 1);
        resolve(null);
        this.wake(entry); // the next waiter may fit where this one would not
      };
      signal.addEventListener('abort', onAbort, { once: true });
      entry.waiters.push(waiter);
      this.wake(entry);
    });
  }

  private take(route: Route): Lease {
    const trial = route.circuit.start();
    route.outstanding++;
    return { route, trial };
  }

  /** Gives the slot back with the call's verdict, then lets waiting calls in. */
  private release(lease: Lease, verdict: Verdict): void {
    const { route, trial } = lease;
    route.outstanding--;
    this.opts.metrics.deploymentRequests.inc({ deployment: route.id, model: route.publicModel, outcome: verdict });
    const before = route.circuit.state();
    if (verdict === 'ok') route.circuit.succeeded(trial);
    else if (verdict === 'transient') {
      if (route.circuit.failed(trial)) {
        this.opts.logger.warn({ deployment: route.id, model: route.publicModel, cool_down_ms: this.opts.config.routing.coolDownMs }, 'deployment circuit opened after consecutive failures');
      }
    } else route.circuit.abandoned(trial);
    const after = route.circuit.state();
    if (before !== after && after === 'healthy') this.opts.logger.info({ deployment: route.id, model: route.publicModel, was: before }, 'deployment healthy again');
    const entry = this.entries.get(route.publicModel);
    if (entry) this.wake(entry);
  }

  /** Hands free slots to waiting calls, first come first served; a call with nothing left to try gets null. */
  private wake(entry: Entry): void {
    for (let i = 0; i < entry.waiters.length;) {
      const w = entry.waiters[i]!;
      const pick = this.pick(entry, w.tried);
      if (pick === 'full') { i++; continue; }
      entry.waiters.splice(i, 1);
      w.resolve(pick === 'none' ? null : this.take(pick));
    }
  }

  private async probeAll(atStart: boolean): Promise<void> {
    const { probeTimeoutMs, probeIntervalMs } = this.opts.config.routing;
    await Promise.all(this.routes.filter((r) => r.http).map(async (r) => {
      const result = await probeModels(r.url, r.apiKey, probeTimeoutMs);
      const where = { deployment: r.id, model: r.publicModel, url: redactUrl(r.url) };
      if (!result.reachable) {
        // Without periodic probes nothing would clear the mark: the start-up probe then only warns.
        if (atStart) this.opts.logger.warn({ ...where, cause: result.cause }, `model backend ${redactUrl(r.url)} is unreachable (${result.cause}); start-up continues and calls to it fail over until it answers`);
        else if (!r.circuit.unreachable) this.opts.logger.warn({ ...where, cause: result.cause }, `model backend ${redactUrl(r.url)} became unreachable (${result.cause})`);
        if (probeIntervalMs > 0) r.circuit.unreachable = true;
        return;
      }
      if (r.circuit.unreachable) this.opts.logger.info(where, `model backend ${redactUrl(r.url)} answers again`);
      r.circuit.unreachable = false;
      if (!atStart) return;
      if (result.ids === null) this.opts.logger.warn({ ...where, cause: result.cause }, `model backend ${redactUrl(r.url)} answered GET /models with ${result.cause}`);
      else if (r.backendModel !== null && result.ids.length > 0 && !result.ids.includes(r.backendModel)) {
        this.opts.logger.warn({ ...where, listed: result.ids.slice(0, 20) }, `model backend ${redactUrl(r.url)} does not list the model "${r.backendModel}"`);
      }
    }));
  }

  /** The shorthand: the configured ids, else what the backend lists; an unreachable http backend is an error (not an empty list). */
  private async shorthandModelIds(): Promise<string[]> {
    const route = this.shorthand!.routes[0]!;
    if (this.opts.config.models.length > 0) return [...this.opts.config.models];
    if (!route.http) return route.backend.models();
    const cached = this.shorthandModels;
    if (cached && this.now() - cached.at < MODELS_CACHE_MS) return cached.ids;
    const result = await probeModels(route.url, route.apiKey, this.opts.config.routing.probeTimeoutMs);
    if (!result.reachable) throw new ModelError('transient', `model backend ${redactUrl(route.url)} is unreachable (${result.cause})`, 503);
    const ids = result.ids ?? [];
    this.shorthandModels = { ids, at: this.now() };
    return ids;
  }

  private busy(): ModelAvailability {
    return { ok: false, reason: 'busy', retryAfterS: this.opts.config.routing.busyRetryAfterS };
  }

  private unavailable(model: string): ModelError {
    return new ModelError('transient', `no deployment of model "${model}" (or of its fallbacks) can take the request now: their circuits are open`, 503);
  }

  private notServed(model: string, kind: Kind): ModelError {
    return new ModelError('permanent', this.entries.has(model) ? `model "${model}" does not serve ${kind === 'chat' ? 'chat completions' : 'embeddings'}` : `model "${model}" is not in the catalogue`, 400);
  }

  /** The gauges a scrape reads: each deployment's state (it changes with the clock) and its outstanding calls (counted per call, set only here). */
  private updateGauges(): void {
    const { deploymentState, deploymentOutstanding } = this.opts.metrics;
    for (const r of this.routes) {
      const state = r.circuit.state();
      for (const s of STATES) deploymentState.set({ deployment: r.id, model: r.publicModel, state: s }, s === state ? 1 : 0);
      deploymentOutstanding.set({ deployment: r.id, model: r.publicModel }, r.outstanding);
    }
  }
}

type Verdict = 'ok' | 'transient' | 'permanent' | 'aborted';
const STATES: readonly DeploymentState[] = ['healthy', 'open', 'half-open', 'unreachable'];

function asModelError(e: unknown): ModelError {
  if (e instanceof ModelError) return e;
  return new ModelError('transient', e instanceof Error ? e.message : String(e), undefined, { cause: e });
}

/** A URL as logged: no query string (sim:// options, tokens some providers take there). */
function redactUrl(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}
