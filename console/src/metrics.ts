// The few series the live dashboard reads, parsed from the gateway's own Prometheus text (/metrics).

export interface Sample { labels: Record<string, string>; value: number }

/** Prometheus text exposition → series name → samples (comments and histograms' _bucket lines kept as series too). */
export function parsePrometheus(text: string): Map<string, Sample[]> {
  const out = new Map<string, Sample[]>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    const value = Number(m[3]);
    if (!Number.isFinite(value)) continue;
    const list = out.get(m[1]!) ?? [];
    list.push({ labels, value });
    out.set(m[1]!, list);
  }
  return out;
}

export const sum = (samples: Sample[] | undefined, keep: (l: Record<string, string>) => boolean = () => true): number =>
  (samples ?? []).filter((s) => keep(s.labels)).reduce((a, s) => a + s.value, 0);

/** What one scrape says, in the dashboard's terms. */
export interface Snapshot {
  at: number;
  requests: number;
  tokens: number;
  queueDepth: number;
  streams: number;
  rejections: Record<string, number>;
}

const OPS = new Set(['/metrics', '/healthz', '/readyz']);

export function snapshotOf(text: string, at: number): Snapshot {
  const m = parsePrometheus(text);
  const rejections: Record<string, number> = {};
  for (const s of m.get('sluice_quota_rejections_total') ?? []) rejections[s.labels.reason ?? 'unknown'] = (rejections[s.labels.reason ?? 'unknown'] ?? 0) + s.value;
  return {
    at,
    // API requests only: the dashboard's own scrapes (and probes) are not traffic.
    requests: sum(m.get('sluice_http_requests_total'), (l) => !OPS.has(l.route ?? '')),
    tokens: sum(m.get('ml_tokens_processed_total')),
    queueDepth: sum(m.get('sluice_queue_depth')),
    streams: sum(m.get('sluice_active_streams')),
    rejections,
  };
}

/** Per-second rate between two scrapes (a counter reset, after a restart, counts from zero). */
export const rate = (prev: number, next: number, seconds: number): number => (seconds <= 0 ? 0 : Math.max(0, next >= prev ? next - prev : next) / seconds);
