// The request lifecycle seen from the gateway: submit (admit, persist, enqueue), read, cancel,
// and run in direct mode. A 202 is only answered once the request row is durable; if the queue
// publish then fails, the sweeper re-enqueues the row, so an accepted request is never lost.
// So the 202 does not wait for the broker's confirm either: the publish starts before the answer
// and completes after it (a persistent message's confirm waits for the broker's disk, often the
// slowest step of an intake). Unconfirmed publishes are bounded (MAX_UNCONFIRMED_PUBLISHES) and
// waited for on shutdown (settlePublishes).
import { createHash } from 'node:crypto';
import { randomUUID } from 'node:crypto';
import type { Config } from '../config.ts';
import type { Bus, LogEvent } from '../ports/bus.ts';
import type { Limiter } from '../ports/limiter.ts';
import type { Queue } from '../ports/queue.ts';
import { isEnded, type DeliveryMode, type RequestRecord, type Store } from '../ports/store.ts';
import type { Admission, Admitted } from './admission.ts';
import type { AttemptRunner } from './attempt-runner.ts';
import type { Principal } from './auth.ts';
import type { ChatInput } from './chat-request.ts';
import type { EmbeddingResult } from '../ports/model.ts';
import type { EmbeddingInput } from './embedding-request.ts';
import { SluiceError, catalogue, type ErrorCode } from './errors.ts';
import { followEventRuns } from './event-follow.ts';
import type { Logger } from './logger.ts';
import { inSpan, NOOP_TRACER, type Tracer } from '../ports/tracer.ts';
import { jitteredBackoff } from './backoff.ts';
import { settledWithin, type Drain } from './drain.ts';
import type { ChatMessage } from '../ports/model.ts';
import { inspectionModeFor } from './inspection.ts';

export interface Submitted { record: RequestRecord; created: boolean; admitted: Admitted }

/**
 * Publishes a process lets run past the 202 that started them. Beyond this many, a submission
 * waits for its own publish before answering: a slow or absent broker slows intake down instead
 * of growing memory without bound.
 */
export const MAX_UNCONFIRMED_PUBLISHES = 1024;

