/**
 * Leases as replicated state: which leases exist, their granted TTL, and which keys are
 * attached. Expiry is not here: time belongs to the leader's LeaseTimers (lease-timers.ts),
 * which proposes a LeaseRevoke through Raft when a lease runs out, so every member removes
 * the same keys at the same revision.
 */

export interface LeaseEntry {
  readonly id: number;
  /** Granted TTL in seconds (after raising to the minimum). */
  readonly ttlSeconds: number;
  /** Attached keys as binary strings. */
  readonly keys: Set<string>;
}

export class LeaseTable {
  private readonly leases = new Map<number, LeaseEntry>();

  get size(): number {
    return this.leases.size;
  }

  get(id: number): LeaseEntry | undefined {
    return this.leases.get(id);
  }

  has(id: number): boolean {
    return this.leases.has(id);
  }

  grant(id: number, ttlSeconds: number): LeaseEntry {
    const e: LeaseEntry = { id, ttlSeconds, keys: new Set() };
    this.leases.set(id, e);
    return e;
  }

  remove(id: number): void {
    this.leases.delete(id);
  }

  attach(id: number, skey: string): void {
    this.leases.get(id)?.keys.add(skey);
  }

  detach(id: number, skey: string): void {
    this.leases.get(id)?.keys.delete(skey);
  }

  /** Leases in increasing ID order (deterministic listings and snapshots). */
  sorted(): LeaseEntry[] {
    return [...this.leases.values()].sort((a, b) => a.id - b.id);
  }

  clear(): void {
    this.leases.clear();
  }
}

/** Mask for 53 bits: lease IDs stay exact in a JavaScript number. */
const ID_SPACE = 2 ** 53;

/**
 * The lease ID a grant with ID 0 receives: a mix of the entry's Raft index, so IDs look
 * random (like etcd's) yet every member derives the same one. Collisions with live leases
 * are resolved by probing upwards, also deterministically.
 */
export function leaseIdForIndex(index: number, exists: (id: number) => boolean): number {
  // splitmix64 finaliser on the index, truncated to 53 bits.
  let x = BigInt.asUintN(64, BigInt(index) * 0x9e3779b97f4a7c15n);
  x = BigInt.asUintN(64, (x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n);
  x = BigInt.asUintN(64, (x ^ (x >> 27n)) * 0x94d049bb133111ebn);
  x ^= x >> 31n;
  let id = Number(x & BigInt(ID_SPACE - 1));
  if (id === 0) id = 1;
  while (exists(id)) id = id + 1 >= ID_SPACE ? 1 : id + 1;
  return id;
}
