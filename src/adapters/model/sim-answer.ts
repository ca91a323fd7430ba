// What the simulated model says, as pure functions of a seed: readable English, JSON that matches
// a requested schema, tool calls with valid arguments, and plausible logprobs. Shared by the
// embedded backend (`sim://`) and, through it, the standalone server (`sluice sim-model`).
import type { ModelRequest } from '../../ports/model.ts';

/** mulberry32: tiny, fast, good enough for text; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a over strings; the seed used when a request brings none, and an embedding's seed. */
export function fnv1a(parts: Iterable<string>): number {
  let h = 0x811c9dc5;
  for (const s of parts) {
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193); }
    h ^= 0xff; h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Choice `index`'s seed: choice 0 keeps the request's, so one choice reads as it always did. */
export function choiceSeed(seed: number, index: number): number {
  return index === 0 ? seed : (seed + Math.imul(index, 0x9e3779b9)) >>> 0;
}

export const VOCABULARY = (
  'the of and to in is that it was for on are with as at be this have from or one had by word but not ' +
  'what all were when we there can an your which their said if do will each about how up out them then ' +
  'she many some so these would other into has more her two like him see time could no make than first ' +
  'been its who now people my made over did down only way find use may water long little very after ' +
  'words called just where most know get through back much before go good new write our used me man ' +
  'too any day same right look think also around another came come work three word must because does ' +
  'part even place well such here take why things help put years different away again off went old ' +
  'number great tell men say small every found still between name should home big give air line set ' +
  'own under read last never us left end along while might next sound below saw something thought both ' +
  'few those always looked show large often together asked house world going want school important ' +
  'until form food keep children feet land side without boy once animals life enough took sometimes ' +
  'four head above kind began almost live page got earth need far hand high year mother light parts ' +
  'country father let night following picture being study second eyes soon times story boys since ' +
  'white days ever paper hard near sentence better best across during today others however sure means ' +
  'knew try told young miles sun ways thing whole hear example heard several change answer room sea ' +
  'against top turned learn point city play toward five using himself usually money seen car morning ' +
  'river garden window bridge mountain music letter question reason simple quiet bright gentle early ' +
  'morning evening summer winter autumn spring road forest village market table kitchen doctor teacher ' +
  'friend family garden idea problem system service stream token request answer model signal window ' +
  'careful quick slow warm cold green blue golden silver open closed ready certain clear strong'
).split(' ');

const SENTENCE_ENDS = ['.', '.', '.', '.', '.', '!', '?'];

