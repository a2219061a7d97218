/** Typed errors of the Raft library, with stable codes callers can branch on. */
export type RaftErrorCode =
  | 'PROPOSAL_DROPPED' // no leader known, leadership transfer in progress, or not a member
  | 'CONF_CHANGE_PENDING' // a membership change is already in flight
  | 'COMPACTED' // the requested index is covered by a snapshot
  | 'UNAVAILABLE' // the requested index is beyond the log
  | 'SNAPSHOT_OUT_OF_DATE'
  | 'SNAPSHOT_TEMPORARILY_UNAVAILABLE' // Storage.snapshot(): being made; Raft asks again later (etcd's ErrSnapshotTemporarilyUnavailable)
  | 'INVALID_CONF_CHANGE'
  | 'STEP_LOCAL_MSG'
  | 'STEP_PEER_NOT_FOUND'
  | 'INVARIANT'; // a bug: an assertion about Raft's own state failed

export class RaftError extends Error {
  constructor(
    readonly code: RaftErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'RaftError';
  }
}

/** Raft's invariants are asserted densely (TigerBeetle style): a violation is a bug, never input. */
export function invariant(cond: unknown, message: string): asserts cond {
  if (!cond) throw new RaftError('INVARIANT', message);
}
