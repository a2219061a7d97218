/**
 * Typed errors of core/storage. Read-side errors of the Raft Storage interface are Raft's own
 * (RaftError COMPACTED / UNAVAILABLE / SNAPSHOT_OUT_OF_DATE) so Raft can branch on them.
 */

export type StorageErrorCode =
  /** The store was closed; no further reads or writes. */
  | 'ERR_STORE_CLOSED'
  /** A write or fsync failed earlier: the on-disk state is unknown until the store is reopened. */
  | 'ERR_STORE_FAILED'
  /** What is on disk breaks an invariant the store keeps (a gap in the log, a bad record). */
  | 'ERR_CORRUPT'
  /** The caller asked for something impossible (a gap in appended entries, compacting past the snapshot). */
  | 'ERR_INVALID_ARGUMENT'
  /** A snapshot data file is missing or has the wrong size. */
  | 'ERR_SNAPSHOT_FILE'
  /** A received snapshot failed the embedder's check: its spool was removed, nothing written. */
  | 'ERR_SNAPSHOT_REFUSED';

export class StorageError extends Error {
  readonly code: StorageErrorCode;
  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageError';
    this.code = code;
  }
}
