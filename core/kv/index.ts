/**
 * core/kv — picloud's MVCC key-value state machine (what etcd's users rely on), applied
 * deterministically from committed Raft entries. Public API, for wiring it to Raft and to
 * the etcd v3 gRPC server:
 *
 * APPLYING ENTRIES (every member)
 *   const store = new KvStore()                        // or (await MvccBackend.open(dir)).store
 *   data = encodeKvRequest({ put: req })               // proposer; throws KvError REQUEST_TOO_LARGE / MALFORMED_REQUEST
 *   res = store.apply(decodeKvRequest(entry.data), { index: entry.index, term: entry.term })
 *   KvRequest is etcd's InternalRaftRequest subset: exactly one of
 *     range | put | deleteRange | txn | compaction | leaseGrant | leaseRevoke
 *   KvResponse is `{ <same field>: <etcd response> }`, `{ error: KvError }` (deterministic,
 *   return it to the client: err.grpcCode + err.message are etcd's), or `{ alreadyApplied: true }`
 *   for an index at or below store.appliedIndex (replay after restart).
 *   Before proposing, the server may call checkRequest(req) to refuse bad requests early
 *   (apply re-checks anyway). LeaseGrant with ID 0 gets an ID derived from the entry index.
 *   decodeKvRequest throws only KvError; a malformed entry should be applied as an error
 *   response (it cannot have come from a correct proposer).
 *
 * READS OUTSIDE RAFT (after ReadIndex for linearizable, directly for serializable)
 *   store.range(req) → RangeResponse (throws KvError). Unary responses are capped at
 *   MAX_RANGE_RESPONSE_BYTES (RANGE_TOO_LARGE); store.rangePages(req, pageBytes) pages a
 *   huge range at one revision in bounded memory. Header revision = store.revision; the
 *   server adds clusterId/memberId/raftTerm.
 *   store.leaseTimeToLive(id, keys), store.leaseLeases(), store.leases().
 *   Messages are protobufjs-shaped: camelCase fields, enums as numbers, int64 as number
 *   (configure proto-loader with longs: Number, enums: Number, bytes: Buffer) — numbers
 *   must stay below 2^53; encodeKvRequest refuses larger ones.
 *
 * WATCH (gRPC Watch service)
 *   const hub = new WatchHub(store)                    // one per node, subscribes to the store
 *   per Watch call: const ws = hub.openStream(() => setImmediate(pump))
 *     (onReady runs synchronously inside store.apply: schedule the drain, never apply from it)
 *     ws.create(createReq) / ws.cancel(id) / ws.requestProgress()   for each client request
 *     pump: while ((r = ws.next())) write(r)          // stop on backpressure, resume on 'drain'
 *     ws.close() when the call ends.   hub.progressTick() every progress interval (etcd: 10 min).
 *   Catch-up of watchers that start in the past runs in steps on setImmediate (hub option
 *   `schedule`), paced by their consumer. `fragment` is left to the gRPC server, which splits
 *   a large response. Responses are etcd WatchResponse objects. A watcher whose buffer is full
 *   reads the rest from the log at its consumer's pace, as etcd's unsynced watchers; compacted
 *   starts (and watchers left behind a compaction) get compact_revision + canceled.
 *
 * LEASES (time lives only on the leader)
 *   const timers = new LeaseTimers({ clock: { nowMs: () => performance.now() } })
 *   on becoming leader: timers.becomeLeader(store.leases(), electionTimeoutMs); on losing it: timers.stepDown()
 *   after applying: leaseGrant → timers.onGranted(ID, TTL); leaseRevoke → timers.onRevoked(ID)
 *   every ~500 ms: const t = timers.tick()
 *     t.needConfirm → run a ReadIndex round started at s, then timers.confirmLeadership(s)
 *     t.revoke      → propose { leaseRevoke: { ID } } for each (timers.revokeFailed(ID) if dropped)
 *   LeaseKeepAlive on the leader: timers.keepAlive(ID) → TTL (throws KvError LEASE_NOT_FOUND)
 *   LeaseTimeToLive (on the leader; forward otherwise): timers.timeToLive(store.leaseTimeToLive(ID, keys))
 *   tick() must run regularly: ticks further apart than stallThresholdMs count as a stall of
 *   this process and extend every lease by the gap (nobody could renew meanwhile).
 *
 * SPACE (quota.ts, auto-compactor.ts)
 *   own quota: the user's, at most maxQuotaBytes(limits), else defaultQuotaBytes(limits);
 *   const alarm = new SpaceAlarm(clusterQuota(own, members).quotaBytes), setQuota when the member
 *   table changes; before proposing: alarm.admits(req, store.retainedBytes)
 *   or refuse with KvError NO_SPACE (etcd's "database space exceeded"); the alarm clears by itself
 *   below QUOTA_CLEAR_FRACTION of the quota. On the leader, AutoCompactor.tick(now, revision,
 *   compactRevision) says when to propose { compaction: { revision } }.
 *
 * SNAPSHOTS
 *   const snap = store.snapshot()        // image taken now: snap.appliedIndex / appliedTerm / revision
 *   for await (const chunk of snap) send(chunk)               // SHA-256 trailer; snap.return() to abort
 *   await store.restore(chunks)                               // any chunking; verified before replacing
 *   The image includes appliedIndex/appliedTerm; Raft's snapshot metadata carries the ConfState.
 *
 * PERSISTENCE (core/storage/mvcc-backend.ts)
 *   const backend = await MvccBackend.open(dir); const store = backend.store  // loaded, index rebuilt
 *   after applying a group of entries: await backend.persist({ confState, sync })
 *   restart resumes at store.appliedIndex; backend.confState returns the last ConfState bytes.
 *
 * ERRORS: KvError { code, grpcCode, message, detail }; KV_ERRORS lists every code.
 * LIMITS: limits.ts (MAX_REQUEST_BYTES, MAX_KEY_BYTES, MAX_TXN_OPS, MAX_WATCHERS_PER_STREAM,
 *   WATCH_BUFFER_EVENTS_MAX / _BYTES_MAX, ...), all with tests at the edge.
 */
