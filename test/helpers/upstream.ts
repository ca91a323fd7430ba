// A small OpenAI-compatible upstream on 127.0.0.1 whose behaviour a test sets and changes while it
// runs: answer, fail with a status, cut the stream after some tokens, or hold each stream until
// released. It records what reached it (the model name, the Authorization header) and can check a
// bearer key. Used as the deployments of router and catalogue tests.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Behaviour =
  | { kind: 'ok'; tokens?: number; itlMs?: number }
  | { kind: 'fail'; status: number }
  /** Sends `after` tokens, then drops the connection. */
  | { kind: 'cut'; after: number }
  /** Sends headers, then waits for release() before answering like 'ok'. */
  | { kind: 'hold'; tokens?: number };

export interface Seen { model: string; authorization: string | undefined }

export interface Upstream {
  /** Base URL with /v1, as a deployment's url. */
  url: string;
  behaviour: Behaviour;
  /** Every chat request that reached the server (after the key check). */
  seen: Seen[];
  /** Chat requests the key check refused. */
  refused: number;
  /** Streams open now. */
  open(): number;
  /** Lets every held stream answer. */
  release(): void;
  /** Closes the server and drops every connection, as a crash would: later connections are refused. */
  kill(): Promise<void>;
}

export async function startUpstream(opts: { key?: string; behaviour?: Behaviour; model?: string } = {}): Promise<Upstream> {
  const sockets = new Set<Socket>();
  let held: Array<() => void> = [];
  let streams = 0;
  const up: Upstream = {
    url: '', behaviour: opts.behaviour ?? { kind: 'ok' }, seen: [], refused: 0,
    open: () => streams,
    release: () => { const h = held; held = []; for (const go of h) go(); },
    kill: async () => {
      await new Promise<void>((resolve) => { server.close(() => resolve()); for (const s of sockets) s.destroy(); });
    },
  };
  const server = http.createServer((req, res) => { void handle(req, res).catch(() => res.destroy()); });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (opts.key && req.headers.authorization !== `Bearer ${opts.key}`) {
      if (req.url?.endsWith('/chat/completions')) up.refused++;
      return json(res, 401, { error: { message: 'Incorrect API key provided', type: 'invalid_request_error', code: 'invalid_api_key' } });
    }
    if (req.method === 'GET' && req.url === '/v1/models') return json(res, 200, { object: 'list', data: [{ id: opts.model ?? 'up-model', object: 'model' }] });
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') return json(res, 404, { error: { message: 'not found' } });
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { model: string; stream?: boolean };
    up.seen.push({ model: body.model, authorization: req.headers.authorization });
    const b = up.behaviour;
    if (b.kind === 'fail') return json(res, b.status, { error: { message: `failing with ${b.status}` } });
    if (body.stream === false) {
      // A non-streaming caller (direct mode) is served by a non-streaming upstream call.
      if (b.kind === 'cut') { res.destroy(); return; }
      if (b.kind === 'hold') {
        streams++;
        res.on('close', () => { streams--; });
        await new Promise<void>((resolve) => { held.push(resolve); res.on('close', resolve); });
        if (res.destroyed) return;
      }
      const n = b.kind === 'ok' || b.kind === 'hold' ? b.tokens ?? 3 : 3;
      const content = Array.from({ length: n }, (_, i) => `w${i} `).join('');
      return json(res, 200, {
        id: 'up', object: 'chat.completion', created: 0, model: body.model,
        choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'length' }],
        usage: { prompt_tokens: 5, completion_tokens: n, total_tokens: 5 + n },
      });
    }
    streams++;
    res.on('close', () => { streams--; });
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const send = (o: unknown) => res.write(`data: ${JSON.stringify(o)}\n\n`);
    const token = (i: number) => send({ choices: [{ index: 0, delta: { content: `w${i} ` } }] });
    if (b.kind === 'cut') {
      for (let i = 0; i < b.after; i++) token(i);
      await new Promise((r) => setTimeout(r, 20));
      res.destroy();
      return;
    }
    if (b.kind === 'hold') await new Promise<void>((resolve) => { held.push(resolve); res.on('close', resolve); });
    if (res.destroyed) return;
    const n = b.tokens ?? 3;
    const itl = b.kind === 'ok' ? b.itlMs ?? 0 : 0;
    for (let i = 0; i < n; i++) {
      if (res.destroyed) return;
      token(i);
      if (itl > 0) await new Promise((r) => setTimeout(r, itl));
    }
    send({ choices: [{ index: 0, delta: {}, finish_reason: 'length' }] });
    send({ choices: [], usage: { prompt_tokens: 5, completion_tokens: n, total_tokens: 5 + n } });
    res.end('data: [DONE]\n\n');
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  return up;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
