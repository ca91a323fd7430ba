// A model backend that says a given text: the last user message names a script ("script:card"),
// whose text is streamed in pieces of `pieceChars` characters, `itlMs` apart. Usage reports one
// completion token per piece, so tests know exactly what the backend produced.
import type { ModelBackend, ModelChunk, ModelRequest } from '../../src/ports/model.ts';
import { messageText } from '../../src/core/tokens.ts';

export function pieces(text: string, size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

export class ScriptedModel implements ModelBackend {
  constructor(private readonly scripts: Record<string, string>, private readonly opts: { pieceChars?: number; itlMs?: number } = {}) {}

  async models(): Promise<string[]> { return ['sim']; }
  async close(): Promise<void> {}

  script(req: ModelRequest): string {
    const last = messageText(req.messages[req.messages.length - 1]!);
    const name = /^script:(\S+)/.exec(last)?.[1] ?? '';
    return this.scripts[name] ?? 'No such script.';
  }

  async *stream(req: ModelRequest, signal: AbortSignal): AsyncGenerator<ModelChunk> {
    const parts = pieces(this.script(req), this.opts.pieceChars ?? 3);
    for (const text of parts) {
      if (signal.aborted) return;
      await new Promise((r) => setTimeout(r, this.opts.itlMs ?? 1));
      if (signal.aborted) return;
      yield { type: 'tokens', texts: [text] };
    }
    yield { type: 'usage', promptTokens: 10, completionTokens: parts.length, finishReason: 'stop' };
  }
}
