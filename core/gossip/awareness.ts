/**
 * Lifeguard's local health awareness: a score that rises when this node misses acks or nacks
 * it should have received (so the fault is probably here: a stalled event loop, a saturated
 * link) and falls with every successful probe. Timeouts and the probe interval are multiplied
 * by (score + 1), so a struggling node probes more slowly and waits longer before suspecting
 * others, instead of accusing healthy peers.
 */
export class Awareness {
  private score = 0;

  constructor(private readonly maxMultiplier: number) {}

  applyDelta(delta: number): void {
    this.score = Math.min(this.maxMultiplier - 1, Math.max(0, this.score + delta));
  }

  get healthScore(): number {
    return this.score;
  }

  scale(ms: number): number {
    return ms * (this.score + 1);
  }
}
