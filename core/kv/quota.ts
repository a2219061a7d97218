/**
 * The space quota (etcd's `--quota-backend-bytes` and its NOSPACE alarm), for a store whose
 * retained history lives in memory. Writes that grow the store (put, a txn with a put, lease
 * grant) are refused with etcd's "database space exceeded" once the estimate of retained
 * bytes (MvccIndex.retainedBytes) reaches the quota; reads, deletes and compactions still
 * work, so an operator — or the auto-compactor — can make room.
 *
 * Unlike etcd (etcd#10776: compact, defragment, then `etcdctl alarm disarm` by hand), the
 * alarm clears by itself once compaction has brought the estimate below CLEAR_FRACTION of the
 * quota. The quota is the cluster's smallest (clusterQuota): each member records its own in
 * the member table, and a member with less memory bounds the history every member holds. The
 * check runs on the member that serves the request, before it is proposed: an entry already
 * in the log is always applied, so members never disagree about a write. Requests in flight
 * when the quota is reached may overshoot it by their own size.
 *
 * Pure: no clock, no I/O. Not responsible for measuring (the MVCC index does that).
 */
import type { KvRequest, RequestOp } from './types.js';

/** Below this fraction of the quota, a raised NOSPACE alarm clears (hysteresis, so writes do not flap at the edge). */
export const QUOTA_CLEAR_FRACTION = 0.9;
/** etcd's default quota (2 GiB); picloud's default is the smallest of this, QUOTA_MEMORY_FRACTION of RAM and maxQuotaBytes. */
export const QUOTA_BYTES_MAX_DEFAULT = 2 * 1024 * 1024 * 1024;
/** A Pi shares its memory with the load balancer, the blob store and the OS page cache. */
export const QUOTA_MEMORY_FRACTION = 1 / 8;
/** Smallest quota accepted (a smaller one could not hold one maximal request). */
export const QUOTA_BYTES_MIN = 64 * 1024;
/**
 * Largest share of the JavaScript heap limit a quota may take. The records of the history live
 * on the heap (the estimate is within ~25% of it for small values, whose records are nearly all
 * heap), and a snapshot from the leader is decoded beside the state it replaces, so the history
 * can be held twice for a moment: at a third of the limit that still fits.
 */
export const QUOTA_HEAP_FRACTION = 1 / 3;
/**
 * Largest share of the machine's memory a quota may take: the values live beside the heap and
 * can be held twice as well, and the OS, Node itself and the other subsystems need the rest.
 */
export const QUOTA_MEMORY_MAX_FRACTION = 1 / 3;

/** What bounds a member's quota: its history lives in memory. */
export interface MemoryLimits {
  /** The machine's memory, or its container's limit when smaller. */
  memoryBytes: number;
  /** This process's JavaScript heap limit (v8.getHeapStatistics().heap_size_limit). */
  heapLimitBytes: number;
}

/**
 * The largest quota a member may run with: above it, a full store could run the process out of
 * heap or the machine out of memory before NOSPACE is raised (a crash that comes back at every
 * restart, since the history is loaded again).
 */
export function maxQuotaBytes(m: MemoryLimits): number {
  return Math.max(QUOTA_BYTES_MIN, Math.floor(Math.min(m.heapLimitBytes * QUOTA_HEAP_FRACTION, m.memoryBytes * QUOTA_MEMORY_MAX_FRACTION)));
}

/** The default quota for a member with these limits. */
export function defaultQuotaBytes(m: MemoryLimits): number {
  return Math.max(QUOTA_BYTES_MIN, Math.min(QUOTA_BYTES_MAX_DEFAULT, Math.floor(m.memoryBytes * QUOTA_MEMORY_FRACTION), maxQuotaBytes(m)));
}

/** A member's own quota as its record in the member table carries it (absent: not known yet). */
export interface MemberQuota {
  id: number;
  quotaBytes?: number;
}

/**
 * The quota a cluster holds to: the smallest of its members'. Every member applies the same
 * history, so the member with the least memory bounds it for all of them, including while it is
 * down (it loads the history again when it comes back). Equal quotas go to the lowest id, so
 * every member names the same one.
 */
export function clusterQuota(own: Required<MemberQuota>, members: Iterable<MemberQuota>): Required<MemberQuota> {
  let min = own;
  for (const m of members) {
    if (m.quotaBytes === undefined) continue;
    if (m.quotaBytes < min.quotaBytes || (m.quotaBytes === min.quotaBytes && m.id < min.id)) min = { id: m.id, quotaBytes: m.quotaBytes };
  }
  return min;
}

/** A quota as carried in a member record, or undefined when it is not one (an older record, a damaged one). */
export function validQuota(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= QUOTA_BYTES_MIN ? v : undefined;
}

/** True for requests etcd's quota applies to: Put, Txn with a put anywhere in it, LeaseGrant. */
export function growsStore(req: KvRequest): boolean {
  if ('put' in req || 'leaseGrant' in req) return true;
  if ('txn' in req) return txnPuts(req.txn.success) || txnPuts(req.txn.failure);
  return false;
}

function txnPuts(ops: RequestOp[] | undefined): boolean {
  if (!ops) return false;
  for (const op of ops) {
    if (op.requestPut) return true;
    if (op.requestTxn && (txnPuts(op.requestTxn.success) || txnPuts(op.requestTxn.failure))) return true;
  }
  return false;
}

/** The NOSPACE alarm of one member: raised at the quota, cleared below CLEAR_FRACTION of it. */
export class SpaceAlarm {
  private raised = false;
  private quota: number;

  constructor(quotaBytes: number) {
    this.quota = SpaceAlarm.checked(quotaBytes);
  }

  private static checked(quotaBytes: number): number {
    const q = validQuota(quotaBytes);
    if (q === undefined) throw new RangeError(`quota must be an integer of at least ${QUOTA_BYTES_MIN} bytes, got ${quotaBytes}`);
    return q;
  }

  get quotaBytes(): number {
    return this.quota;
  }

  /** Changes the quota (the cluster's smallest changed); the alarm follows at the next update. */
  setQuota(quotaBytes: number): void {
    this.quota = SpaceAlarm.checked(quotaBytes);
  }

  /** Updates the alarm from the current estimate; returns whether it is raised. */
  update(retainedBytes: number): boolean {
    if (retainedBytes >= this.quota) this.raised = true;
    else if (retainedBytes < this.quota * QUOTA_CLEAR_FRACTION) this.raised = false;
    return this.raised;
  }

  /** Whether `req` may be proposed now (refuse with etcd's NO_SPACE otherwise). */
  admits(req: KvRequest, retainedBytes: number): boolean {
    return !this.update(retainedBytes) || !growsStore(req);
  }
}
