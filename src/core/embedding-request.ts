// Validation of an OpenAI-shaped embeddings body (POST /v1/embeddings). Inputs are text: a string
// or an array of strings. Token arrays (OpenAI also takes arrays of token ids) are refused with a
// 400 naming `input`: their ids belong to one tokenizer, and a gateway in front of several
// backends cannot know which one, nor count them against the quota as the backend would.
import { z } from 'zod';
import { fail } from './chat-request.ts';
import { SluiceError } from './errors.ts';
import { assertStorableText } from './text.ts';

/** Inputs in one request, as OpenAI allows. */
export const MAX_EMBEDDING_INPUTS = 2048;

const schema = z.object({
  model: z.string().min(1).max(256),
  input: z.union([
    z.string().min(1, 'input must not be an empty string'),
    z.array(z.string().min(1, 'input must not contain an empty string')).min(1, 'input must not be empty').max(MAX_EMBEDDING_INPUTS, `input holds at most ${MAX_EMBEDDING_INPUTS} strings`),
  ]),
  encoding_format: z.enum(['float', 'base64']).optional(),
  dimensions: z.number().int().positive().max(65_536).optional(),
  user: z.string().max(256).optional(),
});

const FIELDS = new Set(['model', 'input', 'encoding_format', 'dimensions', 'user']);

/** A validated embeddings request, before quotas. */
export interface EmbeddingInput {
  model: string;
  input: string[];
  /** encoding_format, dimensions and user, forwarded to the backend as given. */
  params: Record<string, unknown>;
}

/** Whether `input` is OpenAI's token form: an array of integers, or an array of such arrays. */
function isTokenArray(input: unknown): boolean {
  if (!Array.isArray(input) || input.length === 0) return false;
  return input.every((x) => typeof x === 'number') || input.every((x) => Array.isArray(x));
}

export function parseEmbeddingBody(body: unknown): EmbeddingInput {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new SluiceError('SLUICE_ERR_VALIDATION', 'Request body must be a JSON object');
  assertStorableText(body);
  const b = body as Record<string, unknown>;
  for (const field of Object.keys(b)) {
    if (!FIELDS.has(field)) throw new SluiceError('SLUICE_ERR_VALIDATION', `${field}: not supported by POST /v1/embeddings (supported: ${[...FIELDS].join(', ')})`, { param: field });
  }
  if (isTokenArray(b.input)) {
    throw new SluiceError('SLUICE_ERR_VALIDATION', 'input: token arrays are not supported; send the text, as a string or an array of strings', { param: 'input' });
  }
  const parsed = schema.safeParse(b);
  if (!parsed.success) fail(parsed.error);
  const { model, input, encoding_format, dimensions, user } = parsed.data;
  return {
    model,
    input: typeof input === 'string' ? [input] : input,
    params: {
      ...(encoding_format !== undefined && { encoding_format }),
      ...(dimensions !== undefined && { dimensions }),
      ...(user !== undefined && { user }),
    },
  };
}
