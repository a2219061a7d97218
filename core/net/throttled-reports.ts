/**
 * Reports of failures that anyone who can reach a port may cause (failed handshakes, refused
 * joins): at most one per interval, the next one carrying a count of those held back. Without
 * it one client can write the log to the SD card as fast as it can connect.
 */
export class ThrottledReports {
  private reportedAt = -Infinity;
  private heldBack = 0;

  /** `intervalMs` 0: every failure is reported. */
  constructor(
    private readonly intervalMs: number,
    private readonly report: (reason: string, err?: unknown) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  add(reason: string, err?: unknown): void {
    const now = this.now();
    if (now - this.reportedAt < this.intervalMs) {
      this.heldBack++;
      return;
    }
    const more = this.heldBack;
    this.reportedAt = now;
    this.heldBack = 0;
    this.report(more === 0 ? reason : `${reason} (and ${more} more since the last report)`, err);
  }
}
