// The model catalogue's environment forms and the checks that span several of its entries
// (unique deployment ids, known fallbacks, usable URLs). The shape itself is in config.ts.
//
// SLUICE_CATALOGUE holds the whole catalogue as JSON (the same shape as `catalogue` in the file).
// SLUICE_MODELS is the compact form for the common case, one deployment per comma-separated entry:
//
//   <model id>=<url>[#<backend model>][@<API_KEY_ENV>][;<option>=<value>]...
//
//   llama=http://vllm-a:8000/v1#meta-llama/Llama-3.1-8B;weight=2;max=64,
//   llama=http://vllm-b:8000/v1#meta-llama/Llama-3.1-8B,
//   gpt=https://api.openai.com/v1#gpt-4o-mini@OPENAI_API_KEY;fallback=llama
//
// An id that comes again adds a deployment to that model. Options: weight, max (maxConcurrency),
// id (the deployment's id), passthrough (true|false), fallback (a model id tried after this one;
// repeat the option for more, in order). URLs in the compact form cannot contain ',' or ';'.
import { SluiceError } from './core/errors.ts';

type RawDeployment = Record<string, unknown>;
type RawModel = { deployments: RawDeployment[]; fallbacks?: string[] };

const KEY_ENV = /@([A-Za-z_][A-Za-z0-9_]*)$/;
const OPTIONS = new Set(['weight', 'max', 'id', 'passthrough', 'fallback']);

function fail(entry: number, text: string, why: string): never {
  throw new SluiceError('SLUICE_ERR_CONFIG', `SLUICE_MODELS entry ${entry} ("${text}"): ${why}`);
}

/** Parses SLUICE_MODELS into the catalogue's raw shape (validated afterwards by the schema). */
export function parseModelsEnv(value: string): Record<string, RawModel> {
  const catalogue: Record<string, RawModel> = {};
  const entries = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.length === 0) throw new SluiceError('SLUICE_ERR_CONFIG', 'SLUICE_MODELS is set but names no model');
  entries.forEach((text, i) => {
    const n = i + 1;
    const eq = text.indexOf('=');
    if (eq <= 0) fail(n, text, 'expected <model id>=<url>');
    const modelId = text.slice(0, eq).trim();
    if (modelId === '__proto__' || modelId in Object.prototype) fail(n, text, `"${modelId}" cannot be a model id`);
    const [target = '', ...options] = text.slice(eq + 1).split(';').map((s) => s.trim());
    const deployment: RawDeployment = {};
    let rest = target;
    const key = KEY_ENV.exec(rest);
    if (key) { deployment.apiKeyEnv = key[1]; rest = rest.slice(0, key.index); }
    const hash = rest.indexOf('#');
    if (hash !== -1) {
      const model = rest.slice(hash + 1).trim();
      if (model === '') fail(n, text, 'nothing after "#": name the backend\'s model or leave the "#" out');
      deployment.model = model;
      rest = rest.slice(0, hash);
    }
    if (rest.trim() === '') fail(n, text, 'no URL after "="');
    deployment.url = rest.trim();
    const model = (catalogue[modelId] ??= { deployments: [] });
    for (const option of options) {
      const oeq = option.indexOf('=');
      const name = oeq === -1 ? option : option.slice(0, oeq).trim();
      const raw = oeq === -1 ? '' : option.slice(oeq + 1).trim();
      if (!OPTIONS.has(name)) fail(n, text, `unknown option "${name}" (known: ${[...OPTIONS].join(', ')})`);
      if (raw === '') fail(n, text, `option ${name} needs a value (${name}=…)`);
      if (name === 'weight' || name === 'max') {
        const num = Number(raw);
        if (!Number.isFinite(num) || num <= 0 || (name === 'max' && !Number.isInteger(num))) fail(n, text, `${name}=${raw} must be a positive ${name === 'max' ? 'integer' : 'number'}`);
        deployment[name === 'max' ? 'maxConcurrency' : 'weight'] = num;
      } else if (name === 'passthrough') {
        if (raw !== 'true' && raw !== 'false') fail(n, text, `passthrough=${raw} must be true or false`);
        deployment.passthrough = raw === 'true';
      } else if (name === 'fallback') {
        (model.fallbacks ??= []).push(raw);
      } else {
        deployment.id = raw;
      }
    }
    model.deployments.push(deployment);
  });
  return catalogue;
}

/** Parses SLUICE_CATALOGUE (JSON); the shape is checked by the schema afterwards. */
export function parseCatalogueEnv(value: string): unknown {
  try { return JSON.parse(value); } catch (e) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `SLUICE_CATALOGUE is not valid JSON: ${(e as Error).message}`);
  }
}

interface CheckedDeployment { id?: string | undefined; url: string }
interface CheckedModel { deployments: CheckedDeployment[]; fallbacks: string[] }

/** The deployment's id: its own, or `<model id>#<n>` (n from 1, in the order listed). */
export function deploymentId(modelId: string, d: CheckedDeployment, index: number): string {
  return d.id ?? `${modelId}#${index + 1}`;
}

/**
 * Checks what the schema cannot see entry by entry: every URL usable (sim, http or https, no
 * credentials in it: keys go in apiKeyEnv), deployment ids unique (they name metrics and records),
 * fallbacks naming other catalogue models. Returns the catalogue with every deployment's id set.
 */
export function checkCatalogue<M extends CheckedModel>(catalogue: Record<string, M>): Record<string, M> {
  const ids = new Map<string, string>();
  const out: Record<string, M> = {};
  for (const [modelId, model] of Object.entries(catalogue)) {
    const deployments = model.deployments.map((d, i) => {
      const where = `catalogue.${modelId}.deployments.${i}`;
      checkUrl(where, d.url);
      const id = deploymentId(modelId, d, i);
      const other = ids.get(id);
      if (other !== undefined) throw new SluiceError('SLUICE_ERR_CONFIG', `${where}: deployment id "${id}" is already used by ${other}; give each deployment its own id`);
      ids.set(id, where);
      return { ...d, id };
    });
    const seen = new Set<string>();
    for (const f of model.fallbacks) {
      const where = `catalogue.${modelId}.fallbacks`;
      if (f === modelId) throw new SluiceError('SLUICE_ERR_CONFIG', `${where}: a model cannot fall back to itself`);
      if (!Object.hasOwn(catalogue, f)) throw new SluiceError('SLUICE_ERR_CONFIG', `${where}: "${f}" is not a model of the catalogue`);
      if (seen.has(f)) throw new SluiceError('SLUICE_ERR_CONFIG', `${where}: "${f}" is listed twice`);
      seen.add(f);
    }
    out[modelId] = { ...model, deployments };
  }
  return out;
}

function checkUrl(where: string, url: string): void {
  let parsed: URL;
  try { parsed = new URL(url); } catch {
    throw new SluiceError('SLUICE_ERR_CONFIG', `${where}.url: "${url}" is not a valid URL`);
  }
  if (!['sim:', 'http:', 'https:'].includes(parsed.protocol)) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `${where}.url: scheme "${parsed.protocol}" is not supported (use http://, https:// or sim://)`);
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw new SluiceError('SLUICE_ERR_CONFIG', `${where}.url: credentials do not belong in the URL; put the key in an environment variable named by apiKeyEnv`);
  }
}
