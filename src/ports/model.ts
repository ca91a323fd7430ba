// Model port: a backend that turns a chat request into a stream of token deltas.

/** An OpenAI content part, validated at admission (`input_audio` only where the backend takes it). */
export type ContentPart =
  | { type: 'text'; text: string }
  | { type: 'image_url'; image_url: { url: string; detail?: 'auto' | 'low' | 'high' } }
  | { type: 'input_audio'; input_audio: { data: string; format: string } };

/** A tool call the assistant made, as OpenAI shapes it (in a message, and assembled in a request's output). */
export interface ToolCall { id: string; type: 'function'; function: { name: string; arguments: string } }

/** A chat message in OpenAI's shape; forwarded to OpenAI-compatible backends as it is. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string | ContentPart[] | null;
  name?: string;
  /** An assistant message's earlier tool calls. */
  tool_calls?: ToolCall[];
  /** A `tool` message: the call it answers. */
  tool_call_id?: string;
}

/** What a worker asks a model for; already validated and capped by admission. */
export interface ModelRequest {
  model: string;
  messages: ChatMessage[];
  maxTokens: number;
  temperature?: number;
  topP?: number;
  stop?: string[];
  /** Seed for deterministic backends (the simulator); passed through to upstreams that accept it. */
  seed?: number;
  /** Choices to generate (OpenAI `n`); 1 when absent. */
  n?: number;
  /** Whether the caller streams: a backend may serve a non-streaming caller with one non-streaming upstream call. */
  stream?: boolean;
  /**
   * The rest of the chat body, validated at admission and forwarded verbatim to OpenAI-compatible
   * backends: tools, tool_choice, parallel_tool_calls, response_format, logprobs, top_logprobs,
   * frequency_penalty, presence_penalty, logit_bias, user, and vendor fields a backend allows.
   */
  params?: Record<string, unknown>;
  /** W3C traceparent of the model call's span, sent as the `traceparent` header (tracing on). */
  traceparent?: string;
}

/** One fragment of a streamed tool call: `call` is its index within the choice; id and name come with the first fragment. */
export interface ToolCallDelta { call: number; id?: string; name?: string; arguments: string }

/**
 * One piece of the model's answer. `tokens` holds the tokens that arrived together (one read of an
 * upstream stream), in order and never empty, so a burst is handled once rather than per token.
 * The last chunk of a successful stream is `usage`.
 */
export type ModelChunk =
  /** `choice` is the choice index (absent = 0); `logprobs`, when asked for, holds one OpenAI logprobs entry per text. */
  | { type: 'tokens'; texts: string[]; choice?: number; logprobs?: unknown[] }
  | { type: 'tool_calls'; choice?: number; deltas: ToolCallDelta[] }
  /**
   * Which deployment is answering (the router, before that deployment's first chunk): a stream cut
   * before its usage chunk still records who served it.
   */
  | { type: 'served'; deployment: string; model: string }
  | {
    type: 'usage'; promptTokens: number; completionTokens: number;
    /** Choice 0's finish reason; with n > 1, `choices` has every choice's. */
    finishReason: FinishReason;
    choices?: { index: number; finishReason: FinishReason }[];
    /** Whether the backend reported the usage, or it was counted locally (the backend reported none). */
    usageSource?: UsageSource;
    /** Which deployment served the request, and the backend's own model name (set by the router). */
    served?: { deployment: string; model: string };
  };

export type UsageSource = 'reported' | 'counted';

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'cancelled' | 'error';

/** A text embedding request (POST /v1/embeddings), validated at admission. */
export interface EmbeddingRequest { model: string; input: string[]; params?: Record<string, unknown> }
export interface EmbeddingResult { data: { index: number; embedding: number[] | string }[]; promptTokens: number; usageSource: UsageSource; served?: { deployment: string; model: string } }

/** A model failure; `transient` ones are retried with backoff, `permanent` ones fail the request. */
export class ModelError extends Error {
  override readonly name = 'ModelError';
  constructor(
    readonly kind: 'transient' | 'permanent',
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Whether a request for a model could start now: a router knows its deployments' capacity and health. */
export type ModelAvailability =
  | { ok: true }
  /** busy: every usable deployment is at its capacity; unavailable: none is healthy. */
  | { ok: false; reason: 'busy' | 'unavailable'; retryAfterS: number };

export interface ModelBackend {
  /** Streams the answer; aborting `signal` stops the upstream call promptly. Throws ModelError. */
  stream(req: ModelRequest, signal: AbortSignal): AsyncIterable<ModelChunk>;
  /** Embeddings, for backends that serve them; absent = SLUICE_ERR_EMBEDDINGS_UNSUPPORTED. */
  embed?(req: EmbeddingRequest, signal: AbortSignal): Promise<EmbeddingResult>;
  /** Model ids this backend serves (for GET /v1/models and validation). */
  models(): Promise<string[]>;
  /** Whether a request for `model` could start at once (direct mode refuses rather than wait); absent = always. */
  availability?(model: string): ModelAvailability;
  /** Model calls this process may have open at once over every deployment (the sum of their maxConcurrency); absent = unknown. */
  capacity?(): number;
  close(): Promise<void>;
}
