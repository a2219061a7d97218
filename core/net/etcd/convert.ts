/**
 * Between the objects the gRPC layer decodes (grpc-definitions.ts: camelCase fields, int64 as decimal strings,
 * enums as names) and the EtcdBackend types: checks every request the way etcd's API layer
 * does (empty key, value/lease given with ignore_*, too many txn ops), clamps int64s to safe
 * numbers, and builds etcd-shaped responses. Throws only EtcdError.
 */
import { EtcdError } from './errors.js';
import { MAX_LEASE_ID, MAX_TXN_DEPTH, MAX_TXN_OPS, MIN_LEASE_ID } from '../../kv/limits.js';
import type {
  AlarmRequest,
  AlarmResponse,
  AlarmType,
  Permission,
  Compare,
  CompareResult,
  CompareTarget,
  DeleteRangeRequest,
  DeleteRangeResponse,
  KeyValue,
  LeaseGrantRequest,
  Member,
  PutRequest,
  PutResponse,
  RangeRequest,
  RangeResponse,
  RequestOp,
  ResponseHeader,
  ResponseOp,
  SortOrder,
  SortTarget,
  StatusResponse,
  TxnRequest,
  TxnResponse,
  WatchCreateRequest,
  WatchEvent,
  WatchFilter,
} from './service.js';

// The state machine's limits (core/kv/limits.ts), checked here too so that a request beyond
// them is refused before it is converted, with the same bound the store applies.
export { MAX_TXN_DEPTH, MAX_TXN_OPS } from '../../kv/limits.js';

type Obj = Record<string, unknown>;
const EMPTY = new Uint8Array(0);

function invalid(what: string): EtcdError {
  return new EtcdError('INVALID_ARGUMENT', what);
}

