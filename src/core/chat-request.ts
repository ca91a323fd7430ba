// Validation of OpenAI-shaped chat and completion bodies into one internal request. Every
// failure is SLUICE_ERR_VALIDATION with the offending `param`, as OpenAI reports it; text the
// store cannot hold (NUL, lone surrogates) anywhere in the body is SLUICE_ERR_INVALID_TEXT.
//
// The whole chat surface is validated here and carried on in OpenAI's own names (`params`), so a
// backend receives what the client sent. A top-level field Sluice does not know is not dropped:
// it is kept in `extra` (bounded), and admission forwards it when the model's deployment allows
// passthrough, or refuses it with SLUICE_ERR_UNSUPPORTED_PARAM naming it. Parsing needs no
// catalogue lookup.
import { z } from 'zod';
import type { ChatMessage, ContentPart, ToolCall } from '../ports/model.ts';
import type { DeliveryMode } from '../ports/store.ts';
import { SluiceError } from './errors.ts';
import { assertStorableText } from './text.ts';

/** Most choices one request may ask for (`n`); the reservation is multiplied by it. */
export const MAX_CHOICES = 8;
/** Most tools (or legacy functions) in one request, as OpenAI allows. */
export const MAX_TOOLS = 128;
/** Deepest nesting of a free-form JSON value (a tool's parameters, a JSON schema, a passthrough field). */
export const MAX_JSON_DEPTH = 32;
/** Passthrough fields: at most this many, and this many characters of JSON together. */
export const MAX_EXTRA_FIELDS = 32;
export const MAX_EXTRA_CHARS = 64 * 1024;

const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const functionName = z.string().regex(FUNCTION_NAME, 'must be 1 to 64 letters, digits, underscores or dashes');
const jsonObject = z.record(z.string(), z.unknown());
/** OpenAI treats null as "not given"; so does Sluice. */
const opt = <T extends z.ZodType>(t: T) => t.nullish();

const textPart = z.object({ type: z.literal('text'), text: z.string() });
const imagePart = z.object({
  type: z.literal('image_url'),
  image_url: z.object({
    url: z.string().refine((u) => /^https?:\/\/[^\s]+$/i.test(u) || /^data:[\w.+-]+\/[\w.+-]+(;[\w.+-]+=[\w.+-]+)*;base64,[A-Za-z0-9+/]*={0,2}$/.test(u),
      'must be an http(s) URL or a base64 data: URL'),
    detail: z.enum(['auto', 'low', 'high']).optional(),
  }),
});
const audioPart = z.object({
  type: z.literal('input_audio'),
  input_audio: z.object({
    data: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64'),
    format: z.string().regex(/^[a-z0-9]{1,16}$/, 'must be an audio format such as wav or mp3'),
  }),
});
const contentPart = z.discriminatedUnion('type', [textPart, imagePart, audioPart]);

const toolCall = z.object({
  id: z.string().min(1).max(256),
  type: z.literal('function'),
  function: z.object({ name: functionName, arguments: z.string() }),
});
const legacyCall = z.object({ name: functionName, arguments: z.string() });

const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool', 'function']),
  content: z.union([z.string(), z.array(contentPart)]).nullable().optional(),
  name: z.string().max(64).optional(),
  tool_calls: z.array(toolCall).max(MAX_TOOLS).optional(),
  tool_call_id: z.string().min(1).max(256).optional(),
  /** Legacy: an assistant's function call (translated to tool_calls). */
  function_call: legacyCall.nullish(),
});

const functionSpec = z.object({
  name: functionName,
  description: z.string().optional(),
  parameters: jsonObject.optional(),
  strict: z.boolean().nullish(),
});
const tool = z.object({ type: z.literal('function'), function: functionSpec });
const toolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  z.object({ type: z.literal('function'), function: z.object({ name: functionName }) }),
]);
const responseFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }),
  z.object({ type: z.literal('json_object') }),
  z.object({
    type: z.literal('json_schema'),
    json_schema: z.object({
      name: functionName,
      description: z.string().optional(),
      schema: jsonObject.optional(),
      strict: z.boolean().nullish(),
    }),
  }),
]);

const common = {
  model: z.string().min(1).max(256),
  max_tokens: opt(z.number().int().positive()),
  max_completion_tokens: opt(z.number().int().positive()),
  temperature: opt(z.number().min(0).max(2)),
  top_p: opt(z.number().min(0).max(1)),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullish(),
  seed: opt(z.number().int()),
  stream: opt(z.boolean()),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  n: opt(z.number().int().min(1).max(MAX_CHOICES)),
  user: opt(z.string().max(512)),
  frequency_penalty: opt(z.number().min(-2).max(2)),
  presence_penalty: opt(z.number().min(-2).max(2)),
  logit_bias: opt(z.record(z.string().regex(/^\d{1,10}$/, 'must be a token id'), z.number().min(-100).max(100))
    .refine((b) => Object.keys(b).length <= 1024, 'at most 1024 entries')),
  /** Sluice extension: delivery mode for this request. */
  sluice_mode: z.enum(['queued', 'direct']).optional(),
};

