// API keys: shown once, stored only as a SHA-256 hash. Keys are 32 random bytes, so a fast hash
// is enough (no password stretching needed for high-entropy secrets).
import { createHash, randomBytes } from 'node:crypto';

const PREFIX = 'sk-sluice-';

export function generateApiKey(): { key: string; hash: string; prefix: string } {
  const key = PREFIX + randomBytes(32).toString('base64url');
  return { key, hash: hashApiKey(key), prefix: key.slice(0, PREFIX.length + 6) };
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}
