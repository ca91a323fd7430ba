// Headers every response carries, whatever writes it (a route, the error handler, an SSE stream
// or a raw socket answer).

/**
 * nosniff: a JSON error must never be read as HTML or script. no-store: every API response is
 * about one caller (keys, quota, results), so no browser or proxy may keep a copy; a route that
 * needs another policy (SSE) sets its own cache-control over this default.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
});
