// One attempt of one request: call the model, append every token to the request's event log,
// honour cancel, deadline and claim loss, then settle exactly once and append the terminal event.
// The worker (queued mode) and the gateway (direct mode) both run requests through this.
import { LogEndedError, PartialAppendError, type Bus, type EventBody, type LogEvent } from '../ports/bus.ts';
import { ModelError, type EmbeddingRequest, type EmbeddingResult, type ModelBackend, type ModelChunk, type ModelRequest } from '../ports/model.ts';
import { isEnded, type RequestOutput, type RequestRecord, type Store } from '../ports/store.ts';
import type { Config } from '../config.ts';
import { usageOf, type Ending, type Ledger } from './ledger.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { choiceEndings, OutputBuilder } from './request-output.ts';
import { NOOP_TRACER, type Span, type Tracer } from '../ports/tracer.ts';
import type { Inspector } from '../ports/inspector.ts';
import { AnswerInspection, InspectionStop } from './inspection.ts';
import { ClaimKeeper } from './claim-keeper.ts';

/** What repairTerminal found: the request still running, its log ending with its terminal event (already, or now), or no log. */
export type LogRepair = 'running' | 'intact' | 'repaired' | 'gone';

export type AttemptResult =
  /** The request ended; `ended` is its record when this attempt ended it (no need to read it back). */
  | { kind: 'finished'; ended?: RequestRecord }
  /** A transient failure with attempts left: run it again later. */
  | { kind: 'retry'; error: ModelError }
  /** Another worker took the request over (this one's claim expired): do nothing more. */
  | { kind: 'lost' }
  /** This process is shutting down: the claim was given back; the request waits for another process. */
  | { kind: 'handoff' };

/** An embeddings attempt: the vectors when this attempt completed the request, else how it ended. */
export type EmbedResult = { kind: 'embedded'; result: EmbeddingResult } | AttemptResult;

type StopReason = 'cancel' | 'disconnect' | 'timeout' | 'lost' | 'handoff';

class Stop extends Error { constructor(readonly reason: StopReason) { super(reason); } }

export interface AttemptHooks {
  /** Aborts when the client that is the only listener went away (direct mode): a cut stream. */
  disconnect?: AbortSignal;
  /** Aborts when this process hands its work off (drain): the attempt stops without ending the request. */
  handoff?: AbortSignal;
  /** Called on every claim renewal (queue heartbeats for long generations). */
  onRenew?: () => Promise<void>;
  /**
   * Receives every event this attempt logs, with its sequence, right after the append, a burst of
   * tokens at once (direct mode: the gateway's own client reads them here instead of back through
   * the bus). Awaited, so a slow client slows the model call down rather than growing a buffer.
   */
  onEvents?: (events: readonly LogEvent[]) => void | Promise<void>;
}

export class AttemptRunner {
  /** Every running attempt's claim, renewed together every third of the claim's time. */
  private readonly claims: ClaimKeeper;

  constructor(private readonly deps: {
    config: Config; store: Store; bus: Bus; model: ModelBackend; ledger: Ledger; metrics: Metrics; logger: Logger; now: () => number;
    tracer?: Tracer;
    /** Content inspection (config.inspection); requests whose payload names a mode other than disabled need it. */
    inspector?: Inspector | null;
  }) {
    const { claimMs } = deps.config.worker;
    this.claims = new ClaimKeeper({ store: deps.store, logger: deps.logger, claimMs, intervalMs: Math.max(50, Math.floor(claimMs / 3)) });
  }

  private get tracer(): Tracer { return this.deps.tracer ?? NOOP_TRACER; }

  /**
   * Runs one attempt. After a transient failure with attempts left, or a hand-off, the claim is
   * given back, so the next delivery (here or in another process) can take the request at once.
   */
  async run(record: RequestRecord, workerId: string, hooks: AttemptHooks = {}): Promise<AttemptResult> {
    const span = this.attemptSpan(record, workerId);
    try {
      const result = await this.attempt(record, workerId, { ...hooks, span });
      span.setAttributes({ 'sluice.result': result.kind });
      if (result.kind === 'handoff') await this.deps.store.handBack(record.id, workerId, record.attempt);
      else if (result.kind === 'retry') await this.deps.store.renewClaim(record.id, workerId, record.attempt, 0);
      return result;
    } catch (err) { span.fail(err); throw err; } finally { span.end(); }
  }

