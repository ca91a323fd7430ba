// Inspects a stream of text pieces with a holdback: text that could still be the start of a
// finding (a card number whose last digits have not arrived) is held until it can no longer match,
// or until the end. So a finding split over any number of tokens is caught, and what is released
// is final: the same text comes out whatever the token boundaries were.
import type { Finding, Inspector } from '../ports/inspector.ts';

/** Released raw characters kept in front of the window, so patterns see what precedes it. */
const CONTEXT_CHARS = 16;
/** The longest held tail: past it the oldest text is released (no finding is this long). */
export const MAX_HOLD_CHARS = 512;

export interface Release {
  /** The text to deliver (findings to redact replaced); '' while everything is held. */
  text: string;
  /** Findings in the released part, redacted or blocking. */
  findings: Finding[];
}

export class StreamRedactor {
  /** Released context, then the held text. */
  private buf = '';
  /** Where the held text starts in `buf`. */
  private from = 0;

  constructor(private readonly inspector: Inspector, private readonly requestId: string, private readonly maxHold = MAX_HOLD_CHARS) {}

  /** Raw characters held back now. */
  get held(): number { return this.buf.length - this.from; }

  /** Releases everything held without inspecting it (async mode, after an inspector failure). */
  skip(): void { const keep = Math.max(0, this.buf.length - CONTEXT_CHARS); this.buf = this.buf.slice(keep); this.from = this.buf.length; }

  /** Adds a piece without inspecting (hybrid: a window gathers before it is inspected). */
  add(text: string): void { this.buf += text; }

  /** Adds a piece and inspects the held text: returns what can be released now. */
  async push(text: string, signal?: AbortSignal): Promise<Release> {
    this.buf += text;
    return this.release(false, signal);
  }

  /** The end of the stream: inspects and releases everything held. */
  async finish(signal?: AbortSignal): Promise<Release> { return this.release(true, signal); }

  /** Inspects what is held; `final` releases all of it. */
  async release(final: boolean, signal?: AbortSignal): Promise<Release> {
    const { buf, from } = this;
    if (buf.length === from) return { text: '', findings: [] };
    const seen = await this.inspector.inspect({ text: buf, from, final, requestId: this.requestId, kind: 'completion' }, signal);
    const findings = seen.findings.filter((f) => f.start >= from && f.end > f.start && f.end <= buf.length).sort((a, b) => a.start - b.start);
    let cut = final ? buf.length : Math.max(from, Math.min(seen.hold, buf.length));
    // A finding that reaches the end may still grow.
    if (!final) for (const f of findings) if (f.end === buf.length) cut = Math.min(cut, f.start);
    // Bounded: the oldest text goes once the tail is too long to be one finding.
    if (buf.length - cut > this.maxHold) cut = buf.length - this.maxHold;
    // Never cut through a finding: before it, or (when the bound forced the cut) after it.
    for (let moved = true; moved;) {
      moved = false;
      for (const f of findings) {
        if (f.start < cut && cut < f.end) { cut = buf.length - f.start > this.maxHold ? f.end : f.start; moved = true; }
      }
    }
    const released: Finding[] = [];
    let text = '';
    let at = from;
    for (const f of findings) {
      if (f.end > cut || f.start < at) continue;
      text += buf.slice(at, f.start) + (f.action === 'redact' ? f.replacement : '');
      at = f.end;
      released.push(f);
    }
    text += buf.slice(at, cut);
    const keep = Math.max(0, cut - CONTEXT_CHARS);
    // Pieces added while the inspector worked (hybrid, async) follow the snapshot: keep them.
    this.buf = this.buf.slice(keep);
    this.from = cut - keep;
    return { text, findings: released };
  }
}
