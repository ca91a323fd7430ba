// A request's output, assembled from the events one attempt logs: per choice its text, its tool
// calls (by call index: id, name, arguments joined in order), its logprobs entries, and what it
// produced in completion tokens, which is what a cut stream is billed.
//
// Billing of tool calls: an argument fragment counts as countTextTokens(fragment) tokens, and the
// function name on a call's first fragment as countTextTokens(name). A non-empty string always
// counts at least 1, so a one-character fragment is a token, as a token event is. Counting fragment
// by fragment can exceed a count of the joined arguments by a little (a fragment boundary splits
// what the tokenizer would merge); an upstream streams arguments about one token per fragment, so
// per fragment is the closer count of what it produced. A completed request is charged the
// backend's reported usage instead, when it reports one.
import type { LogEvent } from '../ports/bus.ts';
import type { FinishReason, ToolCall, UsageSource } from '../ports/model.ts';
import type { ChoiceOutput, RequestOutput } from '../ports/store.ts';
import { countTextTokens } from './tokens.ts';

interface CallDraft { id: string; name: string; arguments: string }

interface ChoiceDraft { content: string; calls: Map<number, CallDraft>; logprobs: unknown[] | undefined }

export interface Finish {
  /** Choice 0's finish reason, and every choice's that `choices` does not name. */
  finishReason: FinishReason;
  choices?: readonly { index: number; finishReason: FinishReason }[];
  usageSource: UsageSource;
  served?: { deployment: string; model: string };
}

export class OutputBuilder {
  private readonly choices = new Map<number, ChoiceDraft>();

  /** Choice 0's text so far (a request's `result`). */
  get text(): string { return this.choices.get(0)?.content ?? ''; }

  /**
   * Adds one logged event; returns the completion tokens it stands for (0 for other events).
   * Token events count 1; tool-call fragments as the header says.
   */
  add(e: LogEvent): number {
    if (e.type === 'token') {
      const c = this.choice(e.choice ?? 0);
      c.content += e.text;
      if (e.logprobs !== undefined) (c.logprobs ??= []).push(e.logprobs);
      return 1;
    }
    if (e.type !== 'tool_call') return 0;
    const c = this.choice(e.choice);
    let call = c.calls.get(e.call);
    if (!call) c.calls.set(e.call, call = { id: '', name: '', arguments: '' });
    if (e.id !== undefined && call.id === '') call.id = e.id;
    if (e.name !== undefined && call.name === '') call.name = e.name;
    call.arguments += e.arguments;
    return countTextTokens(e.arguments) + (e.name === undefined ? 0 : countTextTokens(e.name));
  }

  /** The output: every choice seen or named by `finish`, in index order; choice 0 always. */
  build(finish: Finish): RequestOutput {
    const reasons = new Map((finish.choices ?? []).map((c) => [c.index, c.finishReason]));
    const indexes = new Set([0, ...this.choices.keys(), ...reasons.keys()]);
    const choices: ChoiceOutput[] = [...indexes].sort((a, b) => a - b).map((index) => {
      const draft = this.choices.get(index);
      const toolCalls: ToolCall[] = draft
        ? [...draft.calls.entries()].sort(([a], [b]) => a - b).map(([, c]) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } }))
        : [];
      return {
        index, content: draft?.content ?? '', toolCalls, finishReason: reasons.get(index) ?? finish.finishReason,
        ...(draft?.logprobs && { logprobs: draft.logprobs }),
      };
    });
    return { choices, usageSource: finish.usageSource, ...(finish.served && { served: finish.served }) };
  }

  private choice(index: number): ChoiceDraft {
    let c = this.choices.get(index);
    if (!c) this.choices.set(index, c = { content: '', calls: new Map(), logprobs: undefined });
    return c;
  }
}

/** The finish reasons of a terminal `completed` event: only with more than one choice. */
export function choiceEndings(output: RequestOutput | null | undefined): { index: number; finishReason: FinishReason }[] | undefined {
  if (!output || output.choices.length < 2) return undefined;
  return output.choices.map((c) => ({ index: c.index, finishReason: c.finishReason }));
}
