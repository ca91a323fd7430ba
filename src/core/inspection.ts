// Content inspection of answers and prompts (docs/architecture.md, "Content inspection").
//
// Modes, per request (a key's override, else its tier's, else INSPECTION_MODE):
// - inline: every upstream read passes the inspector before it is logged (and so delivered);
// - hybrid: reads gather for INSPECTION_BUFFER_MS, then the window is inspected and released;
//   when the inspector falls behind, reading from the model waits (backpressure);
// - async: tokens are logged at once; the inspector follows beside them and a finding stops the request.
// Inline and hybrid log the redacted text, so the event log, the stored result and every resume
// hold what was delivered; both fail closed when the inspector gives no verdict.
import type { Config, InspectionMode } from '../config.ts';
import { tierOf } from '../config.ts';
import type { EventBody } from '../ports/bus.ts';
import { InspectorError, type Finding, type Inspector } from '../ports/inspector.ts';
import type { ChatMessage, ModelChunk } from '../ports/model.ts';
import { SluiceError } from './errors.ts';
import type { Logger } from './logger.ts';
import { findingLabel, type Metrics } from './metrics.ts';
import { StreamRedactor } from './stream-redactor.ts';

/** The mode of a request: the key's own, else its tier's, else the global one. */
export function inspectionModeFor(config: Pick<Config, 'inspection' | 'tiers'>, principal: { tier: string; inspection?: InspectionMode | null | undefined }): InspectionMode {
  return principal.inspection ?? tierOf(config, principal.tier)?.inspection ?? config.inspection.mode;
}

/** Why inspection ends an attempt: a finding that stops it, or no verdict (fail closed). */
export class InspectionStop extends Error {
  override readonly name = 'InspectionStop';
  constructor(readonly reason: 'blocked' | 'uninspected', message: string, readonly finding?: Finding, options?: { cause?: unknown }) { super(message, options); }
}

type TokensChunk = Extract<ModelChunk, { type: 'tokens' }>;

export interface AnswerInspectionDeps {
  mode: Exclude<InspectionMode, 'disabled'>;
  inspector: Inspector;
  requestId: string;
  attempt: number;
  bufferMs: number;
  metrics: Metrics;
  logger: Logger;
  /** Logs released text (inline, hybrid). */
  append: (events: EventBody[]) => Promise<void>;
  /** Ends the model call now: a finding (async), a failure of a window inspected off the read loop (hybrid). */
  stop: (err: Error) => void;
  signal: AbortSignal;
}

/** One attempt's inspection, per choice a holdback redactor. */
export class AnswerInspection {
  private readonly choices = new Map<number, StreamRedactor>();
  /** Inspections run one after another, in order: released text is appended in stream order. */
  private lane: Promise<void> = Promise.resolve();
  private busy = false;
  /** Passes scheduled on the lane that have not started (a due window waiting for the inspector). */
  private waiting = 0;
  private windowTimer: NodeJS.Timeout | undefined;
  private windowOpenedAt = 0;
  private failure: Error | undefined;
  /** async: a pass is queued on the lane and will see everything added so far. */
  private passQueued = false;

  constructor(private readonly deps: AnswerInspectionDeps) {}

  /** Whether the attempt's token events go through this (inline, hybrid) rather than straight to the log. */
  get gates(): boolean { return this.deps.mode !== 'async'; }

  /** A read of text from the model. Inline/hybrid: logged once inspected; async: inspected beside the log. */
  async tokens(chunk: TokensChunk): Promise<void> {
    this.rethrow();
    const r = this.redactor(chunk.choice ?? 0);
    for (const t of chunk.texts) r.add(t);
    if (this.deps.mode === 'inline') { await this.pass(false); return this.rethrow(); }
    if (this.deps.mode === 'async') { this.queuePass(); return; }
    // hybrid
    if (this.windowTimer === undefined) {
      this.windowOpenedAt = Date.now();
      this.windowTimer = setTimeout(() => { this.windowTimer = undefined; void this.pass(false); }, this.deps.bufferMs);
    }
    // Backpressure: the inspector still works on an earlier window while another is due (its timer
    // not yet run) or already waits for it: the reads stop until it caught up, so windows never pile up.
    if (this.busy && (this.waiting > 0 || Date.now() - this.windowOpenedAt >= this.deps.bufferMs)) { await this.lane; this.rethrow(); }
  }

  /** The end of the answer: everything held is inspected and released (or the request stops). */
  async finish(): Promise<void> {
    clearTimeout(this.windowTimer);
    this.windowTimer = undefined;
    await this.pass(true);
    this.rethrow();
  }

  /** Stops any window still scheduled (the attempt ended another way). */
  close(): void { clearTimeout(this.windowTimer); this.windowTimer = undefined; }

  /**
   * The attempt ends another way (cancel, deadline, failure): no new window, and the one being
   * inspected is appended or dropped before the attempt settles, so the stored result and the
   * log agree on what was delivered.
   */
  async settle(): Promise<void> { this.close(); await this.lane; }

  private rethrow(): void { if (this.failure) throw this.failure; }

  private redactor(choice: number): StreamRedactor {
    let r = this.choices.get(choice);
    if (!r) this.choices.set(choice, r = new StreamRedactor(this.deps.inspector, this.deps.requestId));
    return r;
  }

