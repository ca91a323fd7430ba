// `sluice sim-model`: a standalone OpenAI-compatible simulated model server.
import { SluiceError } from '../core/errors.ts';
import { flags } from './flags.ts';
import { startSimModelServer } from './sim-model.ts';

/** A numeric flag within [min, max] (integers only when asked), or the default when absent. */
function numberFlag(name: string, raw: string | undefined, fallback: number, min: number, max: number, integer = false): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `--${name} ${raw}: must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}]`);
  }
  return value;
}

export async function simModel(args: string[]): Promise<number> {
  const { values } = flags(args, {
    port: { type: 'string' }, host: { type: 'string' }, 'ttft-ms': { type: 'string' }, 'itl-ms': { type: 'string' },
    'api-key': { type: 'string' }, 'fail-rate': { type: 'string' }, 'fail-seed': { type: 'string' },
    'embedding-dim': { type: 'string' }, models: { type: 'string' }, 'no-usage': { type: 'boolean' },
  });
  // The key may come from the environment, so it does not show in the process list.
  const apiKey = values['api-key'] ?? process.env.SIM_MODEL_API_KEY;
  const server = await startSimModelServer({
    host: values.host ?? '127.0.0.1',
    port: numberFlag('port', values.port, 9100, 0, 65_535, true),
    ttftMs: numberFlag('ttft-ms', values['ttft-ms'], 20, 0, 3_600_000),
    itlMs: numberFlag('itl-ms', values['itl-ms'], 5, 0, 3_600_000),
    failRate: numberFlag('fail-rate', values['fail-rate'], 0, 0, 1),
    failSeed: numberFlag('fail-seed', values['fail-seed'], 1, 0, 2 ** 32 - 1, true),
    embeddingDim: numberFlag('embedding-dim', values['embedding-dim'], 256, 1, 8_192, true),
    reportUsage: values['no-usage'] !== true,
    models: (values.models ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    ...(apiKey ? { apiKey } : {}),
  });
  console.log(`simulated model listening at ${server.url}  (MODEL_URL=${server.url})${apiKey ? '  (bearer key required)' : ''}`);
  const stop = () => { void server.close().then(() => process.exit(0)); };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  return 0;
}
