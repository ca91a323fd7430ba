// The playground: pick a model, write a system and a user message, stream the reply live (time to
// first token, tokens per second), cancel, or drop the connection and resume it from Last-Event-ID,
// then check the resumed stream against the stored result: no gap, no duplicate.
//
// Delivery modes: "stream" submits with POST /v1/requests and reads /v1/requests/{id}/events (the
// request runs on a worker, so a dropped connection loses nothing); "direct" streams POST
// /v1/chat/completions in direct mode (the model runs for this connection: dropping it ends the
// request, so there is no resume); "async" submits and polls GET /v1/requests/{id}.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, call, describeError, getJson, openEvents, readSse, type RequestView } from '../api.ts';
import { num } from '../format.ts';

type Mode = 'stream' | 'direct' | 'async';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Run {
  ctl: AbortController | null;
  requestId: string | null;
  lastSeq: number;
  gaps: number[];
  duplicates: number[];
  resumedAt: number[];
  dropping: boolean;
  cancelled: boolean;
  text: string;
  tokens: number;
  sentAt: number;
  firstAt: number | null;
}

const freshRun = (): Run => ({ ctl: null, requestId: null, lastSeq: 0, gaps: [], duplicates: [], resumedAt: [], dropping: false, cancelled: false, text: '', tokens: 0, sentAt: performance.now(), firstAt: null });