const chatFields = {
  ...common,
  messages: z.array(message).min(1, 'messages must not be empty'),
  tools: opt(z.array(tool).max(MAX_TOOLS)),
  tool_choice: opt(toolChoice),
  parallel_tool_calls: opt(z.boolean()),
  response_format: opt(responseFormat),
  logprobs: opt(z.boolean()),
  top_logprobs: opt(z.number().int().min(0).max(20)),
  /** OpenAI's stored-completion fields and reasoning effort, forwarded for the backends that take them. */
  metadata: opt(z.record(z.string().max(64), z.string().max(512)).refine((m) => Object.keys(m).length <= 16, 'at most 16 entries')),
  store: opt(z.boolean()),
  reasoning_effort: opt(z.enum(['minimal', 'low', 'medium', 'high'])),
  functions: opt(z.array(functionSpec).max(MAX_TOOLS)),
  function_call: opt(z.union([z.enum(['none', 'auto']), z.object({ name: functionName })])),
};
const completionFields = { ...common, prompt: z.union([z.string(), z.array(z.string()).min(1)]) };

const chatSchema = z.object(chatFields);
const completionSchema = z.object(completionFields);
/** Fields of the legacy completions API that have no meaning once the prompt becomes a chat message. */
const COMPLETION_REFUSED = ['echo', 'best_of', 'suffix', 'logprobs'];

/** Chat fields forwarded to the backend under their own names. */
const FORWARDED = ['tools', 'tool_choice', 'parallel_tool_calls', 'response_format', 'logprobs', 'top_logprobs',
  'frequency_penalty', 'presence_penalty', 'logit_bias', 'user', 'metadata', 'store', 'reasoning_effort'] as const;

/** A validated request, before quotas: what admission needs. */
export interface ChatInput {
  model: string;
  messages: ChatMessage[];
  /** Asked-for max_tokens, or undefined to use the tier's cap. */
  maxTokens: number | undefined;
  temperature?: number;
  topP?: number;
  stop?: string[];
  seed?: number;
  /** Choices asked for (OpenAI `n`), only when more than one. */
  n?: number;
  /** Forwarded fields in OpenAI's names (tools, tool_choice, response_format, logprobs, …), only when any. */
  params?: Record<string, unknown>;
  /** Top-level fields Sluice does not know, bounded; admission forwards or refuses them. */
  extra?: Record<string, unknown>;
  stream: boolean;
  includeUsage: boolean;
  mode: DeliveryMode | undefined;
}

/** The first issue of a failed body validation, as the catalogue's validation error naming the field. */
export function fail(error: z.ZodError): never {
  const issue = error.issues[0] && deepest(error.issues[0]);
  const param = issue?.path.join('.') ?? '';
  const message = issue ? `${param ? `${param}: ` : ''}${issue.message}` : 'invalid body';
  throw new SluiceError('SLUICE_ERR_VALIDATION', message, { param: param || undefined });
}

type Issue = z.core.$ZodIssue;

/**
 * A union's issue names the union; the branch that got furthest names the field that is wrong
 * (`messages.0.content.0.image_url.detail`, not `messages.0.content`).
 */
function deepest(issue: Issue): Issue {
  if (issue.code !== 'invalid_union') return issue;
  let best: Issue = issue;
  for (const branch of issue.errors) {
    for (const inner of branch) {
      const candidate = deepest({ ...inner, path: [...issue.path, ...inner.path] } as Issue);
      if (candidate.path.length > best.path.length) best = candidate;
    }
  }
  return best;
}

function invalid(param: string, message: string): never {
  throw new SluiceError('SLUICE_ERR_VALIDATION', `${param}: ${message}`, { param });
}

/** The body as an object whose every string and key is storable text (passthrough fields too). */
function bodyObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new SluiceError('SLUICE_ERR_VALIDATION', 'Request body must be a JSON object');
  assertStorableText(body);
  return body as Record<string, unknown>;
}

/** Whether `value` nests deeper than `limit` objects or arrays; a walk with its own stack. */
function nestsDeeper(value: unknown, limit: number): boolean {
  const stack: { v: unknown; depth: number }[] = [{ v: value, depth: 0 }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    if (typeof item.v !== 'object' || item.v === null) continue;
    if (item.depth >= limit) return true;
    for (const x of Object.values(item.v)) if (typeof x === 'object' && x !== null) stack.push({ v: x, depth: item.depth + 1 });
  }
  return false;
}

