/**
 * ReadIndex bookkeeping (Ongaro §6.4): each read request remembers the commit index at the
 * time it arrived; it may be served once a heartbeat round carrying its context has been
 * acknowledged by a quorum, which proves the leader was still the leader after the request
 * arrived. No log entry is written per read.
 */
import { Message, NodeId } from './types.js';

export interface ReadIndexStatus {
  /** The request as received (from ourselves or a follower). */
  req: Message;
  /** Commit index when the request arrived; the read is served at or after it. */
  index: number;
  acks: Set<NodeId>;
}

export function contextKey(ctx: Uint8Array): string {
  return Buffer.from(ctx.buffer, ctx.byteOffset, ctx.byteLength).toString('latin1');
}

export class ReadOnly {
  private pending = new Map<string, ReadIndexStatus>();
  private queue: string[] = [];

  addRequest(index: number, m: Message): void {
    const key = contextKey(m.context);
    if (this.pending.has(key)) return;
    this.pending.set(key, { req: m, index, acks: new Set() });
    this.queue.push(key);
  }

  /** Record a heartbeat ack carrying `ctx`; returns how many have acknowledged it. */
  recvAck(from: NodeId, ctx: Uint8Array): Set<NodeId> | undefined {
    const rs = this.pending.get(contextKey(ctx));
    if (!rs) return undefined;
    rs.acks.add(from);
    return rs.acks;
  }

  /**
   * Release the request with context `ctx` and every request queued before it: a quorum
   * confirmed leadership after all of them arrived.
   */
  advance(ctx: Uint8Array): ReadIndexStatus[] {
    const key = contextKey(ctx);
    const at = this.queue.indexOf(key);
    if (at < 0) return [];
    const done = this.queue.splice(0, at + 1);
    return done.map((k) => {
      const rs = this.pending.get(k)!;
      this.pending.delete(k);
      return rs;
    });
  }

  /** Context of the newest pending request, carried by heartbeats. */
  lastPendingContext(): Uint8Array | undefined {
    const key = this.queue[this.queue.length - 1];
    return key === undefined ? undefined : Buffer.from(key, 'latin1');
  }

  size(): number {
    return this.queue.length;
  }

  reset(): void {
    this.pending.clear();
    this.queue = [];
  }
}
