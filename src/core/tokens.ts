// Token counting for admission estimates and for billing when an upstream omits usage.
//
// Encoding: o200k_base (GPT-4o and later). No single encoding is exact for every upstream (vLLM,
// Ollama and friends each bring their own tokenizer); o200k is the one current OpenAI models use
// and sits closer to modern 100k–200k vocabularies than cl100k. Importing the encoding module
// directly (not the package root) loads only this one rank table.
import { countTokens } from 'gpt-tokenizer/encoding/o200k_base';
import type { ChatMessage } from '../ports/model.ts';

/** Per-message template overhead (OpenAI cookbook: `<|start|>{role}\n{content}<|end|>`). */
const TOKENS_PER_MESSAGE = 3;
/** A `name` field costs one more token. */
const TOKENS_PER_NAME = 1;
/** Every reply is primed with `<|start|>assistant<|message|>`. */
const REPLY_PRIMING_TOKENS = 3;

/**
 * Segments are cut only at "x y" boundaries (a single ASCII space between two non-space
 * characters), where the encoding's pre-tokenizer always splits, so normal text counts exactly.
 */
const SEGMENT_CHARS = 16_384;
/**
 * BPE merging is quadratic in the length of one pre-tokenized piece, so a 1 MiB run without
 * whitespace would take minutes. Runs longer than this are cut hard; the count is then off by at
 * most a token or two per cut, which is irrelevant next to the run's own thousands of tokens.
 */
const MAX_RUN_CHARS = 1_024;

// User text may contain strings like "<|endoftext|>"; they are plain text here, never control tokens.
const PLAIN_TEXT = { disallowedSpecial: new Set<string>() };

function encodeCount(text: string): number {
  return text.length === 0 ? 0 : countTokens(text, PLAIN_TEXT);
}

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || c === 0xa0 || c === 0x2028 || c === 0x2029 || c === 0x3000;
}

/**
 * Counts of recent long texts. A conversation sends its system prompt, tool definitions and
 * history again with every turn, and admission counts them each time (BPE is the costliest step of
 * admitting a chat request); a count depends on the text alone, so a remembered one is exact.
 * Bounded by the characters it holds, least recently used out first; texts shorter than
 * `minChars` cost little to count and would only churn it, and one over an eighth of the bound
 * is counted without it.
 */
export class TokenCountCache {
  private readonly counts = new Map<string, number>();
  private chars = 0;

  constructor(private readonly count: (text: string) => number, private readonly maxChars: number, private readonly minChars: number) {}

  /** Characters of the texts held (at most maxChars). */
  get size(): number { return this.chars; }

  get(text: string): number {
    if (text.length < this.minChars || text.length > this.maxChars / 8) return this.count(text);
    const known = this.counts.get(text);
    if (known !== undefined) {
      this.counts.delete(text); // the most recently used goes last
      this.counts.set(text, known);
      return known;
    }
    const n = this.count(text);
    this.counts.set(text, n);
    this.chars += text.length;
    for (const oldest of this.counts.keys()) {
      if (this.chars <= this.maxChars) break;
      this.counts.delete(oldest);
      this.chars -= oldest.length;
    }
    return n;
  }
}

/** At most 4 Mi characters of text (8 MiB at worst) are remembered, each at least 64 long. */
const cache = new TokenCountCache(countUncached, 4 * 1024 * 1024, 64);

/** Number of tokens in `text`; linear in its length. */
export function countTextTokens(text: string): number {
  return cache.get(text);
}

function countUncached(text: string): number {
  if (text.length <= MAX_RUN_CHARS) return encodeCount(text);
  let total = 0;
  let start = 0;
  let lastSafeCut = -1;
  let runLength = 0;
  let previousWasSpace = false;
  for (let i = 0; i < text.length; i++) {
    const space = isSpace(text.charCodeAt(i));
    runLength = i > 0 && space === previousWasSpace ? runLength + 1 : 1;
    previousWasSpace = space;
    if (text.charCodeAt(i) === 32 && i > start && i + 1 < text.length
      && !isSpace(text.charCodeAt(i - 1)) && !isSpace(text.charCodeAt(i + 1))) {
      lastSafeCut = i;
    }
    if (runLength >= MAX_RUN_CHARS) {
      total += encodeCount(text.slice(start, i + 1));
      start = i + 1;
      lastSafeCut = -1;
      runLength = 0;
    } else if (i - start >= SEGMENT_CHARS && lastSafeCut > start) {
      total += encodeCount(text.slice(start, lastSafeCut));
      start = lastSafeCut;
      lastSafeCut = -1;
    }
  }
  return total + encodeCount(text.slice(start));
}

