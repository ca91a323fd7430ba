// Container health check (Dockerfile HEALTHCHECK). Gateways (roles `gateway` and `all`) answer
// GET /healthz on PORT. The worker and ledger roles open no HTTP listener, so for them a running
// process is all there is to check: this exits 0. The role is read from SLUICE_ROLE, so set the
// role through the environment, not `start --role`, when the health check matters.
const role = process.env.SLUICE_ROLE ?? 'all';
if (role === 'worker' || role === 'ledger') process.exit(0);

const port = process.env.PORT ?? '8080';
try {
  const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(4000) });
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