  /**
   * The attempt's span in the request's trace (tracing on); the first attempt of a queued request
   * also gets the queue wait, from acceptance to the claim.
   */
  private attemptSpan(record: RequestRecord, workerId: string): Span {
    const { tracer } = this;
    const parent = record.payload.traceparent;
    if (!tracer.enabled) return tracer.start('');
    const attrs = { 'sluice.request_id': record.id, 'sluice.attempt': record.attempt, 'sluice.mode': record.mode, 'sluice.worker': workerId };
    if (record.attempt === 1 && record.mode === 'queued') {
      tracer.start('sluice.queue_wait', { parent, startTime: record.createdAt.getTime(), kind: 'consumer', attributes: attrs }).end(this.deps.now());
    }
    return tracer.start('sluice.attempt', { parent, attributes: attrs });
  }

  private async attempt(record: RequestRecord, workerId: string, hooks: AttemptHooks & { span: Span }): Promise<AttemptResult> {
    const { config, bus, logger } = this.deps;
    const where = { request_id: record.id, attempt: record.attempt };
    if (record.cancelRequested) return this.end(record, this.cancelled(record, 0, '', false), hooks);
    // The only listener (direct mode) left before the attempt began, while its request was being
    // stored: the model never sees the prompt, so nothing is billed, as for an early cancel.
    if (hooks.disconnect?.aborted) return this.end(record, this.cancelled(record, 0, '', false), hooks);
    // An embeddings request reaches a worker only when the gateway running it stopped (its claim
    // expired, or a restart recovered it). Its vectors were for that gateway's caller, who is
    // gone, and are never stored: running it again would bill work nobody can read. Refunded.
    if (record.payload.embedding) {
      logger.warn(where, 'an embeddings request outlived the gateway that ran it; failed and refunded');
      return this.end(record, this.failed(record, 0, '', 'SLUICE_ERR_UNAVAILABLE', 'The gateway answering this embeddings request stopped before it ended; send it again'), hooks);
    }

    const abort = new AbortController();
    const stop = (reason: StopReason) => { if (!abort.signal.aborted) abort.abort(new Stop(reason)); };
    const control = await bus.onControl(record.id, (s) => { if (s === 'cancel') stop('cancel'); });
    const onDisconnect = () => stop('disconnect');
    hooks.disconnect?.addEventListener('abort', onDisconnect, { once: true });
    if (hooks.disconnect?.aborted) stop('disconnect');
    const onHandoff = () => stop('handoff');
    hooks.handoff?.addEventListener('abort', onHandoff, { once: true });
    if (hooks.handoff?.aborted) stop('handoff');
    const deadline = setTimeout(() => stop('timeout'), config.worker.requestTimeoutMs);
    const claim = this.claims.hold(record, workerId, { lost: () => stop('lost'), cancel: () => stop('cancel'), ...(hooks.onRenew && { renewed: hooks.onRenew }) });

    const output = new OutputBuilder();
    let inspection: AnswerInspection | null = null;
    /** Completion tokens in the log (inline/hybrid inspection: text tokens as the model produced them): what a cut stream is billed. */
    let produced = 0;
    /** Token and tool-call events in the log, for the latency metrics. */
    let deltas = 0;
    let last = 0;
    /** A token in the log is a token produced (and billed); a tool-call fragment, its argument tokens. */
    const count = (logged: readonly LogEvent[]) => {
      let n = 0;
      for (const e of logged) {
        if (e.type !== 'token' && e.type !== 'tool_call') continue;
        const tokens = output.add(e);
        // Inspected text is counted as the model produced it, not by the redacted events logged.
        if (!(inspection?.gates && e.type === 'token')) produced += tokens;
        n++;
      }
      if (n > 0) { last = this.observeDeltas(record, deltas, n, last); deltas += n; }
    };
    /** What a cut stream produced (the model ran): its choices so far, counted locally. */
    let served: { deployment: string; model: string } | undefined;
    const cut = (finishReason: 'cancelled' | 'error' | 'content_filter'): RequestOutput => output.build({ finishReason, usageSource: 'counted', ...(served && { served }) });
    const append = async (events: EventBody[]) => {
      if (events.length === 0) return;
      let logged: readonly LogEvent[];
      try {
        logged = await bus.appendMany(record.id, events);
      } catch (err) {
        if (!(err instanceof PartialAppendError)) throw err;
        count(err.appended);
        throw err.cause;
      }
      count(logged);
      await hooks.onEvents?.(logged);
    };
    try {
      inspection = this.inspection(record, abort, append);
      if (record.attempt > 1) await append([{ type: 'restart', attempt: record.attempt, reason: 'retry' }]);
      const { traceparent: _accepted, inspection: _inspected, ...payload } = record.payload;
      const started = this.deps.now();
      const modelSpan = this.tracer.start('sluice.model', { parent: hooks.span.traceparent || undefined, kind: 'client', attributes: { 'sluice.model': record.model } });
      const req: ModelRequest = { model: record.model, ...payload, ...(modelSpan.traceparent && { traceparent: modelSpan.traceparent }) };
      let firstToken = true;
      try {
        for await (const chunk of this.deps.model.stream(req, abort.signal)) {
          if (firstToken && chunk.type !== 'usage' && this.tracer.enabled) {
            firstToken = false;
            this.tracer.start('sluice.time_to_first_token', { parent: hooks.span.traceparent, startTime: started }).end(this.deps.now());
          }
          if (abort.signal.aborted) break;
          if (chunk.type === 'usage') {
            await inspection?.finish();
            return await this.end(record, {
              status: 'completed', attempt: record.attempt, result: output.text, finishReason: chunk.finishReason,
              output: output.build({ finishReason: chunk.finishReason, choices: chunk.choices, usageSource: chunk.usageSource ?? 'reported', served: chunk.served }),
              usage: usageOf(chunk.promptTokens, chunk.completionTokens), error: null,
            }, hooks);
          }
          if (chunk.type === 'served') { served = { deployment: chunk.deployment, model: chunk.model }; continue; }
          if (chunk.type === 'tokens' && inspection?.gates) {
            produced += chunk.texts.length;
            await inspection.tokens(chunk);
            continue;
          }
          await append(eventsOf(chunk, record.attempt));
          if (chunk.type === 'tokens') await inspection?.tokens(chunk);
        }
        if (abort.signal.aborted) throw abort.signal.reason;
        throw new ModelError('transient', 'model stream ended without usage');
      } catch (err) { modelSpan.fail(err); throw err; } finally { modelSpan.end(); }
    } catch (err) {
      await inspection?.settle();
      const reason = err instanceof Stop ? err.reason : abort.signal.reason instanceof Stop ? abort.signal.reason.reason : null;
      if (reason === 'lost') { logger.warn(where, 'claim lost; another worker owns this request now'); return { kind: 'lost' }; }
      const stopped = err instanceof InspectionStop ? err : abort.signal.reason instanceof InspectionStop ? abort.signal.reason : null;
      // What the model produced is billed, as for a cancel; the log holds what was delivered.
      if (stopped?.reason === 'blocked') return await this.end(record, this.blocked(record, produced, output.text, stopped.message, cut('content_filter')), hooks);
      if (stopped) return await this.end(record, this.failed(record, produced, output.text, 'SLUICE_ERR_INSPECTION_FAILED', stopped.message, cut('error')), hooks);
      // Its tokens stay in the log; the next attempt starts with a restart event, as after a crash.
      if (reason === 'handoff') { logger.info(where, 'shutting down: the request is handed to another process'); return { kind: 'handoff' }; }
      // The log already holds the request's terminal event: it was ended elsewhere (and settled first).
      if (err instanceof LogEndedError) { logger.warn(where, 'the request ended elsewhere; this attempt stops'); return { kind: 'finished' }; }
      if (reason === 'cancel' || reason === 'disconnect') return await this.end(record, this.cancelled(record, produced, output.text, true, cut('cancelled')), hooks);
      if (reason === 'timeout') return await this.end(record, this.failed(record, produced, output.text, 'SLUICE_ERR_MODEL_TIMEOUT', 'the request exceeded its deadline', cut('error')), hooks);
      const me = err instanceof ModelError ? err : new ModelError('transient', (err as Error).message, undefined, { cause: err });
      this.deps.metrics.attempts.inc({ outcome: me.kind });
      if (me.kind === 'transient' && record.attempt - record.handoffs < config.worker.maxAttempts) {
        logger.warn({ ...where, err: me.message }, 'transient model failure; will retry');
        return { kind: 'retry', error: me };
      }
      const code = me.kind === 'transient' ? 'SLUICE_ERR_MODEL_TRANSIENT' : 'SLUICE_ERR_MODEL_PERMANENT';
      return await this.end(record, this.failed(record, produced, output.text, code, me.message, cut('error')), hooks);
    } finally {
      inspection?.close();
      clearTimeout(deadline);
      claim.release();
      hooks.disconnect?.removeEventListener('abort', onDisconnect);
      hooks.handoff?.removeEventListener('abort', onHandoff);
      await control.close().catch(() => {});
    }
  }

