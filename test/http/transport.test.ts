// The HTTP transport on real sockets: slow bodies and slowloris headers are cut off by the
// configured timeouts, an early error closes its connection, one address cannot hoard
// connections, and every answer Node's parser gives is a catalogue error.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config.ts';
import { connectionsCheckingIntervalMs } from '../../src/http/transport.ts';
import { automaticCap, FD_RESERVE } from '../../src/http/connection-guard.ts';
import { MASTER_KEY, startTestSluice, type TestSluice } from '../helpers/app.ts';
import { closedWithin, RawConnection, type RawResponse } from '../helpers/raw-http.ts';

/** Generous: the machine is shared; the defect held sockets open for minutes. */
const SLACK_MS = 5000;

function assertCatalogue(res: RawResponse, status: number, code: string): void {
  assert.equal(res.status, status, res.body);
  assert.match(res.headers['content-type'] ?? '', /application\/json/);
  const body = JSON.parse(res.body) as { error: { code: string; message: string; type: string } };
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, 'string');
  assert.equal(typeof body.error.type, 'string');
}

describe('transport timeouts (request 1 s, headers 600 ms)', () => {
  let app: TestSluice;
  const limits = { requestTimeoutMs: 1000, headersTimeoutMs: 600, maxConnectionsPerIp: 0 };
  before(async () => { app = await startTestSluice({ http: limits }); });
  after(() => app.stop());

  it('derives the checking interval from the shorter timeout, at most 1 s', () => {
    assert.equal(connectionsCheckingIntervalMs(limits), 150);
    assert.equal(connectionsCheckingIntervalMs({ ...limits, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000 }), 1000);
  });

  it('a body sent one byte every 500 ms gets a 408 catalogue error and the socket is closed', async () => {
    const conn = await RawConnection.open(app.url);
    const started = Date.now();
    conn.write(`POST /v1/requests HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${MASTER_KEY}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{`);
    const stop = conn.trickle(' ', 500);
    try {
      const res = await conn.response(1000 + 250 + SLACK_MS);
      assertCatalogue(res, 408, 'SLUICE_ERR_REQUEST_TIMEOUT');
      const closedAt = await closedWithin(conn, SLACK_MS);
      assert.ok(closedAt - started < 1000 + 250 + SLACK_MS, `closed after ${closedAt - started} ms`);
    } finally { stop(); conn.destroy(); }
  });

  it('slowloris: headers sent one line at a time get a 408 and the socket is closed', async () => {
    const conn = await RawConnection.open(app.url);
    const started = Date.now();
    conn.write('GET /healthz HTTP/1.1\r\nhost: x\r\n');
    const stop = conn.trickle('x-pad: y\r\n', 200);
    try {
      const res = await conn.response(600 + 150 + SLACK_MS);
      assertCatalogue(res, 408, 'SLUICE_ERR_REQUEST_TIMEOUT');
      const closedAt = await closedWithin(conn, SLACK_MS);
      assert.ok(closedAt - started < 600 + 150 + SLACK_MS, `closed after ${closedAt - started} ms`);
    } finally { stop(); conn.destroy(); }
  });

  it('the server still answers others while a slow client is being cut off', async () => {
    const conn = await RawConnection.open(app.url);
    conn.write('GET /healthz HTTP/1.1\r\nhost: x\r\n');
    const stop = conn.trickle('x-pad: y\r\n', 200);
    try {
      const res = await fetch(`${app.url}/healthz`);
      assert.equal(res.status, 200);
      await closedWithin(conn, 600 + 150 + SLACK_MS);
    } finally { stop(); conn.destroy(); }
  });
});

describe('transport: connection cap', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ http: { maxConnectionsPerIp: 3 } }); });
  after(() => app.stop());

  it('caps connections per client address at 3: the 4th gets a 503 catalogue error and is closed; closing frees a slot', async () => {
    const held: RawConnection[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = await RawConnection.open(app.url);
        c.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
        assert.equal((await c.response()).status, 200);
        held.push(c);
      }
      const fourth = await RawConnection.open(app.url);
      fourth.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
      assertCatalogue(await fourth.response(), 503, 'SLUICE_ERR_TOO_MANY_CONNECTIONS');
      await closedWithin(fourth, SLACK_MS);

      // Counts drop when sockets close: after closing all three, three new ones are served again.
      for (const c of held.splice(0)) { c.destroy(); await c.closed; }
      for (let i = 0; i < 3; i++) {
        const again = await waitServed(app.url);
        held.push(again);
      }
    } finally { for (const c of held) c.destroy(); }
  });
});

