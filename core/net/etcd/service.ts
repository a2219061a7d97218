/**
 * The contract between the etcd v3 gRPC front end (server.ts) and whatever answers it (the
 * lead's Raft + core/kv node; a fake in tests). Requests arrive validated and normalised:
 * int64 fields are JS numbers (see "Numbers" below), bytes are Uint8Array, enums are etcd's
 * names. Responses are plain objects in etcd's shape; the server encodes them. A backend
 * signals failure by throwing (or rejecting with) EtcdError from ./errors.ts, which reaches
 * the client as etcd's gRPC status and message; any other error becomes INTERNAL.
 *
 * Numbers: etcd's int64/uint64 fields (revisions, versions, lease and member ids, TTLs) are
 * numbers here. Incoming revisions, limits and TTLs beyond 2^53-1 are clamped to ±(2^53-1)
 * (such a revision cannot exist: the backend's "future revision" answer stays right). Incoming
 * lease and member ids beyond ±(2^53-1) arrive as -(2^53-1) (convert.ts UNREPRESENTABLE_ID), which
 * no backend issues, so they are "not found"; LeaseGrant refuses such a requested id outright.
 * Backends issue lease ids in [MIN_LEASE_ID, MAX_LEASE_ID] (core/kv/limits.ts; negative ones when
 * a client asks for them, as etcd does) and member ids in [1, 2^53-1].
 *
 * Key ranges follow etcd: `rangeEnd` empty means just `key`; rangeEnd = [0] means every key
 * >= key; otherwise the half-open interval [key, rangeEnd). (A prefix is [p, p+1).)
 */

export interface ResponseHeader {
  clusterId: number;
  memberId: number;
  /** The store's revision when the request was served. */
  revision: number;
  raftTerm: number;
}

export interface KeyValue {
  key: Uint8Array;
  createRevision: number;
  modRevision: number;
  version: number;
  value: Uint8Array;
  /** 0 when the key has no lease. */
  lease: number;
}

// ------------------------------------------------------------------ KV

export type SortOrder = 'NONE' | 'ASCEND' | 'DESCEND';
export type SortTarget = 'KEY' | 'VERSION' | 'CREATE' | 'MOD' | 'VALUE';

export interface RangeRequest {
  key: Uint8Array;
  rangeEnd: Uint8Array;
  /** 0: no limit. */
  limit: number;
  /** <= 0: the newest revision. */
  revision: number;
  sortOrder: SortOrder;
  sortTarget: SortTarget;
  /** true: may be served from local state without a ReadIndex (etcdctl --consistency=s). */
  serializable: boolean;
  keysOnly: boolean;
  countOnly: boolean;
  /** 0: no filter. */
  minModRevision: number;
  maxModRevision: number;
  minCreateRevision: number;
  maxCreateRevision: number;
}

export interface RangeResponse {
  header: ResponseHeader;
  kvs: KeyValue[];
  /** More keys matched than `limit` let through. */
  more: boolean;
  /** Keys in the range (before limit). */
  count: number;
}

export interface PutRequest {
  key: Uint8Array;
  value: Uint8Array;
  lease: number;
  prevKv: boolean;
  ignoreValue: boolean;
  ignoreLease: boolean;
}

export interface PutResponse {
  header: ResponseHeader;
  prevKv?: KeyValue;
}

export interface DeleteRangeRequest {
  key: Uint8Array;
  rangeEnd: Uint8Array;
  prevKv: boolean;
}

export interface DeleteRangeResponse {
  header: ResponseHeader;
  deleted: number;
  prevKvs: KeyValue[];
}

export type RequestOp =
  | { op: 'range'; request: RangeRequest }
  | { op: 'put'; request: PutRequest }
  | { op: 'deleteRange'; request: DeleteRangeRequest }
  | { op: 'txn'; request: TxnRequest };

export type ResponseOp =
  | { op: 'range'; response: RangeResponse }
  | { op: 'put'; response: PutResponse }
  | { op: 'deleteRange'; response: DeleteRangeResponse }
  | { op: 'txn'; response: TxnResponse };

