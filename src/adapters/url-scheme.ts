// The scheme of an adapter URL, as every factory reads it: lower case, without the colon, '' if none.
export function urlScheme(url: string): string {
  return /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase() ?? '';
}

/** The URL with its password masked, for logs, banners and error messages; the rest unchanged. */
export function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):([^@/]+)@/, '//$1:***@');
}
