// Server-sent events over a raw Node response: `retry:` first, `: ping` comments on an interval,
// a bounded write buffer (a listener that cannot keep up is disconnected and resumes from the
// log), and an abort signal that fires when the client goes away.
import type { ServerResponse } from 'node:http';

export interface SseOptions { pingMs: number; retryMs: number; maxBufferedBytes: number }

export class SseStream {
  private readonly abort = new AbortController();
  private readonly ping: NodeJS.Timeout;
  private ended = false;

  constructor(private readonly res: ServerResponse, opts: SseOptions, headers: Record<string, string> = {}) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...headers,
    });
    res.socket?.setNoDelay(true);
    res.write(`retry: ${opts.retryMs}\n\n`);
    this.ping = setInterval(() => this.write(': ping\n\n'), opts.pingMs);
    this.ping.unref();
    res.on('close', () => this.finish());
    this.maxBuffered = opts.maxBufferedBytes;
  }

  private readonly maxBuffered: number;

  /** Aborts when the client disconnected (or the stream was ended). */
  get signal(): AbortSignal { return this.abort.signal; }

  /** Writes one event; resolves once the socket drained if it was over its buffer. */
  async send(event: { id?: number | string; event?: string; data: string }): Promise<void> {
    let frame = '';
    if (event.id !== undefined) frame += `id: ${event.id}\n`;
    if (event.event) frame += `event: ${event.event}\n`;
    frame += `data: ${event.data}\n\n`;
    if (!this.write(frame)) await this.drained();
  }

  private corked = false;
  private readonly flush = () => { if (this.corked) { this.corked = false; this.res.uncork(); } };

  end(): void {
    if (this.ended) return;
    this.flush();
    this.res.end();
    this.finish();
  }

  private write(frame: string): boolean {
    if (this.ended) return true;
    // Frames written in the same turn of the event loop leave in one syscall: a stream's tokens
    // often arrive in bursts, and one write per token per listener was the gateway's top cost.
    if (!this.corked) {
      this.corked = true;
      this.res.cork();
      setImmediate(this.flush);
    }
    const ok = this.res.write(frame);
    if (!ok && this.res.writableLength > this.maxBuffered) {
      // Too slow: drop the connection; the client resumes from the log with Last-Event-ID.
      this.res.destroy();
      this.finish();
      return true;
    }
    return ok;
  }

  private drained(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { this.res.off('drain', done); this.abort.signal.removeEventListener('abort', done); resolve(); };
      this.res.once('drain', done);
      this.abort.signal.addEventListener('abort', done, { once: true });
    });
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.ping);
    this.abort.abort();
  }
}