export type CompareResult = 'EQUAL' | 'GREATER' | 'LESS' | 'NOT_EQUAL';
export type CompareTarget = 'VERSION' | 'CREATE' | 'MOD' | 'VALUE' | 'LEASE';

export interface Compare {
  result: CompareResult;
  target: CompareTarget;
  key: Uint8Array;
  /** Non-empty: compare every key in the range. */
  rangeEnd: Uint8Array;
  /** What `target` is compared with: bytes for VALUE, a number for the others. */
  operand: number | Uint8Array;
}

export interface TxnRequest {
  compare: Compare[];
  success: RequestOp[];
  failure: RequestOp[];
}

export interface TxnResponse {
  header: ResponseHeader;
  succeeded: boolean;
  responses: ResponseOp[];
}

export interface CompactionRequest {
  revision: number;
  /** Wait until the compaction is physically applied. */
  physical: boolean;
}

// ------------------------------------------------------------------ Watch

export type WatchFilter = 'NOPUT' | 'NODELETE';

export interface WatchCreateRequest {
  /** Never empty: the server turns an empty key into [0] as etcd does. */
  key: Uint8Array;
  rangeEnd: Uint8Array;
  /** <= 0: from the next revision. */
  startRevision: number;
  progressNotify: boolean;
  filters: WatchFilter[];
  prevKv: boolean;
  /** The id the server assigned (the client's, or the next free one). */
  watchId: number;
  fragment: boolean;
}

export interface WatchEvent {
  type: 'PUT' | 'DELETE';
  kv: KeyValue;
  /** Set when the watch asked for prevKv and the key existed. */
  prevKv?: KeyValue;
}

/** How a backend delivers to one watcher. Calls after cancel() are ignored. */
export interface WatchSink {
  /**
   * Events in revision order (one or more revisions per call). The array and the header may be
   * shared with other watchers of the same fan-out: read them, never change them.
   */
  events(events: readonly WatchEvent[], header: Readonly<ResponseHeader>): void;
  /** Nothing new up to header.revision (progress_notify watchers, periodically). */
  progress(header: ResponseHeader): void;
  /**
   * The watch ends: its start revision was compacted (compactRevision set: the oldest
   * revision still available), or another reason. The backend forgets the watcher.
   */
  cancel(reason: string, header: ResponseHeader, compactRevision?: number): void;
  /**
   * True while what was handed over is still far from written (a catch-up from the log pulls no
   * more then); the handle's resume() is called once it has drained.
   */
  congested(): boolean;
}

export interface WatchHandle {
  /** The header of the "created" response (revision = the store's current one). */
  header: ResponseHeader;
  /**
   * The revision through which every event of the watch has reached the sink (a watch held
   * back, or catching up, lags the store): a progress answer claims no more.
   */
  deliveredThrough(): number;
  /** The sink has room again (after congested() said it had none). */
  resume(): void;
  /** Stop delivering; the client or the server cancelled. Idempotent: it is also called
   *  after the backend itself cancelled through sink.cancel(). */
  cancel(): void;
}

// ------------------------------------------------------------------ Lease

export interface LeaseGrantRequest {
  ttlSeconds: number;
  /** 0: the backend picks. */
  id: number;
}

export interface LeaseGrantResponse {
  header: ResponseHeader;
  id: number;
  ttlSeconds: number;
}

export interface LeaseKeepAliveResponse {
  header: ResponseHeader;
  id: number;
  /** Renewed TTL in seconds. A backend throws LEASE_NOT_FOUND for an unknown lease; the
   *  server then answers TTL 0, as etcd does on the keep-alive stream. */
  ttlSeconds: number;
}

export interface LeaseTimeToLiveResponse {
  header: ResponseHeader;
  id: number;
  /** Remaining seconds; -1 when the lease does not exist (etcd answers so, not with an error). */
  ttlSeconds: number;
  grantedTtlSeconds: number;
  keys: Uint8Array[];
}

export interface LeaseLeasesResponse {
  header: ResponseHeader;
  ids: number[];
}

// ------------------------------------------------------------------ Cluster

