// Delivers a request's events to one listener: history after the listener's last sequence, then
// live, each sequence exactly once (the request's shared follower, core/follow-hub.ts). If the log has expired, the stored result is
// delivered instead. A watchdog repairs a log that lacks its terminal event (a crash between the
// settle and the append), or ends the listener with the stored result when the request ended
// without a log, so no listener waits forever.
import { isTerminal, type LogEvent } from '../ports/bus.ts';
import { isEnded, type RequestRecord } from '../ports/store.ts';
import { endingOf, terminalEvent } from '../core/attempt-runner.ts';
import { LOG_PAGE, readAll } from '../core/event-follow.ts';
import { drainingError } from '../core/drain.ts';
import { SluiceError } from '../core/errors.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { nativeSseText, OpenAIChunks, outputChoices, requestView } from './render.ts';
import type { FastifyReply } from 'fastify';
import { SseStream } from './sse.ts';
import { noteResponse, noteTerminal } from './access-log.ts';

/** 'handoff': this process is shutting down and stopped delivering; the listener resumes elsewhere. */
export type DeliveryEnd = 'terminal' | 'aborted' | 'stored' | 'handoff';

/**
 * What a listener keeps of its request for the whole stream: id, model and status (its
 * `connected` event, OpenAI chunks). A stream can last minutes and a process holds thousands, so
 * a running request's listener does not keep the whole record (body, dates, usage: ~1 KiB each);
 * an ended request's listener keeps it for its short replay, which may repair the log from it.
 */
export type FollowedRequest = Pick<RequestRecord, 'id' | 'model' | 'status'> | RequestRecord;

/** The part of `record` a listener keeps (see FollowedRequest). */
export function followed(record: RequestRecord): FollowedRequest {
  return isEnded(record) ? record : { id: record.id, model: record.model, status: record.status };
}

export async function deliverEvents(deps: GatewayDeps, record: FollowedRequest, afterSeq: number, signal: AbortSignal, sink: EventSink): Promise<DeliveryEnd> {
  const { runner } = deps;
  if (isEnded(record)) return deliverEnded(deps, record, afterSeq, signal, sink);
  // A running request: follow its log, through the request's one follower in this process (its
  // listeners here share one subscription, one history read and one watchdog). If it ends without
  // a terminal event in its log (a crash between the settle and the append), the watchdog repairs
  // the log; with no log at all, the listener stops following and gets the stored result.
  const handoff = deps.drain.handoff;
  const end = await deps.hubs.follow(record.id, afterSeq, sink, {
    signals: [signal, handoff],
    watch: { everyMs: Math.max(1000, deps.config.sse.pingMs), gone: async (id) => (await runner.repairTerminal(id)) === 'gone' },
  });
  if (end === 'terminal') return 'terminal';
  if (signal.aborted) return 'aborted';
  if (end === 'gone') return 'stored';
  return handoff.aborted ? 'handoff' : 'aborted';
}

/**
 * An ended request: its log after `afterSeq`, always ending with the terminal event. A log without
 * it (a resume between the settle and the terminal append, or a crash there) is repaired from the
 * stored outcome; the bus keeps one terminal event, so a racing append by the attempt is answered
 * with the same one. A listener at or past the terminal event gets it again. No log: 'stored'.
 */
async function deliverEnded(deps: GatewayDeps, record: FollowedRequest, afterSeq: number, signal: AbortSignal, sink: EventSink): Promise<DeliveryEnd> {
  const { bus, runner } = deps;
  let events = await readAll(bus, record.id, afterSeq);
  if (!endsLog(events)) {
    // Nothing is delivered yet and a log only grows: what follows the events at hand completes them.
    if (await runner.repairTerminal('userId' in record ? record : record.id) === 'gone') return 'stored';
    events = events.concat(await readAll(bus, record.id, events.at(-1)?.seq ?? afterSeq));
    if (!endsLog(events)) {
      const terminal = events.length === 0 ? await bus.terminal(record.id) : undefined;
      // A log that went away between two reads (the TTL, or the memory bus's bound): the stored result.
      if (!terminal) return 'stored';
      events = [terminal];
    }
  }
  for (let i = 0; i < events.length; i += LOG_PAGE) {
    if (signal.aborted) return 'aborted';
    await sink(events.slice(i, i + LOG_PAGE));
  }
  return 'terminal';
}