function assertDepth(value: unknown, param: string): void {
  if (nestsDeeper(value, MAX_JSON_DEPTH)) invalid(param, `nests deeper than ${MAX_JSON_DEPTH} levels`);
}

/** Unknown top-level fields, bounded in number, nesting and size. */
function extraFields(body: Record<string, unknown>, known: Record<string, unknown>): Record<string, unknown> | undefined {
  let extra: Record<string, unknown> | undefined;
  let count = 0;
  for (const key of Object.keys(body)) {
    if (Object.hasOwn(known, key)) continue;
    if (++count > MAX_EXTRA_FIELDS) invalid(key, `more than ${MAX_EXTRA_FIELDS} fields Sluice does not know`);
    assertDepth(body[key], key);
    extra ??= Object.create(null) as Record<string, unknown>;
    // Defined, not assigned: a field named __proto__ stays a field.
    Object.defineProperty(extra, key, { value: body[key], enumerable: true, writable: true, configurable: true });
  }
  if (extra && JSON.stringify(extra).length > MAX_EXTRA_CHARS) {
    invalid(Object.keys(extra)[0]!, `fields Sluice does not know take more than ${MAX_EXTRA_CHARS} characters`);
  }
  return extra && { ...extra };
}

type ParsedMessage = z.infer<typeof message>;

/** Text-only content becomes a string, as every backend takes; other parts are kept as they are. */
function content(c: ParsedMessage['content']): string | ContentPart[] {
  if (c == null) return '';
  if (typeof c === 'string') return c;
  if (c.every((p) => p.type === 'text')) return c.map((p) => (p as { text: string }).text).join('');
  return c as ContentPart[];
}

/**
 * Messages in OpenAI's current shape: `developer` becomes `system`; a legacy assistant
 * `function_call` becomes a tool call whose id the following `function` message answers.
 */
function chatMessages(parsed: readonly ParsedMessage[]): ChatMessage[] {
  const legacyIds: { name: string; id: string }[] = [];
  return parsed.map((m, i): ChatMessage => {
    const at = `messages.${i}`;
    if (m.tool_calls !== undefined && m.role !== 'assistant') invalid(`${at}.tool_calls`, 'only an assistant message has tool calls');
    if (m.function_call != null && m.role !== 'assistant') invalid(`${at}.function_call`, 'only an assistant message has a function call');
    if (m.tool_call_id !== undefined && m.role !== 'tool') invalid(`${at}.tool_call_id`, 'only a tool message answers a tool call');
    if (Array.isArray(m.content) && m.role !== 'user') {
      const j = m.content.findIndex((p) => p.type !== 'text');
      if (j >= 0) invalid(`${at}.content.${j}`, `a ${m.role} message holds text parts only`);
    }
    const name = m.name !== undefined && m.role !== 'tool' && m.role !== 'function' ? { name: m.name } : {};
    switch (m.role) {
      case 'tool':
        if (m.tool_call_id === undefined) invalid(`${at}.tool_call_id`, 'a tool message needs the id of the call it answers');
        return { role: 'tool', content: content(m.content), tool_call_id: m.tool_call_id };
      case 'function': {
        if (m.name === undefined) invalid(`${at}.name`, 'a function message needs the name of the function');
        const call = legacyIds.find((c) => c.name === m.name) ?? invalid(`${at}.name`, 'a function message must follow an assistant function_call of that name');
        legacyIds.splice(legacyIds.indexOf(call), 1);
        return { role: 'tool', content: content(m.content), tool_call_id: call.id };
      }
      case 'assistant': {
        let calls: ToolCall[] | undefined = m.tool_calls;
        if (m.function_call != null) {
          if (calls !== undefined) invalid(`${at}.function_call`, 'give tool_calls or function_call, not both');
          const id = `call_legacy_${i}`;
          legacyIds.push({ name: m.function_call.name, id });
          calls = [{ id, type: 'function', function: m.function_call }];
        }
        if (calls !== undefined && calls.length > 0) return { role: 'assistant', content: m.content == null ? null : content(m.content), ...name, tool_calls: calls };
        return { role: 'assistant', content: content(m.content), ...name };
      }
      default:
        return { role: m.role === 'developer' ? 'system' : m.role, content: content(m.content), ...name };
    }
  });
}

type ChatBody = z.infer<typeof chatSchema>;

