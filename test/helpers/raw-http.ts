// A raw TCP client for transport tests: what a slow or hostile client does byte by byte, and what
// the server answers and when it closes, which fetch would hide.
import { connect, type Socket } from 'node:net';

export interface RawResponse { status: number; headers: Record<string, string>; body: string }

export class RawConnection {
  private received = '';
  private waiters: Array<() => void> = [];
  /** Resolves with the time (Date.now) the server closed the connection. */
  readonly closed: Promise<number>;
  isClosed = false;

  constructor(readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => { this.received += chunk; this.wake(); });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => { this.isClosed = true; this.wake(); resolve(Date.now()); }));
  }

  static open(baseUrl: string): Promise<RawConnection> {
    const { hostname, port } = new URL(baseUrl);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  /** Writes unless the connection is gone (a trickling client keeps going until it notices). */
  write(text: string): boolean {
    if (this.isClosed || this.socket.destroyed) return false;
    this.socket.write(text);
    return true;
  }

  /** The first whole response on the connection (Content-Length framed), or an error after timeoutMs. */
  async response(timeoutMs = 15_000): Promise<RawResponse> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const parsed = parseResponse(this.received);
      if (parsed) { this.received = this.received.slice(parsed.length); return parsed.response; }
      if (this.isClosed) throw new Error(`connection closed without a whole response: ${JSON.stringify(this.received.slice(0, 200))}`);
      if (Date.now() > end) throw new Error(`no response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => { const t = setTimeout(resolve, 50); this.waiters.push(() => { clearTimeout(t); resolve(); }); });
    }
  }

  /** Sends `chunk` every `everyMs` until the connection closes; returns a stop function. */
  trickle(chunk: string, everyMs: number): () => void {
    const timer = setInterval(() => { if (!this.write(chunk)) clearInterval(timer); }, everyMs);
    return () => clearInterval(timer);
  }

  destroy(): void { this.socket.destroy(); }

  private wake(): void { const w = this.waiters; this.waiters = []; for (const f of w) f(); }
}

function parseResponse(text: string): { response: RawResponse; length: number } | null {
  const head = text.indexOf('\r\n\r\n');
  if (head === -1) return null;
  const [statusLine, ...lines] = text.slice(0, head).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) { const i = line.indexOf(':'); headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim(); }
  const length = Number(headers['content-length'] ?? 0);
  if (text.length < head + 4 + length) return null;
  const body = Buffer.from(text.slice(head + 4, head + 4 + length), 'latin1').toString('utf8');
  return { response: { status: Number(statusLine!.split(' ')[1]), headers, body }, length: head + 4 + length };
}

/** Resolves with the close time, or rejects when the connection is still open after timeoutMs. */
export async function closedWithin(conn: RawConnection, timeoutMs: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs); });
  try { return await Promise.race([conn.closed, late]); } finally { clearTimeout(timer); }
}