const endsLog = (events: readonly LogEvent[]): boolean => events.length > 0 && isTerminal(events[events.length - 1]!);

/** Parses Last-Event-ID (header) or ?last_event_id=; 0 when absent. */
export function lastEventId(header: string | string[] | undefined, query: unknown): number {
  const raw = typeof header === 'string' && header !== '' ? header : typeof query === 'string' && query !== '' ? query : undefined;
  if (raw === undefined) return 0;
  if (!/^\d{1,15}$/.test(raw.trim())) throw new SluiceError('SLUICE_ERR_BAD_LAST_EVENT_ID', `Last-Event-ID "${raw.slice(0, 40)}" is not a non-negative integer`, { param: 'Last-Event-ID' });
  return Number(raw.trim());
}

/** Receives a listener's events in order, a burst (the tokens of one model read) at once; awaited. */
export type EventSink = (events: readonly LogEvent[]) => void | Promise<void>;

/** Where a listener's events come from: the request's log, or (direct mode) the attempt this gateway runs. */
export interface EventSource {
  (signal: AbortSignal, sink: EventSink): Promise<DeliveryEnd>;
  /** Set once the source has run, when it ended the request itself: the record as stored, not read back. */
  ended?: RequestRecord;
}

/** Follows the request's log after `afterSeq`: history, then live. */
export function logSource(deps: GatewayDeps, record: FollowedRequest, afterSeq: number): EventSource {
  return (signal, sink) => deliverEvents(deps, record, afterSeq, signal, sink);
}

/**
 * Runs the request here (direct mode) and hands its events to the listener as they are logged,
 * without the round trip through the bus. The listener's signal is its client's: when the client
 * goes away the attempt stops (a cut stream). If the attempt did not end the request itself
 * (another process took it over, or ended it first), the rest comes from the log.
 */
export function directSource(deps: GatewayDeps, record: RequestRecord): EventSource {
  const source: EventSource = async (signal, sink) => {
    let last = 0;
    let ended = false;
    source.ended = await deps.requests.runDirect(record, signal, async (events) => {
      if (signal.aborted) return;
      await sink(events);
      last = events[events.length - 1]!.seq;
      ended ||= events.some(isTerminal);
    });
    if (ended) return 'terminal';
    if (signal.aborted) return 'aborted';
    // Handed to the queue (drain): the listener follows the log on another instance.
    if (deps.drain.handoff.aborted) return 'handoff';
    return deliverEvents(deps, (await deps.store.getRequest(record.id)) ?? record, last, signal, sink);
  };
  return source;
}

/**
 * Headers the hooks already set on the reply (security, CORS): a hijacked response bypasses
 * Fastify's sending, so they are handed to the stream. The stream keeps its own cache-control.
 */
function hookHeaders(reply: FastifyReply): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined && name !== 'cache-control') out[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return out;
}

/** Takes the response over as an SSE stream, counted in the active-streams gauge while `fn` runs. */
export async function withSse(deps: GatewayDeps, reply: FastifyReply, headers: Record<string, string>, fn: (sse: SseStream) => Promise<void>): Promise<void> {
  const inherited = hookHeaders(reply);
  reply.hijack();
  const sse = new SseStream(reply.raw, deps.config.sse, { ...inherited, ...headers });
  if (headers['x-request-id']) noteResponse(reply.raw, { requestId: headers['x-request-id'] });
  deps.metrics.activeStreams.inc();
  try {
    await fn(sse);
  } catch (err) {
    // The response is already an event stream: a failure part-way (the bus unreachable, e.g. an
    // edge whose leaf lost its hub) closes it, so the client resumes with Last-Event-ID, rather
    // than leaving it open with nothing more to come.
    deps.logger.warn({ err, request_id: headers['x-request-id'] }, 'event stream failed part-way; closed for the client to resume');
    sse.end();
  } finally { deps.metrics.activeStreams.dec(); }
}

