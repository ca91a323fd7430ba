// How log events look on the wire: the native SSE events of DESIGN §4 and OpenAI's
// chat.completion(.chunk) shapes. The SSE `id:` is always the log sequence, so either format
// resumes with Last-Event-ID.
import type { LogEvent, Usage } from '../ports/bus.ts';
import type { ChoiceOutput, RequestRecord } from '../ports/store.ts';
import { sseFrame } from './sse.ts';

export const openaiUsage = (u: Usage) => ({ prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.totalTokens });

/** With n > 1, every choice's finish reason in snake case. */
export const finishReasons = (choices: readonly { index: number; finishReason: string }[]) => choices.map((c) => ({ index: c.index, finish_reason: c.finishReason }));

function nativeEvent(requestId: string, e: LogEvent): { id: number; event: string; data: string } {
  switch (e.type) {
    case 'token':
      return {
        id: e.seq, event: 'token',
        data: JSON.stringify({ request_id: requestId, token: e.text, sequence: e.seq, attempt: e.attempt, ...(e.choice !== undefined && { choice: e.choice }), ...(e.logprobs !== undefined && { logprobs: e.logprobs }), done: false, timestamp: e.ts }),
      };
    case 'tool_call':
      return { id: e.seq, event: 'tool_call', data: JSON.stringify({ request_id: requestId, sequence: e.seq, attempt: e.attempt, choice: e.choice, call: e.call, id: e.id, name: e.name, arguments: e.arguments, done: false, timestamp: e.ts }) };
    case 'restart':
      return { id: e.seq, event: 'restart', data: JSON.stringify({ request_id: requestId, sequence: e.seq, attempt: e.attempt, reason: e.reason, timestamp: e.ts }) };
    case 'completed':
      return { id: e.seq, event: 'completed', data: JSON.stringify({ request_id: requestId, sequence: e.seq, attempt: e.attempt, done: true, status: 'completed', finish_reason: e.finishReason, ...(e.choices && { choices: finishReasons(e.choices) }), usage: openaiUsage(e.usage), timestamp: e.ts }) };
    case 'error':
      return { id: e.seq, event: 'error', data: JSON.stringify({ request_id: requestId, sequence: e.seq, attempt: e.attempt, done: true, status: e.status, error: { code: e.code, message: e.message }, usage: openaiUsage(e.usage), timestamp: e.ts }) };
  }
}

/** Native events as SSE text, in order (a burst at once). */
export function nativeSseText(requestId: string, events: readonly LogEvent[]): string {
  let text = '';
  for (const e of events) {
    let frame = nativeFrames.get(e);
    if (frame === undefined) { frame = sseFrame(nativeEvent(requestId, e)); nativeFrames.set(e, frame); }
    text += frame;
  }
  return text;
}

/**
 * Each event's native frame, serialised once: the listeners of a request in this process share
 * its event objects (core/follow-hub.ts), so a thousand listeners cost one JSON.stringify per
 * event, not a thousand. An event belongs to one request, so the frame depends on the event alone.
 */
const nativeFrames = new WeakMap<LogEvent, string>();

/** Stands for the token text while a chunk's constant part is serialised. */
const TEXT_SLOT = '\u0000sluice-token\u0000';

type TokenEvent = Extract<LogEvent, { type: 'token' }>;
type ToolCallEvent = Extract<LogEvent, { type: 'tool_call' }>;

/**
 * Renders log events as OpenAI chat.completion.chunk frames (plus the usage chunk and [DONE]), as
 * OpenAI streams them: each choice's first chunk carries `role: "assistant"`; a tool-call fragment
 * is `delta.tool_calls: [{index, id, type, function: {name, arguments}}]`, with id, type and name
 * on a call's first fragment only; each choice ends with its own finish chunk; a token's logprobs
 * entry is `logprobs: {content: [entry]}`. Text completions have no tool calls (nothing is sent for
 * them) and no legacy logprobs shape (null).
 */
