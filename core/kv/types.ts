/**
 * The requests and responses of the key-value state machine, shaped like etcd's v3 protobuf
 * messages as protobufjs presents them (camelCase fields, enums as numbers, int64 as number).
 * Optional fields follow proto3: absent means the zero value. Bytes are Uint8Array (Buffer
 * is fine). Numbers stay within ±(2^53-1); see limits.ts.
 *
 * Responses share immutable byte arrays with the store: callers must not mutate them.
 */
import type { AuthRequest, AuthResponse } from './auth.js';
import type { KvError } from './errors.js';

export const SortOrder = { NONE: 0, ASCEND: 1, DESCEND: 2 } as const;
export const SortTarget = { KEY: 0, VERSION: 1, CREATE: 2, MOD: 3, VALUE: 4 } as const;
export const CompareResult = { EQUAL: 0, GREATER: 1, LESS: 2, NOT_EQUAL: 3 } as const;
export const CompareTarget = { VERSION: 0, CREATE: 1, MOD: 2, VALUE: 3, LEASE: 4 } as const;
export const EventType = { PUT: 0, DELETE: 1 } as const;
export const WatchFilterType = { NOPUT: 0, NODELETE: 1 } as const;

/** etcd's clientv3.InvalidWatchID: used for failed creates and stream-wide progress. */
export const INVALID_WATCH_ID = -1;

export interface ResponseHeader {
  /** The store's revision when the response was produced (the server adds cluster/member/term). */
  revision: number;
}

export interface KeyValue {
  key: Uint8Array;
  createRevision: number;
  modRevision: number;
  version: number;
  value: Uint8Array;
  lease: number;
}

export interface RangeRequest {
  key: Uint8Array;
  /** Absent/empty: the single key. [0x00]: every key >= key. Otherwise the interval [key, rangeEnd). */
  rangeEnd?: Uint8Array;
  limit?: number;
  revision?: number;
  sortOrder?: number;
  sortTarget?: number;
  serializable?: boolean;
  keysOnly?: boolean;
  countOnly?: boolean;
  minModRevision?: number;
  maxModRevision?: number;
  minCreateRevision?: number;
  maxCreateRevision?: number;
}

export interface RangeResponse {
  header: ResponseHeader;
  kvs: KeyValue[];
  more: boolean;
  count: number;
}

export interface PutRequest {
  key: Uint8Array;
  value?: Uint8Array;
  lease?: number;
  prevKv?: boolean;
  ignoreValue?: boolean;
  ignoreLease?: boolean;
}

export interface PutResponse {
  header: ResponseHeader;
  prevKv?: KeyValue;
}

export interface DeleteRangeRequest {
  key: Uint8Array;
  rangeEnd?: Uint8Array;
  prevKv?: boolean;
}

export interface DeleteRangeResponse {
  header: ResponseHeader;
  deleted: number;
  prevKvs: KeyValue[];
}

/** Exactly one field set (none set is etcd's "key not found" error). */
export interface RequestOp {
  requestRange?: RangeRequest;
  requestPut?: PutRequest;
  requestDeleteRange?: DeleteRangeRequest;
  requestTxn?: TxnRequest;
}

export interface ResponseOp {
  responseRange?: RangeResponse;
  responsePut?: PutResponse;
  responseDeleteRange?: DeleteRangeResponse;
  responseTxn?: TxnResponse;
}

export interface Compare {
  result?: number;
  target?: number;
  key: Uint8Array;
  rangeEnd?: Uint8Array;
  version?: number;
  createRevision?: number;
  modRevision?: number;
  value?: Uint8Array;
  lease?: number;
}

export interface TxnRequest {
  compare?: Compare[];
  success?: RequestOp[];
  failure?: RequestOp[];
}

export interface TxnResponse {
  header: ResponseHeader;
  succeeded: boolean;
  responses: ResponseOp[];
}

export interface CompactionRequest {
  revision?: number;
  /** Accepted for compatibility; compaction is always applied before the response. */
  physical?: boolean;
}

