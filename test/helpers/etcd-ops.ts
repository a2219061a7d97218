/**
 * Generated etcd v3 KV request sequences for differential tests against a real etcd
 * (test/compat/etcd-differential*.test.ts): fast-check arbitraries for put, range with every
 * option, delete, txn with compares and nested txns, compaction and lease revocation; the
 * requests they make for one system (its key prefix, start revision and leases: a Frame); and
 * the normalisation that makes two systems' answers comparable (revisions relative to the
 * frame's start, lease IDs by position, per-cluster fields dropped).
 */
import fc from 'fast-check';
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, startPicloud, type BenchCluster } from '../../bench/kv/clusters.js';

export const KEYS = ['a', 'aa', 'ab', 'b', 'c'];
export const VALUES = ['', 'x', 'y', 'zz'];
/** Leases granted at the start of each sequence; index LEASES means an ID nobody granted. */
export const LEASES = 2;
export const UNKNOWN_LEASE_ID = '7340032';

// ---- what a sequence is made of -------------------------------------------------------------

/** The end of a key range: one key, a prefix, up to another key, from the key on, or the sequence's whole prefix. */
export type End = { kind: 'single' } | { kind: 'prefix' } | { kind: 'to'; to: number } | { kind: 'fromKey' } | { kind: 'all' };
/** A revision relative to the sequence's start: 0 is "none" (the current one), -1 is sent as is. */
export type RelRev = number;

export interface PutOp { t: 'put'; key: number; value: number; prevKv: boolean; lease: number | null; ignoreValue: boolean; ignoreLease: boolean }
export interface RangeOp {
  t: 'range'; key: number; end: End; limit: number; revision: RelRev; sortOrder: string; sortTarget: string;
  keysOnly: boolean; countOnly: boolean; minMod: RelRev; maxMod: RelRev; minCreate: RelRev; maxCreate: RelRev; serializable: boolean;
}
export interface DeleteOp { t: 'delete'; key: number; end: End; prevKv: boolean }
export interface Cmp { target: 'VERSION' | 'CREATE' | 'MOD' | 'VALUE' | 'LEASE'; result: string; key: number; prefix: boolean; arg: number }
export interface TxnOp { t: 'txn'; compare: Cmp[]; success: RequestOp[]; failure: RequestOp[] }
export type RequestOp = PutOp | RangeOp | DeleteOp | TxnOp;
export type Op = RequestOp | { t: 'compact'; revision: RelRev; physical: boolean } | { t: 'revoke'; lease: number } | { t: 'ttl'; lease: number; keys: boolean };

const arbKey = fc.nat(KEYS.length - 1);
const arbRel = fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 4, arbitrary: fc.integer({ min: 1, max: 12 }) });
const arbEnd: fc.Arbitrary<End> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ kind: 'single' as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'prefix' as const }) },
  { weight: 1, arbitrary: arbKey.map((to) => ({ kind: 'to' as const, to })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'fromKey' as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'all' as const }) },
);
const arbPut: fc.Arbitrary<PutOp> = fc.record({
  t: fc.constant('put' as const),
  key: arbKey,
  value: fc.nat(VALUES.length - 1),
  prevKv: fc.boolean(),
  lease: fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.nat(LEASES) }),
  ignoreValue: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  ignoreLease: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});
const arbRange: fc.Arbitrary<RangeOp> = fc.record({
  t: fc.constant('range' as const),
  key: arbKey,
  end: arbEnd,
  limit: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 3 }) }),
  revision: fc.oneof({ weight: 6, arbitrary: arbRel }, { weight: 1, arbitrary: fc.constant(-1) }),
  sortOrder: fc.constantFrom('NONE', 'NONE', 'ASCEND', 'DESCEND'),
  sortTarget: fc.constantFrom('KEY', 'VERSION', 'CREATE', 'MOD', 'VALUE'),
  keysOnly: fc.boolean(),
  countOnly: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  minMod: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: arbRel }),
  maxMod: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: arbRel }),
  minCreate: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: arbRel }),
  maxCreate: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: arbRel }),
  serializable: fc.boolean(),
});
const arbDelete: fc.Arbitrary<DeleteOp> = fc.record({ t: fc.constant('delete' as const), key: arbKey, end: arbEnd, prevKv: fc.boolean() });
/**
 * Inside a txn, no deletes to the end of the keyspace: picloud refuses a txn that also puts a key
 * such a delete covers, which etcd 3.4 lets through (README, "Where picloud differs from etcd").
 */
