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
import type { KvRequest, KvResponse, LeaseTimeToLiveResponse } from './types.js';

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

/** How waiting on an expired lease's revoke ended (`untilRevoked`). */
export type RevokeWait = 'revoked' | 'not-leader' | 'timeout';

export class LeaseTimers {
  private readonly clock: LeaseClock;
  private readonly stallThresholdMs: number;
  /** Most leases `tick()` hands out at once. */
  readonly maxRevokesPerTick: number;
  private readonly timers = new Map<number, Timer>();
  /** Revokes handed out and not yet applied (not handed out twice). */
  private readonly inflight = new Set<number>();
  private leader = false;
  private confirmedAtMs = -Infinity;
  private lastSeenMs: number;
  /** Keep-alives of expired leases waiting for the revoke (`untilRevoked`), by lease. */
  private readonly revokeWaiters = new Map<number, Set<(r: RevokeWait) => void>>();

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
    // The revokes they wait for may never come: the next leader extends these leases.
    this.settleWaiters(undefined, 'not-leader');
  }

  /** A LeaseGrant was applied (call on every member; only the leader keeps a clock). */
  onGranted(id: number, ttlSeconds: number): void {
    if (!this.leader) return;
    const now = this.observe();
    this.timers.set(id, { ttlMs: ttlSeconds * 1000, expiresAtMs: now + ttlSeconds * 1000 });
  }

  /**
   * Keeps the clocks in step with an applied entry (every member; only the leader keeps them):
   * a grant starts one; a revoke stops one once the lease is gone (revoked now, or not there). A
   * revoke refused when applied (a permission checked there, against the keys the lease holds
   * then) leaves the lease and so its clock: without it the lease would never expire and its
   * keep-alives would be told it is not found.
   */
  afterApply(req: KvRequest, resp: KvResponse, leaseExists: (id: number) => boolean): void {
    if ('leaseGrant' in resp && resp.leaseGrant) this.onGranted(resp.leaseGrant.ID, resp.leaseGrant.TTL);
    if ('leaseRevoke' in req && req.leaseRevoke?.ID !== undefined && !leaseExists(req.leaseRevoke.ID)) this.onRevoked(req.leaseRevoke.ID);
  }

  /** A LeaseRevoke was applied. */
  onRevoked(id: number): void {
    this.timers.delete(id);
    this.inflight.delete(id);
    this.settleWaiters(id, 'revoked');
  }

  /** A revoke handed out by tick() could not be proposed or was dropped: hand it out again later. */
  revokeFailed(id: number): void {
    this.inflight.delete(id);
  }

  /**
   * A ReadIndex (or heartbeat quorum) round that started at `roundStartMs` succeeded: this node
   * was leader at that instant. (A round from before a step-down and a new election confirms
   * nothing of the new spell: its clocks all started after the round did.)
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

  /**
   * This leader's clock for the lease ran out: its revoke is due or on the way, and a keep-alive
   * must not renew it (nor, as etcd's Renew, answer before the revoke: `untilRevoked`).
   */
  expired(id: number): boolean {
    const now = this.observe();
    const t = this.timers.get(id);
    return this.leader && t !== undefined && t.expiresAtMs <= now;
  }

  /**
   * etcd's Renew of an expired lease waits for its revocation, so a client told the lease is
   * gone finds its keys gone too. Resolves 'revoked' once a LeaseRevoke of `id` is applied here
   * (at once if this leader has no clock for it), 'not-leader' when this node is or becomes a
   * follower (the revoke may never come: the next leader extends the lease; etcd's
   * ErrNotPrimary), or 'timeout' after `timeoutMs`.
   */
  untilRevoked(id: number, timeoutMs: number): Promise<RevokeWait> {
    if (!this.leader) return Promise.resolve('not-leader');
    if (!this.timers.has(id)) return Promise.resolve('revoked');
    return new Promise<RevokeWait>((resolve) => {
      let waiters = this.revokeWaiters.get(id);
      if (waiters === undefined) this.revokeWaiters.set(id, (waiters = new Set()));
      const set = waiters;
      const done = (r: RevokeWait): void => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0 && this.revokeWaiters.get(id) === set) this.revokeWaiters.delete(id);
        resolve(r);
      };
      const timer = setTimeout(() => done('timeout'), timeoutMs);
      set.add(done);
    });
  }

  /** Keep-alives waiting on a revoke (`untilRevoked`). */
  get revokeWaiterCount(): number {
    let n = 0;
    for (const s of this.revokeWaiters.values()) n += s.size;
    return n;
  }

  private settleWaiters(id: number | undefined, r: RevokeWait): void {
    const lists = id === undefined ? [...this.revokeWaiters.values()] : [this.revokeWaiters.get(id)];
    for (const set of lists) if (set !== undefined) for (const done of [...set]) done(r);
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

  /**
   * Call periodically (e.g. every 500 ms) on every node; it does nothing unless leader. When it
   * reports `needConfirm`, confirm leadership and call it again at once (etcd's expiry loop
   * revokes what it found expired in the same round as its leader check), handing it what is
   * left of this round's `maxRevokes`.
   */
  tick(maxRevokes = this.maxRevokesPerTick): LeaseTick {
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
      if (revoke.length >= maxRevokes) break;
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
