// The one contract every Bus adapter passes: the memory fake and every real backend.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isTerminal, LogEndedError, PartialAppendError, type Bus, type ControlSignal, type EventBody, type LogEvent } from '../../src/ports/bus.ts';
import { MemoryBus } from '../../src/adapters/bus/memory.ts';
import { createBus } from '../../src/adapters/bus/factory.ts';
import { deleteNatsStreams, deleteRedisKeys, SERVICES, uniqueName } from '../helpers/services.ts';

export interface BusOptions { ttlSeconds: number; maxLen: number }

/**
 * Opens buses on one shared backend. Two calls with the same options are two instances of one
 * deployment (for memory, the same in-process bus); different options may use another namespace.
 */
export interface BusHarness {
  open(opts?: Partial<BusOptions>): Promise<Bus>;
  /** Closes every bus it opened and deletes what the run wrote. */
  cleanup(): Promise<void>;
}

export const DEFAULT_BUS_OPTIONS: BusOptions = { ttlSeconds: 60, maxLen: 10_000 };

export const token = (text: string, attempt = 1): EventBody => ({ type: 'token', attempt, text });
export const completed = (attempt = 1): EventBody => ({
  type: 'completed', attempt, finishReason: 'stop', usage: { promptTokens: 3, completionTokens: 5, totalTokens: 8 },
});

let counter = 0;
export const newRequestId = (): string => `req_${process.pid}_${Date.now().toString(36)}_${(counter++).toString(36)}`;

