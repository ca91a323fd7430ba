// Live: the gateway's own metrics (GET /metrics, Prometheus text), scraped every few seconds:
// requests/s and tokens/s (rates between scrapes), queue depth, streams open, and admissions
// refused by reason. Numbers are this gateway process's: behind a load balancer, each instance
// shows its own.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { errorOf } from '../api.ts';
import { Chart } from '../chart.tsx';
import { num } from '../format.ts';
import { rate, snapshotOf, type Snapshot } from '../metrics.ts';

const HISTORY = 60;

export function Live() {
  const [every, setEvery] = useState(3);
  const [paused, setPaused] = useState(false);
  const [latest, setLatest] = useState<{ snap: Snapshot; rps: number; tps: number; rejected: Record<string, number> } | null>(null);
  const [history, setHistory] = useState<[number[], number[], number[]]>([[], [], []]);
  const [error, setError] = useState<string | null>(null);
  const prev = useRef<Snapshot | null>(null);

  useEffect(() => {
    if (paused) return undefined;
    let stopped = false;
    const scrape = async () => {
      try {
        const res = await fetch('/metrics', { cache: 'no-store' });
        if (!res.ok) throw await errorOf(res);
        const snap = snapshotOf(await res.text(), Date.now() / 1000);
        if (stopped) return;
        const p = prev.current;
        prev.current = snap;
        setError(null);
        if (!p) { setLatest({ snap, rps: 0, tps: 0, rejected: {} }); return; }
        const dt = snap.at - p.at;
        const rps = rate(p.requests, snap.requests, dt);
        const tps = rate(p.tokens, snap.tokens, dt);
        const rejected = Object.fromEntries(Object.entries(snap.rejections).map(([k, v]) => [k, rate(p.rejections[k] ?? 0, v, dt)]));
        setLatest({ snap, rps, tps, rejected });
        setHistory(([t, r, k]) => [[...t, snap.at].slice(-HISTORY), [...r, rps].slice(-HISTORY), [...k, tps].slice(-HISTORY)]);
      } catch (e) { if (!stopped) setError(e instanceof Error ? e.message : String(e)); }
    };
    void scrape();
    const timer = setInterval(scrape, every * 1000);
    return () => { stopped = true; clearInterval(timer); };
  }, [every, paused]);

  const options = useMemo(() => ({
    scales: { x: { time: true }, rps: { auto: true }, tps: { auto: true } },
    axes: [{}, { scale: 'rps', label: 'requests/s', size: 60 }, { scale: 'tps', side: 1, label: 'tokens/s', size: 60, grid: { show: false } }],
    series: [{}, { label: 'requests/s', scale: 'rps', stroke: '#2451b3', width: 2 }, { label: 'tokens/s', scale: 'tps', stroke: '#b35a00', width: 2 }],
  }), []);
  const s = latest?.snap;
  return (
    <section>
      <h1 tabIndex={-1}>Live</h1>
      <div class="inline">
        <div><label for="every">Refresh every</label>
          <select id="every" value={every} onChange={(e) => setEvery(Number(e.currentTarget.value))}>{[2, 3, 5, 10].map((n) => <option key={n} value={n}>{n} s</option>)}</select></div>
        <button type="button" class="secondary" onClick={() => setPaused(!paused)} aria-pressed={paused}>{paused ? 'Resume' : 'Pause'}</button>
      </div>
      {error && <p role="alert" class="error">Could not read /metrics: {error}</p>}
      <dl class="tiles" aria-live="polite" data-testid="live-tiles">
        <div><dt>Requests/s</dt><dd data-testid="requests-per-second">{latest ? latest.rps.toFixed(2) : '—'}</dd></div>
        <div><dt>Tokens/s</dt><dd data-testid="tokens-per-second">{latest ? latest.tps.toFixed(1) : '—'}</dd></div>
        <div><dt>Queue depth</dt><dd data-testid="queue-depth">{s ? num(s.queueDepth) : '—'}</dd></div>
        <div><dt>Streams open</dt><dd>{s ? num(s.streams) : '—'}</dd></div>
      </dl>
      <h2>Requests and tokens per second</h2>
      {history[0].length > 1 ? <Chart label="Requests per second and tokens per second over the last scrapes" data={history} options={options} /> : <p>Collecting (two scrapes make a rate)…</p>}
      <h2>Admissions refused</h2>
      <div class="table-wrap">
        <table data-testid="rejections">
          <thead><tr><th scope="col">Reason</th><th scope="col">Since start</th><th scope="col">Per second now</th></tr></thead>
          <tbody>
            {s && Object.entries(s.rejections).map(([reason, total]) => <tr key={reason}><td>{reason}</td><td>{num(total)}</td><td>{(latest?.rejected[reason] ?? 0).toFixed(2)}</td></tr>)}
            {s && Object.keys(s.rejections).length === 0 && <tr><td colSpan={3}>None since this gateway started.</td></tr>}
          </tbody>
        </table>
      </div>
      <p class="hint">From this gateway's <code>/metrics</code>; with several instances, each shows its own. Prometheus and the Grafana dashboard in deploy/ show the whole fleet.</p>
    </section>
  );
}
