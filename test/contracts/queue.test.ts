// Runs the Queue contract against every adapter: memory always, RabbitMQ and NATS where they run.
import { describe, it } from 'node:test';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';
import { queueContract, type QueueHarness } from './queue.contract.ts';
import { MemoryQueue } from '../../src/adapters/queue/memory.ts';
import { createQueue } from '../../src/adapters/queue/factory.ts';
import { AmqpQueue } from '../../src/adapters/queue/amqp.ts';
import { NatsQueue } from '../../src/adapters/queue/nats.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import type { Queue } from '../../src/ports/queue.ts';
import { freePort, startNatsServer } from '../helpers/process.ts';
import { deleteAmqpQueues, SERVICES, serviceSuite, uniqueName } from '../helpers/services.ts';

queueContract('memory', async (): Promise<QueueHarness> => {
  // One process: every open() returns the same in-memory queue.
  const q = new MemoryQueue({ retryBaseMs: 10 });
  return { open: async () => q, deadLetterDepth: () => q.deadLetterDepth(), cleanup: () => q.close() };
});

describe('queue factory', () => {
  it('creates a memory queue and refuses unknown schemes with SLUICE_ERR_CONFIG', async () => {
    const q = await createQueue('memory://', { retryBaseMs: 10 });
    assert.ok(q instanceof MemoryQueue);
    await q.close();
    await assert.rejects(createQueue('kafka://x', { retryBaseMs: 10 }), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
  });

  it('keeps dead letters inspectable and backs off exponentially', async () => {
    const q = new MemoryQueue({ retryBaseMs: 20, maxRetryDelayMs: 1000 });
    const seen: number[] = [];
    await q.consume(async (d) => {
      seen.push(Date.now());
      if (d.deliveryCount < 3) await d.retry(); else await d.deadLetter('gave up');
    }, { concurrency: 1 });
    await q.publish({ requestId: 'r', priority: 12 });
    while (q.deadLettered().length === 0) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(q.deadLettered(), [{ requestId: 'r', priority: 9 }]);
    assert.equal(q.deadLetters()[0]!.reason, 'gave up');
    assert.ok(seen[1]! - seen[0]! >= 18 && seen[2]! - seen[1]! >= 38, `gaps ${seen[1]! - seen[0]!}, ${seen[2]! - seen[1]!}`);
    await q.close();
  });
});

const RABBIT = SERVICES.rabbitmq;
queueContract('amqp (RabbitMQ)', async (): Promise<QueueHarness> => {
  const name = uniqueName('sluice_q');
  const opened: Queue[] = [];
  const open = async () => { const q = await AmqpQueue.connect(RABBIT, { name, retryBaseMs: 20, reconnectMaxMs: 500 }); opened.push(q); return q; };
  const admin = await open();
  return {
    open,
    deadLetterDepth: () => admin.deadLetterDepth(),
    crash: (q) => q.close(), // closing the connection without acking is what a crash looks like to the broker
    async cleanup() {
      for (const q of opened) await q.close();
      await deleteAmqpQueues([name, `${name}.dlq`, `${name}.wait.50`, `${name}.wait.20`]);
    },
  };
}, await serviceSuite('rabbitmq'));

describe('amqp (RabbitMQ) recovery', await serviceSuite('rabbitmq'), () => {
  it('reconnects after the broker drops the connection, and consuming resumes', async (t) => {
    const name = uniqueName('sluice_q');
    const connectionName = uniqueName('sluice_conn');
    const q = await AmqpQueue.connect(RABBIT, { name, retryBaseMs: 20, reconnectMinMs: 50, reconnectMaxMs: 200, connectionName });
    t.after(async () => {
      await q.close();
      await deleteAmqpQueues([name, `${name}.dlq`]);
    });
    const seen: string[] = [];
    await q.consume(async (d) => { seen.push(d.job.requestId); await d.ack(); }, { concurrency: 1 });
    await q.publish({ requestId: 'before', priority: 0 });
    await waitFor(() => seen.length === 1);

    const pidBefore = await connectionPid(connectionName);
    assert.ok(pidBefore, 'the adapter connection is listed by the broker');
    await run('rabbitmqctl', ['close_connection', pidBefore, 'queue recovery test']);

    // publish() waits for the reconnect instead of failing.
    await q.publish({ requestId: 'after', priority: 0 });
    await waitFor(() => seen.length === 2);
    assert.deepEqual(seen, ['before', 'after']);
    const pidAfter = await connectionPid(connectionName);
    assert.ok(pidAfter && pidAfter !== pidBefore, 'a new connection replaced the closed one');
  });

  it('fails publish with SLUICE_ERR_UNAVAILABLE when the broker stays away', async () => {
    await assert.rejects(AmqpQueue.connect('amqp://guest:guest@127.0.0.1:1', { name: 'x', retryBaseMs: 10 }),
      (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE'));
  });
});

const run = promisify(execFile);
async function connectionPid(connectionName: string): Promise<string | undefined> {
  const { stdout } = await run('rabbitmqctl', ['list_connections', '-q', 'pid', 'client_properties']);
  return stdout.split('\n').find((l) => l.includes(connectionName))?.split('\t')[0];
}
async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) assert.fail('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

queueContract('nats (JetStream)', async (): Promise<QueueHarness> => {
  const name = uniqueName('sluice_q');
  const opened: NatsQueue[] = [];
  // A short ack_wait, so the crash case (redelivery after ack_wait) stays quick.
  const open = async () => { const q = await NatsQueue.connect(SERVICES.nats, { name, retryBaseMs: 20, ackWaitMs: 1000 }); opened.push(q); return q; };
  const admin = await open();
  return {
    open,
    deadLetterDepth: () => admin.deadLetterDepth(),
    crash: async (q) => { await opened.find((o) => o === q)!.closeAbruptly(); },
    async cleanup() {
      for (const q of opened) if (q !== admin) await q.close();
      await admin.destroy();
      await admin.close();
    },
  };
}, await serviceSuite('nats'));

describe('nats (JetStream) recovery', await serviceSuite('nats'), () => {
  // A private server, so restarting it disturbs no other test.
  it('resumes consuming after the server restarts', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-nats-'));
    const port = await freePort();
    const start = () => startNatsServer(port, dir);
    let server = await start().catch((e: unknown) => { t.skip(`cannot start nats-server: ${String(e)}`); return undefined; });
    if (!server) return;
    t.after(() => { server?.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); });
    const q = await NatsQueue.connect(`nats://127.0.0.1:${port}`, { name: 'restart', retryBaseMs: 20, rescanMs: 200 });
    t.after(() => q.close());
    const seen: string[] = [];
    await q.consume(async (d) => { seen.push(d.job.requestId); await d.ack(); }, { concurrency: 1 });
    await q.publish({ requestId: 'before', priority: 1 });
    await waitFor(() => seen.length === 1);

    const stopped = new Promise((r) => server!.once('exit', r));
    server.kill('SIGTERM');
    await stopped;
    server = await start();
    await q.publish({ requestId: 'after', priority: 1 }); // retried until the client reconnects
    await waitFor(() => seen.length === 2, 15_000);
    assert.deepEqual(seen, ['before', 'after']);
  });
});

const [rabbitSuite, natsSuite] = [await serviceSuite('rabbitmq'), await serviceSuite('nats')];
describe('queue factory with brokers', () => {
  it('picks the RabbitMQ adapter for amqp:', rabbitSuite, async () => {
    const name = uniqueName('sluice_q');
    const q = await createQueue(SERVICES.rabbitmq, { name, retryBaseMs: 10 });
    try { assert.ok(q instanceof AmqpQueue); assert.equal(await q.depth(), 0); } finally {
      await q.close();
      await deleteAmqpQueues([name, `${name}.dlq`]);
    }
  });

  it('picks the JetStream adapter for nats:', natsSuite, async () => {
    const q = await createQueue(SERVICES.nats, { name: uniqueName('sluice_q'), retryBaseMs: 10, ackWaitMs: 5000 });
    try { assert.ok(q instanceof NatsQueue); assert.equal(await q.depth(), 0); } finally { await (q as NatsQueue).destroy(); await q.close(); }
  });
});
