// The server process's last line of defence: an exception or rejection nothing handled is logged
// and counted, and the process keeps serving. One stray bug in a socket or timer callback must not
// take down every other client's streams; the counter (sluice_uncaught_errors_total) makes such
// bugs visible so they get fixed. Installed by `sluice start`, never as an import side effect.
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';

export function installLastResortHandlers(proc: NodeJS.Process, logger: Logger, metrics: Pick<Metrics, 'uncaughtErrors'>): void {
  proc.on('uncaughtException', (err, origin) => {
    metrics.uncaughtErrors.inc({ kind: 'exception' });
    logger.error({ err, origin }, 'uncaught exception (process kept serving)');
  });
  proc.on('unhandledRejection', (reason) => {
    metrics.uncaughtErrors.inc({ kind: 'rejection' });
    logger.error({ err: reason }, 'unhandled rejection (process kept serving)');
  });
}

/** Test-only crash point: one exception thrown from a timer and one rejection nobody awaits. */
export function throwUncaughtForTest(): void {
  setTimeout(() => { throw new Error('crash point uncaught-after-start: exception from a timer'); }, 0);
  void Promise.reject(new Error('crash point uncaught-after-start: unhandled rejection'));
}
