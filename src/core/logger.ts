// Structured JSON logs (pino); every line about a request carries its request_id.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, role: string): Logger {
  return pino({ level, base: { role, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