export interface Member {
  id: number;
  /** Empty while the member has not started (etcdctl prints "unstarted"). */
  name: string;
  peerUrls: string[];
  clientUrls: string[];
  isLearner: boolean;
}

export interface MembersResponse {
  header: ResponseHeader;
  members: Member[];
}

export interface MemberAddResponse extends MembersResponse {
  member: Member;
}

// ------------------------------------------------------------------ Maintenance

export type AlarmType = 'NONE' | 'NOSPACE' | 'CORRUPT';

export interface AlarmRequest {
  action: 'GET' | 'ACTIVATE' | 'DEACTIVATE';
  memberId: number;
  alarm: AlarmType;
}

export interface AlarmResponse {
  header: ResponseHeader;
  alarms: { memberId: number; alarm: AlarmType }[];
}

export interface StatusResponse {
  header: ResponseHeader;
  /** Reported to clients as the etcd version we are compatible with, e.g. "3.4.0". */
  version: string;
  dbSizeBytes: number;
  leader: number;
  raftIndex: number;
  raftTerm: number;
  raftAppliedIndex: number;
  errors: string[];
  dbSizeInUseBytes: number;
  isLearner: boolean;
}

export interface HashKVResponse {
  header: ResponseHeader;
  hash: number;
  compactRevision: number;
}

export interface SnapshotStream {
  header: ResponseHeader;
  /** Exact number of bytes `data` will yield. */
  sizeBytes: number;
  /** The snapshot, streamed; never needs to be whole in memory. */
  data: AsyncIterable<Uint8Array>;
  /** Frees what backs `data` (a spool file), read to the end or not; called once the stream ends. */
  release?(): Promise<void>;
}

/** Who is asking: for per-connection limits and logs. */
export interface CallContext {
  /** The client connection (grpc peer string, e.g. "ipv4:127.0.0.1:51234"). */
  peer: string;
  /**
   * The client sent etcd's "hasleader: true" metadata (clientv3 does on watch and keep-alive
   * streams): etcd refuses such calls with NO_LEADER while the member has no leader.
   */
  requireLeader: boolean;
  /** The auth token the client sent (gRPC metadata "token", the gateway's Authorization header). */
  token?: string;
  /**
   * The user a verified client certificate names (client-tls.ts), with --client-cert-auth only:
   * with auth enabled, a request without a token is this user's (etcd's AuthInfoFromTLS).
   */
  certUser?: string;
  /** The context of a stream (watch, keep-alive) rather than of one call. */
  stream?: boolean;
  /**
   * False once the client has given up on the call (cancelled it, or its deadline passed): a
   * write still waiting for a leader is then dropped, never proposed, as etcd drops it.
   */
  wanted?(): boolean;
}

// ------------------------------------------------------------------ Auth

export type PermissionType = 'READ' | 'WRITE' | 'READWRITE';

export interface Permission {
  permType: PermissionType;
  key: Uint8Array;
  /** etcd's range convention (empty: the key alone; [0]: every key >= key). */
  rangeEnd: Uint8Array;
}

export interface AuthStatusResponse {
  header: ResponseHeader;
  enabled: boolean;
  authRevision: number;
}

/**
 * etcd's Auth service. Each method checks the caller (ctx.token) itself: with auth enabled,
 * everything but authenticate and authStatus needs the root role, as in etcd.
 */
