// SseStream: frames of one event-loop turn leave in one write, back-pressure holds an awaiting
// producer, and a listener whose buffer grows past the limit anyway, or who stops reading, is
// disconnected.
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SseStream } from '../../src/http/sse.ts';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

interface Harness { sse: SseStream; writes: string[]; res: http.ServerResponse; client: http.IncomingMessage }

let server: http.Server | undefined;
afterEach(() => { server?.closeAllConnections(); server?.close(); server = undefined; });

/** An SseStream on a real connection; the client's response is handed back unread (paused). */
async function open(maxBufferedBytes = 1 << 20, onOpen?: (sse: SseStream) => void, stallMs = 60_000): Promise<Harness> {
  let made: (h: Omit<Harness, 'client'>) => void;
  const ready = new Promise<Omit<Harness, 'client'>>((r) => { made = r; });
  server = http.createServer((_req, res) => {
    const writes: string[] = [];
    const write = res.write.bind(res) as (chunk: string) => boolean;
    res.write = ((chunk: string) => { writes.push(chunk); return write(chunk); }) as typeof res.write;
    const sse = new SseStream(res, { pingMs: 60_000, retryMs: 1000, maxBufferedBytes, stallMs });
    onOpen?.(sse);
    made({ sse, writes, res });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const client = await new Promise<http.IncomingMessage>((r) => http.get({ port, host: '127.0.0.1', path: '/' }, r));
  client.pause();
  return { ...(await ready), client };
}

async function readAll(client: http.IncomingMessage): Promise<string> {
  client.setEncoding('utf8');
  let text = '';
  for await (const chunk of client) text += chunk as string;
  return text;
}

describe('SseStream', () => {
  it('on a response whose client already went away (while the request was being stored), its signal is aborted at once', async () => {
    let opened!: (sse: SseStream) => void;
    const made = new Promise<SseStream>((r) => { opened = r; });
    server = http.createServer((_req, res) => {
      // The handler reaches the stream only after the client left, as a direct request does
      // whose client disconnects during its admission and insert.
      res.once('close', () => opened(new SseStream(res, { pingMs: 60_000, retryMs: 1000, maxBufferedBytes: 1 << 20, stallMs: 60_000 })));
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    const req = http.request({ port, host: '127.0.0.1', path: '/', method: 'POST', headers: { 'content-length': '2' } });
    req.on('error', () => {});
    req.end('{}');
    await new Promise((r) => setTimeout(r, 50));
    req.destroy();
    const sse = await made;
    assert.equal(sse.signal.aborted, true, 'the producer (a direct attempt) learns the client is gone');
  });

  it('writes the frames of one turn as one chunk, in order', async () => {
    const { sse, writes, client } = await open();
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(writes, ['retry: 1000\n\n'], 'with nothing to say, the preamble leaves on its own after a moment');
    for (let i = 1; i <= 50; i++) void sse.send({ id: i, data: `t${i}` });
    await turn();
    assert.equal(writes.length, 2);
    assert.match(writes[1]!, /^id: 1\ndata: t1\n\nid: 2\ndata: t2\n\n/);
    assert.match(writes[1]!, /id: 50\ndata: t50\n\n$/);
    void sse.send({ id: 51, event: 'completed', data: '{}' });
    sse.end();
    const body = await readAll(client);
    assert.deepEqual([...body.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1])), Array.from({ length: 51 }, (_, i) => i + 1));
    assert.match(body, /event: completed\ndata: \{\}\n\n$/);
  });

  it('sends the preamble with the first frames when they come at once', async () => {
    const { sse, writes, client } = await open(undefined, (s) => { void s.send({ id: 1, data: 'first' }); });
    assert.deepEqual(writes, ['retry: 1000\n\nid: 1\ndata: first\n\n']);
    sse.end();
    assert.equal(await readAll(client), 'retry: 1000\n\nid: 1\ndata: first\n\n');
    assert.equal(sse.signal.aborted, true);
  });

  it('holds a producer that awaits send until the client reads, then delivers everything', async () => {
    const { sse, client } = await open();
    const frame = 'x'.repeat(16 * 1024);
    let sent = 0;
    let held = false;
    const producer = (async () => {
      for (let i = 1; i <= 2000; i++) {
        const p = sse.send({ id: i, data: frame });
        const waited = await Promise.race([p.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 200))]);
        if (waited) { held = true; await p; }
        sent = i;
      }
      sse.end();
    })();
    // 2,000 frames of 16 KiB (32 MiB) do not fit in the socket buffers of a client that reads nothing.
    while (!held) await new Promise((r) => setTimeout(r, 20));
    assert.ok(sent < 2000, `the producer was held after ${sent} frames`);
    const body = await readAll(client);
    await producer;
    assert.equal([...body.matchAll(/^id: \d+$/gm)].length, 2000);
    assert.equal(sse.signal.aborted, true);
  });

  it('disconnects a client whose buffer grows past maxBufferedBytes', async () => {
    const { sse, res, client } = await open(64 * 1024);
    const closed = new Promise<void>((r) => client.on('close', () => r()));
    const frame = 'y'.repeat(8 * 1024);
    // Writes that do not wait for a drain (as pings do) grow the buffer until the limit trips.
    for (let i = 0; i < 10_000 && !sse.signal.aborted; i++) {
      void sse.send({ id: i, data: frame });
      if (i % 8 === 7) await turn();
    }
    assert.equal(sse.signal.aborted, true);
    assert.equal(res.destroyed, true);
    client.resume();
    await closed;
  });

  it('disconnects a client that stops reading for stallMs while a producer waits, below the buffer bound', { timeout: 10_000 }, async () => {
    // The bound (1 MiB) is far above what a held producer lets pile up: only the stall can end it.
    const { sse, res, client } = await open(1 << 20, undefined, 300);
    const closed = new Promise<void>((r) => client.on('close', () => r()));
    const frame = 'z'.repeat(16 * 1024);
    const producer = (async () => { for (let i = 1; i <= 2000 && !sse.signal.aborted; i++) await sse.send({ id: i, data: frame }); })();
    await producer;
    assert.equal(sse.signal.aborted, true, 'the stalled listener was dropped, which released the producer');
    assert.equal(res.destroyed, true);
    assert.ok(res.writableLength < 1 << 20, 'dropped by the stall, not by the buffer bound');
    client.resume();
    await closed;
  });
});

