// An HTTP inspector: POST {INSPECTION_ENDPOINT} with one window of text, a JSON verdict back.
// Bounded by a timeout and a circuit breaker (the model router's): after `failures` consecutive
// failures the inspector is not called for `coolDownMs`, and every inspection fails at once
// (inline and hybrid fail closed on it) instead of each waiting for the timeout.
//
// Request:  {"request_id": "...", "kind": "completion"|"prompt", "text": "...", "from": 0, "final": false}
// Response: {"findings": [{"type": "name", "start": 0, "end": 5, "action": "redact"|"block", "replacement": "..."}],
//            "hold": 42}
// Offsets are UTF-16 code units into `text`; findings before `from` (released context) are ignored;
// `hold` (optional, default: nothing held) is where the text could still become a finding.
import { z } from 'zod';
import { InspectorError, type Finding, type InspectInput, type Inspection, type Inspector } from '../../ports/inspector.ts';
import { Circuit } from '../model/circuit.ts';
import { REDACTION } from './pii.ts';

/** An answer larger than this is not a verdict on a window of text. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

const verdictSchema = z.object({
  findings: z.array(z.object({
    type: z.string().regex(/^[a-z0-9_.-]{1,64}$/i, 'a finding type is 1-64 of a-z 0-9 _ . -'),
    start: z.number().int().nonnegative(),
    end: z.number().int().nonnegative(),
    action: z.enum(['redact', 'block']).default('redact'),
    replacement: z.string().max(256).optional(),
  })).max(10_000).default([]),
  hold: z.number().int().nonnegative().optional(),
});

export interface HttpInspectorOptions {
  endpoint: string;
  timeoutMs: number;
  failures: number;
  coolDownMs: number;
  now?: () => number;
  fetch?: typeof fetch;
}

export class HttpInspector implements Inspector {
  readonly name = 'http';
  private readonly circuit: Circuit;

  constructor(private readonly options: HttpInspectorOptions) {
    this.circuit = new Circuit(options.failures, options.coolDownMs, options.now ?? Date.now);
  }

  /** The circuit's state, for /readyz-like checks and tests. */
  state(): string { return this.circuit.state(); }

  async inspect(input: InspectInput, signal?: AbortSignal): Promise<Inspection> {
    if (!this.circuit.admits()) throw new InspectorError('circuit_open', `the inspector at ${this.options.endpoint} failed repeatedly; its circuit is open`);
    const trial = this.circuit.start();
    let verdict: Inspection;
    try {
      verdict = await this.call(input, signal);
    } catch (err) {
      // The caller went away: no verdict on the inspector's health either way.
      if (signal?.aborted) { this.circuit.abandoned(trial); throw err; }
      this.circuit.failed(trial);
      throw err;
    }
    this.circuit.succeeded(trial);
    return verdict;
  }

  private async call(input: InspectInput, signal?: AbortSignal): Promise<Inspection> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const both = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const body = JSON.stringify({ request_id: input.requestId, kind: input.kind, text: input.text, from: input.from, final: input.final });
    let raw: string;
    try {
      const res = await (this.options.fetch ?? fetch)(this.options.endpoint, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: both });
      if (!res.ok) { await res.body?.cancel().catch(() => {}); throw new InspectorError('unavailable', `the inspector answered ${res.status}`); }
      raw = await readBounded(res);
    } catch (err) {
      if (err instanceof InspectorError) throw err;
      if (timeout.aborted) throw new InspectorError('timeout', `the inspector did not answer within ${this.options.timeoutMs} ms`, { cause: err });
      throw new InspectorError('unavailable', `the inspector could not be reached: ${(err as Error).message}`, { cause: err });
    }
    return parseVerdict(raw, input);
  }

  async close(): Promise<void> {}
}

async function readBounded(res: Response): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return '';
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_RESPONSE_BYTES) { await reader.cancel().catch(() => {}); throw new InspectorError('bad_response', `the inspector's answer exceeds ${MAX_RESPONSE_BYTES} bytes`); }
    parts.push(value);
  }
  return Buffer.concat(parts).toString('utf8');
}

function parseVerdict(raw: string, input: InspectInput): Inspection {
  let json: unknown;
  try { json = JSON.parse(raw); } catch { throw new InspectorError('bad_response', 'the inspector answered with invalid JSON'); }
  const parsed = verdictSchema.safeParse(json);
  if (!parsed.success) throw new InspectorError('bad_response', `the inspector's answer does not match the schema: ${parsed.error.issues[0]?.message ?? ''}`);
  const { length } = input.text;
  const findings: Finding[] = [];
  for (const f of parsed.data.findings) {
    if (f.end <= f.start || f.end > length) throw new InspectorError('bad_response', `the inspector's finding [${f.start}, ${f.end}) is outside the text (${length})`);
    findings.push({ type: f.type, start: f.start, end: f.end, action: f.action, replacement: f.replacement ?? REDACTION(f.type) });
  }
  const hold = input.final ? length : Math.min(length, Math.max(input.from, parsed.data.hold ?? length));
  return { findings, hold };
}