/** The forwarded fields, legacy functions translated to tools; checked against each other. */
function chatParams(b: ChatBody): Record<string, unknown> | undefined {
  const params: Record<string, unknown> = {};
  for (const key of FORWARDED) if (b[key] != null) params[key] = b[key];
  if (b.functions != null) {
    if (b.tools != null) invalid('functions', 'give tools or functions, not both');
    params.tools = b.functions.map((f) => ({ type: 'function', function: f }));
    // A legacy function call is one call per answer.
    params.parallel_tool_calls ??= false;
  }
  if (b.function_call != null) {
    if (b.tool_choice != null) invalid('function_call', 'give tool_choice or function_call, not both');
    params.tool_choice = typeof b.function_call === 'string' ? b.function_call : { type: 'function', function: { name: b.function_call.name } };
  }
  const tools = params.tools as { function: { name: string; parameters?: unknown } }[] | undefined;
  tools?.forEach((t, i) => assertDepth(t.function.parameters, `tools.${i}.function.parameters`));
  const choice = params.tool_choice;
  const choiceParam = b.function_call != null ? 'function_call' : 'tool_choice';
  if (choice !== undefined && choice !== 'none' && choice !== 'auto' && !tools?.length) invalid(choiceParam, 'needs tools');
  if (typeof choice === 'object' && choice !== null) {
    const wanted = (choice as { function: { name: string } }).function.name;
    if (!tools?.some((t) => t.function.name === wanted)) invalid(choiceParam, `names "${wanted}", which is not among the tools`);
  }
  if (b.parallel_tool_calls != null && !tools?.length) invalid('parallel_tool_calls', 'needs tools');
  if (b.top_logprobs != null && b.logprobs !== true) invalid('top_logprobs', 'needs logprobs: true');
  if (b.response_format?.type === 'json_schema') assertDepth(b.response_format.json_schema.schema, 'response_format.json_schema.schema');
  return Object.keys(params).length > 0 ? params : undefined;
}

function shared(b: ChatBody | z.infer<typeof completionSchema>) {
  return {
    model: b.model,
    maxTokens: b.max_completion_tokens ?? b.max_tokens ?? undefined,
    ...(b.temperature != null && { temperature: b.temperature }),
    ...(b.top_p != null && { topP: b.top_p }),
    ...(b.stop != null && { stop: typeof b.stop === 'string' ? [b.stop] : b.stop }),
    ...(b.seed != null && { seed: b.seed }),
    ...(b.n != null && b.n > 1 && { n: b.n }),
    stream: b.stream ?? false,
    includeUsage: b.stream_options?.include_usage ?? false,
    mode: b.sluice_mode,
  };
}

export function parseChatBody(body: unknown): ChatInput {
  const raw = bodyObject(body);
  const parsed = chatSchema.safeParse(raw);
  if (!parsed.success) fail(parsed.error);
  const b = parsed.data;
  const params = chatParams(b);
  const extra = extraFields(raw, chatFields);
  return { ...shared(b), messages: chatMessages(b.messages), ...(params && { params }), ...(extra && { extra }) };
}

export function parseCompletionBody(body: unknown): ChatInput {
  const raw = bodyObject(body);
  for (const key of COMPLETION_REFUSED) {
    if (raw[key] != null) throw new SluiceError('SLUICE_ERR_UNSUPPORTED_PARAM', `${key}: not supported on /v1/completions (use /v1/chat/completions)`, { param: key });
  }
  const parsed = completionSchema.safeParse(raw);
  if (!parsed.success) fail(parsed.error);
  const b = parsed.data;
  const prompt = typeof b.prompt === 'string' ? b.prompt : b.prompt.join('\n');
  const params: Record<string, unknown> = {};
  for (const key of ['frequency_penalty', 'presence_penalty', 'logit_bias', 'user'] as const) if (b[key] != null) params[key] = b[key];
  const extra = extraFields(raw, { ...completionFields, ...Object.fromEntries(COMPLETION_REFUSED.map((k) => [k, null])) });
  return {
    ...shared(b), messages: [{ role: 'user', content: prompt }],
    ...(Object.keys(params).length > 0 && { params }), ...(extra && { extra }),
  };
}

/** The edge quick test: `{"message": "…"}` (optionally model, max_tokens; 128 tokens by default). */
const QUICK_CHAT_MAX_TOKENS = 128;

export function parseQuickChat(body: unknown, defaultModel: string): ChatInput {
  const b = bodyObject(body);
  if (typeof b.message !== 'string' || b.message.length === 0) throw new SluiceError('SLUICE_ERR_VALIDATION', 'message: must be a non-empty string', { param: 'message' });
  return parseChatBody({ model: b.model ?? defaultModel, max_tokens: b.max_tokens ?? QUICK_CHAT_MAX_TOKENS, stream: true, messages: [{ role: 'user', content: b.message }] });
}