describe('SseStream keep-alive pings', () => {
  it('one shared timer pings every open stream each interval; an ended stream gets no more', async () => {
    const streams: SseStream[] = [];
    const srv = http.createServer((_req, res) => { streams.push(new SseStream(res, { pingMs: 40, retryMs: 1000, maxBufferedBytes: 1 << 20, stallMs: 60_000 })); });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const { port } = srv.address() as AddressInfo;
    try {
      const texts = ['', '', ''];
      const clients = await Promise.all(texts.map((_, i) => new Promise<http.IncomingMessage>((r) => http.get({ port, host: '127.0.0.1', path: '/' }, (c) => {
        c.setEncoding('utf8');
        c.on('data', (d: string) => { texts[i] += d; });
        r(c);
      }))));
      const pings = (i: number): number => texts[i]!.split(': ping\n\n').length - 1;
      const until = async (cond: () => boolean, what: string): Promise<void> => {
        for (let t = 0; !cond(); t++) { if (t > 200) throw new Error(`timed out: ${what}`); await new Promise((r) => setTimeout(r, 10)); }
      };
      await until(() => [0, 1, 2].every((i) => pings(i) >= 2), 'two pings on every stream');
      streams[1]!.end();
      await until(() => clients[1]!.complete, 'the ended stream to close');
      const ended = pings(1);
      const before = pings(0);
      await until(() => pings(0) >= before + 2 && pings(2) >= 4, 'more pings on the open streams');
      assert.equal(pings(1), ended, 'no ping after the end');
      for (const s of streams) s.end();
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });
});
