/**
 * What each remote address holds of a listener (connections, handshakes, connections still to
 * send their first bytes), against a bound per address: one host that knows no key must not take
 * every slot. Shared by the peer, join and gossip listeners.
 */
export class AddressSlots {
  private readonly counts = new Map<string, number>();

  constructor(private readonly maxPerAddress: number) {}

  /**
   * Takes one of `address`'s slots: returns its release (later calls do nothing), or undefined
   * when the address holds all it may.
   */
  take(address: string): (() => void) | undefined {
    const n = this.counts.get(address) ?? 0;
    if (n >= this.maxPerAddress) return undefined;
    this.counts.set(address, n + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const left = (this.counts.get(address) ?? 1) - 1;
      if (left <= 0) this.counts.delete(address);
      else this.counts.set(address, left);
    };
  }
}
