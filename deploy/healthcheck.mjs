// Container health check (Dockerfile HEALTHCHECK): every role answers GET /healthz on PORT (the
// gateway with the whole API, workers and the ledger with probes and metrics only).
const port = process.env.PORT ?? '8080';
try {
  const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(4000) });
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
