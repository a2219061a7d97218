/**
 * The members one node knows (other than itself): lookup by name, O(1) random sampling for
 * gossip targets and ping-req helpers, and SWIM's randomized round-robin probe order (a
 * shuffled pass over all members, reshuffled after each pass; newcomers are slotted in at a
 * random position so they are probed within one pass). Holds no protocol logic.
 */
import type { RandomSource } from '../sim/prng.js';
import type { Suspicion } from './suspicion.js';
import type { Address, MemberInfo, MemberStatus, Meta, PushPullEntry } from './types.js';

export interface MemberRecord {
  name: string;
  /** Reused for every packet to this member. Replaced (not mutated) when the address changes. */
  addr: Address;
  incarnation: number;
  status: MemberStatus;
  meta: Meta;
  protocol: number;
  statusChangedMs: number;
  suspicion: Suspicion | undefined;
  /** Index in MemberTable.list; -1 once removed. */
  slot: number;
}

export function isLive(r: MemberRecord): boolean {
  return r.status === 'alive' || r.status === 'suspect';
}

export function memberInfo(r: MemberRecord): MemberInfo {
  return {
    name: r.name,
    host: r.addr.host,
    port: r.addr.port,
    status: r.status,
    incarnation: r.incarnation,
    meta: r.meta,
    statusChangedMs: r.statusChangedMs,
  };
}

/** A snapshot of the record for push-pull (a fresh object: records keep changing). */
export function entryOf(r: MemberRecord): PushPullEntry {
  return {
    name: r.name,
    incarnation: r.incarnation,
    host: r.addr.host,
    port: r.addr.port,
    status: r.status,
    meta: r.meta,
    protocol: r.protocol,
  };
}

export class MemberTable {
  private readonly byName = new Map<string, MemberRecord>();
  private readonly list: MemberRecord[] = [];
  private probeOrder: MemberRecord[] = [];
  private probeIndex = 0;
  /** Members currently alive or suspect. */
  liveCount = 0;

  constructor(private readonly random: RandomSource) {}

  get size(): number {
    return this.list.length;
  }

  get(name: string): MemberRecord | undefined {
    return this.byName.get(name);
  }

  all(): readonly MemberRecord[] {
    return this.list;
  }

  add(r: MemberRecord): void {
    r.slot = this.list.length;
    this.list.push(r);
    this.byName.set(r.name, r);
    if (isLive(r)) this.liveCount++;
    // Slot the newcomer at a random position of the current pass.
    this.probeOrder.push(r);
    const last = this.probeOrder.length - 1;
    const lo = Math.min(this.probeIndex, last);
    const j = lo + this.random.int(last - lo + 1);
    const other = this.probeOrder[j]!;
    this.probeOrder[j] = r;
    this.probeOrder[last] = other;
  }

  remove(r: MemberRecord): void {
    if (r.slot < 0) return;
    const last = this.list.pop()!;
    if (last !== r) {
      this.list[r.slot] = last;
      last.slot = r.slot;
    }
    r.slot = -1;
    this.byName.delete(r.name);
    if (isLive(r)) this.liveCount--;
    // probeOrder drops it lazily (slot < 0).
  }

  /** Must be called around every status change so liveCount stays right. */
  setStatus(r: MemberRecord, status: MemberStatus, nowMs: number): void {
    const wasLive = isLive(r);
    r.status = status;
    r.statusChangedMs = nowMs;
    const live = isLive(r);
    if (r.slot >= 0 && wasLive !== live) this.liveCount += live ? 1 : -1;
  }

  /** Next member to probe (alive or suspect), or undefined if there is none. */
  nextProbeTarget(): MemberRecord | undefined {
    for (let tries = 0; tries <= this.probeOrder.length + 1; tries++) {
      if (this.probeIndex >= this.probeOrder.length) {
        this.probeOrder = this.list.slice();
        for (let i = this.probeOrder.length - 1; i > 0; i--) {
          const j = this.random.int(i + 1);
          const t = this.probeOrder[i]!;
          this.probeOrder[i] = this.probeOrder[j]!;
          this.probeOrder[j] = t;
        }
        this.probeIndex = 0;
        if (this.probeOrder.length === 0) return undefined;
      }
      const r = this.probeOrder[this.probeIndex++]!;
      if (r.slot >= 0 && isLive(r)) return r;
    }
    return undefined;
  }

  /**
   * Up to k distinct random members satisfying pred (memberlist's kRandomNodes: at most 3·n
   * random draws, so it stays cheap even when few members qualify).
   */
  sample(k: number, pred: (r: MemberRecord) => boolean): MemberRecord[] {
    const out: MemberRecord[] = [];
    const n = this.list.length;
    if (k <= 0 || n === 0) return out;
    const maxTries = 3 * n + 3 * k;
    for (let i = 0; i < maxTries && out.length < k; i++) {
      const r = this.list[this.random.int(n)]!;
      if (!pred(r) || out.includes(r)) continue;
      out.push(r);
    }
    return out;
  }
}
