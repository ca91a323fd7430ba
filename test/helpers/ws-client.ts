// A WebSocket test client on GET /v1/ws: collects every message and waits for the next one that
// matches, or for the close (code and reason), with bounded waits.
import WebSocket from 'ws';

export type WsMessage = Record<string, any>;

export interface WsClient {
  ws: WebSocket;
  messages: WsMessage[];
  send(msg: unknown): void;
  /** The first message (seen or still to come) matching `pred`. */
  next(pred: (m: WsMessage) => boolean, timeoutMs?: number): Promise<WsMessage>;
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

export async function connectWs(baseUrl: string, opts: { key?: string | null; query?: string; headers?: Record<string, string> } = {}): Promise<WsClient> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  const ws = new WebSocket(`${baseUrl.replace('http', 'ws')}/v1/ws${opts.query ?? ''}`, { headers });
  const messages: WsMessage[] = [];
  const waiters = new Set<() => void>();
  ws.on('message', (m) => { messages.push(JSON.parse(String(m))); for (const w of waiters) w(); });
  const closed = new Promise<{ code: number; reason: string }>((ok) => ws.on('close', (code, reason) => { ok({ code, reason: String(reason) }); for (const w of waiters) w(); }));
  await new Promise((ok, fail) => { ws.once('open', ok); ws.once('error', fail); });
  return {
    ws, messages, closed,
    send: (msg) => ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg)),
    close: () => ws.close(),
    next: (pred, timeoutMs = 15_000) => new Promise((resolve, reject) => {
      const check = () => {
        const hit = messages.find(pred);
        if (hit) { done(); resolve(hit); } else if (ws.readyState === WebSocket.CLOSED) { done(); reject(new Error(`socket closed; messages: ${JSON.stringify(messages).slice(0, 2000)}`)); }
      };
      const timer = setTimeout(() => { done(); reject(new Error(`no matching message in ${timeoutMs} ms; got ${JSON.stringify(messages).slice(0, 2000)}`)); }, timeoutMs);
      const done = () => { clearTimeout(timer); waiters.delete(check); };
      waiters.add(check);
      check();
    }),
  };
}

/** Opens an upgrade that the server refuses: its status and JSON body. */
export function refusedUpgrade(baseUrl: string, headers: Record<string, string>): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${baseUrl.replace('http', 'ws')}/v1/ws`, { headers });
    ws.on('open', () => { ws.close(); reject(new Error('upgrade was accepted')); });
    ws.on('error', () => {});
    ws.on('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => { try { resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }); } catch (e) { reject(e); } });
    });
  });
}