  /** The attempt's content inspection, when its request was admitted with a mode other than disabled. */
  private inspection(record: RequestRecord, abort: AbortController, append: (events: EventBody[]) => Promise<void>): AnswerInspection | null {
    const mode = record.payload.inspection;
    if (!mode) return null;
    const { inspector, config, metrics, logger } = this.deps;
    if (!inspector) throw new ModelError('permanent', `this request needs content inspection (${mode}) and this process has no inspector configured`);
    return new AnswerInspection({
      mode, inspector, requestId: record.id, attempt: record.attempt, bufferMs: config.inspection.bufferMs, metrics, logger, append,
      stop: (err) => { if (!abort.signal.aborted) abort.abort(err); }, signal: abort.signal,
    });
  }

  /** Whether the backend serves embeddings (POST /v1/embeddings answers 501 before admission when not). */
  get embeds(): boolean { return typeof this.deps.model.embed === 'function'; }

  /**
   * Runs one attempt of an embeddings request in the gateway that answers it. It ends like a chat
   * attempt: completed with the input tokens the backend reported (or counted), failed and
   * refunded, cancelled with the input charged when the caller went away or cancelled (the
   * backend had the input), or retried after a transient failure with attempts left.
   */
  async embed(record: RequestRecord, workerId: string, disconnect: AbortSignal): Promise<EmbedResult> {
    const result = await this.embedAttempt(record, workerId, disconnect);
    if (result.kind === 'retry') await this.deps.store.renewClaim(record.id, workerId, record.attempt, 0);
    return result;
  }