/** Endless word pieces forming sentences: "The", " river", " was", ",", " quiet", "." … */
export function* simText(seed: number): Generator<string, never> {
  const random = mulberry32(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  let first = true;
  for (;;) {
    const length = 5 + Math.floor(random() * 12);
    for (let w = 0; w < length; w++) {
      let word = pick(VOCABULARY);
      if (w === 0) word = word.charAt(0).toUpperCase() + word.slice(1);
      yield first ? word : ` ${word}`;
      first = false;
      if (w > 1 && w < length - 2 && random() < 0.08) yield ',';
    }
    yield pick(SENTENCE_ENDS);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A short phrase of `words` words from the vocabulary. */
function phrase(random: () => number, words: number): string {
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(VOCABULARY[Math.floor(random() * VOCABULARY.length)]!);
  return out.join(' ');
}

const MAX_SCHEMA_DEPTH = 4;

/**
 * A value valid against the common subset of JSON Schema (type, properties, required, items,
 * enum, const): an object holds its required properties (all of its properties if none is
 * required, an `answer` if it names none).
 */
export function schemaValue(schema: unknown, random: () => number, depth = 0): unknown {
  const s = isRecord(schema) ? schema : {};
  if (s.const !== undefined) return s.const;
  if (Array.isArray(s.enum) && s.enum.length > 0) return s.enum[Math.floor(random() * s.enum.length)];
  const type = Array.isArray(s.type) ? s.type.find((t) => t !== 'null') : s.type;
  switch (type) {
    case 'string': return phrase(random, 2 + Math.floor(random() * 4));
    case 'integer': return Math.floor(random() * 100);
    case 'number': return Math.round(random() * 10_000) / 100;
    case 'boolean': return random() < 0.5;
    case 'null': return null;
    case 'array': return depth >= MAX_SCHEMA_DEPTH ? [] : [schemaValue(s.items, random, depth + 1)];
    default: {
      const properties = isRecord(s.properties) ? s.properties : {};
      let names = Array.isArray(s.required) ? s.required.filter((r): r is string => typeof r === 'string') : [];
      if (names.length === 0) names = Object.keys(properties);
      if (names.length === 0 || depth >= MAX_SCHEMA_DEPTH) return depth >= MAX_SCHEMA_DEPTH ? {} : { answer: phrase(random, 6) };
      const out: Record<string, unknown> = {};
      for (const name of names) {
        Object.defineProperty(out, name, { value: schemaValue(properties[name] ?? { type: 'string' }, random, depth + 1), enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
  }
}

/** JSON text cut into token-sized pieces (structure, quotes, words) that join back to it. */
export function jsonPieces(text: string): string[] {
  return text.match(/"|[{}[\]:,]|\s?[^\s"{}[\]:,]+|\s+/g) ?? [];
}

/** Argument fragments of a tool call: a few characters each, as real servers stream them. */
export function argumentFragments(args: string, random: () => number): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length;) {
    const size = 3 + Math.floor(random() * 6);
    out.push(args.slice(i, i + size));
    i += size;
  }
  return out.length > 0 ? out : [''];
}

interface FunctionTool { name: string; parameters: unknown }

/**
 * The functions a request makes the model call, or none: with tools and a tool_choice other than
 * `none`, the named function, else the first tool (the first two with parallel_tool_calls: true).
 * When the last message is a tool result, the model answers it in text (as a real model does, so
 * a client's tool loop ends) unless tool_choice forces a call: `required` or a named function.
 */
export function plannedCalls(req: ModelRequest): FunctionTool[] {
  const params = req.params ?? {};
  const tools = Array.isArray(params.tools) ? params.tools : [];
  const functions: FunctionTool[] = [];
  for (const t of tools) {
    if (isRecord(t) && isRecord(t.function) && typeof t.function.name === 'string') functions.push({ name: t.function.name, parameters: t.function.parameters });
  }
  if (functions.length === 0 || params.tool_choice === 'none') return [];
  const choice = params.tool_choice;
  if (isRecord(choice) && isRecord(choice.function)) {
    const named = functions.find((f) => f.name === (choice.function as { name?: unknown }).name);
    return named ? [named] : [];
  }
  if (req.messages.at(-1)?.role === 'tool' && choice !== 'required') return [];
  return params.parallel_tool_calls === true ? functions.slice(0, 2) : functions.slice(0, 1);
}

/** The JSON answer `response_format` asks for, or undefined for plain text. */
export function plannedJson(req: ModelRequest, random: () => number): string | undefined {
  const format = req.params?.response_format;
  if (!isRecord(format)) return undefined;
  if (format.type === 'json_object') return JSON.stringify(schemaValue({}, random));
  if (format.type === 'json_schema' && isRecord(format.json_schema)) return JSON.stringify(schemaValue(format.json_schema.schema ?? {}, random));
  return undefined;
}

/** A tool call id, deterministic per seed, choice and call. */
export function callId(random: () => number): string {
  let id = 'call_';
  for (let i = 0; i < 24; i++) id += 'abcdefghijklmnopqrstuvwxyz0123456789'[Math.floor(random() * 36)];
  return id;
}

/** An OpenAI logprobs `content` entry for `token`, with `top` alternatives (the token itself first). */
export function logprobEntry(token: string, random: () => number, top: number): object {
  const logprob = -Math.round(random() * 250) / 100;
  const alternatives: object[] = [];
  if (top > 0) alternatives.push({ token, logprob, bytes: [...Buffer.from(token, 'utf8')] });
  let next = logprob;
  for (let i = 1; i < top; i++) {
    next -= 0.5 + Math.round(random() * 200) / 100;
    const alt = ` ${VOCABULARY[Math.floor(random() * VOCABULARY.length)]!}`;
    alternatives.push({ token: alt, logprob: Math.round(next * 100) / 100, bytes: [...Buffer.from(alt, 'utf8')] });
  }
  return { token, logprob, bytes: [...Buffer.from(token, 'utf8')], top_logprobs: alternatives };
}

/** A unit vector of `dimensions` numbers, a pure function of the text. */
export function embeddingOf(text: string, dimensions: number): number[] {
  const random = mulberry32(fnv1a([text]));
  const v: number[] = [];
  let norm = 0;
  for (let i = 0; i < dimensions; i++) { const x = random() * 2 - 1; v.push(x); norm += x * x; }
  norm = Math.sqrt(norm) || 1;
  for (let i = 0; i < dimensions; i++) v[i] = v[i]! / norm;
  return v;
}
