// One client's WebSocket on GET /v1/ws. Everything it may hold is bounded: each live follow (a
// submit's, or a resume's) holds a stream lease as SSE does, plus a per-socket cap for keys without
// a stream limit; control messages are rate-limited; deliveries pause while the socket's unsent
// bytes are above a bound, and a socket that stays there, or runs far past it, is closed. On close
// every follow, lease and timer goes with it.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WebSocket, RawData } from 'ws';
import type { Principal } from '../core/auth.ts';
import { SluiceError, isSluiceError } from '../core/errors.ts';
import type { Lease } from '../core/stream-leases.ts';
import { TokenBucket } from '../core/token-bucket.ts';
import type { LogEvent } from '../ports/bus.ts';
import type { RequestRecord } from '../ports/store.ts';
import { deliverEvents } from './delivery.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { finishReasons, openaiUsage, requestView } from './render.ts';
import { parseWsMessage, type IncomingMessage, type MessageRef, type SubmitMessage } from './ws-protocol.ts';

/** Close codes: 1008 policy violation (flooding), 1013 try again later (slow consumer), 4401 unauthorized. */
export const CLOSE_POLICY = 1008;
export const CLOSE_SLOW = 1013;
export const CLOSE_UNAUTHORIZED = 4401;
/** The gateway is shutting down (drain): reconnect, to another instance, and resume with `after`. */
export const CLOSE_RESTART = 1012;

/** A flooding socket is closed after this many times its burst of refused messages. */
const STRIKES_PER_BURST = 10;
/** How often a paused delivery looks whether the client has read enough. */
const BACKPRESSURE_POLL_MS = 50;
/** A closed socket whose client does not read the close frame is cut after this long. */
const CLOSE_GRACE_MS = 1000;
const SLOW_REASON = 'client reads too slowly: reconnect and resume with after = the last sequence received';

interface Follow { readonly signal: AbortSignal; lease: Lease | null; end(): Promise<void> }

function newFollow(): Follow {
  const ac = new AbortController();
  const follow: Follow = {
    signal: ac.signal,
    lease: null,
    end: async () => { ac.abort(); await follow.lease?.release(); },
  };
  return follow;
}

function wsEvent(e: LogEvent, requestId: string): Record<string, unknown> {
  switch (e.type) {
    case 'token': return { type: 'token', request_id: requestId, sequence: e.seq, attempt: e.attempt, token: e.text, ...(e.choice !== undefined && { choice: e.choice }), ...(e.logprobs !== undefined && { logprobs: e.logprobs }) };
    case 'tool_call': return { type: 'tool_call', request_id: requestId, sequence: e.seq, attempt: e.attempt, choice: e.choice, call: e.call, id: e.id, name: e.name, arguments: e.arguments };
    case 'restart': return { type: 'restart', request_id: requestId, sequence: e.seq, attempt: e.attempt };
    case 'completed': return { type: 'completed', request_id: requestId, sequence: e.seq, finish_reason: e.finishReason, ...(e.choices && { choices: finishReasons(e.choices) }), usage: openaiUsage(e.usage) };
    case 'error': return { type: 'error', request_id: requestId, sequence: e.seq, status: e.status, error: { code: e.code, message: e.message }, usage: openaiUsage(e.usage) };
  }
}

/** Each event's message, serialised once for every socket that follows its request (the follower shares event objects). */
const wsFrames = new WeakMap<LogEvent, string>();

export class WsSession {
  private principal: Principal | null = null;
  private authenticating: Promise<Principal | null> | null = null;
  private readonly follows = new Map<string, Follow>();
  /** Submits holding a lease whose follow has not started yet: they count against the per-socket cap. */
  private pendingSubmits = 0;
  private readonly bucket: TokenBucket;
  /** Messages refused since the client was last within its rate. */
  private strikes = 0;
  private closed = false;
  private authTimer: NodeJS.Timeout | undefined;

  constructor(private readonly socket: WebSocket, private readonly deps: GatewayDeps) {
    const { messagesPerSecond, messageBurst } = deps.config.ws;
    // Real time, not deps.now: this shapes traffic on the wire, and an injected (test) clock may stand still.
    this.bucket = new TokenBucket(messagesPerSecond, messageBurst);
  }

  /** Starts serving; `presentedKey` is the key from a header or ?api_key=, null to wait for an auth message. */
  open(presentedKey: string | null): void {
    const off = this.deps.drain.onHandoff(() => this.closeFor(CLOSE_RESTART, 'server shutting down: reconnect and resume with after = the last sequence received', 'drain'));
    this.socket.on('close', () => { off(); this.release(); });
    this.socket.on('message', (data, isBinary) => this.receive(data, isBinary));
    if (presentedKey !== null) {
      this.authenticating = this.authenticate(presentedKey);
      return;
    }
    this.authTimer = setTimeout(() => {
      if (this.principal || this.authenticating) return;
      this.fail(new SluiceError('SLUICE_ERR_MISSING_API_KEY', 'No {"type":"auth","api_key":"…"} message in time'));
      this.closeFor(CLOSE_UNAUTHORIZED, 'authentication timed out', 'auth_timeout');
    }, this.deps.config.ws.authTimeoutMs);
    this.authTimer.unref();
  }

