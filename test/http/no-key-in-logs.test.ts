// No API key in any log line: key headers are redacted, ?api_key= is cut from logged URLs, Node's
// parser errors are logged without the raw request bytes, and a client that aborts mid-body is
// not a server error.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/core/logger.ts';
import { MASTER_KEY, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';
import { RawConnection } from '../helpers/raw-http.ts';

/** A pino destination that keeps every line. */
function captureLog(): { lines: string[]; write(line: string): void; parsed(): Array<{ level: number; msg?: string }> } {
  const lines: string[] = [];
  return { lines, write(line: string) { lines.push(line); }, parsed: () => lines.map((l) => JSON.parse(l) as { level: number; msg?: string }) };
}

describe('logger redaction', () => {
  it('redacts key headers and the api_key query parameter wherever a request is logged', () => {
    const log = captureLog();
    const logger = createLogger('trace', 'gateway', log);
    const secret = 'sk-redact-me-0123456789';
    logger.error({ req: { method: 'GET', url: `/v1/ws?x=1&api_key=${secret}&y=2`, headers: { authorization: `Bearer ${secret}`, 'x-api-key': secret } } }, 'req');
    logger.warn({ headers: { authorization: `Bearer ${secret}`, 'x-api-key': secret }, url: `/v1/ws?api_key=${secret}` }, 'headers');
    logger.info({ request: { headers: { authorization: secret } } }, 'request');
    const text = log.lines.join('');
    assert.equal(log.lines.length, 3);
    assert.ok(!text.includes(secret), text);
    assert.match(text, /\/v1\/ws\?x=1&api_key=\[redacted\]&y=2/);
  });
});

describe('no key in the gateway\'s logs', () => {
  let app: TestSluice;
  const log = captureLog();
  before(async () => { app = await startTestSluice({}, { logger: createLogger('trace', 'all', log) }); });
  after(() => app.stop());

  it('a failing request with the key in the header and in ?api_key= logs the failure but never the key', async () => {
    app.requests.get = async () => { throw new Error('store exploded'); };
    const id = '00000000-0000-4000-8000-000000000001';
    const bearer = await fetch(`${app.url}/v1/requests/${id}?api_key=${MASTER_KEY}`, { headers: { authorization: `Bearer ${MASTER_KEY}` } });
    assert.equal(bearer.status, 500);
    const header = await fetch(`${app.url}/v1/requests/${id}?api_key=${MASTER_KEY}`, { headers: { 'x-api-key': MASTER_KEY } });
    assert.equal(header.status, 500);
    const failures = await waitFor(async () => { const f = log.parsed().filter((l) => l.msg === 'request failed'); return f.length >= 2 && f; });
    assert.match(JSON.stringify(failures[0]), /\/v1\/requests\/0{8}-.*api_key=\[redacted\]/, 'the failing URL is logged, without the key');

    // A malformed request carrying the key: Node's parse error holds the raw bytes (rawPacket).
    const conn = await RawConnection.open(app.url);
    conn.write(`GET /healthz HTTP/1.1\r\nauthorization: Bearer ${MASTER_KEY}\r\nbroken header line\r\n\r\n`);
    assert.equal((await conn.response()).status, 400);
    conn.destroy();
    await waitFor(async () => log.parsed().some((l) => l.msg === 'client error'));

    assert.ok(!log.lines.join('').includes(MASTER_KEY), 'a log line carries the key');
  });

  it('a client aborting mid-body is logged at debug, not as an error, and not counted as a 500', async () => {
    const conn = await RawConnection.open(app.url);
    conn.write(`POST /v1/requests HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${MASTER_KEY}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"model":`);
    await new Promise((r) => setTimeout(r, 300));
    const errorsBefore = log.parsed().filter((l) => l.level >= 50).length;
    conn.destroy();
    await waitFor(async () => log.parsed().some((l) => l.msg === 'client went away mid-request'));
    const errors = log.parsed().filter((l) => l.level >= 50);
    assert.equal(errors.length, errorsBefore, `error lines: ${JSON.stringify(errors.slice(errorsBefore))}`);
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.ok(!/route="\/v1\/requests",status="500"/.test(metrics), 'abort counted as a 500');
  });
});