export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function busContract(name: string, makeHarness: () => Promise<BusHarness>, suite: { skip?: string } = {}): void {
  describe(`Bus contract: ${name}`, { timeout: 30_000, ...suite }, () => {
    let harness: BusHarness;
    let a: Bus;
    let b: Bus;

    before(async () => {
      harness = await makeHarness();
      a = await harness.open();
      b = await harness.open();
    });
    after(async () => { await harness?.cleanup(); });

    it('numbers a request’s events from 1, one by one, and stores body, seq and time', async () => {
      const id = newRequestId();
      const t0 = Date.now();
      const first = await a.append(id, token('Hel'));
      const second = await a.append(id, token('lo'));
      assert.equal(first.seq, 1);
      assert.equal(second.seq, 2);
      assert.deepEqual({ ...first, ts: 0 }, { type: 'token', attempt: 1, text: 'Hel', seq: 1, ts: 0 });
      assert.ok(first.ts >= t0 - 1000 && first.ts <= Date.now() + 1000, 'ts is the append time in ms');
      const other = await a.append(newRequestId(), token('x'));
      assert.equal(other.seq, 1, 'each request has its own sequence');
      assert.deepEqual(await a.read(id, 0), [first, second]);
    });

    it('gives 200 concurrent appends from two instances the sequences 1..200, each once', async () => {
      const id = newRequestId();
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).append(id, token(`t${i}`))),
      );
      const seqs = results.map((e) => e.seq).sort((x, y) => x - y);
      assert.deepEqual(seqs, Array.from({ length: 200 }, (_, i) => i + 1));
      const log = await b.read(id, 0);
      assert.deepEqual(log.map((e) => e.seq), seqs);
      const bySeq = new Map(results.map((e) => [e.seq, e]));
      for (const e of log) assert.deepEqual(e, bySeq.get(e.seq), 'the log holds what each append returned');
    });

    it('appends a burst in order with consecutive sequences, read back and delivered live as single appends', async () => {
      const id = newRequestId();
      const live: LogEvent[] = [];
      const sub = await b.subscribe(id, (e) => live.push(e));
      try {
        assert.deepEqual(await a.appendMany(id, []), [], 'an empty burst appends nothing');
        await a.append(id, token('a'));
        const restart: EventBody = { type: 'restart', attempt: 2, reason: 'retry' };
        const burst = await a.appendMany(id, [token('b'), token('c'), token('d'), restart]);
        assert.deepEqual(burst.map((e) => e.seq), [2, 3, 4, 5]);
        assert.deepEqual(burst.map((e) => e.type === 'token' ? e.text : e.type), ['b', 'c', 'd', 'restart']);
        assert.deepEqual(burst[3], { ...restart, seq: 5, ts: burst[3]!.ts });
        assert.equal((await a.append(id, token('e'))).seq, 6, 'the sequence continues after a burst');
        const end = await a.appendMany(id, [token('f'), completed()]);
        assert.deepEqual(end[1], { ...completed(), seq: 8, ts: end[1]!.ts }, 'a burst may end the log');
        const log = await b.read(id, 0);
        assert.deepEqual(log.slice(1, 5), burst, 'the log holds what the burst returned');
        await waitFor(() => live.length >= 8, 'eight live events');
        assert.deepEqual(live.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
      } finally {
        await sub.close();
      }
    });

    it('gives 40 concurrent bursts of 5 from two instances the sequences 1..200, each once, each burst in order', async () => {
      const id = newRequestId();
      const bursts = await Promise.all(Array.from({ length: 40 }, (_, i) =>
        (i % 2 === 0 ? a : b).appendMany(id, Array.from({ length: 5 }, (_, j) => token(`b${i}.${j}`)))));
      const seqs = bursts.flat().map((e) => e.seq).sort((x, y) => x - y);
      assert.deepEqual(seqs, Array.from({ length: 200 }, (_, i) => i + 1));
      for (const burst of bursts) {
        for (let j = 1; j < burst.length; j++) assert.ok(burst[j]!.seq > burst[j - 1]!.seq, 'a burst keeps its order');
      }
      assert.deepEqual((await a.read(id, 0)).map((e) => e.seq), seqs);
    });

    it('reads the suffix after a sequence, in order, at most `limit`', async () => {
      const id = newRequestId();
      for (let i = 1; i <= 6; i++) await a.append(id, token(`t${i}`));
      assert.deepEqual((await b.read(id, 3)).map((e) => [e.seq, (e as { text: string }).text]), [[4, 't4'], [5, 't5'], [6, 't6']]);
      assert.deepEqual((await b.read(id, 1, 2)).map((e) => e.seq), [2, 3]);
      assert.deepEqual(await b.read(id, 6), []);
      assert.deepEqual(await b.read(id, 99), []);
    });

    it('reads from any position of a log interleaved with other logs, short and long suffixes alike', async () => {
      const id = newRequestId();
      const others = [newRequestId(), newRequestId()];
      for (let i = 1; i <= 40; i++) {
        await a.append(id, token(`t${i}`));
        // An uneven spread of other requests' events between this log's events.
        for (let j = 0; j < (i % 7 === 0 ? 9 : i % 2); j++) await b.append(others[j % 2]!, token('noise'));
      }
      const all = await b.read(id, 0);
      assert.deepEqual(all.map((e) => e.seq), range(1, 40));
      for (const after of [0, 1, 6, 7, 13, 20, 33, 36, 38, 39, 40, 45]) {
        assert.deepEqual((await b.read(id, after)).map((e) => e.seq), range(after + 1, 40), `after ${after}`);
        assert.deepEqual((await a.read(id, after, 3)).map((e) => e.seq), range(after + 1, Math.min(40, after + 3)), `after ${after}, limit 3`);
        assert.deepEqual((await a.read(id, after, 10)).map((e) => e.seq), range(after + 1, Math.min(40, after + 10)), `after ${after}, limit 10`);
      }
    });

    it('reads an unknown request as an empty log', async () => {
      assert.deepEqual(await a.read(newRequestId(), 0), []);
    });

    it('stores terminal events in the log', async () => {
      const id = newRequestId();
      await a.append(id, token('a'));
      await a.append(id, { type: 'restart', attempt: 2, reason: 'worker lost' });
      await a.append(id, completed(2));
      const errId = newRequestId();
      await a.append(errId, { type: 'error', attempt: 1, status: 'cancelled', code: 'SLUICE_ERR_CANCELLED', message: 'cancelled', usage: { promptTokens: 1, completionTokens: 0, totalTokens: 1 } });
      const log = await b.read(id, 0);
      assert.deepEqual(log.map((e) => e.type), ['token', 'restart', 'completed']);
      const last = log[2] as LogEvent;
      assert.ok(isTerminal(last));
      assert.deepEqual(last, { ...completed(2), seq: 3, ts: last.ts });
      const [err] = await b.read(errId, 0);
      assert.ok(err && isTerminal(err) && err.type === 'error' && err.status === 'cancelled');
    });

    it('stores and replays tool calls, other choices, logprobs and a completed event with choices field for field', async () => {
      const id = newRequestId();
      const live: LogEvent[] = [];
      const sub = await b.subscribe(id, (e) => live.push(e));
      try {
        const logprobs = { token: 'Hi', logprob: -0.25, bytes: [72, 105], top_logprobs: [{ token: 'Hi', logprob: -0.25, bytes: [72, 105] }, { token: 'Hey', logprob: -1.5, bytes: null }] };
        const events: EventBody[] = [
          { type: 'tool_call', attempt: 1, choice: 0, call: 0, id: 'call_1', name: 'get_weather', arguments: '' },
          { type: 'tool_call', attempt: 1, choice: 0, call: 0, arguments: '{"city":"Z\u00fcrich \"old\" town"' },
          { type: 'tool_call', attempt: 1, choice: 0, call: 1, id: 'call_2', name: 'get_time', arguments: '{}' },
          { type: 'token', attempt: 1, text: 'Hi', choice: 1, logprobs },
          { type: 'token', attempt: 1, text: ' there', logprobs: { token: ' there', logprob: -0.5, bytes: [32], top_logprobs: [] } },
          { type: 'tool_call', attempt: 1, choice: 0, call: 0, arguments: '}' },
          { type: 'completed', attempt: 1, finishReason: 'tool_calls', usage: { promptTokens: 3, completionTokens: 9, totalTokens: 12 }, choices: [{ index: 0, finishReason: 'tool_calls' }, { index: 1, finishReason: 'stop' }] },
        ];
        const appended = [await a.append(id, events[0]!), ...await a.appendMany(id, events.slice(1))];
        const expected = events.map((e, i) => ({ ...e, seq: i + 1, ts: appended[i]!.ts }));
        assert.deepEqual(appended, expected, 'the appends return every field');
        assert.deepEqual(await b.read(id, 0), expected, 'a read returns every field');
        assert.deepEqual(await b.read(id, 3), expected.slice(3), 'a replay from the middle too');
        assert.deepEqual(await b.terminal(id), expected[6]);
        await waitFor(() => live.length >= 7, 'seven live events');
        assert.deepEqual(live, expected, 'live delivery carries every field');
      } finally {
        await sub.close();
      }
    });

    it('keeps one terminal event when ten appenders on two instances race to end a log; each learns it', async () => {
      const id = newRequestId();
      await a.append(id, token('a'));
      const endings: EventBody[] = Array.from({ length: 10 }, (_, i) => (i % 3 === 2
        ? { type: 'error', attempt: 1, status: 'failed', code: 'SLUICE_ERR_MODEL_PERMANENT', message: `e${i}`, usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 } }
        : { ...completed(), usage: { promptTokens: 3, completionTokens: i, totalTokens: 3 + i } }));
      const answers = await Promise.all(endings.map((e, i) => (i % 2 === 0 ? a : b).append(id, e)));
      const log = await b.read(id, 0);
      assert.equal(log.filter(isTerminal).length, 1, 'exactly one terminal event in the log');
      assert.equal(log.length, 2);
      const end = log[1]!;
      for (const answer of answers) assert.deepEqual(answer, end, 'every appender learns the one terminal event');
      assert.deepEqual(await a.terminal(id), end);
      assert.equal(await a.terminal(newRequestId()), undefined);
    });

    it('refuses any event after the terminal one with LogEndedError, appending nothing', async () => {
      const id = newRequestId();
      await a.append(id, token('a'));
      const end = await a.append(id, completed());
      await assert.rejects(b.append(id, token('late')), (e) => e instanceof LogEndedError && e.terminal.seq === end.seq);
      await assert.rejects(a.append(id, { type: 'restart', attempt: 2, reason: 'retry' }), LogEndedError);
      await assert.rejects(b.appendMany(id, [token('x'), token('y')]), (e) => e instanceof LogEndedError || (e instanceof PartialAppendError && e.appended.length === 0));
      await assert.rejects(a.appendMany(id, [token('x'), completed()]), LogEndedError);
      assert.deepEqual((await b.appendMany(id, [completed(2)])), [end], 'a lone terminal event learns the existing one');
      assert.deepEqual(await a.read(id, 0), [(await a.read(id, 0))[0], end], 'nothing was appended after the end');
      await assert.rejects(a.appendMany(newRequestId(), [completed(), token('after')]), RangeError, 'a terminal event may only end a burst');
    });

    it('expires a log after ttlSeconds without appends', async () => {
      const short = await harness.open({ ttlSeconds: 1 });
      const id = newRequestId();
      await short.append(id, token('soon gone'));
      assert.equal((await short.read(id, 0)).length, 1);
      const until = Date.now() + 4000;
      let log = await short.read(id, 0);
      while (log.length > 0 && Date.now() < until) { await sleep(250); log = await short.read(id, 0); }
      assert.deepEqual(log, [], 'the log is gone within a few seconds of its TTL');
      assert.equal((await short.append(id, token('again'))).seq, 1, 'an expired log starts over');
    });

    it('delivers live events appended after subscribe, to every listener on every instance', async () => {
      const id = newRequestId();
      await a.append(id, token('before'));
      const gotA1: number[] = [];
      const gotA2: number[] = [];
      const gotB: number[] = [];
      const subs = [
        await a.subscribe(id, (e) => gotA1.push(e.seq)),
        await a.subscribe(id, (e) => gotA2.push(e.seq)),
        await b.subscribe(id, (e) => gotB.push(e.seq)),
      ];
      const noise = await b.subscribe(newRequestId(), () => assert.fail('events of another request'));
      for (let i = 0; i < 5; i++) await a.append(id, token(`t${i}`));
      await waitFor(() => gotA1.length >= 5 && gotA2.length >= 5 && gotB.length >= 5, 'live events');
      for (const got of [gotA1, gotA2, gotB]) assert.deepEqual(got, [2, 3, 4, 5, 6]);
      for (const s of [...subs, noise]) await s.close();
    });

    it('delivers live events with their full body', async () => {
      const id = newRequestId();
      const got: LogEvent[] = [];
      const sub = await b.subscribe(id, (e) => got.push(e));
      const appended = await a.append(id, completed());
      await waitFor(() => got.length === 1, 'the live event');
      assert.deepEqual(got[0], appended);
      await sub.close();
    });

    it('stops delivering to a closed subscription while others keep receiving', async () => {
      const id = newRequestId();
      const closedGot: number[] = [];
      const openGot: number[] = [];
      const remoteGot: number[] = [];
      const toClose = await a.subscribe(id, (e) => closedGot.push(e.seq));
      const stays = await a.subscribe(id, (e) => openGot.push(e.seq));
      const remote = await b.subscribe(id, (e) => remoteGot.push(e.seq));
      await a.append(id, token('1'));
      await waitFor(() => closedGot.length === 1 && openGot.length === 1, 'first event');
      await toClose.close();
      await toClose.close();
      await a.append(id, token('2'));
      await waitFor(() => openGot.length === 2, 'second event on the open listener');
      // The last local listener leaving drops the instance's interest; others are unaffected.
      await stays.close();
      await a.append(id, token('3'));
      await waitFor(() => remoteGot.length === 3, 'third event on the other instance');
      await sleep(50);
      assert.deepEqual(closedGot, [1]);
      assert.deepEqual(openGot, [1, 2]);
      assert.deepEqual(remoteGot, [1, 2, 3]);
      await remote.close();
      const again: number[] = [];
      const resub = await a.subscribe(id, (e) => again.push(e.seq));
      await b.append(id, token('4'));
      await waitFor(() => again.length === 1, 'resubscribed listener');
      assert.deepEqual(again, [4]);
      await resub.close();
    });

    it('carries control signals to onControl on another instance, not replayed, until closed', async () => {
      const id = newRequestId();
      const gotB: ControlSignal[] = [];
      const gotA: ControlSignal[] = [];
      const subB = await b.onControl(id, (s) => gotB.push(s));
      const subA = await a.onControl(id, (s) => gotA.push(s));
      const other = await b.onControl(newRequestId(), () => assert.fail('signal of another request'));
      await a.publishControl(id, 'cancel');
      await waitFor(() => gotB.length === 1 && gotA.length === 1, 'the cancel signal');
      assert.deepEqual(gotB, ['cancel']);
      assert.deepEqual(await a.read(id, 0), [], 'control signals are not part of the log');
      await subB.close();
      await a.publishControl(id, 'cancel');
      await waitFor(() => gotA.length === 2, 'the second cancel');
      await sleep(50);
      assert.equal(gotB.length, 1);
      const late: ControlSignal[] = [];
      const lateSub = await b.onControl(id, (s) => late.push(s));
      await sleep(50);
      assert.deepEqual(late, [], 'earlier signals are not replayed');
      for (const s of [subA, other, lateSub]) await s.close();
    });

    it('delivers live asynchronously, never inside append', async () => {
      const id = newRequestId();
      let inside = false;
      let reentered = false;
      const got: number[] = [];
      const sub = await a.subscribe(id, (e) => { if (inside) reentered = true; got.push(e.seq); });
      inside = true;
      const p = a.append(id, token('x'));
      inside = false;
      await p;
      await waitFor(() => got.length === 1, 'the event');
      assert.equal(reentered, false);
      await sub.close();
    });
  });
}