  private async embedAttempt(record: RequestRecord, workerId: string, disconnect: AbortSignal): Promise<EmbedResult> {
    const { config, bus, model, logger } = this.deps;
    if (record.cancelRequested) return this.end(record, this.cancelled(record, 0, '', false));
    const abort = new AbortController();
    const stop = (reason: StopReason) => { if (!abort.signal.aborted) abort.abort(new Stop(reason)); };
    const control = await bus.onControl(record.id, (s) => { if (s === 'cancel') stop('cancel'); });
    const onDisconnect = () => stop('disconnect');
    disconnect.addEventListener('abort', onDisconnect, { once: true });
    if (disconnect.aborted) stop('disconnect');
    const deadline = setTimeout(() => stop('timeout'), config.worker.requestTimeoutMs);
    const claim = this.claims.hold(record, workerId, { lost: () => stop('lost'), cancel: () => stop('cancel') });
    try {
      if (!model.embed) throw new ModelError('permanent', 'the model backend does not serve embeddings');
      const { payload } = record;
      const req: EmbeddingRequest = { model: record.model, input: payload.embedding?.input ?? [], ...(payload.params && { params: payload.params }) };
      // The backend's promise may outlive an abort it ignores: the abort decides.
      const result = await Promise.race([model.embed(req, abort.signal), aborted(abort.signal)]);
      const first = await this.settleAndLog(record, {
        status: 'completed', attempt: record.attempt, result: '', finishReason: 'stop',
        usage: usageOf(result.promptTokens, 0), error: null, ...(result.served && { deployment: result.served.deployment }),
      });
      return first ? { kind: 'embedded', result } : { kind: 'finished' };
    } catch (err) {
      const reason = err instanceof Stop ? err.reason : abort.signal.reason instanceof Stop ? abort.signal.reason.reason : null;
      const where = { request_id: record.id, attempt: record.attempt };
      if (reason === 'lost') { logger.warn(where, 'claim lost; another worker owns this request now'); return { kind: 'lost' }; }
      if (reason === 'cancel' || reason === 'disconnect') return await this.end(record, this.cancelled(record, 0, '', true));
      if (reason === 'timeout') return await this.end(record, this.failed(record, 0, '', 'SLUICE_ERR_MODEL_TIMEOUT', 'the request exceeded its deadline'));
      const me = err instanceof ModelError ? err : new ModelError('transient', (err as Error).message, undefined, { cause: err });
      this.deps.metrics.attempts.inc({ outcome: me.kind });
      if (me.kind === 'transient' && record.attempt < config.worker.maxAttempts) {
        logger.warn({ ...where, err: me.message }, 'transient model failure; will retry');
        return { kind: 'retry', error: me };
      }
      const code = me.kind === 'transient' ? 'SLUICE_ERR_MODEL_TRANSIENT' : 'SLUICE_ERR_MODEL_PERMANENT';
      return await this.end(record, this.failed(record, 0, '', code, me.message));
    } finally {
      clearTimeout(deadline);
      claim.release();
      disconnect.removeEventListener('abort', onDisconnect);
      await control.close().catch(() => {});
    }
  }

