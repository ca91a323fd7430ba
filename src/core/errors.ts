// The one error catalogue: every failure Sluice reports has a stable code, an HTTP status and an
// OpenAI error `type`. Adapters map their native failures into it in one place; callers match on
// `code`, never on message text.

export type OpenAIErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'service_unavailable';

interface CatalogueEntry { status: number; type: OpenAIErrorType; message: string }

export const catalogue = {
  SLUICE_ERR_BAD_JSON: { status: 400, type: 'invalid_request_error', message: 'Request body is not valid JSON' },
  SLUICE_ERR_BAD_REQUEST: { status: 400, type: 'invalid_request_error', message: 'Malformed HTTP request' },
  SLUICE_ERR_REQUEST_TIMEOUT: { status: 408, type: 'invalid_request_error', message: 'The request (headers or body) was not received in time' },
  SLUICE_ERR_HEADERS_TOO_LARGE: { status: 431, type: 'invalid_request_error', message: 'Request headers are too large' },
  SLUICE_ERR_VALIDATION: { status: 400, type: 'invalid_request_error', message: 'Request body failed validation' },
  SLUICE_ERR_UNSUPPORTED_PARAM: { status: 400, type: 'invalid_request_error', message: 'This parameter is not supported for this model' },
  SLUICE_ERR_INVALID_TEXT: { status: 400, type: 'invalid_request_error', message: 'Text contains a NUL character or an unpaired UTF-16 surrogate' },
  SLUICE_ERR_BODY_TOO_LARGE: { status: 413, type: 'invalid_request_error', message: 'Request body is too large' },
  SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, type: 'invalid_request_error', message: 'Content-Type must be application/json' },
  SLUICE_ERR_UNKNOWN_MODEL: { status: 404, type: 'invalid_request_error', message: 'Unknown model' },
  SLUICE_ERR_MODEL_NOT_ALLOWED: { status: 403, type: 'permission_error', message: 'This API key may not use this model' },
  SLUICE_ERR_WRONG_MODEL_KIND: { status: 400, type: 'invalid_request_error', message: 'This model does not serve this endpoint' },
  SLUICE_ERR_EMBEDDINGS_UNSUPPORTED: { status: 501, type: 'invalid_request_error', message: 'The model backend does not serve embeddings' },
  SLUICE_ERR_MAX_TOKENS_TOO_LARGE: { status: 422, type: 'invalid_request_error', message: 'max_tokens exceeds the limit of your tier' },
  SLUICE_ERR_BAD_LAST_EVENT_ID: { status: 400, type: 'invalid_request_error', message: 'Last-Event-ID must be a non-negative integer' },
  SLUICE_ERR_IDEMPOTENCY_CONFLICT: { status: 409, type: 'invalid_request_error', message: 'Idempotency-Key was reused with a different body' },
  SLUICE_ERR_NOT_FOUND: { status: 404, type: 'not_found_error', message: 'Not found' },
  SLUICE_ERR_REQUEST_NOT_FOUND: { status: 404, type: 'not_found_error', message: 'No such request' },
  SLUICE_ERR_ROUTE_NOT_FOUND: { status: 404, type: 'not_found_error', message: 'No such route' },
  SLUICE_ERR_METHOD_NOT_ALLOWED: { status: 405, type: 'invalid_request_error', message: 'Method not allowed' },
  SLUICE_ERR_UPGRADE_REQUIRED: { status: 426, type: 'invalid_request_error', message: 'This route speaks WebSocket: send Upgrade: websocket' },
  SLUICE_ERR_MISSING_API_KEY: { status: 401, type: 'authentication_error', message: 'Missing API key: send Authorization: Bearer <key>' },
  SLUICE_ERR_INVALID_API_KEY: { status: 401, type: 'authentication_error', message: 'Invalid API key' },
  SLUICE_ERR_REVOKED_API_KEY: { status: 401, type: 'authentication_error', message: 'This API key has been revoked' },
  SLUICE_ERR_USER_INACTIVE: { status: 403, type: 'permission_error', message: 'The user of this API key is deactivated' },
  SLUICE_ERR_ADMIN_REQUIRED: { status: 403, type: 'permission_error', message: 'This route needs an admin key' },
  SLUICE_ERR_ORIGIN_NOT_ALLOWED: { status: 403, type: 'permission_error', message: 'This origin is not allowed' },
  SLUICE_ERR_UNKNOWN_TIER: { status: 400, type: 'invalid_request_error', message: 'Unknown tier' },
  SLUICE_ERR_UNKNOWN_USER: { status: 404, type: 'not_found_error', message: 'Unknown user' },
  SLUICE_ERR_USER_EXISTS: { status: 409, type: 'invalid_request_error', message: 'User already exists' },
  SLUICE_ERR_QUOTA_EXCEEDED: { status: 429, type: 'rate_limit_error', message: 'Quota exceeded' },
  SLUICE_ERR_STREAM_LIMIT: { status: 429, type: 'rate_limit_error', message: 'Too many concurrent streams' },
  SLUICE_ERR_IN_FLIGHT_LIMIT: { status: 429, type: 'rate_limit_error', message: 'Too many requests queued or running' },
  SLUICE_ERR_RATE_LIMITED: { status: 429, type: 'rate_limit_error', message: 'Too many status requests' },
  SLUICE_ERR_TOO_MANY_CONNECTIONS: { status: 503, type: 'service_unavailable', message: 'Too many open connections from this client address' },
  SLUICE_ERR_CONNECTION_LIMIT: { status: 503, type: 'service_unavailable', message: 'This instance holds as many connections as its file descriptors allow; retry shortly' },
  SLUICE_ERR_QUEUE_FULL: { status: 503, type: 'service_unavailable', message: 'Queue is full, retry later' },
  SLUICE_ERR_DRAINING: { status: 503, type: 'service_unavailable', message: 'This instance is shutting down; retry, and another instance will answer' },
  SLUICE_ERR_LIMITER_UNAVAILABLE: { status: 503, type: 'service_unavailable', message: 'Quota service unavailable' },
  SLUICE_ERR_UNAVAILABLE: { status: 503, type: 'service_unavailable', message: 'Service unavailable' },
  SLUICE_ERR_CONSOLE_NOT_BUILT: { status: 503, type: 'service_unavailable', message: 'The web console is not built: run npm run build (npm install runs it too)' },
  SLUICE_ERR_NOT_READY: { status: 503, type: 'service_unavailable', message: 'Not ready' },
  SLUICE_ERR_MODEL_TRANSIENT: { status: 502, type: 'server_error', message: 'Model backend failed (transient)' },
  SLUICE_ERR_MODEL_PERMANENT: { status: 502, type: 'server_error', message: 'Model backend rejected the request' },
  SLUICE_ERR_MODEL_BUSY: { status: 503, type: 'service_unavailable', message: 'Every deployment of this model is at its capacity; retry shortly' },
  SLUICE_ERR_MODEL_UNAVAILABLE: { status: 503, type: 'service_unavailable', message: 'No deployment of this model is healthy now; retry later' },
  SLUICE_ERR_MODEL_TIMEOUT: { status: 504, type: 'server_error', message: 'Model backend timed out' },
  SLUICE_ERR_DEAD_LETTERED: { status: 500, type: 'server_error', message: 'Request failed after its last attempt' },
  SLUICE_ERR_CANCELLED: { status: 499, type: 'invalid_request_error', message: 'Request was cancelled' },
  SLUICE_ERR_CLIENT_ABORTED: { status: 499, type: 'invalid_request_error', message: 'The client closed the connection before the request was read' },
  SLUICE_ERR_NOT_CANCELLABLE: { status: 409, type: 'invalid_request_error', message: 'Request has already finished' },
  SLUICE_ERR_CONTENT_BLOCKED: { status: 422, type: 'invalid_request_error', message: 'Content inspection stopped this answer' },
  SLUICE_ERR_PROMPT_BLOCKED: { status: 422, type: 'invalid_request_error', message: 'Content inspection refused this prompt' },
  SLUICE_ERR_INSPECTION_FAILED: { status: 503, type: 'service_unavailable', message: 'The content inspector gave no verdict; the answer was withheld' },
  SLUICE_ERR_CONFIG: { status: 500, type: 'server_error', message: 'Invalid configuration' },
  SLUICE_ERR_INTERNAL: { status: 500, type: 'server_error', message: 'Internal error' },
} as const satisfies Record<string, CatalogueEntry>;

export type ErrorCode = keyof typeof catalogue;

/** A failure with a stable catalogue code; `details` are safe to show the client. */
export class SluiceError extends Error {
  override readonly name = 'SluiceError';
  readonly status: number;
  readonly type: OpenAIErrorType;
  constructor(
    readonly code: ErrorCode,
    message?: string,
    readonly details?: { param?: string; headers?: Record<string, string>; [k: string]: unknown },
    options?: { cause?: unknown },
  ) {
    super(message ?? catalogue[code].message, options);
    this.status = catalogue[code].status;
    this.type = catalogue[code].type;
  }

  /** The OpenAI-shaped JSON body. */
  toJSON(): { error: { code: ErrorCode; message: string; type: OpenAIErrorType; param: string | null } } {
    return { error: { code: this.code, message: this.message, type: this.type, param: this.details?.param ?? null } };
  }
}

export function isSluiceError(e: unknown, code?: ErrorCode): e is SluiceError {
  return e instanceof SluiceError && (code === undefined || e.code === code);
}