  private queuePass(): void {
    if (this.passQueued) return;
    this.passQueued = true;
    void this.pass(false);
  }

  /** Inspects every choice's held text on the lane; returns when this pass is done. */
  private pass(final: boolean): Promise<void> {
    this.waiting++;
    const run = this.lane.then(async () => {
      this.waiting--;
      this.passQueued = false;
      if (this.failure) return;
      this.busy = true;
      try { await this.inspectChoices(final); } catch (err) {
        this.failure = err as Error;
        this.deps.stop(err as Error);
      } finally { this.busy = false; }
    });
    this.lane = run;
    return run;
  }

  private async inspectChoices(final: boolean): Promise<void> {
    const { mode, metrics, signal } = this.deps;
    const events: EventBody[] = [];
    for (const [choice, r] of this.choices) {
      if (r.held === 0) continue;
      const started = performance.now();
      let released;
      try {
        released = await r.release(final, signal);
      } catch (err) {
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
        const kind = err instanceof InspectorError ? err.kind : 'unavailable';
        metrics.inspectionFailures.inc({ kind });
        if (mode === 'async') {
          // Async never held delivery back: an inspector failure is logged, the answer goes on.
          this.deps.logger.warn({ request_id: this.deps.requestId, err }, 'content inspection failed (async mode: the answer was not held back)');
          r.skip();
          continue;
        }
        metrics.inspectionStopped.inc({ reason: 'failed' });
        throw new InspectionStop('uninspected', `content inspection gave no verdict: ${(err as Error).message}`, undefined, { cause: err });
      } finally {
        metrics.inspectionLatency.observe({ mode }, (performance.now() - started) / 1000);
      }
      for (const f of released.findings) metrics.inspectionFindings.inc({ type: findingLabel(f.type), kind: 'completion' });
      const stopping = released.findings.find((f) => mode === 'async' || f.action === 'block');
      if (stopping) {
        metrics.inspectionStopped.inc({ reason: 'blocked' });
        this.deps.logger.warn({ request_id: this.deps.requestId, attempt: this.deps.attempt, finding: stopping.type, mode }, 'content inspection stopped the request');
        throw new InspectionStop('blocked', `content inspection found ${stopping.type === 'secret' ? 'a secret' : `a ${stopping.type}`} in the answer`, stopping);
      }
      if (mode !== 'async' && released.text !== '') events.push(choice === 0 ? { type: 'token', attempt: this.deps.attempt, text: released.text } : { type: 'token', attempt: this.deps.attempt, text: released.text, choice });
    }
    if (events.length > 0) await this.deps.append(events);
  }
}

/**
 * The request-side check (INSPECTION_PROMPTS): 'block' refuses a prompt with a finding before
 * admission (422 SLUICE_ERR_PROMPT_BLOCKED, naming the kinds found, never the text); 'redact'
 * returns the messages with their findings replaced. Prompts are inspected whole (final).
 */
export async function inspectPrompt(deps: { config: Pick<Config, 'inspection'>; inspector: Inspector; metrics: Metrics; logger: Logger }, messages: ChatMessage[], requestId: string): Promise<ChatMessage[]> {
  const { config, inspector, metrics } = deps;
  const policy = config.inspection.prompts;
  if (policy === 'off') return messages;
  const out: ChatMessage[] = [];
  const found = new Set<string>();
  for (const m of messages) {
    if (m.content == null) { out.push(m); continue; }
    if (typeof m.content === 'string') { out.push({ ...m, content: await inspectText(m.content) }); continue; }
    const parts = [];
    for (const p of m.content) parts.push(p.type === 'text' ? { ...p, text: await inspectText(p.text) } : p);
    out.push({ ...m, content: parts });
  }
  if (found.size > 0 && policy === 'block') {
    metrics.inspectionStopped.inc({ reason: 'prompt' });
    deps.logger.info({ request_id: requestId, findings: [...found] }, 'content inspection refused a prompt');
    throw new SluiceError('SLUICE_ERR_PROMPT_BLOCKED', `Content inspection refused this prompt: it contains ${[...found].sort().join(', ')}`, { findings: [...found].sort() });
  }
  return out;

  async function inspectText(text: string): Promise<string> {
    if (text === '') return text;
    const started = performance.now();
    let verdict;
    try {
      verdict = await inspector.inspect({ text, from: 0, final: true, requestId, kind: 'prompt' });
    } catch (err) {
      metrics.inspectionFailures.inc({ kind: err instanceof InspectorError ? err.kind : 'unavailable' });
      metrics.inspectionStopped.inc({ reason: 'failed' });
      throw new SluiceError('SLUICE_ERR_INSPECTION_FAILED', `The content inspector gave no verdict on the prompt: ${(err as Error).message}`, undefined, { cause: err });
    } finally {
      metrics.inspectionLatency.observe({ mode: 'prompt' }, (performance.now() - started) / 1000);
    }
    let redacted = '';
    let at = 0;
    for (const f of [...verdict.findings].sort((a, b) => a.start - b.start)) {
      if (f.start < at) continue;
      found.add(f.type);
      metrics.inspectionFindings.inc({ type: findingLabel(f.type), kind: 'prompt' });
      redacted += text.slice(at, f.start) + f.replacement;
      at = f.end;
    }
    return redacted + text.slice(at);
  }
}
