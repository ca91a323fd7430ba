// The active health check of an OpenAI-compatible upstream: GET {base}/models. It tells a server
// that is down (connection refused, DNS, TLS, timeout, 5xx) from one that answers, and says why in
// words an operator can act on; the model ids it lists serve the MODEL_URL shorthand's catalogue.
import { request } from 'undici';

export type ProbeResult =
  /** The server answered 2xx; `ids` are the models it listed (maybe none). */
  | { reachable: true; ids: string[] }
  /** The server answered, but not with a list (401 with a wrong key, 404 on servers without the route). */
  | { reachable: true; ids: null; status: number; cause: string }
  /** Nothing usable answered: `cause` names the failure (ECONNREFUSED, a timeout, HTTP 503, …). */
  | { reachable: false; cause: string };

const MAX_BODY_BYTES = 1024 * 1024;

export async function probeModels(baseUrl: string, apiKey: string | undefined, timeoutMs: number): Promise<ProbeResult> {
  const url = `${baseUrl.replace(/\/+$/, '')}/models`;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(url, { method: 'GET', headers, signal: AbortSignal.timeout(timeoutMs), headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  } catch (e) {
    return { reachable: false, cause: describe(e, timeoutMs) };
  }
  try {
    const text = await readBounded(res.body);
    if (res.statusCode >= 500) return { reachable: false, cause: `HTTP ${res.statusCode}` };
    if (res.statusCode < 200 || res.statusCode >= 300) {
      const why = res.statusCode === 401 || res.statusCode === 403 ? ' (the API key was refused: check apiKeyEnv / MODEL_API_KEY)' : '';
      return { reachable: true, ids: null, status: res.statusCode, cause: `HTTP ${res.statusCode}${why}` };
    }
    return { reachable: true, ids: modelIds(text) };
  } catch (e) {
    return { reachable: false, cause: describe(e, timeoutMs) };
  }
}

async function readBounded(body: AsyncIterable<unknown> & { destroy(): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > MAX_BODY_BYTES) { body.destroy(); break; }
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function modelIds(text: string): string[] {
  let json: unknown;
  try { json = JSON.parse(text); } catch { return []; }
  if (typeof json !== 'object' || json === null || !Array.isArray((json as { data?: unknown }).data)) return [];
  return ((json as { data: unknown[] }).data).flatMap((m) =>
    typeof m === 'object' && m !== null && typeof (m as { id?: unknown }).id === 'string' ? [(m as { id: string }).id] : []);
}

/** A failure as an operator reads it: the error code (ECONNREFUSED, ENOTFOUND, …) and message, or the timeout. */
function describe(e: unknown, timeoutMs: number): string {
  const err = e as { name?: string; code?: unknown; message?: string; cause?: unknown };
  if (err?.name === 'TimeoutError' || err?.code === 'UND_ERR_HEADERS_TIMEOUT' || err?.code === 'UND_ERR_BODY_TIMEOUT') return `no answer within ${timeoutMs} ms`;
  const inner = (err?.cause ?? {}) as { code?: unknown; message?: string };
  const code = typeof err?.code === 'string' ? err.code : typeof inner.code === 'string' ? inner.code : undefined;
  const message = err?.message || inner.message || String(e);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}
