/**
 * The transmit-limited piggyback queue: membership updates waiting to be spread. Each outgoing
 * UDP packet is topped up with queued messages that fit its byte budget: alive messages
 * first, then the rest, each least-transmitted first (newest first among equals). A message is dropped once this node has sent it `limit`
 * times (λ·log(n)), and a newer message about the same member replaces an older one.
 */
import { MAX_BROADCAST_QUEUE } from './limits.js';
import { MsgType, type StateMsg } from './types.js';
import { messageSize } from './codec/index.js';

/** The smallest state message (a suspect with one-byte names) is larger than this. */
const MIN_MESSAGE_BYTES = 8;

interface TakeState {
  used: number;
  taken: number;
  moved: Broadcast[] | undefined;
}

interface Broadcast {
  key: string;
  msg: StateMsg;
  sizeBytes: number;
  transmits: number;
  live: boolean;
}

export class BroadcastQueue {
  /** buckets[t]: broadcasts sent t times so far, oldest first. */
  private buckets: Broadcast[][] = [];
  private readonly byKey = new Map<string, Broadcast>();
  private liveCount = 0;
  /** Entries held in buckets, including replaced ones not yet swept out. */
  private storedCount = 0;
  dropped = 0;

  get length(): number {
    return this.liveCount;
  }

  /** Queues msg, replacing any queued message about the same member. */
  push(msg: StateMsg): void {
    const old = this.byKey.get(msg.name);
    if (old) {
      old.live = false;
      this.liveCount--;
    }
    const b: Broadcast = { key: msg.name, msg, sizeBytes: messageSize(msg), transmits: 0, live: true };
    this.byKey.set(msg.name, b);
    (this.buckets[0] ??= []).push(b);
    this.liveCount++;
    this.storedCount++;
    if (this.liveCount > MAX_BROADCAST_QUEUE) this.prune();
    else if (this.storedCount > 2 * this.liveCount + 64) this.sweep();
  }

  /** How often the queued message about `key` has been sent, or -1 if none is queued. */
  transmitsOf(key: string): number {
    const b = this.byKey.get(key);
    return b && b.live ? b.transmits : -1;
  }

  /**
   * Takes messages totalling at most budgetBytes (and at most maxCount of them) for one packet,
   * counting one transmission for each. `limit` is the current retransmit limit. Alive
   * messages go first: they are refutations, joins and updates, and a refutation that waits
   * behind suspicions is how a storm (say, a healed partition) turns into false deaths.
   */
  take(budgetBytes: number, maxCount: number, limit: number, out: StateMsg[]): number {
    if (this.liveCount === 0 || budgetBytes <= 0 || maxCount <= 0) return 0;
    const st: TakeState = { used: 0, taken: 0, moved: undefined };
    this.pass(true, budgetBytes, maxCount, limit, out, st);
    if (st.taken < maxCount && budgetBytes - st.used >= MIN_MESSAGE_BYTES) this.pass(false, budgetBytes, maxCount, limit, out, st);
    if (st.moved) {
      for (const b of st.moved) (this.buckets[b.transmits] ??= []).push(b);
      this.storedCount += st.moved.length;
    }
    return st.used;
  }

  private pass(aliveOnly: boolean, budgetBytes: number, maxCount: number, limit: number, out: StateMsg[], st: TakeState): void {
    for (let t = 0; t < this.buckets.length; t++) {
      const bucket = this.buckets[t];
      if (!bucket || bucket.length === 0) continue;
      // Newest first: walk from the end; survivors are compacted toward the end in place.
      let write = bucket.length;
      for (let i = bucket.length - 1; i >= 0; i--) {
        const b = bucket[i]!;
        if (!b.live) continue;
        const eligible = (b.msg.t === MsgType.Alive) === aliveOnly;
        if (eligible && st.taken < maxCount && st.used + b.sizeBytes <= budgetBytes) {
          out.push(b.msg);
          st.used += b.sizeBytes;
          st.taken++;
          b.transmits++;
          if (b.transmits >= limit) {
            b.live = false;
            this.liveCount--;
            if (this.byKey.get(b.key) === b) this.byKey.delete(b.key);
          } else {
            (st.moved ??= []).push(b);
          }
        } else {
          bucket[--write] = b;
        }
      }
      this.storedCount -= write;
      if (write > 0) bucket.splice(0, write);
      if (st.taken >= maxCount || budgetBytes - st.used < MIN_MESSAGE_BYTES) break;
    }
  }

  /**
   * Drops the most-transmitted broadcasts until the queue is an eighth below its limit: each
   * prune walks every bucket, and pruning to the limit itself made every later push walk them
   * again (merging a push-pull of 10,000 new names held the event loop ~1 s).
   */
  private prune(): void {
    const keep = MAX_BROADCAST_QUEUE - (MAX_BROADCAST_QUEUE >> 3);
    for (let t = this.buckets.length - 1; t >= 0 && this.liveCount > keep; t--) {
      const bucket = this.buckets[t];
      if (!bucket) continue;
      for (const b of bucket) {
        if (this.liveCount <= keep) break;
        if (!b.live) continue;
        b.live = false;
        this.liveCount--;
        this.dropped++;
        if (this.byKey.get(b.key) === b) this.byKey.delete(b.key);
      }
      this.buckets[t] = bucket.filter((b) => b.live);
    }
    this.sweep();
  }

  /** Removes replaced and finished entries from every bucket. */
  private sweep(): void {
    let stored = 0;
    for (let t = 0; t < this.buckets.length; t++) {
      const bucket = this.buckets[t];
      if (!bucket) continue;
      this.buckets[t] = bucket.filter((b) => b.live);
      stored += this.buckets[t]!.length;
    }
    this.storedCount = stored;
  }
}