const arbTxnDelete = arbDelete.filter((d) => d.end.kind !== 'fromKey');
const arbCmp: fc.Arbitrary<Cmp> = fc.record({
  target: fc.constantFrom('VERSION' as const, 'CREATE' as const, 'MOD' as const, 'VALUE' as const, 'LEASE' as const),
  result: fc.constantFrom('EQUAL', 'GREATER', 'LESS', 'NOT_EQUAL'),
  key: arbKey,
  prefix: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  // VERSION: the version; CREATE/MOD: a relative revision; VALUE: a value's index; LEASE: a lease's index.
  arg: fc.nat(5),
});
function arbTxn(depth: number): fc.Arbitrary<TxnOp> {
  const simple: fc.Arbitrary<RequestOp> = fc.oneof({ weight: 3, arbitrary: arbPut }, { weight: 2, arbitrary: arbRange }, { weight: 1, arbitrary: arbTxnDelete });
  const op = depth > 0 ? fc.oneof({ weight: 8, arbitrary: simple }, { weight: 1, arbitrary: arbTxn(depth - 1) as fc.Arbitrary<RequestOp> }) : simple;
  return fc.record({
    t: fc.constant('txn' as const),
    compare: fc.array(arbCmp, { maxLength: 3 }),
    success: fc.array(op, { maxLength: 3 }),
    failure: fc.array(op, { maxLength: 3 }),
  });
}
export const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: arbPut },
  { weight: 5, arbitrary: arbRange },
  { weight: 2, arbitrary: arbDelete },
  { weight: 3, arbitrary: arbTxn(1) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('compact' as const), revision: fc.integer({ min: 1, max: 12 }), physical: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('revoke' as const), lease: fc.nat(LEASES) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('ttl' as const), lease: fc.nat(LEASES), keys: fc.boolean() }) },
);

// ---- turning a generated op into one system's request -----------------------------------------

/** What one system's requests are built against: its key prefix, start revision and leases. */
export interface Frame {
  prefix: string;
  base: number;
  leaseIds: string[];
}

export const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

export function prefixEnd(s: string): string {
  const b = bytes(s);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) return b.subarray(0, i).toString('latin1') + String.fromCharCode(b[i]! + 1);
  }
  return '\0';
}

/**
 * A single key is sent without range_end, as Go clients send it: etcd reads a range_end that is
 * present but empty as "every key from this one on" (Go's decoder gives a non-nil empty slice),
 * a quirk no client relies on and picloud does not copy.
 */
export function keyRange(f: Frame, key: number, end: End): { key: Buffer; rangeEnd?: Buffer } {
  const k = f.prefix + KEYS[key]!;
  switch (end.kind) {
    case 'single': return { key: bytes(k) };
    case 'prefix': return { key: bytes(k), rangeEnd: bytes(prefixEnd(k)) };
    case 'to': return { key: bytes(k), rangeEnd: bytes(f.prefix + KEYS[end.to]!) };
    case 'fromKey': return { key: bytes(k), rangeEnd: bytes('\0') };
    case 'all': return { key: bytes(f.prefix), rangeEnd: bytes(prefixEnd(f.prefix)) };
  }
}

export const rev = (f: Frame, r: RelRev): string => (r <= 0 ? String(r) : String(f.base + r));
export const leaseId = (f: Frame, i: number): string => f.leaseIds[i] ?? UNKNOWN_LEASE_ID;

export function putRequest(f: Frame, op: PutOp): object {
  return {
    key: bytes(f.prefix + KEYS[op.key]!),
    value: bytes(VALUES[op.value]!),
    lease: op.lease === null ? '0' : leaseId(f, op.lease),
    prevKv: op.prevKv,
    ignoreValue: op.ignoreValue,
    ignoreLease: op.ignoreLease,
  };
}

export function rangeRequest(f: Frame, op: RangeOp): object {
  return {
    ...keyRange(f, op.key, op.end),
    limit: String(op.limit),
    revision: rev(f, op.revision),
    sortOrder: op.sortOrder,
    sortTarget: op.sortTarget,
    serializable: op.serializable,
    keysOnly: op.keysOnly,
    countOnly: op.countOnly,
    minModRevision: rev(f, op.minMod),
    maxModRevision: rev(f, op.maxMod),
    minCreateRevision: rev(f, op.minCreate),
    maxCreateRevision: rev(f, op.maxCreate),
  };
}

export function deleteRequest(f: Frame, op: DeleteOp): object {
  return { ...keyRange(f, op.key, op.end), prevKv: op.prevKv };
}

function compareOf(f: Frame, c: Cmp): object {
  const key = bytes(f.prefix + KEYS[c.key]!);
  const base = { key, ...(c.prefix ? { rangeEnd: bytes(prefixEnd(f.prefix + KEYS[c.key]!)) } : {}), result: c.result, target: c.target };
  switch (c.target) {
    case 'VERSION': return { ...base, version: String(c.arg) };
    case 'CREATE': return { ...base, createRevision: rev(f, c.arg) };
    case 'MOD': return { ...base, modRevision: rev(f, c.arg) };
    case 'VALUE': return { ...base, value: bytes(VALUES[c.arg % VALUES.length]!) };
    // Lease IDs are opaque (etcd's grow, picloud's are hashed): ordered only against none (0).
    case 'LEASE': return { ...base, lease: c.arg > LEASES || c.result === 'GREATER' || c.result === 'LESS' ? '0' : leaseId(f, c.arg) };
  }
}

