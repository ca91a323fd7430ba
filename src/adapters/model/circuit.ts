// Passive health of one deployment: a circuit breaker over consecutive transient failures, plus
// the `unreachable` mark the active probe sets. Pure state, driven by the router; no timers (the
// open -> half-open step is read off the clock).
//
//   healthy --(failureThreshold consecutive failures)--> open --(coolDownMs)--> half-open
//   half-open: one trial request; its success closes the circuit, its failure opens it again.

export type DeploymentState = 'healthy' | 'open' | 'half-open' | 'unreachable';

export class Circuit {
  private failures = 0;
  /** 0 while closed; else when the cool-down ends (the circuit is half-open from then on). */
  private openUntil = 0;
  private trialInFlight = false;
  /** Set by the active probe: the server did not answer GET /models. */
  unreachable = false;

  constructor(private readonly threshold: number, private readonly coolDownMs: number, private readonly now: () => number) {}

  state(): DeploymentState {
    if (this.unreachable && this.openUntil === 0) return 'unreachable';
    if (this.openUntil === 0) return 'healthy';
    return this.now() < this.openUntil ? 'open' : 'half-open';
  }

  /** Whether a request may start here now: closed, or half-open with no trial running. */
  admits(): boolean {
    const s = this.state();
    return s === 'healthy' || s === 'unreachable' || (s === 'half-open' && !this.trialInFlight);
  }

  /** When an open circuit lets a trial through (ms epoch), or 0 when not open. */
  reopensAt(): number { return this.state() === 'open' ? this.openUntil : 0; }

  /** A request starts; true when it is the half-open trial. */
  start(): boolean {
    if (this.state() !== 'half-open') return false;
    this.trialInFlight = true;
    return true;
  }

  /** The deployment served a request: failures forgotten, an open circuit closes, reachable again. */
  succeeded(trial: boolean): void {
    this.failures = 0;
    this.openUntil = 0;
    this.unreachable = false;
    if (trial) this.trialInFlight = false;
  }

  /** A transient failure or timeout. Returns true when this failure opened the circuit. */
  failed(trial: boolean): boolean {
    this.failures++;
    if (trial) {
      this.trialInFlight = false;
      this.openUntil = this.now() + this.coolDownMs;
      return true;
    }
    if (this.openUntil === 0 && this.failures >= this.threshold) {
      this.openUntil = this.now() + this.coolDownMs;
      return true;
    }
    return false;
  }

  /** The request ended without a verdict (cancelled, or the deployment refused it as malformed). */
  abandoned(trial: boolean): void {
    if (trial) this.trialInFlight = false;
  }
}