export class OpenAIChunks {
  /** Choices whose first chunk (the one with the role) was sent. */
  private readonly started = new Set<number>();
  private readonly id: string;
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(requestId: string, private readonly model: string, private readonly includeUsage: boolean, private readonly object: 'chat.completion.chunk' | 'text_completion' = 'chat.completion.chunk') {
    this.id = `${object === 'text_completion' ? 'cmpl' : 'chatcmpl'}-${requestId}`;
  }

  private get chat(): boolean { return this.object !== 'text_completion'; }

  /** Frames for one event; empty for events OpenAI has no shape for (restart, a text completion's tool call). */
  frames(e: LogEvent): { id?: number; data: string }[] {
    if (e.type === 'restart') return [];
    if (e.type === 'token') return [{ id: e.seq, data: this.tokenChunk(e) }];
    if (e.type === 'tool_call') return this.chat ? [{ id: e.seq, data: this.toolCallChunk(e) }] : [];
    if (e.type === 'completed') {
      const endings = e.choices ?? [{ index: 0, finishReason: e.finishReason }];
      const out = endings.map((c) => ({ id: e.seq, data: JSON.stringify(this.envelope([this.choice(c.index, this.finishDelta(c.index), c.finishReason)])) }));
      if (this.includeUsage) out.push({ id: e.seq, data: JSON.stringify({ ...this.envelope([]), usage: openaiUsage(e.usage) }) });
      out.push({ id: e.seq, data: '[DONE]' });
      return out;
    }
    const error = { error: { code: e.code, message: e.message, type: e.status === 'cancelled' ? 'invalid_request_error' : 'server_error', param: null } };
    return [{ id: e.seq, data: JSON.stringify(error) }, { id: e.seq, data: '[DONE]' }];
  }

  /**
   * The frames of several events as SSE text: what a stream writes per burst, without building a
   * frame object per token on the way.
   */
  sseText(events: readonly LogEvent[]): string {
    let text = '';
    for (const e of events) {
      if (e.type === 'token') text += `id: ${e.seq}\ndata: ${this.tokenChunk(e)}\n\n`;
      else for (const f of this.frames(e)) text += sseFrame(f);
    }
    return text;
  }

  /**
   * A token chunk is the hot path (one per token per listener): for choice 0 without logprobs,
   * everything but the text is the same for the whole stream, so it is serialised once and the
   * text alone is escaped per token. Other choices and logprobs take the plain serialisation.
   */
  private tokenChunk(e: TokenEvent): string {
    const index = e.choice ?? 0;
    if (index === 0 && e.logprobs === undefined && (this.started.has(0) || !this.chat)) {
      this.tokenFrame ??= JSON.stringify(this.envelope([this.choice(0, this.chat ? { content: TEXT_SLOT } : { text: TEXT_SLOT }, null)])).split(JSON.stringify(TEXT_SLOT)) as [string, string];
      return this.tokenFrame[0] + JSON.stringify(e.text) + this.tokenFrame[1];
    }
    const delta = this.chat ? this.firstOf(index, { content: e.text }) : { text: e.text };
    const logprobs = this.chat && e.logprobs !== undefined ? { content: [e.logprobs], refusal: null } : null;
    return JSON.stringify(this.envelope([this.choice(index, delta, null, logprobs)]));
  }

  private tokenFrame: [string, string] | undefined;

  private toolCallChunk(e: ToolCallEvent): string {
    const first = e.id !== undefined || e.name !== undefined;
    const call = {
      index: e.call,
      ...(e.id !== undefined && { id: e.id }),
      ...(first && { type: 'function' }),
      function: e.name !== undefined ? { name: e.name, arguments: e.arguments } : { arguments: e.arguments },
    };
    // A choice that opens with a tool call has no text: content null, as OpenAI sends it.
    const delta = this.started.has(e.choice) ? { tool_calls: [call] } : this.firstOf(e.choice, { content: null, tool_calls: [call] });
    return JSON.stringify(this.envelope([this.choice(e.choice, delta, null)]));
  }

  /** A choice's finish chunk; one that sent nothing yet gets its role there, so a client's message has one. */
  private finishDelta(index: number): Record<string, unknown> {
    if (!this.chat) return { text: '' };
    return this.started.has(index) ? {} : this.firstOf(index, { content: '' });
  }

