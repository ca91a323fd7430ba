// The messages a WebSocket client sends to GET /v1/ws, validated with zod like HTTP bodies: a frame
// that is not a JSON object of a known type is answered with a catalogue error, never thrown past
// the socket. A submit's chat body goes through the same parseChatBody as POST /v1/chat/completions.
import { z } from 'zod';
import { fail, parseChatBody, type ChatInput } from '../core/chat-request.ts';
import { SluiceError, isSluiceError } from '../core/errors.ts';
import { assertStorableText } from '../core/text.ts';

const requestId = z.string().min(1).max(256);

const incoming = z.discriminatedUnion('type', [
  z.object({ type: z.literal('submit'), id: z.string().max(256).optional(), request: z.unknown(), idempotency_key: z.string().min(1).max(256).optional() }),
  z.object({ type: z.literal('resume'), request_id: requestId, after: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional() }),
  z.object({ type: z.literal('cancel'), request_id: requestId }),
  z.object({ type: z.literal('auth'), api_key: z.string().min(1).max(1024) }),
]);

type Parsed = z.infer<typeof incoming>;
export type SubmitMessage = Omit<Extract<Parsed, { type: 'submit' }>, 'request'> & { request: ChatInput };
export type IncomingMessage = SubmitMessage | Exclude<Parsed, { type: 'submit' }>;

/** What an error reply can point back to: the client's own id and the request id, when they are strings. */
export interface MessageRef { id?: string; request_id?: string }

/** One frame, parsed: the message, or the catalogue error to answer it with; `ref` names the message either way. */
export type ParsedFrame = { message: IncomingMessage; ref: MessageRef } | { error: SluiceError; ref: MessageRef };

/** Parses one frame into a message or a SLUICE_ERR_BAD_JSON / SLUICE_ERR_VALIDATION (with `param`); never throws. */
export function parseWsMessage(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): ParsedFrame {
  if (isBinary) return { error: new SluiceError('SLUICE_ERR_BAD_JSON', 'Binary frames are not accepted: send JSON as a text frame'), ref: {} };
  let json: unknown;
  try { json = JSON.parse(frameText(data)); } catch (err) {
    return { error: new SluiceError('SLUICE_ERR_BAD_JSON', `Message is not valid JSON: ${(err as Error).message}`), ref: {} };
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return { error: new SluiceError('SLUICE_ERR_VALIDATION', 'A message must be a JSON object with a "type"'), ref: {} };
  }
  const ref = refOf(json as Record<string, unknown>);
  // Every string, not only the chat body's: an idempotency_key is stored with the request.
  try { assertStorableText(json); } catch (err) { return { error: err as SluiceError, ref }; }
  const parsed = incoming.safeParse(json);
  if (!parsed.success) return { error: discriminatorError(parsed.error) ?? toValidationError(parsed.error), ref };
  const m = parsed.data;
  if (m.type !== 'submit') return { message: m, ref };
  try {
    return { message: { ...m, request: parseChatBody(m.request) }, ref };
  } catch (err) {
    return { error: underRequest(err), ref };
  }
}

function frameText(data: Buffer | ArrayBuffer | Buffer[]): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data as ArrayBuffer).toString('utf8');
}

function refOf(o: Record<string, unknown>): MessageRef {
  return {
    ...(typeof o.id === 'string' && { id: o.id.slice(0, 256) }),
    ...(typeof o.request_id === 'string' && { request_id: o.request_id.slice(0, 256) }),
  };
}

/** A missing or unknown `type` reads better as one sentence than as zod's union report. */
function discriminatorError(error: z.ZodError): SluiceError | null {
  const issue = error.issues[0];
  if (issue?.path.length !== 1 || issue.path[0] !== 'type' || issue.code !== 'invalid_union') return null;
  return new SluiceError('SLUICE_ERR_VALIDATION', 'type must be one of submit, resume, cancel, auth', { param: 'type' });
}

function toValidationError(error: z.ZodError): SluiceError {
  try { fail(error); } catch (err) { return err as SluiceError; }
}

/** parseChatBody names fields of the chat body; on a socket they sit under `request`. */
function underRequest(err: unknown): SluiceError {
  if (!isSluiceError(err)) return new SluiceError('SLUICE_ERR_VALIDATION', 'request: invalid chat body', { param: 'request' });
  if (err.code !== 'SLUICE_ERR_VALIDATION') return err;
  if (!err.details?.param) return new SluiceError('SLUICE_ERR_VALIDATION', `request: ${err.message}`, { param: 'request' });
  return new SluiceError('SLUICE_ERR_VALIDATION', `request.${err.message}`, { param: `request.${err.details.param}` });
}