  /**
   * Settles and, if this call ended the request, appends the terminal event. A listener that
   * resumes between the two repairs the log from the stored outcome; the bus keeps one terminal
   * event per log, so the append then returns that one, and it is what this attempt's own
   * listener (direct mode) gets too.
   */
  async end(record: RequestRecord, ending: Ending, hooks: AttemptHooks & { span?: Span } = {}): Promise<AttemptResult> {
    const ended = await this.settleAndLog(record, ending, hooks);
    return ended ? { kind: 'finished', ended } : { kind: 'finished' };
  }

  /** end(), returning the ended record when this call ended the request (null: it had ended already). */
  private async settleAndLog(record: RequestRecord, ending: Ending, hooks: AttemptHooks & { span?: Span } = {}): Promise<RequestRecord | null> {
    const span = this.tracer.start('sluice.settlement', { parent: hooks.span?.traceparent || record.payload.traceparent, attributes: { 'sluice.request_id': record.id, 'sluice.status': ending.status } });
    let first: RequestRecord | null;
    try {
      first = await this.deps.ledger.settle(record, ending);
      span.setAttributes({ 'sluice.settled_here': first !== null, 'sluice.tokens': ending.usage.totalTokens });
    } catch (err) { span.fail(err); throw err; } finally { span.end(); }
    if (first) {
      const logged = await this.deps.bus.append(record.id, terminalEvent(ending));
      await hooks.onEvents?.([logged]);
    } else {
      await this.repairTerminal(record.id);
    }
    return first;
  }

  /**
   * Makes sure the log of an ended request carries its terminal event (after a crash between
   * settle and append). Given a record read after the request ended, it does not read it again.
   * A log that is gone (expired, dropped by the memory bus's bound, or never written) is left
   * alone: a terminal event appended there would start a new log at sequence 1, and its
   * listeners get the stored result instead. Safe against a racing appender of the terminal event
   * (the attempt that settled, another repair): the bus keeps the first and answers the rest with it.
   */
  async repairTerminal(target: RequestRecord | string): Promise<LogRepair> {
    const { bus, store } = this.deps;
    const record = typeof target === 'string' ? await store.getRequest(target) : target;
    if (!record) return 'gone';
    if (!isEnded(record)) return 'running';
    if (await bus.terminal(record.id)) return 'intact';
    if ((await bus.read(record.id, 0, 1)).length === 0) return 'gone';
    await bus.append(record.id, terminalEvent(endingOf(record)));
    return 'repaired';
  }