  /** The delta with the role when it is its choice's first chunk. */
  private firstOf(index: number, delta: Record<string, unknown>): Record<string, unknown> {
    if (this.started.has(index)) return delta;
    this.started.add(index);
    return { role: 'assistant', ...delta };
  }

  private choice(index: number, delta: Record<string, unknown>, finish: string | null, logprobs: unknown = null): Record<string, unknown> {
    if (!this.chat) return { index, text: (delta.text as string | undefined) ?? '', logprobs: null, finish_reason: finish };
    return { index, delta, logprobs, finish_reason: finish };
  }

  private envelope(choices: unknown[]): Record<string, unknown> {
    return { id: this.id, object: this.object, created: this.created, model: this.model, system_fingerprint: 'sluice', choices };
  }
}

/**
 * The choices of a finished request: its stored output, or for a record without one (a cancel
 * before the model ran, a row older than the output column) its result as choice 0.
 */
export function outputChoices(r: RequestRecord): ChoiceOutput[] {
  if (r.output) return r.output.choices;
  return [{ index: 0, content: r.result ?? '', toolCalls: [], finishReason: r.finishReason ?? 'stop' }];
}

/** A choice as an assistant message: content null when it made tool calls and wrote nothing, as OpenAI does. */
function assistantMessage(c: ChoiceOutput): Record<string, unknown> {
  const calls = c.toolCalls.length > 0;
  return { role: 'assistant', content: calls && c.content === '' ? null : c.content, refusal: null, ...(calls && { tool_calls: c.toolCalls }) };
}

const logprobsOf = (c: ChoiceOutput) => (c.logprobs ? { content: c.logprobs, refusal: null } : null);

/** A chat.completion choice (also the record's `output`). */
function chatChoice(c: ChoiceOutput): Record<string, unknown> {
  return { index: c.index, message: assistantMessage(c), logprobs: logprobsOf(c), finish_reason: c.finishReason };
}

/** A finished request as a non-streaming chat.completion (or text_completion): every choice. */
export function completionBody(r: RequestRecord, kind: 'chat' | 'text'): Record<string, unknown> {
  const usage = openaiUsage({ promptTokens: r.promptTokens, completionTokens: r.completionTokens ?? 0, totalTokens: r.promptTokens + (r.completionTokens ?? 0) });
  const created = Math.floor(r.createdAt.getTime() / 1000);
  const choices = outputChoices(r);
  if (kind === 'text') {
    return { id: `cmpl-${r.id}`, object: 'text_completion', created, model: r.model, choices: choices.map((c) => ({ index: c.index, text: c.content, logprobs: null, finish_reason: c.finishReason })), usage };
  }
  return { id: `chatcmpl-${r.id}`, object: 'chat.completion', created, model: r.model, system_fingerprint: 'sluice', choices: choices.map(chatChoice), usage };
}

/**
 * The public view of a request (GET /v1/requests/{id}). `output` is the assembled answer (every
 * choice as a chat.completion choice: message with content and tool_calls, finish_reason,
 * logprobs), null until the request ends; `usage_source` says whether the backend reported the
 * usage or Sluice counted it; `served` names the deployment and backend model that answered.
 */
export function requestView(r: RequestRecord): Record<string, unknown> {
  const usage = r.completionTokens === null ? null : openaiUsage({ promptTokens: r.promptTokens, completionTokens: r.completionTokens, totalTokens: r.promptTokens + r.completionTokens });
  return {
    request_id: r.id, object: 'sluice.request', status: r.status, model: r.model, mode: r.mode, attempt: r.attempt,
    result: r.result, finish_reason: r.finishReason, usage, error: r.error,
    output: r.output ? { choices: r.output.choices.map(chatChoice) } : null,
    usage_source: r.output?.usageSource ?? null, served: r.output?.served ?? null,
    estimated_tokens: r.estimatedTokens, cancel_requested: r.cancelRequested,
    created_at: r.createdAt.toISOString(), started_at: r.startedAt?.toISOString() ?? null, completed_at: r.completedAt?.toISOString() ?? null,
    links: { self: `/v1/requests/${r.id}`, events: `/v1/requests/${r.id}/events` },
  };
}