/** Decimal text of an int64 as the gRPC layer gives it (string; a number or Long from other decoders). */
function int64Text(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint') return Number.isFinite(Number(v)) ? String(v) : undefined;
  if (v !== null && typeof v === 'object' && 'low' in v && 'high' in v && typeof (v as { toString?: unknown }).toString === 'function') {
    try {
      return String(v);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** An int64 from a decoded request, clamped to ±(2^53-1); anything unreadable is 0. */
export function int64(v: unknown): number {
  const text = int64Text(v);
  if (text === undefined) return 0;
  const n = Number(text);
  if (Number.isNaN(n)) return 0;
  if (n > Number.MAX_SAFE_INTEGER) return Number.MAX_SAFE_INTEGER;
  if (n < -Number.MAX_SAFE_INTEGER) return -Number.MAX_SAFE_INTEGER;
  return Math.trunc(n);
}

/**
 * Lease and member ids arrive as this when they do not fit in 2^53-1: no backend issues it (it
 * is below MIN_LEASE_ID; member ids are positive), so lookups answer "not found" instead of
 * hitting another id (clamping would collide).
 */
export const UNREPRESENTABLE_ID = -Number.MAX_SAFE_INTEGER;

/** An int64/uint64 id: exact, or UNREPRESENTABLE_ID. */
export function id64(v: unknown): number {
  return isSafeInt64(v) ? int64(v) : UNREPRESENTABLE_ID;
}

/** True if the int64 is absent or exactly representable as a JS number. */
export function isSafeInt64(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  const text = int64Text(v);
  if (text === undefined || !/^[+-]?\d+$/.test(text)) return false;
  // Up to 15 digits is always below 2^53 (~9.007e15): the common case (a lease id of "0") needs
  // no BigInt, which showed in the client port's profile.
  if (text.length <= 15) return true;
  try {
    return BigInt(text) === BigInt(Number(text)) && Number.isSafeInteger(Number(text));
  } catch {
    return false;
  }
}

export function bytes(v: unknown): Uint8Array {
  return v instanceof Uint8Array ? v : EMPTY;
}

function bool(v: unknown): boolean {
  return v === true;
}

function oneOf<T extends string>(v: unknown, allowed: readonly T[], what: string): T {
  if (v === undefined || v === null) return allowed[0]!;
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  throw invalid(`unknown ${what} ${typeof v === 'string' || typeof v === 'number' ? String(v) : typeof v}`);
}

/** A sort order or target; an unknown one is etcd's error, after its check of the key (v3rpc checkRangeRequest's order). */
function sortOption<T extends string>(v: unknown, allowed: readonly T[], key: unknown): T {
  if (v === undefined || v === null) return allowed[0]!;
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  throw new EtcdError(bytes(key).length === 0 ? 'EMPTY_KEY' : 'INVALID_SORT_OPTION');
}

function obj(v: unknown): Obj {
  return v !== null && typeof v === 'object' ? (v as Obj) : {};
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

const SORT_ORDERS = ['NONE', 'ASCEND', 'DESCEND'] as const;
const SORT_TARGETS = ['KEY', 'VERSION', 'CREATE', 'MOD', 'VALUE'] as const;
const COMPARE_RESULTS = ['EQUAL', 'GREATER', 'LESS', 'NOT_EQUAL'] as const;
const COMPARE_TARGETS = ['VERSION', 'CREATE', 'MOD', 'VALUE', 'LEASE'] as const;
const FILTERS = ['NOPUT', 'NODELETE'] as const;
const ALARM_ACTIONS = ['GET', 'ACTIVATE', 'DEACTIVATE'] as const;
const ALARM_TYPES = ['NONE', 'NOSPACE', 'CORRUPT'] as const;
const PERMISSION_TYPES = ['READ', 'WRITE', 'READWRITE'] as const;

// ------------------------------------------------------------------ requests

export function rangeRequest(o: Obj): RangeRequest {
  const r: RangeRequest = {
    key: bytes(o.key),
    rangeEnd: bytes(o.rangeEnd),
    limit: Math.max(0, int64(o.limit)),
    revision: int64(o.revision),
    sortOrder: sortOption<SortOrder>(o.sortOrder, SORT_ORDERS, o.key),
    sortTarget: sortOption<SortTarget>(o.sortTarget, SORT_TARGETS, o.key),
    serializable: bool(o.serializable),
    keysOnly: bool(o.keysOnly),
    countOnly: bool(o.countOnly),
    minModRevision: int64(o.minModRevision),
    maxModRevision: int64(o.maxModRevision),
    minCreateRevision: int64(o.minCreateRevision),
    maxCreateRevision: int64(o.maxCreateRevision),
  };
  if (r.key.length === 0) throw new EtcdError('EMPTY_KEY');
  return r;
}

export function putRequest(o: Obj): PutRequest {
  const r: PutRequest = {
    key: bytes(o.key),
    value: bytes(o.value),
    lease: id64(o.lease),
    prevKv: bool(o.prevKv),
    ignoreValue: bool(o.ignoreValue),
    ignoreLease: bool(o.ignoreLease),
  };
  if (r.key.length === 0) throw new EtcdError('EMPTY_KEY');
  if (r.ignoreValue && r.value.length !== 0) throw new EtcdError('VALUE_PROVIDED');
  if (r.ignoreLease && r.lease !== 0) throw new EtcdError('LEASE_PROVIDED');
  return r;
}

export function deleteRangeRequest(o: Obj): DeleteRangeRequest {
  const r: DeleteRangeRequest = { key: bytes(o.key), rangeEnd: bytes(o.rangeEnd), prevKv: bool(o.prevKv) };
  if (r.key.length === 0) throw new EtcdError('EMPTY_KEY');
  return r;
}

function compare(o: Obj): Compare {
  const target = oneOf<CompareTarget>(o.target, COMPARE_TARGETS, 'compare target');
  let operand: number | Uint8Array;
  switch (target) {
    case 'VERSION':
      operand = int64(o.version);
      break;
    case 'CREATE':
      operand = int64(o.createRevision);
      break;
    case 'MOD':
      operand = int64(o.modRevision);
      break;
    case 'LEASE':
      operand = id64(o.lease);
      break;
    case 'VALUE':
      operand = bytes(o.value);
      break;
  }
  return {
    result: oneOf<CompareResult>(o.result, COMPARE_RESULTS, 'compare result'),
    target,
    key: bytes(o.key),
    rangeEnd: bytes(o.rangeEnd),
    operand,
  };
}

function requestOp(o: Obj, depth: number): RequestOp {
  if (o.requestRange) return { op: 'range', request: rangeRequest(obj(o.requestRange)) };
  if (o.requestPut) return { op: 'put', request: putRequest(obj(o.requestPut)) };
  if (o.requestDeleteRange) return { op: 'deleteRange', request: deleteRangeRequest(obj(o.requestDeleteRange)) };
  if (o.requestTxn) return { op: 'txn', request: txnRequest(obj(o.requestTxn), depth + 1) };
  throw invalid('empty request op');
}

export function txnRequest(o: Obj, depth = 0): TxnRequest {
  if (depth > MAX_TXN_DEPTH) throw invalid(`txn nested deeper than ${MAX_TXN_DEPTH}`);
  const compares = list(o.compare);
  const success = list(o.success);
  const failure = list(o.failure);
  if (compares.length > MAX_TXN_OPS || success.length > MAX_TXN_OPS || failure.length > MAX_TXN_OPS) {
    throw new EtcdError('TOO_MANY_OPS');
  }
  return {
    compare: compares.map((c) => compare(obj(c))),
    success: success.map((r) => requestOp(obj(r), depth)),
    failure: failure.map((r) => requestOp(obj(r), depth)),
  };
}

export function watchCreateRequest(o: Obj, watchId: number): WatchCreateRequest {
  let key = bytes(o.key);
  // etcd: an empty key means the smallest key, [0].
  if (key.length === 0) key = new Uint8Array([0]);
  return {
    key,
    rangeEnd: bytes(o.rangeEnd),
    startRevision: int64(o.startRevision),
    progressNotify: bool(o.progressNotify),
    // Unknown filters are ignored, as etcd's FiltersFromRequest ignores them.
    filters: list(o.filters).filter((f): f is WatchFilter => (FILTERS as readonly unknown[]).includes(f)),
    prevKv: bool(o.prevKv),
    watchId,
    fragment: bool(o.fragment),
  };
}

export function leaseGrantRequest(o: Obj): LeaseGrantRequest {
  // etcd grants any ID but 0 (auto), negative ones too; picloud those a JS number holds exactly.
  const id = id64(o.ID);
  if (!isSafeInt64(o.ID) || id < MIN_LEASE_ID || id > MAX_LEASE_ID) throw invalid(`lease IDs outside [${MIN_LEASE_ID}, ${MAX_LEASE_ID}] are not supported`);
  return { ttlSeconds: int64(o.TTL), id };
}

export function alarmRequest(o: Obj): AlarmRequest {
  return {
    action: oneOf(o.action, ALARM_ACTIONS, 'alarm action'),
    memberId: id64(o.memberID),
    alarm: oneOf<AlarmType>(o.alarm, ALARM_TYPES, 'alarm type'),
  };
}

/** An authpb.Permission (a role's grant). */
export function permission(v: unknown): Permission {
  const o = obj(v);
  return { permType: oneOf(o.permType, PERMISSION_TYPES, 'permission type'), key: bytes(o.key), rangeEnd: bytes(o.rangeEnd) };
}

export function stringList(v: unknown): string[] {
  return list(v).filter((s): s is string => typeof s === 'string');
}

// ------------------------------------------------------------ responses (grpc-definitions.ts shape)

export function header(h: ResponseHeader): Obj {
  return { clusterId: h.clusterId, memberId: h.memberId, revision: h.revision, raftTerm: h.raftTerm };
}

/** A txn's inner responses carry only their revision: etcd 3.4's apply step makes them, and only the outer header is filled. */
function innerHeader(h: ResponseHeader): Obj {
  return { revision: h.revision };
}

/** The Cluster service's header has no revision: etcd 3.4's cluster server fills only the cluster, member and term. */
export function clusterHeader(h: ResponseHeader): Obj {
  return { clusterId: h.clusterId, memberId: h.memberId, raftTerm: h.raftTerm };
}

export function kv(k: KeyValue): Obj {
  return { key: k.key, createRevision: k.createRevision, modRevision: k.modRevision, version: k.version, value: k.value, lease: k.lease };
}

export function rangeResponse(r: RangeResponse, hdr = header): Obj {
  return { header: hdr(r.header), kvs: r.kvs.map(kv), more: r.more, count: r.count };
}

export function putResponse(r: PutResponse, hdr = header): Obj {
  return { header: hdr(r.header), prevKv: r.prevKv === undefined ? null : kv(r.prevKv) };
}

export function deleteRangeResponse(r: DeleteRangeResponse, hdr = header): Obj {
  return { header: hdr(r.header), deleted: r.deleted, prevKvs: r.prevKvs.map(kv) };
}

function responseOp(r: ResponseOp): Obj {
  switch (r.op) {
    case 'range':
      return { responseRange: rangeResponse(r.response, innerHeader) };
    case 'put':
      return { responsePut: putResponse(r.response, innerHeader) };
    case 'deleteRange':
      return { responseDeleteRange: deleteRangeResponse(r.response, innerHeader) };
    case 'txn':
      return { responseTxn: txnResponse(r.response, innerHeader) };
  }
}

export function txnResponse(r: TxnResponse, hdr = header): Obj {
  return { header: hdr(r.header), succeeded: r.succeeded, responses: r.responses.map(responseOp) };
}

export function event(e: WatchEvent): Obj {
  return { type: e.type, kv: kv(e.kv), prevKv: e.prevKv === undefined ? null : kv(e.prevKv) };
}

export function member(m: Member): Obj {
  return { ID: m.id, name: m.name, peerURLs: m.peerUrls, clientURLs: m.clientUrls, isLearner: m.isLearner };
}

export function statusResponse(s: StatusResponse): Obj {
  return {
    header: header(s.header),
    version: s.version,
    dbSize: s.dbSizeBytes,
    leader: s.leader,
    raftIndex: s.raftIndex,
    raftTerm: s.raftTerm,
    raftAppliedIndex: s.raftAppliedIndex,
    errors: s.errors,
    dbSizeInUse: s.dbSizeInUseBytes,
    isLearner: s.isLearner,
  };
}

/** Without a header, as etcd 3.4 answers Alarm (its apply step makes the response and never fills one). */
export function alarmResponse(a: AlarmResponse): Obj {
  return { alarms: a.alarms.map((x) => ({ memberID: x.memberId, alarm: x.alarm })) };
}
