/**
 * Drops replayed sealed packets: remembers the nonces of the last REPLAY_CACHE_ENTRIES packets
 * that authenticated, and rejects a packet whose nonce it has seen. Nonces are random 96-bit
 * values, so an honest sender never repeats one. A replay older than the cache is harmless by
 * construction of the protocol (stale incarnations and unknown ack sequence numbers are ignored
 * and counted by the state machine), so a bounded cache is enough.
 */
import { REPLAY_CACHE_ENTRIES } from '../limits.js';

export class ReplayCache {
  private readonly seen = new Set<string>();
  private readonly order: string[] = [];
  private head = 0;

  constructor(private readonly capacity: number = REPLAY_CACHE_ENTRIES) {}

  /** Records the nonce; returns false if it was already seen (a replay). */
  admit(nonce: Uint8Array): boolean {
    const key = Buffer.from(nonce).toString('base64');
    if (this.seen.has(key)) return false;
    if (this.order.length < this.capacity) {
      this.order.push(key);
    } else {
      this.seen.delete(this.order[this.head]!);
      this.order[this.head] = key;
      this.head = (this.head + 1) % this.capacity;
    }
    this.seen.add(key);
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}