/** A message's text: its string content, or its text parts joined (other parts carry no text). */
export function messageText(m: ChatMessage): string {
  const c = m.content;
  if (c == null) return '';
  if (typeof c === 'string') return c;
  let text = '';
  for (const part of c) if (part.type === 'text') text += part.text;
  return text;
}

/**
 * An image part's estimate. The image is not decoded, so its size is unknown: `low` detail is
 * OpenAI's flat 85 tokens; `high` and `auto` are taken as a 1024x1024 image in high detail
 * (85 + 4 tiles of 170 = 765), OpenAI's figure for the common case.
 */
export const IMAGE_TOKENS_LOW = 85;
export const IMAGE_TOKENS_HIGH = 765;
/**
 * An audio part's estimate: one token per 1,600 bytes of audio (about 10 tokens a second for
 * 128 kbit/s MP3, the rate OpenAI's audio models count; 16 kHz WAV comes out at 20 a second).
 */
export const AUDIO_BYTES_PER_TOKEN = 1_600;
/** Each tool call in a message and each tool definition adds a little template around its JSON. */
const TOKENS_PER_TOOL_CALL = 3;
const TOKENS_PER_TOOLS_BLOCK = 9;

/** Tokens of the non-text content parts of a message (images, audio). */
function mediaTokens(m: ChatMessage): number {
  if (typeof m.content === 'string' || m.content == null) return 0;
  let total = 0;
  for (const part of m.content) {
    if (part.type === 'image_url') total += part.image_url.detail === 'low' ? IMAGE_TOKENS_LOW : IMAGE_TOKENS_HIGH;
    else if (part.type === 'input_audio') total += Math.max(1, Math.ceil((part.input_audio.data.length * 3) / 4 / AUDIO_BYTES_PER_TOKEN));
  }
  return total;
}

/** Tokens of the tool calls an assistant message carries and of the call id a tool message answers. */
function toolTokens(m: ChatMessage): number {
  let total = m.tool_call_id !== undefined ? countTextTokens(m.tool_call_id) : 0;
  if (m.tool_calls) {
    for (const call of m.tool_calls) {
      total += TOKENS_PER_TOOL_CALL + countTextTokens(call.id) + countTextTokens(call.function.name) + countTextTokens(call.function.arguments);
    }
  }
  return total;
}

/** Tokens of the tool definitions (their JSON, as the model sees them in its prompt); 0 without tools. */
export function countToolsTokens(tools: unknown): number {
  if (!Array.isArray(tools) || tools.length === 0) return 0;
  return TOKENS_PER_TOOLS_BLOCK + countTextTokens(JSON.stringify(tools));
}

/** A role's tokens: roles are a handful of fixed words, each counted once. */
const roleTokens = new Map<string, number>();
function countRoleTokens(role: string): number {
  let n = roleTokens.get(role);
  if (n === undefined) {
    n = countTextTokens(role);
    if (roleTokens.size < 16) roleTokens.set(role, n);
  }
  return n;
}

/** Prompt tokens of a chat request, template overhead, media, tool calls and tool definitions included. */
export function countPromptTokens(messages: readonly ChatMessage[], tools?: unknown): number {
  let total = REPLY_PRIMING_TOKENS + countToolsTokens(tools);
  for (const m of messages) {
    total += TOKENS_PER_MESSAGE + countRoleTokens(m.role) + countTextTokens(messageText(m)) + mediaTokens(m) + toolTokens(m);
    if (m.name !== undefined && m.name !== '') total += TOKENS_PER_NAME + countTextTokens(m.name);
  }
  return total;
}
