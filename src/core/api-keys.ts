// API keys: shown once, stored only as a SHA-256 hash. Keys are 32 random bytes, so a fast hash
// is enough (no password stretching needed for high-entropy secrets).
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const PREFIX = 'sk-sluice-';

export function generateApiKey(): { key: string; hash: string; prefix: string } {
  const key = PREFIX + randomBytes(32).toString('base64url');
  return { key, hash: hashApiKey(key), prefix: key.slice(0, PREFIX.length + 6) };
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Where the development key is kept in a data directory. */
export const devKeyFile = (dataDir: string): string => join(dataDir, 'dev-key');

/** The development key kept in `dataDir`, if one was generated there. */
export function readDevKey(dataDir: string): string | undefined {
  const file = devKeyFile(dataDir);
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

/** The master key: the configured one, else a development key generated once into the data dir. */
export function resolveMasterKey(config: { masterKey?: string | undefined; dataDir: string }): { key: string; dev: boolean } {
  if (config.masterKey) return { key: config.masterKey, dev: false };
  const existing = readDevKey(config.dataDir);
  if (existing !== undefined) return { key: existing, dev: true };
  mkdirSync(config.dataDir, { recursive: true });
  const { key } = generateApiKey();
  writeFileSync(devKeyFile(config.dataDir), `${key}\n`, { mode: 0o600 });
  return { key, dev: true };
}
