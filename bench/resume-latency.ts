// Resume latency by bus: a log of N events (interleaved with other requests' logs, as on a busy
// gateway), then RESUMES resumes from each position through followEventRuns (the resume runtime
// behind SSE, OpenAI SSE and WebSocket): time from the resume call to its first event, p50/p99;
// and a whole replay from 0 to the log's last event, p50 (long replays must still read in batches).
// Needs Redis (127.0.0.1:6379) and NATS with JetStream (127.0.0.1:4222) for those buses; a bus
// whose server is down is skipped. Runs in well under a minute.
//
// Options: EVENTS (1000), RESUMES (50), POSITIONS (0,100,300,900), BUSES (memory,redis,nats),
// REDIS_URL, NATS_URL.
import { randomUUID } from 'node:crypto';
import { createBus } from '../src/adapters/bus/factory.ts';
import { followEventRuns } from '../src/core/event-follow.ts';
import type { Bus, EventBody } from '../src/ports/bus.ts';

const env = process.env;
const EVENTS = Number(env.EVENTS ?? 1000);
const RESUMES = Number(env.RESUMES ?? 50);
const POSITIONS = (env.POSITIONS ?? '0,100,300,900').split(',').map(Number);
const BUSES = (env.BUSES ?? 'memory,redis,nats').split(',');
const URLS: Record<string, string> = {
  memory: 'memory://',
  redis: env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  nats: env.NATS_URL ?? 'nats://127.0.0.1:4222',
};
/** Other requests whose events are interleaved with the measured log's. */
const NEIGHBOURS = 3;

const token = (i: number): EventBody => ({ type: 'token', attempt: 1, text: `t${i} ` });

/** Time from the call to the first event delivered, in ms. */
async function firstEventMs(bus: Bus, id: string, afterSeq: number): Promise<number> {
  const stop = new AbortController();
  const t0 = performance.now();
  let ms = Number.NaN;
  await followEventRuns(bus, id, afterSeq, () => { ms ||= performance.now() - t0; stop.abort(); }, { signal: stop.signal });
  return ms;
}

/** Time from the call to the log's last event (seq `lastSeq`) delivered, in ms. */
async function replayMs(bus: Bus, id: string, lastSeq: number): Promise<number> {
  const stop = new AbortController();
  const t0 = performance.now();
  let ms = Number.NaN;
  await followEventRuns(bus, id, 0, (run) => { if (run.at(-1)!.seq >= lastSeq) { ms = performance.now() - t0; stop.abort(); } }, { signal: stop.signal });
  return ms;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Whole replays timed per bus (fewer than resumes: each reads the whole log). */
const REPLAYS = Math.max(3, Math.ceil(RESUMES / 5));

type BusResult = Record<number, { p50: number; p99: number }> & { replayP50?: number };

async function benchBus(name: string): Promise<BusResult | undefined> {
  const prefix = `benchresume${randomUUID().slice(0, 8)}`;
  let bus: Bus;
  try {
    bus = await createBus(URLS[name]!, { ttlSeconds: 600, maxLen: 100_000, prefix });
  } catch (err) {
    console.log(`${name}: skipped (${(err as Error).message})`);
    return undefined;
  }
  const id = `${prefix}-log`;
  try {
    for (let i = 1; i <= EVENTS; i++) {
      await bus.append(id, token(i));
      for (let n = 0; n < NEIGHBOURS; n++) await bus.append(`${prefix}-other${n}`, token(i));
    }
    const out: BusResult = {};
    for (const pos of POSITIONS) {
      await firstEventMs(bus, id, pos); // warm-up
      const times: number[] = [];
      for (let r = 0; r < RESUMES; r++) times.push(await firstEventMs(bus, id, pos));
      times.sort((a, b) => a - b);
      out[pos] = { p50: percentile(times, 50), p99: percentile(times, 99) };
    }
    const replays: number[] = [];
    for (let r = 0; r < REPLAYS; r++) replays.push(await replayMs(bus, id, EVENTS));
    out.replayP50 = percentile(replays.sort((a, b) => a - b), 50);
    return out;
  } finally {
    await bus.close();
    if (name === 'nats') await dropNatsStream(URLS.nats!, `${prefix.toUpperCase()}_EVENTS`);
    if (name === 'redis') await dropRedisKeys(URLS.redis!, `${prefix}:*`);
  }
}

async function dropNatsStream(url: string, stream: string): Promise<void> {
  const [{ connect }, { jetstreamManager }] = await Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream')]);
  const nc = await connect({ servers: url.replace(/^nats:\/\//, '') });
  try { await (await jetstreamManager(nc)).streams.delete(stream); } finally { await nc.close(); }
}

async function dropRedisKeys(url: string, pattern: string): Promise<void> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(url);
  try {
    const keys = await redis.keys(pattern);
    if (keys.length > 0) await redis.del(...keys);
  } finally { redis.disconnect(); }
}

const rows: string[] = [];
const results: Record<string, unknown> = {};
for (const name of BUSES) {
  const r = await benchBus(name);
  if (!r) continue;
  results[name] = r;
  rows.push(`| ${name} | ${POSITIONS.map((p) => `${r[p]!.p50.toFixed(1)} / ${r[p]!.p99.toFixed(1)}`).join(' | ')} | ${r.replayP50!.toFixed(1)} |`);
}
console.log(`\nTime to first event of a resume, ms (p50 / p99 over ${RESUMES}), log of ${EVENTS} events;`);
console.log(`whole replay from 0 to the last event, ms (p50 over ${REPLAYS}):\n`);
console.log(`| bus | ${POSITIONS.map((p) => `from ${p}`).join(' | ')} | whole replay |`);
console.log(`| --- | ${POSITIONS.map(() => '---').join(' | ')} | --- |`);
for (const row of rows) console.log(row);
console.log(JSON.stringify({ bench: 'resume-latency', events: EVENTS, resumes: RESUMES, results }));