function requestOp(f: Frame, op: RequestOp): object {
  switch (op.t) {
    case 'put': return { requestPut: putRequest(f, op) };
    case 'range': return { requestRange: rangeRequest(f, op) };
    case 'delete': return { requestDeleteRange: deleteRequest(f, op) };
    case 'txn': return { requestTxn: txnRequest(f, op) };
  }
}

export function txnRequest(f: Frame, op: TxnOp): object {
  return {
    compare: op.compare.map((c) => compareOf(f, c)),
    success: op.success.map((o) => requestOp(f, o)),
    failure: op.failure.map((o) => requestOp(f, o)),
  };
}

/** A range over the sequence's whole prefix at the current revision (each sequence ends with it). */
export const RANGE_ALL: RangeOp = {
  t: 'range', key: 0, end: { kind: 'all' }, limit: 0, revision: 0, sortOrder: 'NONE', sortTarget: 'KEY', keysOnly: false,
  countOnly: false, minMod: 0, maxMod: 0, minCreate: 0, maxCreate: 0, serializable: false,
};

/** An op as the etcd v3 call it is: the RPC's name and its request (proto-loader's camelCase form). */
export function opRequest(f: Frame, op: Op): { rpc: 'Put' | 'Range' | 'DeleteRange' | 'Txn' | 'Compact' | 'LeaseRevoke' | 'LeaseTimeToLive'; req: object } {
  switch (op.t) {
    case 'put': return { rpc: 'Put', req: putRequest(f, op) };
    case 'range': return { rpc: 'Range', req: rangeRequest(f, op) };
    case 'delete': return { rpc: 'DeleteRange', req: deleteRequest(f, op) };
    case 'txn': return { rpc: 'Txn', req: txnRequest(f, op) };
    case 'compact': return { rpc: 'Compact', req: { revision: rev(f, op.revision), physical: op.physical } };
    case 'revoke': return { rpc: 'LeaseRevoke', req: { ID: leaseId(f, op.lease) } };
    case 'ttl': return { rpc: 'LeaseTimeToLive', req: { ID: leaseId(f, op.lease), keys: op.keys } };
  }
}

// ---- what is compared -----------------------------------------------------------------------

/** Revision fields, in proto-loader's camelCase and the JSON gateway's snake_case. */
const REVISION_FIELDS = new Set(['revision', 'createRevision', 'modRevision', 'compactRevision', 'create_revision', 'mod_revision', 'compact_revision']);
/** Random or per-cluster by design, or a clock's reading (a lease's seconds left): never compared. */
const DROPPED_FIELDS = new Set(['clusterId', 'memberId', 'raftTerm', 'cluster_id', 'member_id', 'raft_term', 'TTL']);

/** A response with bytes as text, revisions relative to the frame's base and lease IDs as their index. */
export function normalize(f: Frame, v: unknown, field = ''): unknown {
  if (Buffer.isBuffer(v)) return v.toString('latin1');
  // LeaseTimeToLive's keys: etcd lists a lease's keys as its Go map of them iterates, in an
  // order that changes from call to call; compared as a set.
  if (Array.isArray(v) && field === 'keys') return v.map((x) => normalize(f, x, field)).sort();
  if (Array.isArray(v)) return v.map((x) => normalize(f, x, field));
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (!DROPPED_FIELDS.has(k)) out[k] = normalize(f, x, k);
    return out;
  }
  if (typeof v === 'string' && REVISION_FIELDS.has(field)) return Number(v) === 0 ? 0 : Number(v) - f.base;
  if (typeof v === 'string' && (field === 'lease' || field === 'ID')) {
    const i = f.leaseIds.indexOf(v);
    return i >= 0 ? `lease#${i}` : v;
  }
  return v;
}

/**
 * A real etcd and picloud of `size` members each, for one test: stopped in its teardown, after
 * the clients handed to `closeWithThem` are closed.
 */
export async function etcdAndPicloud(t: Test, size: number): Promise<{ clusters: [BenchCluster, BenchCluster]; closeWithThem(...clients: Array<{ close(): void }>): void }> {
  const root = mkdtempSync(join(tmpdir(), 'picloud-diff-'));
  const clusters: BenchCluster[] = [];
  const clients: Array<{ close(): void }> = [];
  t.teardown(async () => {
    for (const c of clients) c.close();
    await Promise.all(clusters.map((c) => c.stop()));
    rmSync(root, { recursive: true, force: true });
  });
  // Both at once (each waits mostly on its own elections); one that started is stopped in the
  // teardown even when the other failed to.
  const started = await Promise.allSettled([startEtcd({ root, size }), startPicloud({ root, size })]);
  for (const s of started) if (s.status === 'fulfilled') clusters.push(s.value);
  for (const s of started) if (s.status === 'rejected') throw s.reason;
  return { clusters: clusters as [BenchCluster, BenchCluster], closeWithThem: (...c) => clients.push(...c) };
}
