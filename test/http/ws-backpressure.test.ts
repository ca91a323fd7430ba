// Backpressure on a WebSocket, with a socket whose unsent bytes the test controls (a real socket's
// kernel buffers would hide the bound): deliveries pause above ws.maxBufferedBytes and the follow
// stops reading; a socket that stays above it for ws.slowCloseMs, or passes 4x, is closed with
// 1013 and a reason that says to resume with `after`; its follow ends when it closes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';
import type { Config } from '../../src/config.ts';
import { Drain } from '../../src/core/drain.ts';
import { FollowHubs } from '../../src/core/follow-hub.ts';
import { StreamLeases } from '../../src/core/stream-leases.ts';
import type { GatewayDeps } from '../../src/http/gateway-deps.ts';
import { WsSession } from '../../src/http/ws-session.ts';
import { MASTER_KEY, api, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';

/** A socket the client does not read from until `startReading()`: until then every send stays in bufferedAmount. */
class UnreadSocket extends EventEmitter {
  readonly OPEN = 1;
  readonly CLOSED = 3;
  readyState = 1;
  bufferedAmount = 0;
  sent: Record<string, any>[] = [];
  closedWith: { code: number; reason: string } | null = null;
  private reading = false;
  send(text: string): void { this.sent.push(JSON.parse(text)); if (!this.reading) this.bufferedAmount += Buffer.byteLength(text); }
  startReading(): void { this.reading = true; this.bufferedAmount = 0; }
  close(code: number, reason: string): void { this.closedWith = { code, reason }; this.readyState = this.CLOSED; this.emit('close', code, Buffer.from(reason)); }
  terminate(): void { this.readyState = this.CLOSED; }
  tokens(): number { return this.sent.filter((m) => m.type === 'token').length; }
}

describe('WebSocket backpressure', () => {
  let app: TestSluice;
  let requestId: string;
  before(async () => {
    app = await startTestSluice({ sim: { ttftMs: 0, itlMs: 0 } });
    const call = api(app.url);
    const r = (await (await call('/v1/requests', { method: 'POST', json: { model: 'sim', max_tokens: 1024, messages: [{ role: 'user', content: 'Write something very long' }] } })).json()) as { request_id: string };
    requestId = r.request_id;
    await waitFor(async () => (await (await call(`/v1/requests/${requestId}`)).json()).status === 'completed', 20_000);
  });
  after(() => app.stop());

  function session(ws: Partial<Config['ws']>): { socket: UnreadSocket; resume(): void } {
    const config = { ...app.config, ws: { ...app.config.ws, ...ws } } as Config;
    const deps = {
      config, auth: app.auth, logger: app.logger, metrics: app.metrics, requests: app.requests, store: app.store, bus: app.bus,
      limiter: app.limiter, runner: app.runner, leases: new StreamLeases(app.limiter, config.leaseTtlMs, app.metrics), hubs: new FollowHubs(app.bus),
      now: Date.now, readiness: async () => ({ ok: true, checks: {} }), drain: new Drain(),
    } as unknown as GatewayDeps;
    const socket = new UnreadSocket();
    new WsSession(socket as unknown as WebSocket, deps).open(MASTER_KEY);
    return { socket, resume: () => socket.emit('message', Buffer.from(JSON.stringify({ type: 'resume', request_id: requestId })), false) };
  }

  const activeStreams = async () => (await app.metrics.activeStreams.get()).values[0]?.value ?? 0;

  it('pauses above maxBufferedBytes (the follow stops reading) and goes on once the client reads', async () => {
    const { socket, resume } = session({ maxBufferedBytes: 32 * 1024, slowCloseMs: 10_000 });
    resume();
    // The first page of the log (500 events, ~50 KB) goes out; the next waits for room.
    await waitFor(async () => socket.tokens() > 0);
    await new Promise((r) => setTimeout(r, 400));
    const paused = socket.tokens();
    assert.ok(paused < 1024, `paused after ${paused} tokens`);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(socket.tokens(), paused, 'nothing more is sent while the client does not read');
    socket.startReading();
    await waitFor(async () => socket.sent.some((m) => m.type === 'completed'), 10_000);
    assert.equal(socket.tokens(), 1024);
    assert.equal(socket.closedWith, null);
  });

  it('a socket that stays above the bound for slowCloseMs is closed with 1013, and its follow ends', async () => {
    const before = await activeStreams();
    const { socket, resume } = session({ maxBufferedBytes: 32 * 1024, slowCloseMs: 300 });
    resume();
    await waitFor(async () => socket.closedWith, 10_000);
    assert.equal(socket.closedWith!.code, 1013);
    assert.match(socket.closedWith!.reason, /resume with after/);
    assert.ok(socket.tokens() < 1024);
    await waitFor(async () => (await activeStreams()) === before, 5000);
  });

  it('a buffer past 4x the bound closes the socket at once with 1013', async () => {
    const { socket, resume } = session({ maxBufferedBytes: 8 * 1024, slowCloseMs: 60_000 });
    resume();
    await waitFor(async () => socket.closedWith, 5000);
    assert.equal(socket.closedWith!.code, 1013);
    assert.ok(socket.bufferedAmount < 4 * 8 * 1024 + 1024, 'nothing more was sent after the bound was passed');
  });
});
