// One attempt of one request: call the model, append every token to the request's event log,
// honour cancel, deadline and claim loss, then settle exactly once and append the terminal event.
// The worker (queued mode) and the gateway (direct mode) both run requests through this.
import { LogEndedError, PartialAppendError, type Bus, type EventBody, type LogEvent } from '../ports/bus.ts';
import { ModelError, type ModelBackend, type ModelRequest } from '../ports/model.ts';
import { isEnded, type RequestRecord, type Store } from '../ports/store.ts';
import type { Config } from '../config.ts';
import { usageOf, type Ending, type Ledger } from './ledger.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';

/** What repairTerminal found: the request still running, its log ending with its terminal event (already, or now), or no log. */
export type LogRepair = 'running' | 'intact' | 'repaired' | 'gone';

export type AttemptResult =
  | { kind: 'finished' }
  /** A transient failure with attempts left: run it again later. */
  | { kind: 'retry'; error: ModelError }
  /** Another worker took the request over (this one's claim expired): do nothing more. */
  | { kind: 'lost' }
  /** This process is shutting down: the claim was given back; the request waits for another process. */
  | { kind: 'handoff' };

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
  constructor(private readonly deps: {
    config: Config; store: Store; bus: Bus; model: ModelBackend; ledger: Ledger; metrics: Metrics; logger: Logger; now: () => number;
  }) {}

  /**
   * Runs one attempt. After a transient failure with attempts left, or a hand-off, the claim is
   * given back, so the next delivery (here or in another process) can take the request at once.
   */
  async run(record: RequestRecord, workerId: string, hooks: AttemptHooks = {}): Promise<AttemptResult> {
    const result = await this.attempt(record, workerId, hooks);
    if (result.kind === 'handoff') await this.deps.store.handBack(record.id, workerId, record.attempt);
    else if (result.kind === 'retry') await this.deps.store.renewClaim(record.id, workerId, record.attempt, 0);
    return result;
  }

  private async attempt(record: RequestRecord, workerId: string, hooks: AttemptHooks): Promise<AttemptResult> {
    const { config, bus, logger } = this.deps;
    const where = { request_id: record.id, attempt: record.attempt };
    if (record.cancelRequested) return this.end(record, this.cancelled(record, 0, '', false), hooks);

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
    const renew = setInterval(() => void this.renew(record, workerId, stop, hooks), Math.max(50, Math.floor(config.worker.claimMs / 3)));

    let text = '';
    let produced = 0;
    let last = 0;
    /** A token in the log is a token produced (and billed). */
    const count = (logged: readonly LogEvent[]) => {
      let n = 0;
      for (const e of logged) if (e.type === 'token') { text += e.text; n++; }
      if (n > 0) { last = this.observeTokens(record, produced, n, last); produced += n; }
    };
    try {
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
      if (record.attempt > 1) await append([{ type: 'restart', attempt: record.attempt, reason: 'retry' }]);
      const req: ModelRequest = { model: record.model, ...record.payload };
      for await (const chunk of this.deps.model.stream(req, abort.signal)) {
        if (abort.signal.aborted) break;
        if (chunk.type === 'tokens') {
          await append(chunk.texts.map((t) => ({ type: 'token', attempt: record.attempt, text: t })));
        } else if (chunk.type === 'usage') {
          return await this.end(record, {
            status: 'completed', attempt: record.attempt, result: text, finishReason: chunk.finishReason,
            usage: usageOf(chunk.promptTokens, chunk.completionTokens), error: null,
          }, hooks);
        }
      }
      if (abort.signal.aborted) throw abort.signal.reason;
      throw new ModelError('transient', 'model stream ended without usage');
    } catch (err) {
      const reason = err instanceof Stop ? err.reason : abort.signal.reason instanceof Stop ? abort.signal.reason.reason : null;
      if (reason === 'lost') { logger.warn(where, 'claim lost; another worker owns this request now'); return { kind: 'lost' }; }
      // Its tokens stay in the log; the next attempt starts with a restart event, as after a crash.
      if (reason === 'handoff') { logger.info(where, 'shutting down: the request is handed to another process'); return { kind: 'handoff' }; }
      // The log already holds the request's terminal event: it was ended elsewhere (and settled first).
      if (err instanceof LogEndedError) { logger.warn(where, 'the request ended elsewhere; this attempt stops'); return { kind: 'finished' }; }
      if (reason === 'cancel' || reason === 'disconnect') return await this.end(record, this.cancelled(record, produced, text, true), hooks);
      if (reason === 'timeout') return await this.end(record, this.failed(record, produced, text, 'SLUICE_ERR_MODEL_TIMEOUT', 'the request exceeded its deadline'), hooks);
      const me = err instanceof ModelError ? err : new ModelError('transient', (err as Error).message, undefined, { cause: err });
      this.deps.metrics.attempts.inc({ outcome: me.kind });
      if (me.kind === 'transient' && record.attempt - record.handoffs < config.worker.maxAttempts) {
        logger.warn({ ...where, err: me.message }, 'transient model failure; will retry');
        return { kind: 'retry', error: me };
      }
      const code = me.kind === 'transient' ? 'SLUICE_ERR_MODEL_TRANSIENT' : 'SLUICE_ERR_MODEL_PERMANENT';
      return await this.end(record, this.failed(record, produced, text, code, me.message), hooks);
    } finally {
      clearTimeout(deadline);
      clearInterval(renew);
      hooks.disconnect?.removeEventListener('abort', onDisconnect);
      hooks.handoff?.removeEventListener('abort', onHandoff);
      await control.close().catch(() => {});
    }
  }

  /**
   * Settles and, if this call ended the request, appends the terminal event. A listener that
   * resumes between the two repairs the log from the stored outcome; the bus keeps one terminal
   * event per log, so the append then returns that one, and it is what this attempt's own
   * listener (direct mode) gets too.
   */
  async end(record: RequestRecord, ending: Ending, hooks: AttemptHooks = {}): Promise<AttemptResult> {
    const first = await this.deps.ledger.settle(record, ending);
    if (first) {
      const logged = await this.deps.bus.append(record.id, terminalEvent(ending));
      await hooks.onEvents?.([logged]);
    } else {
      await this.repairTerminal(record.id);
    }
    return { kind: 'finished' };
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
  cancelled(record: RequestRecord, produced: number, text: string, processed: boolean): Ending {
    const usage = processed ? usageOf(record.promptTokens, produced) : usageOf(0, 0);
    return { status: 'cancelled', attempt: record.attempt, result: text, finishReason: 'cancelled', usage, error: { code: 'SLUICE_ERR_CANCELLED', message: 'Request was cancelled' } };
  }

  failed(record: RequestRecord, produced: number, text: string, code: string, message: string): Ending {
    return { status: 'failed', attempt: record.attempt, result: text, finishReason: 'error', usage: usageOf(record.promptTokens, produced), error: { code, message } };
  }

  private async renew(record: RequestRecord, workerId: string, stop: (r: StopReason) => void, hooks: AttemptHooks): Promise<void> {
    try {
      const held = await this.deps.store.renewClaim(record.id, workerId, record.attempt, this.deps.config.worker.claimMs);
      if (!held) return stop('lost');
      const fresh = await this.deps.store.getRequest(record.id);
      if (fresh?.cancelRequested) stop('cancel');
      await hooks.onRenew?.();
    } catch (err) {
      this.deps.logger.warn({ request_id: record.id, err }, 'claim renewal failed');
    }
  }

  /**
   * Time to first token; then, once per later read from the model, the gap since the previous
   * read shared by the tokens it brought (an upstream that sends 4 tokens 40 ms apart paced them
   * 10 ms each: 0 for three of them would understate it). Returns now.
   */
  private observeTokens(record: RequestRecord, produced: number, count: number, last: number): number {
    const now = this.deps.now();
    const { ttft, interToken } = this.deps.metrics;
    if (produced === 0) ttft.observe({ mode: record.mode }, (now - record.createdAt.getTime()) / 1000);
    else interToken.observe((now - last) / 1000 / count);
    return now;
  }
}

export function endingOf(r: RequestRecord): Ending {
  const status = r.status === 'completed' || r.status === 'cancelled' ? r.status : 'failed';
  return {
    status, attempt: r.attempt, result: r.result ?? '', finishReason: r.finishReason ?? (status === 'completed' ? 'stop' : 'error'),
    usage: usageOf(r.promptTokens, r.completionTokens ?? 0), error: r.error,
  };
}

export function terminalEvent(e: Ending): EventBody {
  const attempt = e.attempt ?? 0;
  if (e.status === 'completed') return { type: 'completed', attempt, finishReason: e.finishReason, usage: e.usage };
  return { type: 'error', attempt, status: e.status, code: e.error?.code ?? 'SLUICE_ERR_INTERNAL', message: e.error?.message ?? '', usage: e.usage };
}
