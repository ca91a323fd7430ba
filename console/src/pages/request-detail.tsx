// One request: its record (GET /v1/requests/{id}) and its event log (the events stream, read to
// its terminal event).
import { useEffect, useState } from 'preact/hooks';
import { describeError, getJson, openEvents, readSse, type RequestView, type SseFrame } from '../api.ts';
import { num, when } from '../format.ts';

export function RequestDetail(props: { id: string }) {
  const [record, setRecord] = useState<RequestView | null>(null);
  const [events, setEvents] = useState<SseFrame[]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const ctl = new AbortController();
    (async () => {
      try {
        setRecord(await getJson<RequestView>(`/v1/requests/${encodeURIComponent(props.id)}`, { signal: ctl.signal }));
        const res = await openEvents(props.id, 0, ctl.signal);
        const got: SseFrame[] = [];
        for await (const f of readSse(res, ctl.signal)) {
          got.push(f);
          setEvents([...got]);
          if (f.event === 'completed' || f.event === 'error') break;
        }
        ctl.abort();
      } catch (e) { if (!ctl.signal.aborted) setError(describeError(e)); }
    })();
    return () => ctl.abort();
  }, [props.id]);
  return (
    <section>
      <h1 tabIndex={-1}>Request <code>{props.id}</code></h1>
      <p><a href="#/usage">Back to my usage</a></p>
      {error && <p role="alert" class="error">{error}</p>}
      {record && (
        <dl class="record">
          <dt>Status</dt><dd><span class={`status status-${record.status}`}>{record.status}</span></dd>
          <dt>Model</dt><dd>{record.model} ({record.mode})</dd>
          <dt>Created</dt><dd>{when(record.created_at)}</dd>
          <dt>Completed</dt><dd>{when(record.completed_at)}</dd>
          <dt>Tokens</dt><dd>{record.usage ? `${num(record.usage.prompt_tokens)} prompt + ${num(record.usage.completion_tokens)} completion` : '—'}</dd>
          <dt>Finish reason</dt><dd>{record.finish_reason ?? '—'}</dd>
          {record.error && <><dt>Error</dt><dd>{record.error.message} ({record.error.code})</dd></>}
          <dt>Result</dt><dd><pre class="reply">{record.result ?? ''}</pre></dd>
        </dl>
      )}
      <h2>Event log</h2>
      <div class="table-wrap">
        <table data-testid="event-table">
          <thead><tr><th scope="col">Seq</th><th scope="col">Event</th><th scope="col">Data</th></tr></thead>
          <tbody>{events.map((e, i) => <tr key={i}><td>{e.id ?? ''}</td><td>{e.event}</td><td><code class="wrap">{e.data}</code></td></tr>)}</tbody>
        </table>
      </div>
    </section>
  );
}