/** Memory buses are per process: the "other instance" of a deployment is the same bus. */
export async function memoryHarness(): Promise<BusHarness> {
  const buses = new Map<string, MemoryBus>();
  return {
    async open(opts) {
      const o: BusOptions = { ...DEFAULT_BUS_OPTIONS, ...opts };
      const key = JSON.stringify(o);
      let bus = buses.get(key);
      if (!bus) { bus = new MemoryBus(o); buses.set(key, bus); }
      return bus;
    },
    async cleanup() { await Promise.all([...buses.values()].map((b) => b.close())); },
  };
}

/** Real backends: every distinct option set gets its own namespace (a NATS stream's max_age is per stream). */
export async function serviceHarness(url: string, purge: (prefix: string) => Promise<void>): Promise<BusHarness> {
  const buses: Bus[] = [];
  const prefixes = new Map<string, string>();
  return {
    async open(opts) {
      const o: BusOptions = { ...DEFAULT_BUS_OPTIONS, ...opts };
      const key = JSON.stringify(o);
      let prefix = prefixes.get(key);
      if (!prefix) { prefix = uniqueName('sluicetest'); prefixes.set(key, prefix); }
      const bus = await createBus(url, { ...o, prefix });
      buses.push(bus);
      return bus;
    },
    async cleanup() {
      await Promise.all(buses.map((b) => b.close()));
      for (const prefix of prefixes.values()) await purge(prefix);
    },
  };
}

export const purgeRedis = (prefix: string): Promise<void> => deleteRedisKeys(`${prefix}:*`);
export const purgeNats = (prefix: string): Promise<void> => deleteNatsStreams(SERVICES.nats, [natsStreamName(prefix)]);

/** The stream name the NATS adapter derives for a prefix when none is given. */
export const natsStreamName = (prefix: string): string => `${prefix.toUpperCase()}_EVENTS`;

