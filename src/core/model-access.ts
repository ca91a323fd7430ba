// Which models a caller may use, and which endpoints a model serves.
//
// The allow-list rule: a tier's `models` (absent = every model) is the most its users may call; a
// key's own list (null = none of its own) narrows it further and never widens it. The effective
// list is the intersection, worked out on every authentication, so a key made for a model its
// tier later stops offering loses that model with the tier. The master key may use every model.
import type { Config } from '../config.ts';
import { SluiceError } from './errors.ts';

export type ModelKind = 'chat' | 'embeddings';

/** The models a key may use: null = every model. */
export type ModelAllowList = ReadonlySet<string> | null;

export function effectiveModels(tierModels: readonly string[] | undefined, keyModels: readonly string[] | null): ModelAllowList {
  if (!keyModels) return tierModels ? new Set(tierModels) : null;
  if (!tierModels) return new Set(keyModels);
  const tier = new Set(tierModels);
  return new Set(keyModels.filter((m) => tier.has(m)));
}

export function mayUse(allowed: ModelAllowList, model: string): boolean {
  return allowed === null || allowed.has(model);
}

/**
 * Refuses a model outside the caller's list. Checked before whether the model exists, so the
 * answer is the same for a model that exists and one that does not: the refusal reveals nothing.
 */
export function assertMayUse(allowed: ModelAllowList, model: string): void {
  if (mayUse(allowed, model)) return;
  throw new SluiceError('SLUICE_ERR_MODEL_NOT_ALLOWED', `This API key may not use the model "${model}"; see GET /v1/models for the models it may use`, { param: 'model' });
}

/**
 * Refuses a catalogue model that does not serve `kind`. A model outside the catalogue (MODEL_URL
 * alone serves every model) is the backend's to refuse.
 */
export function assertServes(catalogue: Config['catalogue'], model: string, kind: ModelKind): void {
  if (!Object.hasOwn(catalogue, model)) return;
  const kinds = catalogue[model]!.kinds;
  if (kinds.includes(kind)) return;
  const endpoint = kind === 'chat' ? 'chat and text completions' : 'embeddings';
  throw new SluiceError('SLUICE_ERR_WRONG_MODEL_KIND', `The model "${model}" does not serve ${endpoint} (it serves: ${kinds.join(', ')})`, { param: 'model' });
}