describe('transport: process-wide connection cap', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ http: { maxConnectionsPerIp: 0, maxConnections: 3 } }); });
  after(() => app.stop());

  it('caps the process at 3 connections whatever their address: the 4th gets 503 SLUICE_ERR_CONNECTION_LIMIT with Retry-After, counted; closing frees a slot', async () => {
    const held: RawConnection[] = [];
    try {
      for (let i = 0; i < 3; i++) held.push(await waitServed(app.url));
      const fourth = await RawConnection.open(app.url);
      fourth.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
      const res = await fourth.response();
      assertCatalogue(res, 503, 'SLUICE_ERR_CONNECTION_LIMIT');
      assert.equal(res.headers['retry-after'], '1');
      await closedWithin(fourth, SLACK_MS);

      // The metric is read over one of the held connections: a new one would be refused too.
      held[0]!.write('GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n');
      const metrics = (await held[0]!.response()).body;
      assert.match(metrics, /^sluice_connections_refused_total\{reason="process"\} 1$/m);
      assert.match(metrics, /^sluice_connections_refused_total\{reason="address"\} 0$/m);

      held.shift()!.destroy();
      held.push(await waitServed(app.url));
    } finally { for (const c of held) c.destroy(); }
  });

  it("'auto' is the descriptor limit less a reserve for the process's own connections", () => {
    const limits = (soft: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                20000                files\n`;
    assert.equal(automaticCap(limits('20000')), 20_000 - FD_RESERVE);
    // A low limit keeps a quarter of it, not the whole reserve.
    assert.equal(automaticCap(limits('400')), 300);
    assert.equal(automaticCap(limits('unlimited')), 0);
    assert.equal(automaticCap(''), 0);
  });
});

describe('transport: early answers and error shapes', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ http: { requestTimeoutMs: 60_000, headersTimeoutMs: 30_000 } }); });
  after(() => app.stop());

  it('a 401 sent before the body was read carries connection: close and the socket closes while the client trickles', async () => {
    const conn = await RawConnection.open(app.url);
    conn.write('POST /v1/requests HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-not-a-real-key-000000\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{');
    const stop = conn.trickle(' ', 200);
    try {
      const res = await conn.response();
      assertCatalogue(res, 401, 'SLUICE_ERR_INVALID_API_KEY');
      assert.equal(res.headers.connection, 'close');
      // Far below the 60 s request timeout configured here: the close comes from the early answer.
      await closedWithin(conn, SLACK_MS);
    } finally { stop(); conn.destroy(); }
  });

  it('a 413 from Content-Length alone closes the connection too', async () => {
    const conn = await RawConnection.open(app.url);
    conn.write(`POST /v1/requests HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${MASTER_KEY}\r\ncontent-type: application/json\r\ncontent-length: ${100 * 1024 * 1024}\r\n\r\n{`);
    const stop = conn.trickle(' ', 200);
    try {
      const res = await conn.response();
      assertCatalogue(res, 413, 'SLUICE_ERR_BODY_TOO_LARGE');
      assert.equal(res.headers.connection, 'close');
      await closedWithin(conn, SLACK_MS);
    } finally { stop(); conn.destroy(); }
  });

  it('a whole request answered with an error keeps its connection (keep-alive is not broken)', async () => {
    const conn = await RawConnection.open(app.url);
    try {
      conn.write('GET /v1/requests/nope HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-not-a-real-key-000000\r\n\r\n');
      const res = await conn.response();
      assert.equal(res.status, 401);
      assert.notEqual(res.headers.connection, 'close');
      conn.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
      assert.equal((await conn.response()).status, 200);
    } finally { conn.destroy(); }
  });

  it('an over-long id gets a catalogue 404, not Fastify\'s FST_ERR_MAX_PARAM_LENGTH body', async () => {
    const res = await fetch(`${app.url}/v1/requests/${'a'.repeat(500)}`, { headers: { authorization: `Bearer ${MASTER_KEY}` } });
    const body = await res.json() as { error: { code: string } };
    assert.equal(res.status, 404);
    assert.equal(body.error.code, 'SLUICE_ERR_NOT_FOUND');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  });

  it('oversized headers get a 431 catalogue error on the raw socket', async () => {
    const conn = await RawConnection.open(app.url);
    try {
      conn.write(`GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'b'.repeat(64 * 1024)}\r\n\r\n`);
      assertCatalogue(await conn.response(), 431, 'SLUICE_ERR_HEADERS_TOO_LARGE');
      await closedWithin(conn, SLACK_MS);
    } finally { conn.destroy(); }
  });

  it('a malformed request gets a 400 catalogue error', async () => {
    const conn = await RawConnection.open(app.url);
    try {
      conn.write('THIS IS NOT HTTP\r\n\r\n');
      assertCatalogue(await conn.response(), 400, 'SLUICE_ERR_BAD_REQUEST');
      await closedWithin(conn, SLACK_MS);
    } finally { conn.destroy(); }
  });
});

describe('transport config', () => {
  it('has the documented defaults and env names, and refuses a headers timeout above the request timeout', async () => {
    const { loadConfig } = await import('../../src/config.ts');
    const env = { SLUICE_CONFIG: '', SLUICE_REQUEST_TIMEOUT_MS: '5000', SLUICE_HEADERS_TIMEOUT_MS: '2000', SLUICE_MAX_CONNECTIONS_PER_IP: '0', SLUICE_MAX_CONNECTIONS: '9000', SLUICE_LISTEN_BACKLOG: '1024' };
    assert.deepEqual(parseConfig({}).http, { requestTimeoutMs: 30_000, headersTimeoutMs: 10_000, maxConnectionsPerIp: 256, maxConnections: 'auto', backlog: 4096 });
    assert.deepEqual(loadConfig(env).http, { requestTimeoutMs: 5000, headersTimeoutMs: 2000, maxConnectionsPerIp: 0, maxConnections: 9000, backlog: 1024 });
    assert.equal(loadConfig({ ...env, SLUICE_MAX_CONNECTIONS: 'auto' }).http.maxConnections, 'auto');
    assert.throws(() => loadConfig({ ...env, SLUICE_MAX_CONNECTIONS: 'lots' }), /maxConnections/);
    assert.throws(() => parseConfig({ http: { requestTimeoutMs: 1000, headersTimeoutMs: 2000 } }), /headersTimeoutMs/);
  });
});

/** A connection that got a 200 (a slot may free a moment after the old socket's close). */
async function waitServed(url: string): Promise<RawConnection> {
  for (let attempt = 0; ; attempt++) {
    const c = await RawConnection.open(url);
    c.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
    const res = await c.response();
    if (res.status === 200) return c;
    c.destroy();
    if (attempt >= 50) throw new Error(`still refused: ${res.status} ${res.body}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
