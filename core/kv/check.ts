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

/** A put's key, to be checked against the deletes collected before it (the first `before`). */
interface PutProbe {
  key: string;
  before: number;
}

/**
 * A txn may not put a key twice, nor put a key it also deletes, across its levels (a then- and
 * an else-branch may put the same key: only one runs). As in etcd, a nested txn's puts are
 * checked against the deletes of its level and of the nested txns before it, not after it.
 * Unlike etcd, a delete to the end of the keyspace ("\0" range end) counts as covering every key
 * after its start; etcd's interval for it is empty, which lets a txn put and delete one key at
 * the same revision.
 *
 * The deletes of a level come back in the order collected; each level checks its puts against
 * them in one sweep (anyCovered), O(n log n) as etcd's interval tree: a linear scan per put
 * let one request of 32,768 nested deletes and as many puts take seconds on every member.
 */
export function checkIntervals(reqs: RequestOp[]): { puts: Set<string>; dels: KeySpan[] } | KvError {
  const dels: KeySpan[] = [];
  for (const r of reqs) {
    const d = r.requestDeleteRange;
    if (d) dels.push(spanOf(d.key, d.rangeEnd));
  }
  const puts = new Set<string>();
  const probes: PutProbe[] = [];
  for (const r of reqs) {
    const t = r.requestTxn;
    if (!t) continue;
    const then = checkIntervals(t.success ?? []);
    if (then instanceof KvError) return then;
    const els = checkIntervals(t.failure ?? []);
    if (els instanceof KvError) return els;
    for (const k of then.puts) {
      if (puts.has(k)) return new KvError('DUPLICATE_KEY');
      puts.add(k);
      probes.push({ key: k, before: dels.length });
    }
    for (const k of els.puts) {
      if (puts.has(k) && !then.puts.has(k)) return new KvError('DUPLICATE_KEY');
      puts.add(k);
      probes.push({ key: k, before: dels.length });
    }
    for (const d of then.dels) dels.push(d);
    for (const d of els.dels) dels.push(d);
  }
  for (const r of reqs) {
    const p = r.requestPut;
    if (!p) continue;
    const k = keyString(p.key);
    if (puts.has(k)) return new KvError('DUPLICATE_KEY');
    puts.add(k);
    probes.push({ key: k, before: dels.length });
  }
  if (anyCovered(dels, probes)) return new KvError('DUPLICATE_KEY');
  return { puts, dels };
}

/**
 * True if some probe's key lies in one of the deletes collected before it (index < before).
 * Single keys by a map of each key's first delete; ranges by a sweep over the probes in key
 * order, holding the ranges started so far in a heap by index and dropping those that end at or
 * before the current key (keys only grow, so they never cover a later one): the heap's top is
 * then the earliest range covering the key.
 */
function anyCovered(dels: readonly KeySpan[], probes: readonly PutProbe[]): boolean {
  if (dels.length === 0 || probes.length === 0) return false;
  const firstDelete = new Map<string, number>();
  const ranges: number[] = [];
  for (let i = 0; i < dels.length; i++) {
    const d = dels[i]!;
    if (d.end !== undefined) ranges.push(i);
    else if (!firstDelete.has(d.start)) firstDelete.set(d.start, i);
  }
  for (const p of probes) if ((firstDelete.get(p.key) ?? Infinity) < p.before) return true;
  if (ranges.length === 0) return false;
  ranges.sort((a, b) => compareStrings(dels[a]!.start, dels[b]!.start));
  const sorted = [...probes].sort((a, b) => compareStrings(a.key, b.key));
  const open = new IndexHeap();
  let next = 0;
  for (const p of sorted) {
    while (next < ranges.length && dels[ranges[next]!]!.start <= p.key) open.push(ranges[next++]!);
    for (let top = open.peek(); top !== undefined; top = open.peek()) {
      const end = dels[top]!.end!;
      if (end === '' || p.key < end) break;
      open.pop();
    }
    const earliest = open.peek();
    if (earliest !== undefined && earliest < p.before) return true;
  }
  return false;
}

const compareStrings = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** A binary min-heap of indices. */
class IndexHeap {
  private readonly items: number[] = [];
  peek(): number | undefined {
    return this.items[0];
  }
  push(v: number): void {
    const a = this.items;
    let i = a.push(v) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]! <= v) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = v;
  }
  pop(): void {
    const a = this.items;
    const last = a.pop()!;
    if (a.length === 0) return;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= a.length) break;
      if (child + 1 < a.length && a[child + 1]! < a[child]!) child++;
      if (a[child]! >= last) break;
      a[i] = a[child]!;
      i = child;
    }
    a[i] = last;
  }
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
