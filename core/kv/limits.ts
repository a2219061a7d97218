/**
 * Every limit of the key-value state machine, as named constants. Each has a test at its edge
 * (test/kv/limits.test.ts). Limits that change the replicated state (request size, txn ops,
 * lease TTL bounds) must be identical on every member, so they are constants here and not
 * per-node configuration.
 *
 * Numbers: revisions, versions, lease IDs and TTLs are int64 in etcd's protobufs. picloud keeps
 * them as JavaScript numbers and refuses anything outside [-(2^53-1), 2^53-1]
 * (`Number.isSafeInteger`). A cluster would need 285 years at a million writes per second to
 * run out of revisions; lease IDs are chosen by picloud itself below 2^53.
 */

/**
 * The lease IDs a client may ask for. etcd grants any int64 but 0, negative ones too; picloud
 * keeps IDs exact in a JavaScript number, and keeps -(2^53-1) for the IDs that are not (the etcd
 * front end's UNREPRESENTABLE_ID), so that no lease can answer to an ID beyond these bounds.
 */
export const MIN_LEASE_ID = -(2 ** 53 - 2);
export const MAX_LEASE_ID = 2 ** 53 - 1;

/** etcd's default `--max-request-bytes`: 1.5 MiB. A request whose encoded form is larger is refused. */
export const MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;

/**
 * Largest key (and range end) in bytes. etcd has no separate key limit (only the request
 * size); picloud caps keys so that an index entry, a watch interval and a LevelDB record key
 * stay small. 32 KiB is far above any key etcd's users write (Kubernetes keys are < 300 bytes).
 */
export const MAX_KEY_BYTES = 32 * 1024;

/** etcd's default `--max-txn-ops`: most compares / success ops / failure ops in one txn. */
export const MAX_TXN_OPS = 128;

/**
 * Deepest nesting of txns inside txns. etcd has none, but a 1.5 MiB request could nest
 * tens of thousands deep and overflow the stack of every recursive walk.
 */
export const MAX_TXN_DEPTH = 32;

/** etcd's `lease.MaxLeaseTTL`: 9,000,000,000 seconds. */
export const MAX_LEASE_TTL_SECONDS = 9_000_000_000;

/**
 * etcd's minimum lease TTL: ceil(1.5 × election timeout) = ceil(1.5 × 1 s) = 2 s with its
 * defaults. A shorter TTL is raised to this (as etcd does), so a lease cannot expire during
 * an ordinary leader election.
 */
export const MIN_LEASE_TTL_SECONDS = 2;

/**
 * Largest unary Range response (sum of key + value bytes) built in memory. A larger result
 * fails with RANGE_TOO_LARGE instead of exhausting the node's memory (etcd#12342); callers
 * that need more use `limit` or the paging API (`KvStore.rangePages`).
 */
export const MAX_RANGE_RESPONSE_BYTES = 64 * 1024 * 1024;

/** Default page size of `KvStore.rangePages`: key + value bytes per page. */
export const RANGE_PAGE_BYTES_DEFAULT = 1024 * 1024;

/** Most watchers one watch stream (one gRPC Watch call) may hold. */
export const MAX_WATCHERS_PER_STREAM = 4096;

/**
 * Per-watcher buffer: events queued for a consumer that has not taken them yet. A synced
 * watcher that would exceed either bound goes back to reading the log from the revision that
 * did not fit, at its consumer's pace (etcd's unsynced watchers), so its memory does not grow
 * with its lag (etcd#16839: buffers grew to 14.9 GB). One revision's events are always
 * accepted into an empty buffer, so progress is always possible.
 */
export const WATCH_BUFFER_EVENTS_MAX = 4096;
export const WATCH_BUFFER_BYTES_MAX = 8 * 1024 * 1024;

/** A watch response carries at most this many key + value bytes (except a single large revision). */
export const WATCH_RESPONSE_BYTES_TARGET = 1024 * 1024;

/** Revisions a catching-up watcher scans per step before yielding to other work. */
export const WATCH_SYNC_REVISIONS_PER_STEP = 10_000;

/** Snapshot stream: target size of each yielded chunk. */
export const SNAPSHOT_CHUNK_BYTES = 64 * 1024;

/** Snapshot stream: largest frame the reader accepts (a frame holds at most a few MiB). */
export const SNAPSHOT_FRAME_BYTES_MAX = 32 * 1024 * 1024;

/** Accounting overhead per key-value (header fields) when summing response sizes. */
export const KV_OVERHEAD_BYTES = 32;
