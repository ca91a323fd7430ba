// `sluice sim-model`: a standalone OpenAI-compatible simulated model server.
import { flags } from './flags.ts';
import { startSimModelServer } from './sim-model.ts';

export async function simModel(args: string[]): Promise<number> {
  const { values } = flags(args, { port: { type: 'string' }, host: { type: 'string' }, 'ttft-ms': { type: 'string' }, 'itl-ms': { type: 'string' } });
  const server = await startSimModelServer({
    host: values.host ?? '127.0.0.1',
    port: Number(values.port ?? 9100),
    ttftMs: Number(values['ttft-ms'] ?? 20),
    itlMs: Number(values['itl-ms'] ?? 5),
  });
  console.log(`simulated model listening at ${server.url}  (MODEL_URL=${server.url})`);
  const stop = () => { void server.close().then(() => process.exit(0)); };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  return 0;
}
