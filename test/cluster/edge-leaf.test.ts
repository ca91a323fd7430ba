// Edge delivery over NATS leaf nodes, with real servers the test starts itself: a hub nats-server
// with JetStream in domain `hub` (the origin's event stream; a worker appends there), and two leaf
// nats-servers, each with an edge process (`--role edge`, BUS_URL nats://leaf?domain=hub). Each
// leaf reaches the hub through a TCP proxy the test cuts. No shared service is touched: the
// test also starts its own PostgreSQL and Redis (test/helpers/private-services.ts), the origin's
// queue is the hub's JetStream, and the edges admit against those.
//
// Asserted from the servers' own monitoring endpoints: a leaf's client subscriptions (leaf
// /connz?subs=1) and the interest each leaf gives the hub (hub /leafz?subs=1) hold only the
// subjects of requests followed at that edge, and a leaf whose edge follows nothing receives no
// message while another edge's request streams.
// An edge admits with its own INSPECTION_* settings: a prompt it refuses never reaches the origin, and
// the mode it resolves is the one the origin's worker inspects the answer with.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readSse, waitFor, type SseFrame } from '../helpers/app.ts';
import { client, createCluster, type Cluster } from '../helpers/cluster.ts';
import { HUB_DOMAIN, natsServerSuite, startLeafTopology, type Leaf, type LeafTopology } from '../helpers/nats-leaf.ts';
import { privateServicesSuite, startPrivatePostgres, startPrivateRedis, type PrivateServer } from '../helpers/private-services.ts';
import type { SluiceProcess } from '../helpers/process.ts';
import { connectWs } from '../helpers/ws-client.ts';

interface TokenData { token: string; sequence: number; attempt: number }
interface LeafzConn { in_msgs: number; out_msgs: number; subscriptions_list?: string[] }
interface Connz { connections: { subscriptions_list?: string[] }[] }

const tokensOf = (frames: SseFrame[]) => frames.filter((f) => f.event === 'token').map((f) => ({ id: Number(f.id), ...(JSON.parse(f.data) as TokenData) }));

const skip = { ...natsServerSuite(), ...privateServicesSuite() };

