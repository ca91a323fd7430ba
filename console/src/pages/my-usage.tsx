// My usage: the four quota windows as bars (settled, reserved, remaining, reset), the per-request
// and stream limits, tokens per day for the month as a chart, and my requests, newest first, in
// pages (GET /v1/requests), each linking to its record and event log.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { describeError, getJson, type Page, type RequestView, type Usage, type UsageWindow } from '../api.ts';
import { barPaths, Chart } from '../chart.tsx';
import { num, usd, when } from '../format.ts';

export function WindowBar(props: { w: UsageWindow }) {
  const { w } = props;
  const settled = Math.max(0, w.used - w.reserved);
  const pct = (n: number) => (w.limit > 0 ? Math.min(100, (n / w.limit) * 100) : 0);
  const title = `${w.window === 'daily' ? 'Today' : 'This month'}: ${w.metric}`;
  const summary = `${num(w.used)} of ${num(w.limit)} used (${num(w.reserved)} reserved by requests in flight), ${num(w.remaining)} remaining; resets ${when(w.reset_at)}`;
  return (
    <div class="window" data-testid={`window-${w.window}-${w.metric}`}>
      <div class="window-head"><strong>{title}</strong><span>{num(w.used)} / {num(w.limit)}</span></div>
      <div class="bar" role="img" aria-label={`${title}: ${summary}`}>
        <span class="settled" style={{ width: `${pct(settled)}%` }} />
        <span class="reserved" style={{ width: `${pct(w.reserved)}%` }} />
      </div>
      <p class="small">{summary}</p>
    </div>
  );
}

/** Tokens per day of the month so far, from the usage answer's `daily` (missing days are 0). */
export function DailyChart(props: { usage: Usage }) {
  const { usage } = props;
  const [data, options] = useMemo(() => {
    const tz = usage.time_zone ?? 'UTC';
    const today = Number(new Intl.DateTimeFormat('en-GB', { timeZone: tz, day: 'numeric' }).format(new Date(usage.spend.to)));
    const byDay = new Map(usage.daily.map((d) => [Number(d.day.slice(8, 10)), d.tokens]));
    const days = Array.from({ length: Math.max(today, ...byDay.keys()) }, (_, i) => i + 1);
    const d: [number[], number[]] = [days, days.map((x) => byDay.get(x) ?? 0)];
    const o = {
      scales: { x: { time: false, range: (): [number, number] => [0.5, days.length + 0.5] } },
      legend: { show: false },
      axes: [
        { label: `Day of ${usage.spend.period}`, incrs: [1, 2, 5, 7, 10], values: (_u: unknown, ticks: number[]) => ticks.map((t) => (Number.isInteger(t) ? String(t) : '')) },
        { label: 'Tokens', size: 60 },
      ],
      series: [{}, { label: 'Tokens', fill: '#3b6fd8', stroke: '#2451b3', paths: barPaths, points: { show: false } }],
    };
    return [d, o];
  }, [usage]);
  return (
    <>
      <Chart label={`Tokens per day in ${usage.spend.period}`} data={data} options={options} />
      <details>
        <summary>Tokens per day as a table</summary>
        <table><thead><tr><th scope="col">Day</th><th scope="col">Requests</th><th scope="col">Tokens</th></tr></thead>
          <tbody>{usage.daily.map((d) => <tr key={d.day}><td>{d.day}</td><td>{num(d.requests)}</td><td>{num(d.tokens)}</td></tr>)}</tbody></table>
      </details>
    </>
  );
}

export function RequestTable(props: { rows: RequestView[]; costs?: Map<string, number | null>; showUser?: boolean }) {
  return (
    <div class="table-wrap">
      <table data-testid="requests-table">
        <thead><tr>
          <th scope="col">Created</th><th scope="col">Request</th>{props.showUser && <th scope="col">User</th>}<th scope="col">Model</th>
          <th scope="col">Status</th><th scope="col">Tokens</th>{props.costs && <th scope="col">Cost</th>}
        </tr></thead>
        <tbody>
          {props.rows.map((r) => (
            <tr key={r.request_id}>
              <td>{when(r.created_at)}</td>
              <td><a href={`#/requests/${encodeURIComponent(r.request_id)}`}>{r.request_id}</a></td>
              {props.showUser && <td>{r.user_id}</td>}
              <td>{r.model}</td>
              <td><span class={`status status-${r.status}`}>{r.status}</span></td>
              <td>{r.usage ? num(r.usage.total_tokens) : '—'}</td>
              {props.costs && <td>{usd(props.costs.get(r.request_id))}</td>}
            </tr>
          ))}
          {props.rows.length === 0 && <tr><td colSpan={7}>No requests.</td></tr>}
        </tbody>
      </table>
    </div>
  );
}

/** A paged request list: first page, then "Older" follows next_before. */
export function usePagedRequests(base: string) {
  const [rows, setRows] = useState<RequestView[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = async (before: string | null) => {
    try {
      const sep = base.includes('?') ? '&' : '?';
      const page = await getJson<Page<RequestView>>(`${base}${before ? `${sep}before=${encodeURIComponent(before)}` : ''}`);
      setRows((r) => (before ? [...r, ...page.data] : page.data));
      setNext(page.next_before);
      setError(null);
    } catch (e) { setError(describeError(e)); }
  };
  useEffect(() => { void load(null); }, [base]);
  return { rows, next, error, more: () => load(next), reload: () => load(null) };
}

export function MyUsage() {
  const [usage, setUsage] = useState<Usage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const requests = usePagedRequests('/v1/requests?limit=20');
  const reload = () => { getJson<Usage>('/v1/usage').then(setUsage, (e) => setError(describeError(e))); void requests.reload(); };
  useEffect(() => { getJson<Usage>('/v1/usage').then(setUsage, (e) => setError(describeError(e))); }, []);
  const costs = useMemo(() => new Map((usage?.recent ?? []).map((r) => [r.request_id, r.cost_usd])), [usage]);
  return (
    <section>
      <h1 tabIndex={-1}>My usage</h1>
      {error && <p role="alert" class="error">{error}</p>}
      {usage && (
        <>
          <p>User <strong data-testid="usage-user">{usage.user_id}</strong>, tier <strong>{usage.tier}</strong>{usage.time_zone && <> (quota days in {usage.time_zone})</>}. <button type="button" class="secondary small" onClick={reload}>Refresh</button></p>
          {usage.unlimited ? <p>This key has no quota windows (master key).</p> : (
            <div class="windows">{usage.windows.map((w) => <WindowBar key={`${w.window}-${w.metric}`} w={w} />)}</div>
          )}
          {usage.limits && <p data-testid="limits">Concurrent streams in use: <strong>{num(usage.streams_in_use ?? 0)} of {num(usage.limits.concurrent_streams)}</strong>. Per request at most {num(usage.limits.max_tokens)} tokens; priority {usage.limits.priority}.</p>}
          <p>Spent this month: <strong>{usd(usage.spend.total_usd)}</strong> (priced models only).</p>
          <h2>Tokens per day</h2>
          <DailyChart usage={usage} />
        </>
      )}
      <h2>My requests</h2>
      {requests.error && <p role="alert" class="error">{requests.error}</p>}
      <RequestTable rows={requests.rows} costs={costs} />
      {requests.next && <button type="button" class="secondary" onClick={requests.more}>Older requests</button>}
    </section>
  );
}
