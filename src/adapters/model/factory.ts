// Picks the model backend from MODEL_URL's scheme. Adapters are imported lazily so the embedded
// default (`sim://`) never loads the HTTP client.
import { SluiceError } from '../../core/errors.ts';
import type { ModelBackend } from '../../ports/model.ts';

export interface ModelFactoryOptions {
  /** Simulator pacing (overridden by `sim://?ttft_ms=…&itl_ms=…`). */
  ttftMs: number;
  itlMs: number;
  /** Model ids to serve besides the backend's own (sim) or when the upstream cannot list them (http). */
  models?: string[];
  /** Bearer token for the upstream (http). */
  apiKey?: string;
  /** Upstream connections (http): a deployment's maxConcurrency. */
  connections?: number;
  /** Upstream timeouts (http). */
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  /** What the URL is, in error messages: 'MODEL_URL' (default) or a deployment. */
  source?: string;
}

/** The schemes createModel accepts (checked before start-up opens anything). */
export const MODEL_SCHEMES = ['sim', 'http', 'https'] as const;

export async function createModel(url: string, opts: ModelFactoryOptions): Promise<ModelBackend> {
  const source = opts.source ?? 'MODEL_URL';
  let parsed: URL;
  try { parsed = new URL(url); } catch (e) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `${source} "${url}" is not a valid URL`, undefined, { cause: e });
  }
  switch (parsed.protocol) {
    case 'sim:': {
      const { SimModel, simOptionsFromUrl } = await import('./sim.ts');
      try {
        return new SimModel(simOptionsFromUrl(parsed, { ttftMs: opts.ttftMs, itlMs: opts.itlMs, models: opts.models ?? [] }));
      } catch (e) {
        throw new SluiceError('SLUICE_ERR_CONFIG', `${source} ${url}: ${(e as Error).message}`, undefined, { cause: e });
      }
    }
    case 'http:':
    case 'https:': {
      const { HttpModel } = await import('./http.ts');
      return new HttpModel({
        baseUrl: url, models: opts.models ?? [],
        ...(opts.apiKey ? { apiKey: opts.apiKey } : {}),
        ...(opts.connections !== undefined && { connections: opts.connections }),
        ...(opts.connectTimeoutMs !== undefined && { connectTimeoutMs: opts.connectTimeoutMs }),
        ...(opts.headersTimeoutMs !== undefined && { headersTimeoutMs: opts.headersTimeoutMs }),
        ...(opts.bodyTimeoutMs !== undefined && { bodyTimeoutMs: opts.bodyTimeoutMs }),
      });
    }
    default:
      throw new SluiceError('SLUICE_ERR_CONFIG', `${source} scheme "${parsed.protocol}" is not supported (use sim://, http:// or https://)`);
  }
}
