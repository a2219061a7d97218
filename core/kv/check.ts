/**
 * Validation of a request's shape before it touches state: the checks etcd's gRPC layer makes
 * (v3rpc/key.go: empty key, sort options, ignore_value/ignore_lease, too many txn ops, the
 * duplicate-key rule) plus picloud's key-size and txn-depth limits. Pure functions of the
 * request, so the server can refuse early and apply can re-check deterministically (an entry
 * in the log is never trusted blindly).
 *
 * Not checked here: things that depend on state (lease exists, key exists, revision
 * compacted); store.ts checks those before mutating.
 */
import { KvError } from './errors.js';
import { MAX_KEY_BYTES, MAX_LEASE_ID, MAX_LEASE_TTL_SECONDS, MAX_TXN_DEPTH, MAX_TXN_OPS, MIN_LEASE_ID } from './limits.js';
import { keyString, spanOf, type KeySpan } from './keys.js';
import type {
  Compare,
  DeleteRangeRequest,
  KvRequest,
  PutRequest,
  RangeRequest,
  RequestOp,
  TxnRequest,
} from './types.js';

function checkKey(key: Uint8Array | undefined): KvError | undefined {
  if (key === undefined || key.byteLength === 0) return new KvError('EMPTY_KEY');
  if (key.byteLength > MAX_KEY_BYTES) return new KvError('KEY_TOO_LARGE', `${key.byteLength} > ${MAX_KEY_BYTES} bytes`);
  return undefined;
}

function checkRangeEnd(end: Uint8Array | undefined): KvError | undefined {
  if (end !== undefined && end.byteLength > MAX_KEY_BYTES) {
    return new KvError('KEY_TOO_LARGE', `range end ${end.byteLength} > ${MAX_KEY_BYTES} bytes`);
  }
  return undefined;
}

export function checkRangeRequest(r: RangeRequest): KvError | undefined {
  const e = checkKey(r.key) ?? checkRangeEnd(r.rangeEnd);
  if (e) return e;
  const order = r.sortOrder ?? 0;
  const target = r.sortTarget ?? 0;
  if (!Number.isInteger(order) || order < 0 || order > 2) return new KvError('INVALID_SORT_OPTION');
  if (!Number.isInteger(target) || target < 0 || target > 4) return new KvError('INVALID_SORT_OPTION');
  return undefined;
}

export function checkPutRequest(r: PutRequest): KvError | undefined {
  const e = checkKey(r.key);
  if (e) return e;
  if (r.ignoreValue && r.value !== undefined && r.value.byteLength !== 0) return new KvError('VALUE_PROVIDED');
  if (r.ignoreLease && (r.lease ?? 0) !== 0) return new KvError('LEASE_PROVIDED');
  return undefined;
}

export function checkDeleteRequest(r: DeleteRangeRequest): KvError | undefined {
  return checkKey(r.key) ?? checkRangeEnd(r.rangeEnd);
}

function checkCompare(c: Compare): KvError | undefined {
  return checkKey(c.key) ?? checkRangeEnd(c.rangeEnd);
}

/** etcd's checkTxnRequest: the op budget shrinks by the parent's largest list for nested txns. */
export function checkTxnRequest(r: TxnRequest, maxTxnOps: number = MAX_TXN_OPS, depth = 1): KvError | undefined {
  if (depth > MAX_TXN_DEPTH) return new KvError('TXN_TOO_DEEP', `depth > ${MAX_TXN_DEPTH}`);
  const compares = r.compare ?? [];
  const success = r.success ?? [];
  const failure = r.failure ?? [];
  const opc = Math.max(compares.length, success.length, failure.length);
  if (opc > maxTxnOps) return new KvError('TOO_MANY_OPS');
  for (const c of compares) {
    const e = checkCompare(c);
    if (e) return e;
  }
  for (const ops of [success, failure]) {
    for (const op of ops) {
      const e = checkRequestOp(op, maxTxnOps - opc, depth);
      if (e) return e;
    }
  }
  return undefined;
}

