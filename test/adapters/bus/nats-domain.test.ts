// The NATS bus through a leaf node: a client on a leaf nats-server (no JetStream of its own) reaches
// the hub's stream through the hub's JetStream domain (`?domain=hub`), its live subscriptions cross
// the leaf connection, an edge's bus never reconfigures the origin's stream, and a followed subject
// that went quiet while the leaf was cut from the hub learns the log's newer tip (idleProbeMs).
// Servers are private, started by the test on free ports; the shared nats is not used.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createNatsBus, type NatsBus } from '../../../src/adapters/bus/nats.ts';
import { createBus } from '../../../src/adapters/bus/factory.ts';
import { loadConfig } from '../../../src/config.ts';
import { isSluiceError } from '../../../src/core/errors.ts';
import type { LogEvent } from '../../../src/ports/bus.ts';
import { HUB_DOMAIN, natsServerSuite, startLeafTopology, type LeafTopology } from '../../helpers/nats-leaf.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const token = (text: string) => ({ type: 'token' as const, attempt: 1, text });

describe('NATS bus through a leaf node and a JetStream domain', natsServerSuite(), () => {
  let topo: LeafTopology;
  let origin: NatsBus;
  const opened: NatsBus[] = [];
  const edgeBus = async (extra: { idleProbeMs?: number; maxLen?: number } = {}) => {
    const b = await createNatsBus(`${topo.leafs[0]!.url}?domain=${HUB_DOMAIN}`, { ttlSeconds: 600, maxLen: extra.maxLen ?? 1000, prefix: 'dom', streamOwnership: 'use', ...(extra.idleProbeMs !== undefined && { idleProbeMs: extra.idleProbeMs }) });
    opened.push(b);
    return b;
  };

  const hubHasInterest = async (subject: string) => {
    for (let i = 0; i < 100; i++) {
      const { leafs } = await topo.hub.json<{ leafs: { subscriptions_list?: string[] }[] }>('/leafz?subs=1');
      if (leafs.some((l) => l.subscriptions_list?.includes(subject))) return;
      await sleep(20);
    }
    throw new Error(`the hub never learnt of the leaf's interest in ${subject}`);
  };

  before(async () => {
    topo = await startLeafTopology(1);
    origin = await createNatsBus(topo.hub.url, { ttlSeconds: 600, maxLen: 1000, prefix: 'dom' });
  });
  after(async () => {
    for (const b of opened) await b.close().catch(() => {});
    await origin?.close();
    await topo?.stop();
  });

  it('reads, appends and follows live through the leaf', async () => {
    const edge = await edgeBus();
    const live: number[] = [];
    const sub = await edge.subscribe('r-live', (e) => live.push(e.seq));
    // subscribe() resolves once the leaf has the interest; the hub learns it right after (a
    // follower's history read, sent behind it on the same leaf link, orders the two).
    await hubHasInterest('dom.events.r-live');
    await origin.appendMany('r-live', [token('a'), token('b'), token('c')]);
    const mine = await edge.append('r-live', token('d'));
    assert.equal(mine.seq, 4, 'the edge appends after the origin\'s events, through the hub\'s API');
    for (let i = 0; i < 20; i++) await origin.append('r-live', token(`x${i}`));
    assert.deepEqual((await edge.read('r-live', 0)).map((e) => e.seq), Array.from({ length: 24 }, (_, i) => i + 1), 'a long read (a consumer) through the domain');
    assert.deepEqual((await edge.read('r-live', 20)).map((e) => e.seq), [21, 22, 23, 24]);
    await sleep(100);
    assert.deepEqual([...new Set(live)].sort((a, b) => a - b), Array.from({ length: 24 }, (_, i) => i + 1));
    await sub.close();
  });

  it('without the domain, a leaf without JetStream has no stream to open', async () => {
    await assert.rejects(createNatsBus(topo.leafs[0]!.url, { ttlSeconds: 600, maxLen: 1000, prefix: 'dom', connectTimeoutMs: 2000 }), (e: unknown) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE'));
  });

  it('an invalid domain is a configuration error, before connecting', async () => {
    await assert.rejects(createBus(`${topo.leafs[0]!.url}?domain=a.b`, { ttlSeconds: 60, maxLen: 100 }), (e: unknown) => isSluiceError(e, 'SLUICE_ERR_CONFIG') && /domain/.test((e as Error).message));
    assert.throws(() => loadConfig({ BUS_DOMAIN: 'has space' }), (e: unknown) => isSluiceError(e, 'SLUICE_ERR_CONFIG'));
  });

  it("an edge's bus uses the origin's stream as it is: its own limits do not reconfigure it", async () => {
    const edge = await edgeBus({ maxLen: 123 });
    const { connect } = await import('@nats-io/transport-node');
    const { jetstreamManager } = await import('@nats-io/jetstream');
    const nc = await connect({ servers: topo.hub.url.replace('nats://', '') });
    try {
      const info = await (await jetstreamManager(nc)).streams.info('DOM_EVENTS');
      assert.equal(info.config.max_msgs_per_subject, 1000);
    } finally { await nc.close(); }
    assert.ok(edge);
  });

  it('a subject quiet while the leaf is cut off learns the newer tip once the hub answers again (idleProbeMs)', async () => {
    const probing = await edgeBus({ idleProbeMs: 200 });
    const plain = await edgeBus();
    const seen = { probing: [] as LogEvent[], plain: [] as LogEvent[] };
    const subs = [await probing.subscribe('r-cut', (e) => seen.probing.push(e)), await plain.subscribe('r-cut', (e) => seen.plain.push(e))];
    await hubHasInterest('dom.events.r-cut');
    await origin.append('r-cut', token('before'));
    await sleep(100);
    await topo.leafs[0]!.link.cut();
    await origin.append('r-cut', token('during'));
    await origin.append('r-cut', { type: 'completed', attempt: 1, finishReason: 'stop', usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3 } });
    await sleep(500);
    await topo.leafs[0]!.link.restore();
    const deadline = Date.now() + 10_000;
    while (!seen.probing.some((e) => e.type === 'completed') && Date.now() < deadline) await sleep(50);
    assert.equal(seen.probing.at(-1)?.type, 'completed', 'the probe handed the log\'s terminal event to the listener');
    assert.equal(seen.probing.at(-1)?.seq, 3);
    assert.deepEqual(seen.plain.map((e) => e.seq), [1], 'core NATS alone lost what was published during the cut');
    for (const s of subs) await s.close();
  });
});
