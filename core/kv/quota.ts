/**
 * The space quota (etcd's `--quota-backend-bytes` and its NOSPACE alarm), for a store whose
 * retained history lives in memory. Writes that grow the store (put, a txn with a put, lease
 * grant) are refused with etcd's "database space exceeded" once the estimate of retained
 * bytes (MvccIndex.retainedBytes) reaches the quota; reads, deletes and compactions still
 * work, so an operator — or the auto-compactor — can make room.
 *
 * Unlike etcd (etcd#10776: compact, defragment, then `etcdctl alarm disarm` by hand), the
 * alarm clears by itself once compaction has brought the estimate below CLEAR_FRACTION of the
 * quota. The check runs on the member that serves the request, before it is proposed: an
 * entry already in the log is always applied, so members never disagree about a write.
 * Requests in flight when the quota is reached may overshoot it by their own size.
 *
 * Pure: no clock, no I/O. Not responsible for measuring (the MVCC index does that).
 */
import type { KvRequest, RequestOp } from './types.js';

/** Below this fraction of the quota, a raised NOSPACE alarm clears (hysteresis, so writes do not flap at the edge). */
export const QUOTA_CLEAR_FRACTION = 0.9;
/** etcd's default quota (2 GiB); picloud's default is the smaller of this and QUOTA_MEMORY_FRACTION of RAM. */
export const QUOTA_BYTES_MAX_DEFAULT = 2 * 1024 * 1024 * 1024;
/** A Pi shares its memory with the load balancer, the blob store and the OS page cache. */
export const QUOTA_MEMORY_FRACTION = 1 / 8;
/** Smallest quota accepted (a smaller one could not hold one maximal request). */
export const QUOTA_BYTES_MIN = 64 * 1024;

/** The default quota for a machine with `totalMemoryBytes` of RAM. */
export function defaultQuotaBytes(totalMemoryBytes: number): number {
  return Math.max(QUOTA_BYTES_MIN, Math.min(QUOTA_BYTES_MAX_DEFAULT, Math.floor(totalMemoryBytes * QUOTA_MEMORY_FRACTION)));
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

  constructor(readonly quotaBytes: number) {
    if (!Number.isSafeInteger(quotaBytes) || quotaBytes < QUOTA_BYTES_MIN) {
      throw new RangeError(`quota must be an integer of at least ${QUOTA_BYTES_MIN} bytes, got ${quotaBytes}`);
    }
  }

  /** Updates the alarm from the current estimate; returns whether it is raised. */
  update(retainedBytes: number): boolean {
    if (retainedBytes >= this.quotaBytes) this.raised = true;
    else if (retainedBytes < this.quotaBytes * QUOTA_CLEAR_FRACTION) this.raised = false;
    return this.raised;
  }

  /** Whether `req` may be proposed now (refuse with etcd's NO_SPACE otherwise). */
  admits(req: KvRequest, retainedBytes: number): boolean {
    return !this.update(retainedBytes) || !growsStore(req);
  }
}