/** Native SSE: connected, then token/restart/completed/error events. Handed off, the stream just ends: EventSource reconnects with Last-Event-ID. */
export async function streamNative(deps: GatewayDeps, sse: SseStream, record: FollowedRequest, afterSeq: number, source: EventSource = logSource(deps, record, afterSeq)): Promise<void> {
  await sse.send({ event: 'connected', data: JSON.stringify({ request_id: record.id, model: record.model, status: record.status, resumed_after: afterSeq }) });
  const end = await source(sse.signal, (events) => { noteTerminal(sse.response, events); return sse.sendText(nativeSseText(record.id, events)); });
  if (end === 'stored') await sendStored(deps, sse, record.id);
  sse.end();
}

/** OpenAI chat.completion.chunk SSE, ending with data: [DONE]. */
export async function streamOpenAI(deps: GatewayDeps, sse: SseStream, record: FollowedRequest, afterSeq: number, opts: { includeUsage: boolean; object?: 'chat.completion.chunk' | 'text_completion'; source?: EventSource }): Promise<void> {
  const chunks = new OpenAIChunks(record.id, record.model, opts.includeUsage, opts.object);
  const source = opts.source ?? logSource(deps, record, afterSeq);
  let last = afterSeq;
  const end = await source(sse.signal, (events) => {
    last = events.at(-1)?.seq ?? last;
    noteTerminal(sse.response, events);
    return sse.sendText(chunks.sseText(events));
  });
  if (end === 'handoff') {
    // OpenAI clients do not reconnect: an error they raise beats a stream that looks complete.
    const err = drainingError(`This instance is shutting down; request ${record.id} goes on elsewhere: resume at /v1/requests/${record.id}/events?format=openai with Last-Event-ID: ${last}`);
    await sse.send({ data: JSON.stringify(err.toJSON()) });
  }
  if (end === 'stored') {
    const r = await deps.store.getRequest(record.id);
    // The log expired: the whole stored answer, each choice's text as one chunk and each tool call whole, then the end.
    if (r) await sse.sendText(chunks.sseText(storedEvents(r)));
  }
  sse.end();
}

/**
 * A stored answer as the events that would have produced it: per choice its text as one token,
 * then each tool call as one fragment, then the terminal event. Numbered from 1; there is no log
 * left to resume in.
 */
export function storedEvents(r: RequestRecord): LogEvent[] {
  const ts = Date.now();
  const events: LogEvent[] = [];
  const attempt = r.attempt;
  for (const c of outputChoices(r)) {
    if (c.content !== '' || (c.index === 0 && c.toolCalls.length === 0)) {
      events.push({ type: 'token', attempt, text: c.content, ...(c.index !== 0 && { choice: c.index }), seq: events.length + 1, ts });
    }
    c.toolCalls.forEach((t, call) => events.push({ type: 'tool_call', attempt, choice: c.index, call, id: t.id, name: t.function.name, arguments: t.function.arguments, seq: events.length + 1, ts }));
  }
  events.push({ ...terminalEvent(endingOf(r)), seq: events.length + 1, ts });
  return events;
}

async function sendStored(deps: GatewayDeps, sse: SseStream, id: string): Promise<void> {
  const r = await deps.store.getRequest(id);
  if (!r) return;
  const view = { ...requestView(r), done: true, replayed_from: 'store' };
  await sse.send({ event: r.status === 'completed' ? 'completed' : 'error', data: JSON.stringify(view) });
}

/**
 * Waits for the request's end (non-streaming responses) and returns the stored record: as the
 * direct attempt that ended it here left it, else read from the store.
 */
export async function awaitEnd(deps: GatewayDeps, record: RequestRecord, signal: AbortSignal, source: EventSource = logSource(deps, record, 0)): Promise<RequestRecord> {
  await source(signal, () => {});
  return source.ended ?? (await deps.store.getRequest(record.id)) ?? record;
}
