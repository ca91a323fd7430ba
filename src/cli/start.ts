// `sluice start`: one process in the configured role; prints where it listens and the key to use.
import { loadConfig } from '../config.ts';
import { startSluice } from '../app.ts';
import { redact } from '../adapters/url-scheme.ts';
import { devKeyFile } from '../core/api-keys.ts';
import { flags } from './flags.ts';
import { installLastResortHandlers, throwUncaughtForTest } from './last-resort.ts';

/** MODEL_URL, or the catalogue's model ids and how many deployments serve them. */
function modelLine(config: ReturnType<typeof loadConfig>): string {
  const ids = Object.keys(config.catalogue);
  if (ids.length === 0) return redact(config.modelUrl);
  const deployments = Object.values(config.catalogue).reduce((n, m) => n + m.deployments.length, 0);
  return `catalogue ${ids.join(', ')} (${deployments} deployment${deployments === 1 ? '' : 's'})`;
}

export async function start(args: string[]): Promise<number> {
  const { values } = flags(args, { role: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' } });
  const overrides: Record<string, unknown> = {};
  if (values.role) overrides.role = values.role;
  if (values.port) overrides.port = values.port;
  if (values.host) overrides.host = values.host;
  const config = loadConfig(process.env, overrides);
  const say = (line: string) => process.stdout.write(`${line}\n`);
  say(`Sluice ${config.role} starting (pid ${process.pid})`);
  const app = await startSluice(config, { onProgress: (line) => say(`  ${line}`) });
  installLastResortHandlers(process, app.logger, app.metrics);
  if (config.crashPoint === 'uncaught-after-start') throwUncaughtForTest();
  const lines = [
    `Sluice ${config.role} started (pid ${process.pid})`,
    ...(app.url ? [`  console    ${app.url}/console/   (sign in with the key below)`] : []),
    app.url ? `  API        ${app.url}/v1   (OpenAI-compatible)` : `  probes     http://${config.host}:${(app.server.server.address() as { port: number }).port}/metrics, /healthz, /readyz`,
    `  store      ${redact(config.databaseUrl)}`,
    `  queue      ${redact(config.queueUrl)}   bus ${redact(config.busUrl)}   limiter ${redact(config.limiterUrl)}`,
    `  model      ${modelLine(config)}   delivery ${config.deliveryMode}`,
  ];
  if (app.url) {
    lines.push(app.devKey ? `  dev key    ${app.masterKey}   (generated once into ${devKeyFile(config.dataDir)}; set SLUICE_MASTER_KEY in production)` : '  master key from SLUICE_MASTER_KEY');
    lines.push('', `Try: curl -N ${app.url}/chat -H "Authorization: Bearer ${app.devKey ? app.masterKey : '$SLUICE_MASTER_KEY'}" -d '{"message":"Hello"}'`);
    lines.push(`  or open ${app.url}/console/ in a browser and sign in with the ${app.devKey ? 'dev key above' : 'master key'}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  // Drain (up to SLUICE_DRAIN_MS), then close; a second signal exits at once.
  let stopping = false;
  const stop = (signal: string, graceMs: number) => {
    if (stopping) {
      if (signal === 'parent exited') return;
      app.logger.warn({ signal }, 'second signal: exiting without finishing the drain');
      process.exit(1);
    }
    stopping = true;
    app.logger.info({ signal, drain_ms: graceMs }, 'shutting down');
    const force = setTimeout(() => process.exit(1), graceMs + 15_000);
    force.unref();
    app.drain(graceMs).then(() => app.close()).then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGINT', () => stop('SIGINT', config.drainMs));
  process.on('SIGTERM', () => stop('SIGTERM', config.drainMs));
  // Started by `sluice up` (an IPC channel to the parent): stop when the parent goes, even if it
  // was SIGKILLed; nobody waits for this cluster's streams, so they are handed off at once.
  if (process.connected) process.once('disconnect', () => stop('parent exited', 0));
  return 0;
}