function checkRequestOp(op: RequestOp, maxTxnOps: number, depth: number): KvError | undefined {
  if (op.requestRange) return checkRangeRequest(op.requestRange);
  if (op.requestPut) return checkPutRequest(op.requestPut);
  if (op.requestDeleteRange) return checkDeleteRequest(op.requestDeleteRange);
  if (op.requestTxn) return checkTxnRequest(op.requestTxn, maxTxnOps, depth + 1);
  // etcd answers an empty RequestOp with "key not found".
  return new KvError('KEY_NOT_FOUND');
}

// ---- the duplicate-key rule (etcd's checkIntervals) ----

/** Deletes collected so far: points and intervals, checked by linear scan (a txn is small). */
class DeleteSet {
  readonly spans: KeySpan[] = [];
  add(s: KeySpan): void {
    this.spans.push(s);
  }
  addAll(o: DeleteSet): void {
    for (const s of o.spans) this.spans.push(s);
  }
  intersects(key: string): boolean {
    for (const s of this.spans) {
      if (s.end === undefined ? s.start === key : key >= s.start && (s.end === '' || key < s.end)) return true;
    }
    return false;
  }
}

/**
 * A txn may not put a key twice, nor put a key it also deletes, across its levels (a then- and
 * an else-branch may put the same key: only one runs). Unlike etcd, a delete to the end of the
 * keyspace ("\0" range end) counts as covering every key after its start; etcd's interval for
 * it is empty, which lets a txn put and delete one key at the same revision.
 */
export function checkIntervals(reqs: RequestOp[]): { puts: Set<string>; dels: DeleteSet } | KvError {
  const dels = new DeleteSet();
  for (const r of reqs) {
    const d = r.requestDeleteRange;
    if (d) dels.add(spanOf(d.key, d.rangeEnd));
  }
  const puts = new Set<string>();
  for (const r of reqs) {
    const t = r.requestTxn;
    if (!t) continue;
    const then = checkIntervals(t.success ?? []);
    if (then instanceof KvError) return then;
    const els = checkIntervals(t.failure ?? []);
    if (els instanceof KvError) return els;
    for (const k of then.puts) {
      if (puts.has(k) || dels.intersects(k)) return new KvError('DUPLICATE_KEY');
      puts.add(k);
    }
    for (const k of els.puts) {
      if (puts.has(k) && !then.puts.has(k)) return new KvError('DUPLICATE_KEY');
      if (dels.intersects(k)) return new KvError('DUPLICATE_KEY');
      puts.add(k);
    }
    dels.addAll(then.dels);
    dels.addAll(els.dels);
  }
  for (const r of reqs) {
    const p = r.requestPut;
    if (!p) continue;
    const k = keyString(p.key);
    if (puts.has(k) || dels.intersects(k)) return new KvError('DUPLICATE_KEY');
    puts.add(k);
  }
  return { puts, dels };
}

/** Every stateless check of one request, in etcd's order. */
export function checkRequest(req: KvRequest): KvError | undefined {
  if ('range' in req) return checkRangeRequest(req.range);
  if ('put' in req) return checkPutRequest(req.put);
  if ('deleteRange' in req) return checkDeleteRequest(req.deleteRange);
  if ('txn' in req) {
    const e = checkTxnRequest(req.txn);
    if (e) return e;
    for (const ops of [req.txn.success ?? [], req.txn.failure ?? []]) {
      const r = checkIntervals(ops);
      if (r instanceof KvError) return r;
    }
    return undefined;
  }
  if ('leaseGrant' in req) {
    if ((req.leaseGrant.TTL ?? 0) > MAX_LEASE_TTL_SECONDS) return new KvError('LEASE_TTL_TOO_LARGE');
    // Negative IDs are granted, as etcd grants them; only IDs a number cannot hold are refused.
    const id = req.leaseGrant.ID ?? 0;
    if (id < MIN_LEASE_ID || id > MAX_LEASE_ID) return new KvError('MALFORMED_REQUEST', `lease ID ${id} outside [${MIN_LEASE_ID}, ${MAX_LEASE_ID}]`);
    return undefined;
  }
  return undefined;
}
