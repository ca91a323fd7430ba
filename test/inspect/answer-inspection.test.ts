// One attempt's inspection without the gateway: what inline, hybrid and async append and when,
// hybrid's backpressure on a slow inspector, and how a finding or a failure ends the attempt.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AnswerInspection, InspectionStop, type AnswerInspectionDeps } from '../../src/core/inspection.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { createLogger } from '../../src/core/logger.ts';
import { PiiInspector } from '../../src/adapters/inspector/pii.ts';
import { InspectorError, type InspectInput, type Inspection, type Inspector } from '../../src/ports/inspector.ts';
import type { EventBody } from '../../src/ports/bus.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitUntil(ok: () => boolean): Promise<void> { for (let i = 0; i < 500 && !ok(); i++) await sleep(10); }

/** The PII inspector, slowed down by `ms` per call, counting calls. */
class SlowInspector implements Inspector {
  readonly name = 'slow';
  calls = 0;
  private readonly pii = new PiiInspector();
  constructor(private readonly ms: number) {}
  async inspect(input: InspectInput): Promise<Inspection> { this.calls++; await sleep(this.ms); return this.pii.inspect(input); }
  async close(): Promise<void> {}
}

class FailingInspector implements Inspector {
  readonly name = 'failing';
  async inspect(): Promise<Inspection> { throw new InspectorError('timeout', 'too slow'); }
  async close(): Promise<void> {}
}

function setUp(mode: AnswerInspectionDeps['mode'], inspector: Inspector, bufferMs = 50) {
  const appended: { at: number; text: string }[] = [];
  const stops: Error[] = [];
  /** The log lines written, parsed (pino writes one JSON object per line). */
  const logged: Record<string, unknown>[] = [];
  const started = Date.now();
  const metrics = createMetrics();
  const logger = createLogger('info', 'test', { write: (line: string) => { logged.push(JSON.parse(line) as Record<string, unknown>); } });
  const inspection = new AnswerInspection({
    mode, inspector, requestId: 'r', attempt: 1, bufferMs, metrics, logger,
    append: async (events: EventBody[]) => { for (const e of events) if (e.type === 'token') appended.push({ at: Date.now() - started, text: e.text }); },
    stop: (err) => stops.push(err), signal: new AbortController().signal,
  });
  return { inspection, appended, stops, metrics, logged, text: () => appended.map((a) => a.text).join('') };
}
const chunk = (text: string) => ({ type: 'tokens' as const, texts: [text] });

