/**
 * Lifeguard's dynamic suspicion timer for one suspected member: it starts at the maximum
 * timeout and shrinks logarithmically toward the minimum as independent confirmations (suspect
 * messages from other members) arrive. The member that raised the suspicion does not count.
 */
import { suspicionTimeoutMs } from './config.js';

export class Suspicion {
  private readonly confirmers = new Set<string>();
  private confirmationCount = 0;
  /** Direct check pings sent to the suspect so far, and when the last one went out. */
  checksSent = 0;
  lastCheckMs = -Infinity;

  constructor(
    from: string,
    readonly k: number,
    readonly minMs: number,
    readonly maxMs: number,
    readonly startedMs: number,
  ) {
    this.confirmers.add(from);
  }

  /** Records a confirmation; true if it was new and still shortens the timer. */
  confirm(from: string): boolean {
    if (this.confirmationCount >= this.k) return false;
    if (this.confirmers.has(from)) return false;
    this.confirmers.add(from);
    this.confirmationCount++;
    return true;
  }

  get confirmations(): number {
    return this.confirmationCount;
  }

  /** Machine time at which the member is declared dead if nothing refutes the suspicion. */
  deadlineMs(): number {
    return this.startedMs + suspicionTimeoutMs(this.minMs, this.maxMs, this.k, this.confirmationCount);
  }
}