  private receive(data: RawData, isBinary: boolean): void {
    if (this.closed || !this.admitMessage()) return;
    const frame = parseWsMessage(data, isBinary);
    if ('error' in frame) return this.fail(frame.error, frame.ref);
    this.handle(frame.message, frame.ref).catch((err: unknown) => this.fail(err, frame.ref));
  }

  /** The per-socket rate limit: a refused message is answered, not processed; a flood closes the socket. */
  private admitMessage(): boolean {
    if (this.bucket.full) this.strikes = 0;
    if (this.bucket.take()) return true;
    this.strikes += 1;
    const { messagesPerSecond, messageBurst } = this.deps.config.ws;
    if (this.strikes >= STRIKES_PER_BURST * messageBurst) {
      this.closeFor(CLOSE_POLICY, `too many messages: more than ${messagesPerSecond} per second`, 'flood');
    } else {
      this.fail(new SluiceError('SLUICE_ERR_RATE_LIMITED', `More than ${messagesPerSecond} messages per second on this socket; message not processed`));
    }
    return false;
  }

  private async handle(m: IncomingMessage, ref: MessageRef): Promise<void> {
    if (m.type === 'auth') return this.authMessage(m.api_key);
    const principal = await this.authenticated();
    if (m.type === 'submit') return this.submit(principal, m, ref);
    if (m.type === 'resume') return this.resume(principal, m.request_id, m.after ?? 0);
    const r = await this.deps.requests.cancel(principal, m.request_id);
    this.send({ type: 'cancelled', request_id: r.id, status: r.status });
  }

  private async authMessage(key: string): Promise<void> {
    if (this.principal || this.authenticating) throw new SluiceError('SLUICE_ERR_VALIDATION', 'This socket is already authenticated', { param: 'type' });
    this.authenticating = this.authenticate(key);
    const principal = await this.authenticating;
    if (principal) this.send({ type: 'authenticated', user_id: principal.userId });
  }

  /**
   * Resolves the key, or answers the error and closes the socket: 4401 when the key was refused,
   * 1013 (try again later) when it could not be checked (the store is down), so a client with a
   * good key does not give up.
   */
  private async authenticate(key: string): Promise<Principal | null> {
    try {
      this.principal = await this.deps.auth.authenticate(key);
      clearTimeout(this.authTimer);
      return this.principal;
    } catch (err) {
      this.fail(err);
      if (isSluiceError(err) && (err.status === 401 || err.status === 403)) this.closeFor(CLOSE_UNAUTHORIZED, 'unauthorized', 'unauthorized');
      else this.closeFor(CLOSE_SLOW, 'authentication unavailable, try again later', 'auth_unavailable');
      return null;
    }
  }

  private async authenticated(): Promise<Principal> {
    const principal = this.principal ?? await this.authenticating;
    if (!principal) throw new SluiceError('SLUICE_ERR_MISSING_API_KEY', 'Authenticate first: send {"type":"auth","api_key":"…"} (or open the socket with Authorization: Bearer)');
    return principal;
  }

  /** The lease comes first, so a refused submit creates no request and charges nothing. */
  private async submit(principal: Principal, m: SubmitMessage, ref: MessageRef): Promise<void> {
    this.checkSocketCap(principal);
    this.pendingSubmits += 1;
    try {
      const lease = await this.deps.leases.acquire(principal, randomUUID());
      if (this.closed) return void await lease.release();
      let record: RequestRecord;
      try {
        ({ record } = await this.deps.requests.submit(principal, m.request, { idempotencyKey: m.idempotency_key, mode: 'queued' }));
      } catch (err) {
        await lease.release();
        throw err;
      }
      if (this.closed) return void await lease.release();
      this.send({ type: 'accepted', ...ref, request_id: record.id, status: record.status });
      const follow = newFollow();
      follow.lease = lease;
      this.startFollow(follow, record, 0);
    } finally {
      this.pendingSubmits -= 1;
    }
  }

