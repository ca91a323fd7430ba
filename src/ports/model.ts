// Model port: a backend that turns a chat request into a stream of token deltas.

export interface ChatMessage { role: 'system' | 'user' | 'assistant' | 'tool'; content: string; name?: string }

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
}

/**
 * One piece of the model's answer. `tokens` holds the tokens that arrived together (one read of an
 * upstream stream), in order and never empty, so a burst is handled once rather than per token.
 * The last chunk of a successful stream is `usage`.
 */
export type ModelChunk =
  | { type: 'tokens'; texts: string[] }
  | { type: 'usage'; promptTokens: number; completionTokens: number; finishReason: FinishReason };

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

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

export interface ModelBackend {
  /** Streams the answer; aborting `signal` stops the upstream call promptly. Throws ModelError. */
  stream(req: ModelRequest, signal: AbortSignal): AsyncIterable<ModelChunk>;
  /** Model ids this backend serves (for GET /v1/models and validation). */
  models(): Promise<string[]>;
  close(): Promise<void>;
}