  /** A cancel before the model saw the prompt costs nothing; after, the prompt and what was produced. */
  cancelled(record: RequestRecord, produced: number, text: string, processed: boolean, output?: RequestOutput): Ending {
    const usage = processed ? usageOf(record.promptTokens, produced) : usageOf(0, 0);
    return { status: 'cancelled', attempt: record.attempt, result: text, ...(output && { output }), finishReason: 'cancelled', usage, error: { code: 'SLUICE_ERR_CANCELLED', message: 'Request was cancelled' } };
  }

  /** Content inspection stopped the answer: billed like a cancel (the model produced it), with its own code. */
  blocked(record: RequestRecord, produced: number, text: string, message: string, output?: RequestOutput): Ending {
    return { status: 'cancelled', attempt: record.attempt, result: text, ...(output && { output }), finishReason: 'content_filter', usage: usageOf(record.promptTokens, produced), error: { code: 'SLUICE_ERR_CONTENT_BLOCKED', message } };
  }

  failed(record: RequestRecord, produced: number, text: string, code: string, message: string, output?: RequestOutput): Ending {
    return { status: 'failed', attempt: record.attempt, result: text, ...(output && { output }), finishReason: 'error', usage: usageOf(record.promptTokens, produced), error: { code, message } };
  }

  /**
   * Time to first token (the first token or tool-call fragment); then, once per later read from the
   * model, the gap since the previous read shared by the deltas it brought (an upstream that sends
   * 4 tokens 40 ms apart paced them 10 ms each: 0 for three of them would understate it). Returns now.
   */
  private observeDeltas(record: RequestRecord, seen: number, count: number, last: number): number {
    const now = this.deps.now();
    const { ttft, interToken } = this.deps.metrics;
    if (seen === 0) ttft.observe({ mode: record.mode }, (now - record.createdAt.getTime()) / 1000);
    else interToken.observe((now - last) / 1000 / count);
    return now;
  }
}

/** Rejects with the signal's reason once it aborts (never resolves). */
function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

export function endingOf(r: RequestRecord): Ending {
  const status = r.status === 'completed' || r.status === 'cancelled' ? r.status : 'failed';
  return {
    status, attempt: r.attempt, result: r.result ?? '', ...(r.output && { output: r.output }), finishReason: r.finishReason ?? (status === 'completed' ? 'stop' : 'error'),
    usage: usageOf(r.promptTokens, r.completionTokens ?? 0), error: r.error,
  };
}

/**
 * The log events of one model chunk. A token event carries `choice` only when it is not 0 and
 * `logprobs` only when the model sent them, so the common event stays as small as it was.
 */
export function eventsOf(chunk: Exclude<ModelChunk, { type: 'usage' | 'served' }>, attempt: number): EventBody[] {
  const choice = chunk.choice ?? 0;
  if (chunk.type === 'tool_calls') {
    return chunk.deltas.map((d) => ({
      type: 'tool_call', attempt, choice, call: d.call,
      ...(d.id !== undefined && { id: d.id }), ...(d.name !== undefined && { name: d.name }), arguments: d.arguments,
    }));
  }
  const { texts, logprobs } = chunk;
  if (choice === 0 && logprobs === undefined) return texts.map((text) => ({ type: 'token', attempt, text }));
  return texts.map((text, i) => ({
    type: 'token', attempt, text, ...(choice !== 0 && { choice }), ...(logprobs?.[i] !== undefined && { logprobs: logprobs[i] }),
  }));
}

export function terminalEvent(e: Ending): EventBody {
  const attempt = e.attempt ?? 0;
  if (e.status === 'completed') {
    const choices = choiceEndings(e.output);
    return { type: 'completed', attempt, finishReason: e.finishReason, usage: e.usage, ...(choices && { choices }) };
  }
  return { type: 'error', attempt, status: e.status, code: e.error?.code ?? 'SLUICE_ERR_INTERNAL', message: e.error?.message ?? '', usage: e.usage };
}
