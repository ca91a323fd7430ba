// The console's only door to the gateway: same-origin fetch with the API key as a bearer header
// (never in a URL), errors as the catalogue's { error: { code, message } }, and a fetch-based SSE
// reader (EventSource cannot send Authorization) that resumes with Last-Event-ID.

const KEY_ITEM = 'sluice.console.key';
const ADMIN_ITEM = 'sluice.console.admin';

/** The signed-in key lives in sessionStorage: gone when the tab closes, never written to a URL. */
export const session = {
  get key(): string | null { return sessionStorage.getItem(KEY_ITEM); },
  get admin(): boolean { return sessionStorage.getItem(ADMIN_ITEM) === '1'; },
  set(key: string, admin: boolean): void { sessionStorage.setItem(KEY_ITEM, key); sessionStorage.setItem(ADMIN_ITEM, admin ? '1' : '0'); },
  clear(): void { sessionStorage.removeItem(KEY_ITEM); sessionStorage.removeItem(ADMIN_ITEM); },
};

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); }
}

export interface CallInit { method?: string; json?: unknown; headers?: Record<string, string>; signal?: AbortSignal; key?: string }

/** A fetch of the gateway with the session's key (or init.key); throws ApiError on a non-2xx answer. */
export async function call(path: string, init: CallInit = {}): Promise<Response> {
  const headers: Record<string, string> = { ...init.headers };
  const key = init.key ?? session.key;
  if (key) headers.authorization = `Bearer ${key}`;
  let body: string | undefined;
  if (init.json !== undefined) { headers['content-type'] = 'application/json'; body = JSON.stringify(init.json); }
  const res = await fetch(path, { method: init.method ?? 'GET', headers, body, signal: init.signal, cache: 'no-store' });
  if (!res.ok) throw await errorOf(res);
  return res;
}

export async function errorOf(res: Response): Promise<ApiError> {
  try {
    const j = await res.json() as { error?: { code?: string; message?: string } };
    return new ApiError(res.status, j.error?.code ?? `HTTP_${res.status}`, j.error?.message ?? res.statusText);
  } catch {
    return new ApiError(res.status, `HTTP_${res.status}`, res.statusText);
  }
}

export async function getJson<T>(path: string, init: CallInit = {}): Promise<T> {
  return await (await call(path, init)).json() as T;
}

export const describeError = (e: unknown): string => (e instanceof ApiError ? `${e.message} (${e.code})` : e instanceof Error ? e.message : String(e));

export interface SseFrame { id: number | null; event: string; data: string }

/**
 * Reads an SSE response frame by frame until it ends or `signal` aborts. Comments (pings) are
 * skipped; `id:` is kept as a number (Sluice's ids are log sequence numbers).
 */
export async function* readSse(res: Response, signal?: AbortSignal): AsyncGenerator<SseFrame> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => { void reader.cancel().catch(() => {}); };
  signal?.addEventListener('abort', onAbort, { once: true });
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, '\n');
      let i: number;
      while ((i = buf.indexOf('\n\n')) !== -1) {
        const raw = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const frame: SseFrame = { id: null, event: 'message', data: '' };
        let hasData = false;
        for (const line of raw.split('\n')) {
          if (line.startsWith(':') || line === '') continue;
          const colon = line.indexOf(':');
          const field = colon === -1 ? line : line.slice(0, colon);
          const value2 = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'id' && /^\d+$/.test(value2)) frame.id = Number(value2);
          else if (field === 'event') frame.event = value2;
          else if (field === 'data') { frame.data += (hasData ? '\n' : '') + value2; hasData = true; }
        }
        if (hasData) yield frame;
      }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** A request's native event stream after `lastEventId` (0 = from the start). */
export async function openEvents(requestId: string, lastEventId: number, signal: AbortSignal): Promise<Response> {
  return call(`/v1/requests/${encodeURIComponent(requestId)}/events`, {
    signal, headers: { accept: 'text/event-stream', ...(lastEventId > 0 && { 'last-event-id': String(lastEventId) }) },
  });
}

// -- shapes of the API answers the console reads ------------------------------------------------

export interface RequestView {
  request_id: string; status: string; model: string; mode: string; attempt: number; result: string | null;
  finish_reason: string | null; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  error: { code: string; message: string } | null; created_at: string; completed_at: string | null; user_id?: string;
}
export interface Page<T> { object: 'list'; data: T[]; has_more: boolean; next_before: string | null }
export interface UsageWindow { window: 'daily' | 'monthly'; metric: 'requests' | 'tokens'; period: string; limit: number; used: number; reserved: number; remaining: number; reset_at: string }
export interface Usage {
  user_id: string; tier: string; time_zone?: string; unlimited?: boolean;
  limits?: { max_tokens: number; concurrent_streams: number; priority: number };
  windows: UsageWindow[];
  streams_in_use?: number;
  recent: { request_id: string; model: string; status: string; charged_tokens: number; cost_usd: number | null; settled_at: string }[];
  daily: { day: string; requests: number; tokens: number }[];
  spend: { period: string; from: string; to: string; total_usd: number | null };
}
export interface UserView { id: string; name: string | null; email: string | null; tier: string; active: boolean; created_at: string }
export interface KeyView { id: string; user_id: string; prefix: string; name: string | null; admin: boolean; models: string[] | null; created_at: string; revoked_at: string | null }
export type Tier = Record<string, number | string[] | null | undefined>;