export function Playground() {
  const [models, setModels] = useState<string[]>([]);
  const [model, setModel] = useState('');
  const [system, setSystem] = useState('You are a concise assistant.');
  const [prompt, setPrompt] = useState('Tell me about rivers.');
  const [maxTokens, setMaxTokens] = useState(64);
  const [temperature, setTemperature] = useState(0.7);
  const [mode, setMode] = useState<Mode>('stream');
  const [busy, setBusy] = useState(false);
  const [text, setText] = useState('');
  const [stats, setStats] = useState({ tokens: 0, ttftMs: null as number | null, tps: null as number | null });
  const [requestId, setRequestId] = useState<string | null>(null);
  const [log, setLog] = useState<string[]>([]);
  const [report, setReport] = useState<{ ok: boolean; text: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const run = useRef<Run>(freshRun());

  useEffect(() => {
    getJson<{ data: { id: string }[] }>('/v1/models').then((r) => {
      const ids = r.data.map((m) => m.id);
      setModels(ids);
      setModel((m) => m || ids[0] || '');
    }, (e) => setError(describeError(e)));
  }, []);

  const note = (line: string) => setLog((l) => [...l, `${new Date().toLocaleTimeString('en-GB')}  ${line}`]);
  const messages = () => [...(system.trim() ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }];
  const body = () => ({ model, messages: messages(), max_tokens: maxTokens, temperature });

  const onToken = (r: Run, token: string) => {
    const t = performance.now();
    if (r.firstAt === null) r.firstAt = t;
    r.text += token;
    r.tokens += 1;
    const secs = (t - r.firstAt) / 1000;
    setText(r.text);
    setStats({ tokens: r.tokens, ttftMs: Math.round(r.firstAt - r.sentAt), tps: secs > 0 ? r.tokens / secs : null });
  };

  /** Reads the request's events until its terminal event, resuming after every drop from the last sequence seen. */
  async function streamEvents(r: Run, id: string): Promise<{ status: string } | null> {
    for (;;) {
      const ctl = new AbortController();
      r.ctl = ctl;
      try {
        const res = await openEvents(id, r.lastSeq, ctl.signal);
        for await (const f of readSse(res, ctl.signal)) {
          if (f.id !== null) {
            if (f.id <= r.lastSeq) r.duplicates.push(f.id);
            else if (f.id !== r.lastSeq + 1) r.gaps.push(r.lastSeq + 1);
            r.lastSeq = Math.max(r.lastSeq, f.id);
          }
          const data = JSON.parse(f.data) as { token?: string; choice?: number; status?: string; error?: { code: string; message: string }; reason?: string };
          if (f.event === 'token' && (data.choice ?? 0) === 0) onToken(r, data.token ?? '');
          else if (f.event === 'restart') { r.text = ''; setText(''); note(`attempt restarted (${data.reason ?? 'retry'}): the reply starts again`); }
          else if (f.event === 'completed') return { status: 'completed' };
          else if (f.event === 'error') { if (data.error) setError(`${data.error.message} (${data.error.code})`); return { status: data.status ?? 'failed' }; }
        }
      } catch (e) {
        if (!ctl.signal.aborted) throw e;
      }
      if (r.cancelled && !r.dropping) return null;
      // The connection ended before the terminal event: dropped on purpose, or cut (a gateway
      // handing off). Either way, resume from the last sequence seen.
      note(r.dropping ? `connection dropped after seq ${r.lastSeq}` : `stream ended early after seq ${r.lastSeq}`);
      r.dropping = false;
      await sleep(400);
      r.resumedAt.push(r.lastSeq);
      note(`resuming with Last-Event-ID: ${r.lastSeq}`);
    }
  }

  async function runStream(r: Run) {
    const accepted = await getJson<RequestView>('/v1/requests', { method: 'POST', json: body() });
    r.requestId = accepted.request_id;
    setRequestId(accepted.request_id);
    note(`accepted ${accepted.request_id} (${accepted.status})`);
    const end = await streamEvents(r, accepted.request_id);
    if (!end) return;
    note(`request ${end.status} at seq ${r.lastSeq}`);
    const stored = await getJson<RequestView>(`/v1/requests/${encodeURIComponent(accepted.request_id)}`);
    const same = end.status !== 'completed' || stored.result === r.text;
    const clean = r.gaps.length === 0 && r.duplicates.length === 0;
    const resumed = r.resumedAt.length > 0 ? `Resumed at seq ${r.resumedAt.join(', ')}: ` : 'Not resumed: ';
    const seqs = clean ? `no gap, no duplicate (seq 1–${r.lastSeq})` : `gaps at ${r.gaps.join(', ') || 'none'}, duplicates ${r.duplicates.join(', ') || 'none'}`;
    const match = end.status === 'completed' ? (stored.result === r.text ? `; the text matches the stored result (${num(stored.usage?.completion_tokens)} tokens)` : '; the text DIFFERS from the stored result') : '';
    setReport({ ok: clean && same, text: `${resumed}${seqs}${match}.` });
  }

  async function runDirect(r: Run) {
    const ctl = new AbortController();
    r.ctl = ctl;
    try {
      const res = await call('/v1/chat/completions', {
        method: 'POST', signal: ctl.signal, headers: { 'x-sluice-mode': 'direct', accept: 'text/event-stream' },
        json: { ...body(), stream: true, stream_options: { include_usage: true } },
      });
      const id = res.headers.get('x-request-id');
      r.requestId = id;
      setRequestId(id);
      note(`streaming ${id ?? ''} in direct mode`);
      for await (const f of readSse(res, ctl.signal)) {
        if (f.data === '[DONE]') { note('completed'); break; }
        const chunk = JSON.parse(f.data) as { choices?: { index: number; delta?: { content?: string | null }; finish_reason?: string | null }[]; error?: { code: string; message: string } };
        if (chunk.error) { setError(`${chunk.error.message} (${chunk.error.code})`); break; }
        const c = chunk.choices?.find((x) => x.index === 0);
        if (c?.delta?.content) onToken(r, c.delta.content);
        if (c?.finish_reason) note(`finish reason: ${c.finish_reason}`);
      }
    } catch (e) {
      if (!(ctl.signal.aborted && r.cancelled)) throw e;
      note('cancelled: the connection was closed (a direct request ends with it and is billed for what it produced)');
    }
  }

  async function runAsync(r: Run) {
    const accepted = await getJson<RequestView>('/v1/requests', { method: 'POST', json: body() });
    r.requestId = accepted.request_id;
    setRequestId(accepted.request_id);
    let status = accepted.status;
    note(`accepted ${accepted.request_id}: ${status}`);
    for (;;) {
      await sleep(400);
      let v: RequestView;
      try { v = await getJson<RequestView>(`/v1/requests/${encodeURIComponent(accepted.request_id)}`); } catch (e) {
        if (e instanceof ApiError && e.code === 'SLUICE_ERR_RATE_LIMITED') continue;
        throw e;
      }
      if (v.status !== status) { status = v.status; note(`status: ${status}`); }
      if (['completed', 'failed', 'cancelled'].includes(v.status)) {
        r.text = v.result ?? '';
        setText(r.text);
        setStats({ tokens: v.usage?.completion_tokens ?? 0, ttftMs: null, tps: null });
        if (v.error) setError(`${v.error.message} (${v.error.code})`);
        return;
      }
    }
  }

  const send = async (e: Event) => {
    e.preventDefault();
    const r = freshRun();
    run.current = r;
    setBusy(true); setText(''); setError(null); setReport(null); setLog([]); setRequestId(null);
    setStats({ tokens: 0, ttftMs: null, tps: null });
    try {
      if (mode === 'stream') await runStream(r);
      else if (mode === 'direct') await runDirect(r);
      else await runAsync(r);
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  };

  const cancel = async () => {
    const r = run.current;
    r.cancelled = true;
    if (mode === 'direct') { r.ctl?.abort(); return; }
    if (!r.requestId) return;
    try {
      await call(`/v1/requests/${encodeURIComponent(r.requestId)}`, { method: 'DELETE' });
      note('cancel asked for');
    } catch (err) { note(`cancel: ${describeError(err)}`); }
  };

  const drop = () => {
    const r = run.current;
    r.dropping = true;
    r.ctl?.abort();
  };

  return (
    <section>
      <h1 tabIndex={-1}>Playground</h1>
      <form class="playground" onSubmit={send}>
        <div class="grid">
          <div>
            <label for="model">Model</label>
            <select id="model" value={model} onChange={(e) => setModel(e.currentTarget.value)} required>
              {models.map((m) => <option key={m} value={m}>{m}</option>)}
            </select>
          </div>
          <div>
            <label for="max-tokens">max_tokens</label>
            <input id="max-tokens" type="number" min={1} max={100000} value={maxTokens} onInput={(e) => setMaxTokens(Number(e.currentTarget.value))} required />
          </div>
          <div>
            <label for="temperature">Temperature</label>
            <input id="temperature" type="number" min={0} max={2} step={0.1} value={temperature} onInput={(e) => setTemperature(Number(e.currentTarget.value))} required />
          </div>
        </div>
        <fieldset class="modes">
          <legend>Delivery</legend>
          {([['stream', 'Stream (resumable, runs on a worker)'], ['direct', 'Direct stream (runs for this connection)'], ['async', 'Async (submit, then poll the status)']] as [Mode, string][]).map(([value, label]) => (
            <label key={value} class="radio"><input type="radio" name="mode" value={value} checked={mode === value} onChange={() => setMode(value)} /> {label}</label>
          ))}
        </fieldset>
        <label for="system">System message</label>
        <textarea id="system" rows={2} value={system} onInput={(e) => setSystem(e.currentTarget.value)} />
        <label for="prompt">User message</label>
        <textarea id="prompt" rows={3} value={prompt} onInput={(e) => setPrompt(e.currentTarget.value)} required />
        <div class="actions">
          <button type="submit" disabled={busy || !model}>Send</button>
          <button type="button" class="secondary" disabled={!busy} onClick={cancel}>Cancel</button>
          <button type="button" class="secondary" disabled={!busy || mode !== 'stream'} onClick={drop}
            title={mode === 'stream' ? 'Cut the connection and resume from the last event id' : 'Only a resumable stream can be dropped and resumed'}>Drop connection</button>
        </div>
      </form>

      <dl class="stats" aria-label="Stream statistics">
        <div><dt>Request</dt><dd data-testid="request-id">{requestId ? <a href={`#/requests/${encodeURIComponent(requestId)}`}>{requestId}</a> : '—'}</dd></div>
        <div><dt>Tokens</dt><dd data-testid="token-count">{stats.tokens}</dd></div>
        <div><dt>Time to first token</dt><dd>{stats.ttftMs === null ? '—' : `${stats.ttftMs} ms`}</dd></div>
        <div><dt>Tokens per second</dt><dd>{stats.tps === null ? '—' : stats.tps.toFixed(1)}</dd></div>
      </dl>
      <h2>Reply</h2>
      <output class="reply" data-testid="reply" aria-live="polite" aria-busy={busy}>{text}</output>
      {report && <p data-testid="resume-report" class={report.ok ? 'ok' : 'error'} role="status">{report.text}</p>}
      {error && <p role="alert" class="error">{error}</p>}
      {log.length > 0 && <><h2>Events</h2><ol class="log" data-testid="event-log">{log.map((l, i) => <li key={i}>{l}</li>)}</ol></>}
    </section>
  );
}
