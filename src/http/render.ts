// How log events look on the wire: the native SSE events of DESIGN §4 and OpenAI's
// chat.completion(.chunk) shapes. The SSE `id:` is always the log sequence, so either format
// resumes with Last-Event-ID.
import type { LogEvent, Usage } from '../ports/bus.ts';
import type { RequestRecord } from '../ports/store.ts';
import { sseFrame } from './sse.ts';

export const openaiUsage = (u: Usage) => ({ prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.totalTokens });

function nativeEvent(requestId: string, e: LogEvent): { id: number; event: string; data: string } {
  switch (e.type) {
    case 'token':
      return { id: e.seq, event: 'token', data: JSON.stringify({ request_id: requestId, token: e.text, sequence: e.seq, attempt: e.attempt, done: false, timestamp: e.ts }) };
    case 'tool_call':
      return { id: e.seq, event: 'tool_call', data: JSON.stringify({ request_id: requestId, sequence: e.seq, attempt: e.attempt, choice: e.choice, call: e.call, id: e.id, name: e.name, arguments: e.arguments, timestamp: e.ts }) };
    case 'restart':
      return { id: e.seq, event: 'restart', data: JSON.stringify({ request_id: requestId, sequence: e.seq, attempt: e.attempt, reason: e.reason, timestamp: e.ts }) };
    case 'completed':
      return { id: e.seq, event: 'completed', data: JSON.stringify({ request_id: requestId, sequence: e.seq, attempt: e.attempt, done: true, status: 'completed', finish_reason: e.finishReason, usage: openaiUsage(e.usage), timestamp: e.ts }) };
    case 'error':
      return { id: e.seq, event: 'error', data: JSON.stringify({ request_id: requestId, sequence: e.seq, attempt: e.attempt, done: true, status: e.status, error: { code: e.code, message: e.message }, usage: openaiUsage(e.usage), timestamp: e.ts }) };
  }
}

/** Native events as SSE text, in order (a burst at once). */
export function nativeSseText(requestId: string, events: readonly LogEvent[]): string {
  let text = '';
  for (const e of events) text += sseFrame(nativeEvent(requestId, e));
  return text;
}

/** Stands for the token text while a chunk's constant part is serialised. */
const TEXT_SLOT = '\u0000sluice-token\u0000';

/** Renders log events as OpenAI chat.completion.chunk frames (plus the usage chunk and [DONE]). */
export class OpenAIChunks {
  private sentRole = false;
  private readonly id: string;
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(requestId: string, private readonly model: string, private readonly includeUsage: boolean, private readonly object: 'chat.completion.chunk' | 'text_completion' = 'chat.completion.chunk') {
    this.id = `${object === 'text_completion' ? 'cmpl' : 'chatcmpl'}-${requestId}`;
  }

  /** Frames for one event; empty for events OpenAI has no shape for (restart). */
  frames(e: LogEvent): { id?: number; data: string }[] {
    if (e.type === 'restart' || e.type === 'tool_call') return [];
    if (e.type === 'token') return [{ id: e.seq, data: this.tokenChunk(e.text) }];
    if (e.type === 'completed') {
      const out = [{ id: e.seq, data: JSON.stringify(this.chunk(this.object === 'text_completion' ? { text: '' } : {}, e.finishReason)) }];
      if (this.includeUsage) out.push({ id: e.seq, data: JSON.stringify({ ...this.chunk(null, null), choices: [], usage: openaiUsage(e.usage) }) });
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
      if (e.type === 'token') text += `id: ${e.seq}\ndata: ${this.tokenChunk(e.text)}\n\n`;
      else for (const f of this.frames(e)) text += sseFrame(f);
    }
    return text;
  }

  /**
   * A token chunk is the hot path (one per token per listener): everything but the text is the
   * same for the whole stream, so it is serialised once and the text alone is escaped per token.
   */
  private tokenChunk(text: string): string {
    if (!this.sentRole && this.object !== 'text_completion') return JSON.stringify(this.chunk(this.delta(text), null));
    this.tokenFrame ??= JSON.stringify(this.chunk(this.delta(TEXT_SLOT), null)).split(JSON.stringify(TEXT_SLOT)) as [string, string];
    return this.tokenFrame[0] + JSON.stringify(text) + this.tokenFrame[1];
  }

  private tokenFrame: [string, string] | undefined;

  private delta(text: string): Record<string, unknown> {
    if (this.object === 'text_completion') return { text };
    if (this.sentRole) return { content: text };
    this.sentRole = true;
    return { role: 'assistant', content: text };
  }

  private chunk(delta: Record<string, unknown> | null, finish: string | null): Record<string, unknown> {
    const choice = this.object === 'text_completion'
      ? { index: 0, text: (delta?.text as string | undefined) ?? '', logprobs: null, finish_reason: finish }
      : { index: 0, delta: delta ?? {}, logprobs: null, finish_reason: finish };
    return { id: this.id, object: this.object, created: this.created, model: this.model, system_fingerprint: 'sluice', choices: delta === null ? [] : [choice] };
  }
}

/** A finished request as a non-streaming chat.completion (or text_completion). */
export function completionBody(r: RequestRecord, kind: 'chat' | 'text'): Record<string, unknown> {
  const usage = openaiUsage({ promptTokens: r.promptTokens, completionTokens: r.completionTokens ?? 0, totalTokens: r.promptTokens + (r.completionTokens ?? 0) });
  const created = Math.floor(r.createdAt.getTime() / 1000);
  if (kind === 'text') {
    return { id: `cmpl-${r.id}`, object: 'text_completion', created, model: r.model, choices: [{ index: 0, text: r.result ?? '', logprobs: null, finish_reason: r.finishReason }], usage };
  }
  return {
    id: `chatcmpl-${r.id}`, object: 'chat.completion', created, model: r.model, system_fingerprint: 'sluice',
    choices: [{ index: 0, message: { role: 'assistant', content: r.result ?? '', refusal: null }, logprobs: null, finish_reason: r.finishReason }],
    usage,
  };
}

/** The public view of a request (GET /v1/requests/{id}). */
export function requestView(r: RequestRecord): Record<string, unknown> {
  const usage = r.completionTokens === null ? null : openaiUsage({ promptTokens: r.promptTokens, completionTokens: r.completionTokens, totalTokens: r.promptTokens + r.completionTokens });
  return {
    request_id: r.id, object: 'sluice.request', status: r.status, model: r.model, mode: r.mode, attempt: r.attempt,
    result: r.result, finish_reason: r.finishReason, usage, error: r.error,
    estimated_tokens: r.estimatedTokens, cancel_requested: r.cancelRequested,
    created_at: r.createdAt.toISOString(), started_at: r.startedAt?.toISOString() ?? null, completed_at: r.completedAt?.toISOString() ?? null,
    links: { self: `/v1/requests/${r.id}`, events: `/v1/requests/${r.id}/events` },
  };
}