describe('edge delivery over NATS leaf nodes', skip, () => {
  let topo: LeafTopology;
  let pg: PrivateServer;
  let redis: PrivateServer;
  let cluster: Cluster;
  let leafA: Leaf;
  let leafB: Leaf;
  let edgeA: SluiceProcess;
  let edgeB: SluiceProcess;
  let worker: SluiceProcess;
  let key: string;
  let prefix: string;
  const edgeEnv = (leaf: Leaf) => ({ BUS_URL: `${leaf.url}?domain=${HUB_DOMAIN}`, BUS_IDLE_PROBE_MS: '500' });

  before(async () => {
    [topo, pg, redis] = await Promise.all([startLeafTopology(2), startPrivatePostgres(), startPrivateRedis()]);
    [leafA, leafB] = topo.leafs as [Leaf, Leaf];
    cluster = await createCluster({ queue: 'nats', bus: 'nats', natsUrl: topo.hub.url, privateServices: { postgres: pg.url, redis: redis.url }, env: { SIM_ITL_MS: '25' } });
    prefix = cluster.env.BUS_PREFIX!;
    // The worker (origin) first: it creates the stream on the hub with its settings.
    worker = await cluster.start('worker');
    [edgeA, edgeB] = await Promise.all([cluster.start('edge', edgeEnv(leafA)), cluster.start('edge', edgeEnv(leafB))]);
    ({ key } = await cluster.user({ tier: 'pro' }));
  });
  after(async () => {
    await cluster?.cleanup();
    await Promise.all([topo?.stop(), pg?.stop(), redis?.stop()]);
  });

  const submit = async (edge: SluiceProcess, maxTokens: number) => {
    const res = await client(edge.url, key).post('/v1/requests', { model: 'sim', max_tokens: maxTokens, messages: [{ role: 'user', content: 'tell me a long story' }] });
    assert.equal(res.status, 202, await res.clone().text());
    return ((await res.json()) as { request_id: string }).request_id;
  };
  const result = (edge: SluiceProcess, id: string) => client(edge.url, key).get<{ status: string; result: string; usage: { completion_tokens: number } }>(`/v1/requests/${id}`);
  const follow = (edge: SluiceProcess, id: string, until?: (f: SseFrame) => boolean, lastEventId?: number) =>
    client(edge.url, key).call(`/v1/requests/${id}/events`, { headers: lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) }, signal: AbortSignal.timeout(60_000) })
      .then((res) => readSse(res, until));
  /**
   * Follows to the end as an EventSource would: a stream closed without its terminal event (the
   * edge could not read the log while its leaf was cut off) is resumed with Last-Event-ID.
   */
  const followToEnd = async (edge: SluiceProcess, id: string, after = 0, onFrame?: (f: SseFrame) => void) => {
    const frames: SseFrame[] = [];
    let last = after;
    for (let tries = 0; tries < 5; tries++) {
      const got = await follow(edge, id, (f) => { onFrame?.(f); return false; }, last);
      frames.push(...got);
      last = Number(got.filter((f) => f.id).at(-1)?.id ?? last);
      if (got.some((f) => f.event === 'completed' || f.event === 'error')) break;
    }
    return frames;
  };
  const eventsSubject = (id: string) => `${prefix}.events.${id}`;
  const leafClientSubjects = async (leaf: Leaf) => (await leaf.json<Connz>('/connz?subs=1')).connections.flatMap((c) => c.subscriptions_list ?? []).filter((s) => s.startsWith(`${prefix}.events.`));
  const hubLeafSubjects = async () => (await topo.hub.json<{ leafs: LeafzConn[] }>('/leafz?subs=1')).leafs.map((l) => (l.subscriptions_list ?? []).filter((s) => s.startsWith(`${prefix}.events.`)).sort());
  const leafInMsgs = async (leaf: Leaf) => (await leaf.json<{ leafs: LeafzConn[] }>('/leafz')).leafs.reduce((n, l) => n + l.in_msgs, 0);
  const assertExactlyOnce = async (edge: SluiceProcess, id: string, tokens: Array<{ id: number; token: string }>) => {
    const r = await result(edge, id);
    assert.equal(r.status, 'completed');
    assert.equal(tokens.length, r.usage.completion_tokens, 'every token once');
    assert.deepEqual(tokens.map((t) => t.id), tokens.map((_, i) => i + 1), 'in order, no gap, no duplicate');
    assert.equal(tokens.map((t) => t.token).join(''), r.result);
  };

  it('a client at edge A and one at edge B follow different requests: each leaf carries only its own subject, every token once', async () => {
    const [idA, idB] = await Promise.all([submit(edgeA, 60), submit(edgeB, 60)]);
    let seen = 0;
    let interest: { a: string[]; b: string[]; hub: string[][] } | undefined;
    const snapshot = async () => { interest = { a: await leafClientSubjects(leafA), b: await leafClientSubjects(leafB), hub: await hubLeafSubjects() }; };
    // Mid-stream (both followers are subscribed once both saw a token), the servers' view of interest.
    let bothStreaming!: () => void;
    const streaming = new Promise<void>((ok) => { bothStreaming = ok; });
    const saw = (f: SseFrame) => { if (f.event === 'token' && f.id === '3' && ++seen === 2) bothStreaming(); return false; };
    const [framesA, framesB] = await Promise.all([
      follow(edgeA, idA, saw), follow(edgeB, idB, saw),
      streaming.then(snapshot),
    ]);
    assert.ok(interest);
    assert.deepEqual(interest.a, [eventsSubject(idA)], 'leaf A: its edge subscribed to A\'s request only');
    assert.deepEqual(interest.b, [eventsSubject(idB)], 'leaf B: its edge subscribed to B\'s request only');
    assert.deepEqual(interest.hub.filter((s) => s.length > 0).sort(), [[eventsSubject(idA)], [eventsSubject(idB)]].sort(),
      'the hub forwards each request to one leaf: the one whose edge follows it');
    assert.equal(framesA.at(-1)?.event, 'completed');
    assert.equal(framesB.at(-1)?.event, 'completed');
    await assertExactlyOnce(edgeA, idA, tokensOf(framesA));
    await assertExactlyOnce(edgeB, idB, tokensOf(framesB));
    // Followers gone: the interest is withdrawn from the leafs and from the hub.
    await waitFor(async () => (await hubLeafSubjects()).every((l) => l.length === 0) && (await leafClientSubjects(leafA)).length === 0, 5_000, 50);
  });

  it('a request followed only at edge A sends nothing to leaf B', async () => {
    const before = await leafInMsgs(leafB);
    const id = await submit(edgeA, 50);
    const frames = await follow(edgeA, id);
    await assertExactlyOnce(edgeA, id, tokensOf(frames));
    const events = tokensOf(frames).length + 1;
    const got = (await leafInMsgs(leafB)) - before;
    assert.ok(got < 3, `leaf B received ${got} messages while ${events} events streamed to edge A only`);
  });

  it('OpenAI streaming, POST /chat and the WebSocket work at the edge', async () => {
    const res = await client(edgeB.url, key).post('/v1/chat/completions', { model: 'sim', max_tokens: 12, stream: true, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(res.status, 200);
    const frames = await readSse(res);
    assert.equal(frames.at(-1)?.data, '[DONE]');
    const text = frames.filter((f) => f.data !== '' && f.data !== '[DONE]').map((f) => (JSON.parse(f.data) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '').join('');
    assert.ok(text.length > 0);

    const chat = await readSse(await client(edgeA.url, key).post('/chat', { message: 'What is the capital of France?' }));
    assert.equal(chat.at(-1)?.event, 'completed');
    assert.ok(tokensOf(chat).length > 0);

    const ws = await connectWs(edgeB.url, { key });
    try {
      ws.send({ type: 'submit', id: 'w1', request: { model: 'sim', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] } });
      const done = await ws.next((m) => m.type === 'completed', 30_000);
      const seqs = ws.messages.filter((m) => m.type === 'token').map((m) => m.sequence as number);
      assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
      assert.equal(done.usage.completion_tokens, seqs.length);
    } finally { ws.close(); }
  });

  it('a cancel at the edge reaches the worker at the origin; the stream ends, billed for what it produced', async () => {
    const id = await submit(edgeB, 400);
    const following = follow(edgeB, id);
    await waitFor(async () => (await result(edgeB, id)).status === 'running', 20_000, 50);
    await new Promise((r) => setTimeout(r, 300));
    const res = await client(edgeB.url, key).call(`/v1/requests/${id}`, { method: 'DELETE' });
    assert.equal(res.status, 200);
    const frames = await following;
    const end = frames.at(-1);
    assert.equal(end?.event, 'error');
    assert.match(end.data, /SLUICE_ERR_CANCELLED/);
    const r = await client(edgeB.url, key).get<{ status: string; usage: { completion_tokens: number } }>(`/v1/requests/${id}`);
    assert.equal(r.status, 'cancelled');
    const tokens = tokensOf(frames);
    assert.ok(tokens.length < 400, 'the generation stopped early');
    assert.equal(tokens.length, r.usage.completion_tokens, 'billed for exactly what was delivered');
  });

  it('cutting leaf A from the hub mid-stream ends in a resumed stream with no gap', async () => {
    const id = await submit(edgeA, 120);
    let cutting: Promise<void> | undefined;
    let statusAtCut: string | undefined;
    const frames = await followToEnd(edgeA, id, 0, (f) => {
      if (f.event === 'token' && f.id === '10') cutting ??= (async () => {
        await leafA.link.cut();
        // Read from the store (not through the leaf): the worker was still generating when the link went.
        statusAtCut = (await result(edgeA, id)).status;
        await new Promise((r) => setTimeout(r, 2_500));
        await leafA.link.restore();
      })();
    });
    await cutting;
    assert.equal(statusAtCut, 'running', 'the link was cut mid-stream');
    assert.equal(frames.at(-1)?.event, 'completed');
    await assertExactlyOnce(edgeA, id, tokensOf(frames));
  });

  it('a stream that ends while its leaf is cut off still ends at the edge once the link is back', async () => {
    const id = await submit(edgeA, 80);
    const head = await follow(edgeA, id, (f) => f.event === 'token' && f.id === '5');
    const following = followToEnd(edgeA, id, 5);
    // The follower is subscribed (its interest reached the hub) before the link goes.
    await waitFor(async () => (await hubLeafSubjects()).some((l) => l.includes(eventsSubject(id))), 5_000, 20);
    await leafA.link.cut();
    try {
      assert.equal((await result(edgeA, id)).status, 'running', 'the link went while the request was generating');
      await waitFor(async () => (await result(edgeA, id)).status === 'completed', 20_000, 100);
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      await leafA.link.restore();
    }
    const rest = await following;
    assert.equal(rest.at(-1)?.event, 'completed');
    await assertExactlyOnce(edgeA, id, [...tokensOf(head), ...tokensOf(rest)]);
  });

  it('resume with Last-Event-ID at the edge after the edge process restarts', async () => {
    const id = await submit(edgeB, 80);
    const head = await follow(edgeB, id, (f) => f.event === 'token' && f.id === '12');
    await edgeB.kill('SIGKILL');
    edgeB = await cluster.start('edge', edgeEnv(leafB));
    const rest = await follow(edgeB, id, undefined, 12);
    const connected = JSON.parse(rest.find((f) => f.event === 'connected')!.data) as { resumed_after: number };
    assert.equal(connected.resumed_after, 12);
    assert.equal(rest.at(-1)?.event, 'completed');
    await assertExactlyOnce(edgeB, id, [...tokensOf(head), ...tokensOf(rest)]);
  });

  it('content inspection of a request admitted at an edge: the edge refuses a prompt before admission and resolves the mode, the origin\'s worker inspects the answer', async () => {
    const edgeC = await cluster.start('edge', { ...edgeEnv(leafB), INSPECTION_MODE: 'inline', INSPECTION_PROMPTS: 'block' });
    const refused = await client(edgeC.url, key).post('/v1/requests', { model: 'sim', max_tokens: 10, messages: [{ role: 'user', content: 'my card is 4111 1111 1111 1111' }] });
    assert.equal(refused.status, 422);
    const body = (await refused.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'SLUICE_ERR_PROMPT_BLOCKED');
    assert.equal(body.error.message.includes('4111'), false);
    assert.match(await (await fetch(`${edgeC.url}/metrics`)).text(), /sluice_inspection_stopped_total\{reason="prompt"\} 1/);
    // The worker's inspection count: the request's mode (inline) was fixed by the edge's admission.
    const inlineCount = async () => Number(/sluice_inspection_duration_seconds_count\{mode="inline"\} (\d+)/.exec(await (await fetch(`${worker.url}/metrics`)).text())?.[1] ?? 0);
    const before = await inlineCount();
    const id = await submit(edgeC, 40);
    const frames = await follow(edgeC, id);
    assert.equal(frames.at(-1)?.event, 'completed');
    // Inline releases what the inspector passed, a word or more per event: not one event per model
    // token (usage stays the model's count), but still every event once, in order, and the whole answer.
    const tokens = tokensOf(frames);
    const r = await result(edgeC, id);
    assert.equal(r.status, 'completed');
    assert.equal(r.usage.completion_tokens, 40);
    assert.deepEqual(tokens.map((t) => t.id), tokens.map((_, i) => i + 1), 'in order, no gap, no duplicate');
    assert.equal(tokens.map((t) => t.token).join(''), r.result);
    assert.ok((await inlineCount()) > before, 'the origin\'s worker inspected the answer inline');
  });
});
