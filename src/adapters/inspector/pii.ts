// The built-in PII detector and redactor: e-mail addresses, phone numbers, card numbers (Luhn),
// IBANs (mod-97), IPv4/IPv6 addresses and API-key-shaped secrets. Pure regular expressions plus
// checksums, no I/O. Every pattern refuses to start inside a word, so scanning a window that begins
// with a few characters of already released context finds what scanning the whole text finds.
import { isIPv6 } from 'node:net';
import type { Finding, InspectInput, Inspection, Inspector } from '../../ports/inspector.ts';

interface Detector {
  type: string;
  /** Candidates; `valid` decides. Global, sticky-free. */
  pattern: RegExp;
  valid: (match: string) => boolean;
}

/** Luhn check over the digits of a card-number candidate. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) { d *= 2; if (d > 9) d -= 9; }
    sum += d;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/** ISO 13616 check: the country and check digits moved to the end, letters as 10..35, mod 97 = 1. */
export function ibanValid(candidate: string): boolean {
  const iban = candidate.replace(/ /g, '');
  if (iban.length < 15 || iban.length > 34 || !/^[A-Z]{2}\d{2}[A-Z0-9]+$/.test(iban)) return false;
  const moved = iban.slice(4) + iban.slice(0, 4);
  let rest = 0;
  for (const ch of moved) {
    const code = ch.charCodeAt(0);
    const value = code >= 65 ? String(code - 55) : ch;
    for (const digit of value) rest = (rest * 10 + (digit.charCodeAt(0) - 48)) % 97;
  }
  return rest === 1;
}

const digitsOf = (s: string) => s.replace(/\D/g, '');

function cardValid(m: string): boolean {
  const d = digitsOf(m);
  return d.length >= 13 && d.length <= 19 && luhnValid(d);
}

function phoneValid(m: string): boolean {
  const d = digitsOf(m);
  // A bare run of digits is a number, not a phone number: it needs a '+', brackets or separators.
  return d.length >= 7 && d.length <= 15 && /[+() .-]/.test(m);
}

function ipv4Valid(m: string): boolean {
  return m.split('.').every((o) => o.length > 0 && Number(o) <= 255 && !(o.length > 1 && o.startsWith('0')));
}

function ipv6Valid(m: string): boolean {
  return (m.match(/:/g)?.length ?? 0) >= 2 && /[0-9A-Fa-f]/.test(m) && isIPv6(m);
}

/** In priority order: where two findings overlap, the earlier detector wins. */
const DETECTORS: readonly Detector[] = [
  { type: 'secret', pattern: /(?<![\w-])(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[A-Za-z0-9-]{10,})(?![\w-])/g, valid: () => true },
  { type: 'card', pattern: /(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w])/g, valid: cardValid },
  { type: 'iban', pattern: /(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])/g, valid: ibanValid },
  { type: 'email', pattern: /(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![\w-])/g, valid: () => true },
  { type: 'ip', pattern: /(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)(?![\w])/g, valid: ipv4Valid },
  // Bounded (an IPv6 address is at most 39 characters): an unbounded run of colons would backtrack quadratically.
  { type: 'ip', pattern: /(?<![\w:])[0-9A-Fa-f:]{2,39}(?![\w:])/g, valid: ipv6Valid },
  { type: 'phone', pattern: /(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?![\w])/g, valid: phoneValid },
];

/**
 * What a window's end could be the beginning of: a word-like run (an e-mail, a secret, an IBAN),
 * digits with separators (a card, a phone number, an IPv4 address), hex with colons (IPv6).
 * Anchored at the end; the earliest start is held back.
 */
const PREFIXES: readonly RegExp[] = [
  /(?<![\w.%+-])[A-Za-z0-9._%+-]{1,200}(?:@[A-Za-z0-9.-]*)?$/,
  /(?<![\w.])\d(?:[ -]?\d){0,18}[ -]?$/,
  /(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){0,30} ?$/,
  /(?<![\w.])\d{1,3}(?:\.\d{0,3}){0,4}$/,
  /(?<![\w:])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]{0,38}$/,
  /(?<![\w+])(?:\+\d{0,3}[ .-]?)?(?:\(\d{0,4}\)?[ .-]?)?(?:\d[ .-]?){0,15}$/,
];

export const REDACTION = (type: string) => `[REDACTED:${type.toUpperCase()}]`;

/** Every finding in `text` starting at or after `from`, non-overlapping, in order. */
export function detectPii(text: string, from = 0): Finding[] {
  const all: (Finding & { rank: number })[] = [];
  DETECTORS.forEach((d, rank) => {
    d.pattern.lastIndex = 0;
    for (let m = d.pattern.exec(text); m; m = d.pattern.exec(text)) {
      if (m.index >= from && d.valid(m[0])) {
        all.push({ type: d.type, start: m.index, end: m.index + m[0].length, replacement: REDACTION(d.type), action: 'redact', rank });
      }
    }
  });
  all.sort((a, b) => a.rank - b.rank || a.start - b.start);
  const kept: Finding[] = [];
  for (const f of all) {
    if (kept.some((k) => f.start < k.end && k.start < f.end)) continue;
    kept.push({ type: f.type, start: f.start, end: f.end, replacement: f.replacement, action: f.action });
  }
  return kept.sort((a, b) => a.start - b.start);
}

/** The earliest offset (at or after `from`) from which the end of `text` could still grow into a finding. */
export function piiHold(text: string, from = 0): number {
  let hold = text.length;
  for (const p of PREFIXES) {
    const m = p.exec(text);
    if (m && m[0].length > 0) hold = Math.min(hold, m.index);
  }
  return Math.max(hold, from);
}

export class PiiInspector implements Inspector {
  readonly name = 'pii';

  async inspect(input: InspectInput): Promise<Inspection> {
    return { findings: detectPii(input.text, input.from), hold: input.final ? input.text.length : piiHold(input.text, input.from) };
  }

  async close(): Promise<void> {}
}