export interface EtcdAuthBackend {
  authEnable(ctx: CallContext): Promise<{ header: ResponseHeader }>;
  authDisable(ctx: CallContext): Promise<{ header: ResponseHeader }>;
  authStatus(ctx: CallContext): Promise<AuthStatusResponse>;
  authenticate(name: string, password: string, ctx: CallContext): Promise<{ header: ResponseHeader; token: string }>;
  userAdd(name: string, password: string, noPassword: boolean, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  userGet(name: string, ctx: CallContext): Promise<{ header: ResponseHeader; roles: string[] }>;
  userList(ctx: CallContext): Promise<{ header: ResponseHeader; users: string[] }>;
  userDelete(name: string, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  userChangePassword(name: string, password: string, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  userGrantRole(name: string, role: string, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  userRevokeRole(name: string, role: string, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  roleAdd(name: string, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  roleGet(name: string, ctx: CallContext): Promise<{ header: ResponseHeader; perm: Permission[] }>;
  roleList(ctx: CallContext): Promise<{ header: ResponseHeader; roles: string[] }>;
  roleDelete(name: string, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  roleGrantPermission(name: string, perm: Permission, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  roleRevokePermission(name: string, key: Uint8Array, rangeEnd: Uint8Array, ctx: CallContext): Promise<{ header: ResponseHeader }>;
}

export interface EtcdBackend {
  /** This member's current header (for responses that carry no other: watch cancels, keep-alives of unknown leases). */
  header(): ResponseHeader;

  range(req: RangeRequest, ctx: CallContext): Promise<RangeResponse>;
  put(req: PutRequest, ctx: CallContext): Promise<PutResponse>;
  deleteRange(req: DeleteRangeRequest, ctx: CallContext): Promise<DeleteRangeResponse>;
  txn(req: TxnRequest, ctx: CallContext): Promise<TxnResponse>;
  compact(req: CompactionRequest, ctx: CallContext): Promise<{ header: ResponseHeader }>;

  /**
   * Registers a watcher (req.watchId already assigned by the server). The backend may call
   * sink.cancel() at once (e.g. a compacted start revision); the server sends "created" first.
   * Throw EtcdError to refuse the watch (the client sees created+canceled with the reason).
   */
  watch(req: WatchCreateRequest, sink: WatchSink, ctx: CallContext): WatchHandle;
  /** A WatchProgressRequest: resolve with a header once every watcher here is synced to it. */
  watchProgress(ctx: CallContext): Promise<ResponseHeader>;

  leaseGrant(req: LeaseGrantRequest, ctx: CallContext): Promise<LeaseGrantResponse>;
  leaseRevoke(id: number, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  leaseKeepAlive(id: number, ctx: CallContext): Promise<LeaseKeepAliveResponse>;
  leaseTimeToLive(id: number, keys: boolean, ctx: CallContext): Promise<LeaseTimeToLiveResponse>;
  leaseLeases(ctx: CallContext): Promise<LeaseLeasesResponse>;

  memberList(ctx: CallContext): Promise<MembersResponse>;
  memberAdd(peerUrls: string[], isLearner: boolean, ctx: CallContext): Promise<MemberAddResponse>;
  memberRemove(id: number, ctx: CallContext): Promise<MembersResponse>;
  memberUpdate(id: number, peerUrls: string[], ctx: CallContext): Promise<MembersResponse>;
  memberPromote(id: number, ctx: CallContext): Promise<MembersResponse>;

  status(ctx: CallContext): Promise<StatusResponse>;
  alarm(req: AlarmRequest, ctx: CallContext): Promise<AlarmResponse>;
  defragment(ctx: CallContext): Promise<{ header: ResponseHeader }>;
  /**
   * Optional: whether this member knows a leader now. Watch streams whose client asked for one
   * (etcd's "hasleader" metadata) are refused, and later ended, with NO_LEADER while it knows
   * none, as etcd does; without this method they are served regardless.
   */
  hasLeader?(): boolean;
  /**
   * Optional: whether this member is a Raft learner now. While it is, the server answers only
   * what etcd 3.4's learner answers (learner-rpcs.ts) and refuses the rest with
   * NOT_SUPPORTED_FOR_LEARNER; without this method everything is served.
   */
  isLearner?(): boolean;
  /** Optional: etcdctl `move-leader`; on the leader only (NOT_LEADER elsewhere). UNIMPLEMENTED when absent. */
  moveLeader?(targetId: number, ctx: CallContext): Promise<{ header: ResponseHeader }>;
  /** Optional: etcdctl `endpoint hashkv`. UNIMPLEMENTED when absent. */
  hashKV?(revision: number, ctx: CallContext): Promise<HashKVResponse>;
  /** The state machine's snapshot (the server frames it for etcdctl; see snapshot-file.ts). */
  snapshot(ctx: CallContext): Promise<SnapshotStream>;
  /** Optional: the Auth service (users, roles, tokens). UNIMPLEMENTED when absent. */
  auth?: EtcdAuthBackend;
}
