/**
 * The leader's lease clocks: when each lease expires, keep-alives, and which leases to revoke.
 * Outside the replicated state on purpose — time is local to the leader. The leader proposes
 * a LeaseRevoke entry through Raft for each lease this class hands out, so every member
 * deletes the same keys at the same revision.
 *
 * Safety rules (what etcd's users suffered):
 * - A new leader extends every live lease by its full TTL (plus `extendMs`), as etcd's
 *   Promote does: clients had no leader to send keep-alives to during the election.
 * - Revocation needs leadership confirmed *after* the expiry (etcd#15247: a leader stalled on
 *   a slow disk revoked every lease when it woke up). `tick()` reports `needConfirm`; the node
 *   runs a ReadIndex round and calls `confirmLeadership(roundStartMs)`; only leases that
 *   expired before that instant are handed out.
 * - A stall of this process (ticks further apart than `stallThresholdMs`: GC, swap, SIGSTOP)
 *   shifts every expiry by the gap: nobody could reach us to renew meanwhile.
 *
 * Time comes from an injected clock, so tests and the simulator drive it exactly.
 */
import { KvError } from './errors.js';
import type { LeaseTimeToLiveResponse } from './types.js';

export interface LeaseClock {
  /** Monotonic milliseconds. */
  nowMs(): number;
}

export interface LeaseTimersOptions {
  clock: LeaseClock;
  /** Ticks further apart than this mean this process stalled (default 2000 ms). */
  stallThresholdMs?: number;
  /** Most leases handed out for revocation per tick (etcd revokes at most 1000/s; default 500). */
  maxRevokesPerTick?: number;
}

export const LEASE_STALL_THRESHOLD_MS_DEFAULT = 2000;
export const LEASE_REVOKES_PER_TICK_MAX_DEFAULT = 500;

export interface LeaseTick {
  /** Leases to propose LeaseRevoke for now (leadership confirmed after they expired). */
  revoke: number[];
  /** Some leases expired but leadership has not been confirmed since: run a ReadIndex round. */
  needConfirm: boolean;
}

interface Timer {
  ttlMs: number;
  expiresAtMs: number;
}

export class LeaseTimers {
  private readonly clock: LeaseClock;
  private readonly stallThresholdMs: number;
  private readonly maxRevokesPerTick: number;
  private readonly timers = new Map<number, Timer>();
  /** Revokes handed out and not yet applied (not handed out twice). */
  private readonly inflight = new Set<number>();
  private leader = false;
  private confirmedAtMs = -Infinity;
  private lastSeenMs: number;

  constructor(opts: LeaseTimersOptions) {
    this.clock = opts.clock;
    this.stallThresholdMs = opts.stallThresholdMs ?? LEASE_STALL_THRESHOLD_MS_DEFAULT;
    this.maxRevokesPerTick = opts.maxRevokesPerTick ?? LEASE_REVOKES_PER_TICK_MAX_DEFAULT;
    this.lastSeenMs = this.clock.nowMs();
  }

  get isLeader(): boolean {
    return this.leader;
  }

  /** This node became leader: every lease gets its full TTL (plus `extendMs`) from now. */
  becomeLeader(leases: ReadonlyArray<{ id: number; ttlSeconds: number }>, extendMs = 0): void {
    const now = this.observe();
    this.leader = true;
    this.timers.clear();
    this.inflight.clear();
    this.confirmedAtMs = -Infinity;
    for (const l of leases) this.timers.set(l.id, { ttlMs: l.ttlSeconds * 1000, expiresAtMs: now + l.ttlSeconds * 1000 + extendMs });
  }

  /** Leadership lost: forget every clock (the next leader starts them afresh). */
  stepDown(): void {
    this.leader = false;
    this.timers.clear();
    this.inflight.clear();
    this.confirmedAtMs = -Infinity;
  }

  /** A LeaseGrant was applied (call on every member; only the leader keeps a clock). */
  onGranted(id: number, ttlSeconds: number): void {
    if (!this.leader) return;
    const now = this.observe();
    this.timers.set(id, { ttlMs: ttlSeconds * 1000, expiresAtMs: now + ttlSeconds * 1000 });
  }

  /** A LeaseRevoke was applied. */
  onRevoked(id: number): void {
    this.timers.delete(id);
    this.inflight.delete(id);
  }

  /** A revoke handed out by tick() could not be proposed or was dropped: hand it out again later. */
  revokeFailed(id: number): void {
    this.inflight.delete(id);
  }

  /**
   * A ReadIndex (or heartbeat quorum) round that started at `roundStartMs` succeeded: this node
   * was leader at that instant.
   */
  confirmLeadership(roundStartMs: number): void {
    if (this.leader && roundStartMs > this.confirmedAtMs) this.confirmedAtMs = roundStartMs;
  }

  /** A keep-alive on the leader: returns the TTL in seconds. Throws KvError LEASE_NOT_FOUND if unknown or expired. */
  keepAlive(id: number): number {
    const now = this.observe();
    const t = this.timers.get(id);
    // etcd: an expired lease cannot be renewed; its revocation is on the way.
    if (!this.leader || !t || t.expiresAtMs <= now) throw new KvError('LEASE_NOT_FOUND');
    t.expiresAtMs = now + t.ttlMs;
    return t.ttlMs / 1000;
  }

  /** Whole seconds left (etcd truncates), -1 if this leader has no clock for the lease. */
  remainingSeconds(id: number): number {
    const now = this.observe();
    const t = this.timers.get(id);
    if (!t) return -1;
    return Math.max(0, Math.trunc((t.expiresAtMs - now) / 1000));
  }

  /** Fills the remaining TTL into the store's LeaseTimeToLive answer. */
  timeToLive(resp: LeaseTimeToLiveResponse): LeaseTimeToLiveResponse {
    if (resp.TTL < 0) return resp;
    const left = this.remainingSeconds(resp.ID);
    return { ...resp, TTL: left < 0 ? resp.TTL : left };
  }

  /** Call periodically (e.g. every 500 ms) on every node; it does nothing unless leader. */
  tick(): LeaseTick {
    const now = this.observe();
    if (!this.leader) return { revoke: [], needConfirm: false };
    const expired: Array<[number, number]> = [];
    for (const [id, t] of this.timers) {
      if (t.expiresAtMs <= now && !this.inflight.has(id)) expired.push([id, t.expiresAtMs]);
    }
    if (expired.length === 0) return { revoke: [], needConfirm: false };
    expired.sort((a, b) => a[1] - b[1] || a[0] - b[0]);
    const revoke: number[] = [];
    let needConfirm = false;
    for (const [id, at] of expired) {
      if (at > this.confirmedAtMs) {
        needConfirm = true;
        continue;
      }
      if (revoke.length >= this.maxRevokesPerTick) break;
      revoke.push(id);
      this.inflight.add(id);
    }
    return { revoke, needConfirm };
  }

  /** Reads the clock; a gap longer than the stall threshold shifts every expiry by the gap. */
  private observe(): number {
    const now = this.clock.nowMs();
    const gap = now - this.lastSeenMs;
    if (gap > this.stallThresholdMs) {
      for (const t of this.timers.values()) t.expiresAtMs += gap;
    }
    if (now > this.lastSeenMs) this.lastSeenMs = now;
    return now;
  }
}
