// Reading server-sent events: the `data` of each complete event, from any chunking of the stream.
// Used for upstream model streams and by `sluice chat`; light (no driver imports).

/** The `data` of each SSE event of a response body, as soon as the event is complete. */
export async function* sseData(body: AsyncIterable<unknown>): AsyncGenerator<string> {
  for await (const batch of sseDataBatches(body)) yield* batch;
}

/** The same, grouped by read: the events each chunk of the body completed (never an empty group). */
export async function* sseDataBatches(body: AsyncIterable<unknown>): AsyncGenerator<string[]> {
  const decoder = new TextDecoder();
  const parser = new SseDataParser();
  for await (const chunk of body) {
    const events = parser.push(decoder.decode(chunk as Uint8Array, { stream: true }));
    if (events.length > 0) yield events;
  }
  const rest = parser.push(`${decoder.decode()}\n\n`);
  if (rest.length > 0) yield rest;
}

/**
 * Incremental SSE parser that returns the `data` of each complete event. Chunk boundaries may
 * fall anywhere, including inside a line or between `\r` and `\n`.
 */
export class SseDataParser {
  private buffer = '';
  private data: string[] = [];

  push(text: string): string[] {
    this.buffer += text;
    const out: string[] = [];
    let start = 0;
    for (let nl = this.buffer.indexOf('\n', start); nl !== -1; nl = this.buffer.indexOf('\n', start)) {
      const end = nl > start && this.buffer.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      this.line(this.buffer.slice(start, end), out);
      start = nl + 1;
    }
    this.buffer = start === 0 ? this.buffer : this.buffer.slice(start);
    return out;
  }

  private line(line: string, out: string[]): void {
    if (line === '') {
      if (this.data.length > 0) { out.push(this.data.join('\n')); this.data = []; }
      return;
    }
    if (!line.startsWith('data')) return; // comments (": ping"), event:, id:, retry:
    if (line.length === 4) { this.data.push(''); return; }
    if (line.charCodeAt(4) !== 58) return; // a field merely starting with "data"
    this.data.push(line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5));
  }
}
