// Server-sent events over a raw Node response: `retry:` first, `: ping` comments on an interval,
// a bounded write buffer and a bounded stall (a listener that cannot keep up, or stops reading, is
// disconnected and resumes from the log), and an abort signal that fires when the client goes away.
import type { ServerResponse } from 'node:http';

export interface SseOptions { pingMs: number; retryMs: number; maxBufferedBytes: number; stallMs: number }

export interface SseEvent { id?: number | string; event?: string; data: string }

/** One event as SSE text. */
export function sseFrame(event: SseEvent): string {
  let frame = '';
  if (event.id !== undefined) frame += `id: ${event.id}\n`;
  if (event.event) frame += `event: ${event.event}\n`;
  return `${frame}data: ${event.data}\n\n`;
}

/** Frames held for the end of the turn are written at once beyond this size. */
const FLUSH_AT = 64 * 1024;
/** Longest the headers and `retry:` wait for a first event to leave with (one write, not two). */
const PREAMBLE_WAIT_MS = 20;
/** The signal's reason when the stream ends: one shared value, not a DOMException with a stack per response. */
const STREAM_CLOSED = new Error('SSE stream closed');

/**
 * One keep-alive timer per ping interval for all open streams, instead of a setInterval per
 * stream (20,000 listeners were 20,000 timers). A stream's first ping comes within one interval
 * of its start rather than exactly one interval after it; every later one, one interval apart.
 */
const pingGroups = new Map<number, { streams: Set<SseStream>; timer: NodeJS.Timeout }>();

function pingJoin(stream: SseStream, ms: number): void {
  let group = pingGroups.get(ms);
  if (!group) {
    const streams = new Set<SseStream>();
    const timer = setInterval(() => { for (const s of streams) s.ping(); }, ms);
    timer.unref();
    group = { streams, timer };
    pingGroups.set(ms, group);
  }
  group.streams.add(stream);
}

function pingLeave(stream: SseStream, ms: number): void {
  const group = pingGroups.get(ms);
  if (!group?.streams.delete(stream) || group.streams.size > 0) return;
  clearInterval(group.timer);
  pingGroups.delete(ms);
}

/**
 * Node keeps a response's header block (`_header`) for the response's whole life, built as a tree
 * of some forty concatenated pieces: 1.2 KiB per open stream in heap snapshots, where the flat
 * text is ~0.4 KiB. A regular expression run over it makes V8 flatten it in place (the tree becomes
 * garbage; a regex call, unlike a pure conversion, is never optimised away); the text and what
 * Node does with it are unchanged.
 */
function flatten(text: unknown): void {
  if (typeof text === 'string') HEADER_END.test(text);
}
const HEADER_END = /\r\n$/;

export class SseStream {
  private readonly abort = new AbortController();
  private readonly pingMs: number;
  private readonly maxBuffered: number;
  private readonly stallMs: number;
  private readonly flushAt: number;
  private ended = false;
  /** Frames written in this turn of the event loop, not yet handed to the response. */
  private pending = '';
  /** Whether a flush at the end of this turn is due. */
  private flushDue = false;
  private preamble: NodeJS.Timeout | undefined;

  /** The response this stream writes (the access log notes what it carried). */
  get response(): ServerResponse { return this.res; }

  constructor(private readonly res: ServerResponse, opts: SseOptions, headers: Record<string, string> = {}) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      // no-store: a stream is one caller's tokens; no-transform: no proxy may buffer or compress it.
      'cache-control': 'no-store, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...headers,
    });
    flatten((res as unknown as { _header?: unknown })._header);
    res.socket?.setNoDelay(true);
    this.maxBuffered = opts.maxBufferedBytes;
    this.stallMs = opts.stallMs;
    // A chunk larger than the buffer limit would trip it on its own against a client that is merely busy.
    this.flushAt = Math.min(FLUSH_AT, opts.maxBufferedBytes);
    // Not sent at once: the first event usually follows within a few milliseconds and takes the
    // headers along in its write; a stream with nothing to say yet gets them after PREAMBLE_WAIT_MS.
    this.pending = `retry: ${opts.retryMs}\n\n`;
    this.preamble = setTimeout(this.flush, PREAMBLE_WAIT_MS);
    this.preamble.unref();
    this.pingMs = opts.pingMs;
    pingJoin(this, opts.pingMs);
    res.on('close', () => this.finish());
    // A client that left before the stream began (while its request was admitted and stored) closed
    // the response already, and 'close' will not come again: without this, a direct attempt would
    // run the whole model call for nobody.
    if (res.destroyed) this.finish();
  }

  /** Aborts when the client disconnected (or the stream was ended). */
  get signal(): AbortSignal { return this.abort.signal; }

  /** Writes one event; resolves once the socket drained if it was over its buffer. */
  async send(event: SseEvent): Promise<void> {
    await this.sendText(sseFrame(event));
  }

  /** Writes frames already in SSE form (see sseFrame); resolves once the socket drained if it was over its buffer. */
  async sendText(text: string): Promise<void> {
    if (!this.write(text)) await this.drained();
  }

  /** A keep-alive comment (the shared ping timer calls this). */
  ping(): void { this.write(': ping\n\n'); }

  end(): void {
    if (this.ended) return;
    const rest = this.pending;
    this.pending = '';
    this.res.end(rest);
    this.finish();
  }

  /**
   * Frames written in the same turn of the event loop leave as one chunk in one syscall: a
   * stream's tokens arrive in bursts, and a write (three buffers with chunked framing) per token
   * per listener was the gateway's top cost. False when the caller should wait for a drain.
   */
  private write(frame: string): boolean {
    if (this.ended) return true;
    if (!this.flushDue) { this.flushDue = true; setImmediate(this.flush); }
    this.pending += frame;
    if (this.pending.length >= this.flushAt) this.flush();
    return !this.res.writableNeedDrain;
  }

  private readonly flush = (): void => {
    this.flushDue = false;
    if (this.preamble) { clearTimeout(this.preamble); this.preamble = undefined; }
    if (this.ended || this.pending === '') return;
    const chunk = this.pending;
    this.pending = '';
    if (!this.res.write(chunk) && this.res.writableLength > this.maxBuffered) {
      // Too slow: drop the connection; the client resumes from the log with Last-Event-ID.
      this.res.destroy();
      this.finish();
    }
  };

  /**
   * Waits for the socket to take what it holds. A client that stops reading stops writes here,
   * below maxBufferedBytes, so the buffer bound alone would keep it (its socket, follow and stream
   * lease) forever: past stallMs it is dropped like one over the bound.
   */
  private drained(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => {
      const stalled = setTimeout(() => { this.res.destroy(); this.finish(); }, this.stallMs);
      const done = () => { clearTimeout(stalled); this.res.off('drain', done); this.abort.signal.removeEventListener('abort', done); resolve(); };
      this.res.once('drain', done);
      this.abort.signal.addEventListener('abort', done, { once: true });
    });
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.pending = '';
    pingLeave(this, this.pingMs);
    if (this.preamble) clearTimeout(this.preamble);
    this.abort.abort(STREAM_CLOSED);
  }
}