  /** A resume of a request this socket already follows replaces that follow (and frees its lease first). */
  private async resume(principal: Principal, requestId: string, after: number): Promise<void> {
    const record = await this.deps.requests.get(principal, requestId);
    await this.endFollow(record.id);
    if (this.closed) return;
    this.checkSocketCap(principal);
    // Held in the map while the lease is asked for, so the cap sees it and a newer resume replaces it.
    const follow = newFollow();
    this.follows.set(record.id, follow);
    try {
      follow.lease = await this.deps.leases.acquire(principal, randomUUID());
    } catch (err) {
      if (this.follows.get(record.id) === follow) this.follows.delete(record.id);
      throw err;
    }
    if (follow.signal.aborted) return void await follow.end();
    this.startFollow(follow, record, after);
  }

  /** Keys with a stream limit are bounded by their leases; the others by this per-socket cap. */
  private checkSocketCap(principal: Principal): void {
    const cap = this.deps.config.ws.maxFollowsPerSocket;
    if (principal.unlimited && this.follows.size + this.pendingSubmits >= cap) {
      throw new SluiceError('SLUICE_ERR_STREAM_LIMIT', `Too many open streams on this socket: ${cap} at most`, { limit: 'socket_follows' });
    }
  }

  private startFollow(follow: Follow, record: RequestRecord, after: number): void {
    const previous = this.follows.get(record.id);
    if (previous && previous !== follow) void previous.end();
    this.follows.set(record.id, follow);
    this.deps.metrics.activeStreams.inc();
    deliverEvents(this.deps, record, after, follow.signal, (events) => this.deliver(record.id, events, follow.signal))
      .then(async (end) => { if (end === 'stored' && !follow.signal.aborted) await this.sendStored(record.id); })
      .catch((err: unknown) => this.fail(err, { request_id: record.id }))
      .finally(() => {
        if (this.follows.get(record.id) === follow) this.follows.delete(record.id);
        this.deps.metrics.activeStreams.dec();
        void follow.end();
      });
  }

  private async endFollow(requestId: string): Promise<void> {
    const follow = this.follows.get(requestId);
    if (!follow) return;
    this.follows.delete(requestId);
    await follow.end();
  }

  private async deliver(requestId: string, events: readonly LogEvent[], signal: AbortSignal): Promise<void> {
    await this.roomToSend(signal);
    if (signal.aborted) return;
    for (const e of events) {
      let text = wsFrames.get(e);
      if (text === undefined) { text = JSON.stringify(wsEvent(e, requestId)); wsFrames.set(e, text); }
      this.sendText(text);
    }
  }

  private async sendStored(requestId: string): Promise<void> {
    const r = await this.deps.store.getRequest(requestId);
    if (r) this.send({ type: r.status === 'completed' ? 'completed' : 'error', ...requestView(r), replayed_from: 'store' });
  }

  /** Backpressure: waits while the client has too much unread; closes a socket that stays behind too long. */
  private async roomToSend(signal: AbortSignal): Promise<void> {
    const { maxBufferedBytes, slowCloseMs } = this.deps.config.ws;
    const since = Date.now();
    while (this.socket.bufferedAmount > maxBufferedBytes && !signal.aborted && !this.closed) {
      if (Date.now() - since >= slowCloseMs) return this.closeFor(CLOSE_SLOW, SLOW_REASON, 'slow_consumer');
      await sleep(BACKPRESSURE_POLL_MS);
    }
  }

  private send(msg: Record<string, unknown>): void {
    this.sendText(JSON.stringify(msg));
  }

  private sendText(text: string): void {
    if (this.closed || this.socket.readyState !== this.socket.OPEN) return;
    this.socket.send(text);
    if (this.socket.bufferedAmount > 4 * this.deps.config.ws.maxBufferedBytes) this.closeFor(CLOSE_SLOW, SLOW_REASON, 'buffer_overflow');
  }

  private fail(err: unknown, ref: MessageRef = {}): void {
    const se = isSluiceError(err) ? err : new SluiceError('SLUICE_ERR_INTERNAL', undefined, undefined, { cause: err });
    if (!isSluiceError(err)) this.deps.logger.error({ err }, 'websocket message failed');
    this.send({ type: 'error', ...ref, error: se.toJSON().error });
  }

  /** Closes with a code and reason the client can act on; cuts the connection if the close frame is not read. */
  private closeFor(code: number, reason: string, label: string): void {
    if (this.closed) return;
    this.deps.metrics.wsClosed.inc({ reason: label });
    if (code !== CLOSE_UNAUTHORIZED) this.deps.logger.warn({ code, reason: label }, 'websocket closed by the gateway');
    this.release();
    this.socket.close(code, reason);
    setTimeout(() => { if (this.socket.readyState !== this.socket.CLOSED) this.socket.terminate(); }, CLOSE_GRACE_MS).unref();
  }

  /** Everything the socket holds goes: follows (so their deliveries stop), leases, the auth timer. */
  private release(): void {
    this.closed = true;
    clearTimeout(this.authTimer);
    for (const follow of this.follows.values()) void follow.end();
    this.follows.clear();
  }
}