/** Request ids for idempotent submissions are derived from (user, key), so a replay maps to the same id everywhere, including the limiter's reservation. */
function idempotentId(userId: string, key: string): string {
  const h = createHash('sha256').update(`${userId}\0${key}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Covers everything that shapes the answer (messages, n, forwarded and passthrough fields); not how it is delivered. */
function bodyHash(input: ChatInput): string {
  const { stream: _s, includeUsage: _u, mode: _m, ...semantic } = input;
  return createHash('sha256').update(JSON.stringify(semantic)).digest('hex').slice(0, 32);
}

export class RequestService {
  /** Store reads in flight for getToFollow, by request id. */
  private readonly reads = new Map<string, Promise<RequestRecord | null>>();
  readonly gatewayId = `gateway-${process.pid}-${randomUUID().slice(0, 8)}`;
  /** Publishes of accepted requests still waiting for the queue's confirm (see the header). */
  private readonly publishing = new Set<Promise<void>>();

  constructor(private readonly deps: {
    config: Config; store: Store; queue: Queue; bus: Bus; limiter: Limiter; admission: Admission; runner: AttemptRunner; logger: Logger;
    crash?: (point: string) => void;
    tracer?: Tracer;
    /** Refuses new submissions once this process drains, and hands direct-mode runs off (core/drain.ts). */
    drain?: Drain;
    /** The request-side content check (INSPECTION_PROMPTS): refuses (throws) or returns the messages to send. */
    checkPrompt?: (messages: ChatMessage[], requestId: string) => Promise<ChatMessage[]>;
    /** Default MAX_UNCONFIRMED_PUBLISHES. */
    maxUnconfirmedPublishes?: number;
  }) {}

  /** `traceparent`: the span of the HTTP request that submits (tracing on); the worker's spans join its trace. */
  async submit(principal: Principal, input: ChatInput, opts: { idempotencyKey?: string | undefined; mode: DeliveryMode; traceparent?: string | undefined }): Promise<Submitted> {
    const { store } = this.deps;
    this.deps.drain?.assertAccepting();
    // Only a replay compares bodies, and only a request with an Idempotency-Key can be replayed.
    let id: string;
    let hash = '';
    if (opts.idempotencyKey) {
      id = idempotentId(principal.userId, opts.idempotencyKey);
      hash = bodyHash(input);
      const existing = await store.getRequest(id);
      if (existing) return this.replay(existing, hash, principal);
    } else {
      id = randomUUID();
    }
    // Before admission: a refused prompt reserves nothing; a redacted one is estimated as sent.
    if (this.deps.checkPrompt) input = { ...input, messages: await this.deps.checkPrompt(input.messages, id) };
    const tracer = this.deps.tracer ?? NOOP_TRACER;
    const admitted = await inSpan(tracer, 'sluice.admission', { parent: opts.traceparent, attributes: { 'sluice.request_id': id, 'sluice.user': principal.userId } },
      (span) => this.deps.admission.admit(principal, input, id, { queued: opts.mode === 'queued', traceparent: span.traceparent || undefined }));
    if (opts.traceparent && tracer.enabled) admitted.payload = { ...admitted.payload, traceparent: opts.traceparent };
    const inspection = inspectionModeFor(this.deps.config, principal);
    if (inspection !== 'disabled') admitted.payload = { ...admitted.payload, inspection };
    let inserted: { record: RequestRecord; created: boolean };
    try {
      inserted = await this.insert(principal, id, input.model, admitted, { ...opts, bodyHash: hash }, input.stream);
    } catch (err) {
      // The queue place goes back either way: a row that exists after all is counted by the next sample.
      admitted.slot?.release();
      throw err;
    }
    // A concurrent replay of the same key inserted first: the reservation (same id) is that request's.
    if (!inserted.created) { admitted.slot?.release(); return this.replay(inserted.record, hash, principal); }
    admitted.slot?.stored();
    this.deps.crash?.('after-insert');
    if (opts.mode === 'queued') await this.publishAfterAnswer(inserted.record);
    return { record: inserted.record, created: true, admitted };
  }

  /**
   * Starts the job's publish (a memory queue has it before this returns) and lets it finish after
   * the answer, unless MAX_UNCONFIRMED_PUBLISHES are already pending: then it waits for it.
   */
  private async publishAfterAnswer(record: RequestRecord): Promise<void> {
    const publish = this.enqueue(record);
    if (this.publishing.size >= (this.deps.maxUnconfirmedPublishes ?? MAX_UNCONFIRMED_PUBLISHES)) return await publish;
    this.publishing.add(publish);
    void publish.finally(() => this.publishing.delete(publish));
  }

  /** Publishes started by submissions and not yet confirmed (metrics, tests). */
  get unconfirmedPublishes(): number { return this.publishing.size; }

  /**
   * Waits, at most `timeoutMs`, for the publishes of requests already answered 202; called on
   * shutdown before the queue closes. One still unconfirmed after that is the sweeper's: its row
   * stays without published_at and is published again after requeueAfterMs.
   */
  async settlePublishes(timeoutMs: number): Promise<void> {
    await settledWithin(this.publishing, timeoutMs);
  }

  /**
   * Stores an admitted request (direct mode: already claimed by this gateway); a request that
   * never came to exist gives its reservation back. A direct call whose caller does not stream
   * may go upstream non-streaming (one response, no token events to pace); a queued request
   * always streams, since anyone may follow its log.
   */
  private async insert(principal: Principal, id: string, model: string, admitted: Admitted,
    opts: { idempotencyKey?: string | undefined; mode: DeliveryMode; bodyHash: string }, streams = true): Promise<{ record: RequestRecord; created: boolean }> {
    const { store } = this.deps;
    const payload = opts.mode === 'direct' && !streams ? { ...admitted.payload, stream: false } : admitted.payload;
    try {
      return await store.insertRequest({
        id, userId: principal.userId, keyId: principal.keyId, model, mode: opts.mode, payload,
        priority: admitted.priority, idempotencyKey: opts.idempotencyKey ?? null, bodyHash: opts.bodyHash,
        estimatedTokens: admitted.estimatedTokens, promptTokens: admitted.promptTokens,
      }, opts.mode === 'direct' ? { workerId: this.gatewayId, claimMs: this.deps.config.worker.claimMs } : undefined);
    } catch (err) {
      // If the request never came to exist, its reservation goes as if never made, so a retry with
      // the same Idempotency-Key (the same id) reserves again instead of running unreserved. A
      // row that exists after all (the insert committed but reported an error, or a concurrent
      // replay of the key inserted it) keeps the hold: that request runs and settles it. So does
      // a request the store cannot tell about yet: the sweeper releases its hold once past the
      // deadline if it never came to exist.
      if (admitted.reserved) {
        const absent = await store.getRequest(id).then((r) => r === null, () => false);
        if (absent) await this.deps.limiter.release(id).catch(() => {});
      }
      throw err;
    }
  }

  /**
   * POST /v1/embeddings: admitted (1 request and the input tokens reserved), stored and settled
   * like a direct chat request (mode 'direct', claimed by this gateway, one ledger row), and run
   * here. The vectors go to this caller only; they are not stored. Throws the request's error
   * when it did not complete (a failure is refunded like a failed chat request).
   */
  async embed(principal: Principal, input: EmbeddingInput, disconnect: AbortSignal): Promise<{ record: RequestRecord; admitted: Admitted; result: EmbeddingResult }> {
    const { store, runner, config } = this.deps;
    const id = randomUUID();
    const admitted = await this.deps.admission.admitEmbedding(principal, input, id);
    const { record } = await this.insert(principal, id, input.model, admitted, { mode: 'direct', bodyHash: '' });
    let attempt = record;
    for (;;) {
      const out = await runner.embed(attempt, this.gatewayId, disconnect);
      if (out.kind === 'embedded') return { record: attempt, admitted, result: out.result };
      if (out.kind !== 'retry') break;
      await new Promise((r) => setTimeout(r, jitteredBackoff(attempt.attempt, config.worker.retryBaseMs)));
      const claim = await store.claimRequest(id, this.gatewayId, config.worker.claimMs);
      if (claim.state !== 'claimed') break;
      attempt = claim.record;
    }
    const ended = await store.getRequest(id);
    const code = ended?.error?.code ?? '';
    if (ended && isEnded(ended) && ended.status !== 'completed') {
      throw new SluiceError(code in catalogue ? (code as ErrorCode) : 'SLUICE_ERR_INTERNAL', ended.error?.message);
    }
    // Completed by another attempt (whose vectors this caller cannot have), or taken over by a worker.
    throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'The embeddings request was taken over elsewhere; send it again');
  }

  /**
   * Publishes the job and records that the queue confirmed it. On failure the row stays queued
   * without a confirmed job, and the sweeper publishes it again.
   */
  async enqueue(record: RequestRecord, opts: { awaitRecord?: boolean } = {}): Promise<void> {
    try {
      await this.deps.queue.publish({ requestId: record.id, priority: record.priority, userId: record.userId, model: record.model });
    } catch (err) {
      this.deps.logger.error({ request_id: record.id, err }, 'queue publish failed; the sweeper will re-enqueue');
      return;
    }
    // A submission's answer need not wait for it. Unrecorded (a failure, a crash), the sweeper
    // publishes the job once more after requeueAfterMs: a duplicate, which is harmless.
    const recorded = this.deps.store.markPublished(record.id).catch((err: unknown) => this.deps.logger.warn({ request_id: record.id, err }, 'could not record the publish'));
    if (opts.awaitRecord) await recorded;
  }

  private replay(existing: RequestRecord, hash: string, principal: Principal): Submitted {
    if (existing.userId !== principal.userId) throw new SluiceError('SLUICE_ERR_INTERNAL', 'idempotency id collision');
    if (existing.bodyHash !== hash) throw new SluiceError('SLUICE_ERR_IDEMPOTENCY_CONFLICT', undefined, { param: 'Idempotency-Key' });
    const admitted: Admitted = {
      payload: existing.payload, promptTokens: existing.promptTokens,
      estimatedTokens: existing.estimatedTokens, priority: existing.priority, degraded: false, headers: {}, reserved: false,
    };
    return { record: existing, created: false, admitted };
  }

  /** The caller's request, or 404 — also for another user's request, so its existence is not revealed. */
  async get(principal: Principal, id: string): Promise<RequestRecord> {
    const record = UUID.test(id) ? await this.deps.store.getRequest(id) : null;
    if (!record || (record.userId !== principal.userId && !principal.admin)) throw new SluiceError('SLUICE_ERR_REQUEST_NOT_FOUND', `No request with id ${id}`, { param: 'request_id' });
    return record;
  }

  /**
   * get() for a listener about to follow the request's log: concurrent reads of one request share
   * one store read (thousands of listeners reconnecting at once after a gateway restart cost one
   * query per request, not one per listener). Only for delivery: a record read a moment before the
   * caller asked is fine there, since the log, not the record, decides what the listener gets.
   */
  async getToFollow(principal: Principal, id: string): Promise<RequestRecord> {
    if (!UUID.test(id)) return this.get(principal, id);
    let read = this.reads.get(id);
    if (!read) {
      read = this.deps.store.getRequest(id).finally(() => this.reads.delete(id));
      this.reads.set(id, read);
    }
    const record = await read;
    if (!record || (record.userId !== principal.userId && !principal.admin)) throw new SluiceError('SLUICE_ERR_REQUEST_NOT_FOUND', `No request with id ${id}`, { param: 'request_id' });
    return record;
  }

  /** Cancels; waits briefly for the terminal state so the answer usually says `cancelled`. */
  async cancel(principal: Principal, id: string): Promise<RequestRecord> {
    const { store, bus, runner } = this.deps;
    const current = await this.get(principal, id);
    if (isEnded(current)) throw new SluiceError('SLUICE_ERR_NOT_CANCELLABLE', `Request ${id} has already ${current.status}`);
    const record = (await store.requestCancel(id)) ?? current;
    if (record.status === 'queued') {
      await runner.end(record, runner.cancelled(record, 0, '', false));
    }
    await bus.publishControl(id, 'cancel');
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 2000);
    try { await followEventRuns(bus, id, 0, () => {}, { signal: ac.signal }); } finally { clearTimeout(timer); }
    return (await store.getRequest(id)) ?? record;
  }

  /**
   * Direct mode: this gateway runs the model itself (still logging events and settling once).
   * `record` was inserted already claimed by this gateway (attempt 1); retries claim again. When
   * this process hands its work off (drain), the request goes to the queue, where a worker
   * continues it: a direct request is accepted like a queued one, and is not lost either.
   * Returns the request's record as this gateway ended it; undefined when it did not end it here.
   */
  async runDirect(record: RequestRecord, disconnect: AbortSignal, onEvents?: (events: readonly LogEvent[]) => void | Promise<void>): Promise<RequestRecord | undefined> {
    const { store, runner, config } = this.deps;
    const handoff = this.deps.drain?.handoff;
    let attempt = record;
    for (;;) {
      const result = await runner.run(attempt, this.gatewayId, { disconnect, ...(handoff && { handoff }), ...(onEvents && { onEvents }) });
      if (result.kind === 'handoff') { await this.enqueue(attempt, { awaitRecord: true }); return undefined; }
      if (result.kind === 'finished') return result.ended;
      if (result.kind !== 'retry') return undefined;
      if (handoff?.aborted) { await this.enqueue(attempt, { awaitRecord: true }); return undefined; }
      await new Promise((r) => setTimeout(r, jitteredBackoff(attempt.attempt, config.worker.retryBaseMs)));
      const claim = await store.claimRequest(record.id, this.gatewayId, config.worker.claimMs);
      if (claim.state !== 'claimed') return undefined;
      attempt = claim.record;
    }
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

