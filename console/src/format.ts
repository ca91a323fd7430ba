// Small display helpers shared by the pages.

export const num = (n: number | null | undefined): string => (n === null || n === undefined ? '—' : n.toLocaleString('en-US'));
export const usd = (n: number | null | undefined): string => (n === null || n === undefined ? '—' : `$${n.toFixed(n < 0.01 && n > 0 ? 6 : 4)}`);
export const when = (iso: string | null | undefined): string => (iso ? new Date(iso).toLocaleString('en-GB', { dateStyle: 'short', timeStyle: 'medium' }) : '—');
export const shortId = (id: string): string => (id.length > 13 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id);
