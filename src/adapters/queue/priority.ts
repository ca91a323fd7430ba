// Job priorities, as every queue adapter reads them.

/** Priorities are integers 0..9; anything else is clamped rather than refused. */
export function clampPriority(p: number): number {
  return Number.isFinite(p) ? Math.min(9, Math.max(0, Math.round(p))) : 0;
}