describe('answer inspection', () => {
  it('inline: each read is inspected and its releasable part appended before tokens() returns', async () => {
    const { inspection, appended, text } = setUp('inline', new PiiInspector());
    await inspection.tokens(chunk('Hello there, '));
    assert.equal(text(), 'Hello there, ');
    await inspection.tokens(chunk('card 4111 1111'));
    assert.equal(text(), 'Hello there, card ', 'the digits that may be a card are held');
    await inspection.tokens(chunk(' 1111 1111 ok'));
    await inspection.finish();
    assert.equal(text(), 'Hello there, card [REDACTED:CARD] ok');
    assert.ok(appended.length >= 3);
  });

  it('hybrid: reads within the buffer go out together, no earlier than INSPECTION_BUFFER_MS', async () => {
    const { inspection, appended, text } = setUp('hybrid', new PiiInspector(), 300);
    for (const w of ['One ', 'two ', 'three ', 'four ']) await inspection.tokens(chunk(w));
    assert.equal(appended.length, 0, 'nothing before the window is due');
    await waitUntil(() => appended.length > 0);
    assert.equal(appended.length, 1, 'one window, one append');
    assert.ok(appended[0]!.at >= 295, `released at ${appended[0]!.at} ms`);
    assert.equal(text(), 'One two three four ');
    await inspection.finish();
  });

  it('hybrid: a slow inspector slows the reads down instead of letting the window grow (backpressure)', async () => {
    const inspector = new SlowInspector(60);
    const { inspection, text } = setUp('hybrid', inspector, 10);
    const started = Date.now();
    let blocked = 0;
    for (let i = 0; i < 40; i++) {
      const t = Date.now();
      await inspection.tokens(chunk(`w${i} `));
      if (Date.now() - t >= 20) blocked++;
      await sleep(2);
    }
    await inspection.finish();
    assert.ok(blocked > 0, 'tokens() waited for the inspector');
    // Without backpressure, 40 reads 2 ms apart take ~100 ms whatever the inspector does.
    assert.ok(Date.now() - started >= 150, `took ${Date.now() - started} ms`);
    assert.equal(text(), Array.from({ length: 40 }, (_, i) => `w${i} `).join(''));
  });

  it('async: appends nothing itself; a finding stops the attempt through stop() and then from tokens()/finish(), with an alert metric and a log line', async () => {
    const { inspection, appended, stops, metrics, logged } = setUp('async', new PiiInspector());
    await inspection.tokens(chunk('write to jane@example.org '));
    await sleep(20);
    assert.equal(appended.length, 0);
    assert.equal(stops.length, 1);
    assert.ok(stops[0] instanceof InspectionStop && stops[0].reason === 'blocked' && stops[0].finding?.type === 'email');
    await assert.rejects(inspection.tokens(chunk('more')), (e: unknown) => e instanceof InspectionStop);
    await assert.rejects(inspection.finish(), (e: unknown) => e instanceof InspectionStop);
    const text = await metrics.registry.metrics();
    assert.match(text, /sluice_inspection_findings_total\{type="email",kind="completion"\} 1/);
    assert.match(text, /sluice_inspection_stopped_total\{reason="blocked"\} 1/, 'the metric SluiceContentBlocked alerts on');
    const lines = logged.filter((l) => l.msg === 'content inspection stopped the request');
    assert.equal(lines.length, 1, 'one log line for the stop');
    assert.deepEqual({ level: lines[0]!.level, request_id: lines[0]!.request_id, attempt: lines[0]!.attempt, finding: lines[0]!.finding, mode: lines[0]!.mode }, { level: 40, request_id: 'r', attempt: 1, finding: 'email', mode: 'async' });
    assert.equal(JSON.stringify(logged).includes('jane@'), false, 'the log line names the finding\'s type, never its text');
  });

  it('async: a finding in the last tokens still stops the answer at finish()', async () => {
    const { inspection } = setUp('async', new PiiInspector());
    await inspection.tokens(chunk('the key is sk-abcdefghijklmnop0123'));
    await assert.rejects(inspection.finish(), (e: unknown) => e instanceof InspectionStop && e.reason === 'blocked');
  });

  it('inline fails closed: an inspector failure ends the attempt as uninspected, nothing appended', async () => {
    const { inspection, appended, metrics } = setUp('inline', new FailingInspector());
    await assert.rejects(inspection.tokens(chunk('Hello')), (e: unknown) => e instanceof InspectionStop && e.reason === 'uninspected');
    assert.equal(appended.length, 0);
    assert.match(await metrics.registry.metrics(), /sluice_inspection_failures_total\{kind="timeout"\} 1/);
  });

  it('hybrid fails closed too: a window without a verdict stops the attempt through stop(), nothing appended', async () => {
    const { inspection, appended, stops } = setUp('hybrid', new FailingInspector(), 20);
    await inspection.tokens(chunk('Hello there '));
    await waitUntil(() => stops.length > 0);
    assert.equal(stops.length, 1, 'the window inspected off the read loop ends the model call');
    assert.ok(stops[0] instanceof InspectionStop && stops[0].reason === 'uninspected');
    await assert.rejects(inspection.finish(), (e: unknown) => e instanceof InspectionStop && e.reason === 'uninspected');
    assert.equal(appended.length, 0);
  });

  it('async fails open: an inspector failure is counted and the answer goes on', async () => {
    const { inspection, stops, metrics } = setUp('async', new FailingInspector());
    await inspection.tokens(chunk('Hello '));
    await inspection.finish();
    assert.equal(stops.length, 0);
    assert.match(await metrics.registry.metrics(), /sluice_inspection_failures_total\{kind="timeout"\} [1-9]/);
  });
});