export interface CompactionResponse {
  header: ResponseHeader;
}

export interface LeaseGrantRequest {
  TTL?: number;
  /** 0: the state machine derives a unique ID from the entry's Raft index. */
  ID?: number;
}

export interface LeaseGrantResponse {
  header: ResponseHeader;
  ID: number;
  TTL: number;
  error: string;
}

export interface LeaseRevokeRequest {
  ID?: number;
}

export interface LeaseRevokeResponse {
  header: ResponseHeader;
}

export interface LeaseTimeToLiveResponse {
  header: ResponseHeader;
  ID: number;
  /** Remaining seconds; -1 when the lease does not exist (as etcd's server answers). */
  TTL: number;
  grantedTTL: number;
  keys: Uint8Array[];
}

export interface LeaseStatus {
  ID: number;
}

export interface LeaseLeasesResponse {
  header: ResponseHeader;
  leases: LeaseStatus[];
}

/**
 * One committed Raft entry's payload, like etcd's InternalRaftRequest: exactly one field.
 * Encode with `encodeKvRequest`, decode with `decodeKvRequest` (codec.ts).
 */
export type KvRequest = (
  | { range: RangeRequest }
  | { put: PutRequest }
  | { deleteRange: DeleteRangeRequest }
  | { txn: TxnRequest }
  | { compaction: CompactionRequest }
  | { leaseGrant: LeaseGrantRequest }
  | { leaseRevoke: LeaseRevokeRequest }
  | { auth: AuthRequest }
) & {
  /**
   * A client's request (absent for the members' own: lease expiry, auto-compaction, which are
   * not checked). Its permission is checked again when it is applied, against the auth state at
   * that point of the log: it may have changed since the request was checked where it entered,
   * and that member may have been behind (auth not yet enabled there, say).
   */
  client?: boolean;
  /** The client's user, when auth was enabled where the request entered. */
  user?: string;
};

export type KvRequestKind = 'range' | 'put' | 'deleteRange' | 'txn' | 'compaction' | 'leaseGrant' | 'leaseRevoke' | 'auth';

/** The result of applying one request; `error` is deterministic and part of the replicated outcome. */
export type KvResponse =
  | { range: RangeResponse }
  | { put: PutResponse }
  | { deleteRange: DeleteRangeResponse }
  | { txn: TxnResponse }
  | { compaction: CompactionResponse }
  | { leaseGrant: LeaseGrantResponse }
  | { leaseRevoke: LeaseRevokeResponse }
  | { auth: AuthResponse }
  | { error: KvError }
  /** The entry's index is at or below the applied index (replay after restart): nothing done. */
  | { alreadyApplied: true };

export function requestKind(req: KvRequest): KvRequestKind {
  if ('range' in req) return 'range';
  if ('put' in req) return 'put';
  if ('deleteRange' in req) return 'deleteRange';
  if ('txn' in req) return 'txn';
  if ('compaction' in req) return 'compaction';
  if ('leaseGrant' in req) return 'leaseGrant';
  if ('auth' in req) return 'auth';
  return 'leaseRevoke';
}

/** A change as watchers see it. Delete events carry only key and modRevision in `kv`. */
export interface WatchEvent {
  type: number;
  kv: KeyValue;
  prevKv?: KeyValue;
}

export interface WatchCreateRequest {
  key: Uint8Array;
  rangeEnd?: Uint8Array;
  /** 0: from the next revision. */
  startRevision?: number;
  progressNotify?: boolean;
  /** WatchFilterType values. */
  filters?: number[];
  prevKv?: boolean;
  /** 0: assigned by the stream. */
  watchId?: number;
  /**
   * Not acted on here (responses hold whole revisions, however large): the gRPC server splits
   * a large response for a watch that asked (net/etcd/server.ts, as etcd's watch server does).
   */
  fragment?: boolean;
}

export interface WatchResponse {
  header: ResponseHeader;
  watchId: number;
  created: boolean;
  canceled: boolean;
  compactRevision: number;
  cancelReason: string;
  fragment: boolean;
  events: WatchEvent[];
}