export * from './types.js';
export * from './errors.js';
export * from './limits.js';
export { KvStore, isTxnReadOnly, isTxnSerializable, type ApplyContext, type KvListener, type KvStoreOptions, type StateChanges } from './store.js';
export { checkRequest, checkRangeRequest, checkPutRequest, checkDeleteRequest, checkTxnRequest } from './check.js';
export { encodeKvRequest, decodeKvRequest } from './codec.js';
export type { RangePage } from './range.js';
export { PROGRESS_NOTIFY_INTERVAL_MS, WatchHub, WatchStream, type WatchHubOptions, type WatchHubStats } from './watch.js';
export {
  LeaseTimers,
  LEASE_STALL_THRESHOLD_MS_DEFAULT,
  LEASE_REVOKES_PER_TICK_MAX_DEFAULT,
  type LeaseClock,
  type LeaseTick,
  type LeaseTimersOptions,
} from './lease-timers.js';
export { leaseIdForIndex } from './leases.js';
export { AuthState, PermType, ROOT_USER, ROOT_ROLE, type AuthRequest, type AuthResponse, type AuthUser, type AuthRole, type KeyPermission, type AuthImage } from './auth.js';
export { checkRequestPermission, clientRequest } from './permissions.js';
export {
  SpaceAlarm,
  growsStore,
  defaultQuotaBytes,
  maxQuotaBytes,
  clusterQuota,
  validQuota,
  QUOTA_BYTES_MIN,
  QUOTA_CLEAR_FRACTION,
  QUOTA_HEAP_FRACTION,
  QUOTA_MEMORY_MAX_FRACTION,
  type MemoryLimits,
} from './quota.js';
export { AutoCompactor, parseAutoCompaction, DEFAULT_AUTO_COMPACTION, type AutoCompactionConfig, type AutoCompactionMode } from './auto-compactor.js';
export { RECORD_OVERHEAD_BYTES, KEY_OVERHEAD_BYTES } from './mvcc.js';
export type { InstallableState } from './store.js';
export { SNAPSHOT_FORMAT, SNAPSHOT_VERSION, readSnapshot, writeSnapshot, SnapshotStream, StateImage } from './snapshot.js';
export { keyString, keyBytes, prefixEnd } from './keys.js';
export { IntervalTree } from './interval-tree.js';
export { SortedKeyMap } from './sorted-map.js';
// The persistence of this state lives in core/storage; re-exported so one import wires it all.
export { MvccBackend, MVCC_REWRITE_BATCH_BYTES, type MvccBackendLoadStats, type PersistOptions } from '../storage/mvcc-backend.js';
