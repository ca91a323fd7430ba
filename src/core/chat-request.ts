// Validation of OpenAI-shaped chat and completion bodies into one internal request. Every
// failure is SLUICE_ERR_VALIDATION with the offending `param`, as OpenAI reports it; text the
// store cannot hold (NUL, lone surrogates) anywhere in the body is SLUICE_ERR_INVALID_TEXT.
import { z } from 'zod';
import type { ChatMessage } from '../ports/model.ts';
import type { DeliveryMode } from '../ports/store.ts';
import { SluiceError } from './errors.ts';
import { assertStorableText } from './text.ts';

const textPart = z.object({ type: z.literal('text'), text: z.string() });
const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(textPart)]).nullable().optional(),
  name: z.string().max(64).optional(),
});

const common = {
  model: z.string().min(1).max(256),
  max_tokens: z.number().int().positive().optional(),
  max_completion_tokens: z.number().int().positive().optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().min(0).max(1).optional(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullable().optional(),
  seed: z.number().int().optional(),
  stream: z.boolean().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
  user: z.string().optional(),
  /** Sluice extension: delivery mode for this request. */
  sluice_mode: z.enum(['queued', 'direct']).optional(),
};

const chatSchema = z.object({ ...common, messages: z.array(message).min(1, 'messages must not be empty') }).passthrough();
const completionSchema = z.object({ ...common, prompt: z.union([z.string(), z.array(z.string()).min(1)]) }).passthrough();

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
  stream: boolean;
  includeUsage: boolean;
  mode: DeliveryMode | undefined;
}

/** The first issue of a failed body validation, as the catalogue's validation error naming the field. */
export function fail(error: z.ZodError): never {
  const issue = error.issues[0];
  const param = issue?.path.join('.') ?? '';
  const message = issue ? `${param ? `${param}: ` : ''}${issue.message}` : 'invalid body';
  throw new SluiceError('SLUICE_ERR_VALIDATION', message, { param: param || undefined });
}

/** The body as an object whose every string and key is storable text (passthrough fields too). */
function bodyObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new SluiceError('SLUICE_ERR_VALIDATION', 'Request body must be a JSON object');
  assertStorableText(body);
  return body as Record<string, unknown>;
}

function contentText(content: string | { type: 'text'; text: string }[] | null | undefined): string {
  if (content == null) return '';
  return typeof content === 'string' ? content : content.map((p) => p.text).join('');
}

function shared(b: z.infer<typeof chatSchema> | z.infer<typeof completionSchema>) {
  return {
    model: b.model,
    maxTokens: b.max_completion_tokens ?? b.max_tokens,
    ...(b.temperature !== undefined && { temperature: b.temperature }),
    ...(b.top_p !== undefined && { topP: b.top_p }),
    ...(b.stop != null && { stop: typeof b.stop === 'string' ? [b.stop] : b.stop }),
    ...(b.seed !== undefined && { seed: b.seed }),
    stream: b.stream ?? false,
    includeUsage: b.stream_options?.include_usage ?? false,
    mode: b.sluice_mode,
  };
}

export function parseChatBody(body: unknown): ChatInput {
  const parsed = chatSchema.safeParse(bodyObject(body));
  if (!parsed.success) fail(parsed.error);
  const b = parsed.data;
  const messages: ChatMessage[] = b.messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: contentText(m.content),
    ...(m.name !== undefined && { name: m.name }),
  }));
  return { ...shared(b), messages };
}

export function parseCompletionBody(body: unknown): ChatInput {
  const parsed = completionSchema.safeParse(bodyObject(body));
  if (!parsed.success) fail(parsed.error);
  const b = parsed.data;
  const prompt = typeof b.prompt === 'string' ? b.prompt : b.prompt.join('\n');
  return { ...shared(b), messages: [{ role: 'user', content: prompt }] };
}

/** The edge quick test: `{"message": "…"}` (optionally model, max_tokens; 128 tokens by default). */
const QUICK_CHAT_MAX_TOKENS = 128;

export function parseQuickChat(body: unknown, defaultModel: string): ChatInput {
  const b = bodyObject(body);
  if (typeof b.message !== 'string' || b.message.length === 0) throw new SluiceError('SLUICE_ERR_VALIDATION', 'message: must be a non-empty string', { param: 'message' });
  return parseChatBody({ model: b.model ?? defaultModel, max_tokens: b.max_tokens ?? QUICK_CHAT_MAX_TOKENS, stream: true, messages: [{ role: 'user', content: b.message }] });
}
