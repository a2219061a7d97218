/** Shared helpers for the kv tests: a store driven through the codec like a Raft node would. */
import { decodeKvRequest, encodeKvRequest } from '../../core/kv/codec.js';
import type { KvError } from '../../core/kv/errors.js';
import { KvStore, type KvStoreOptions } from '../../core/kv/store.js';
import type {
  DeleteRangeResponse,
  KeyValue,
  KvRequest,
  KvResponse,
  LeaseGrantResponse,
  PutResponse,
  RangeResponse,
  TxnResponse,
} from '../../core/kv/types.js';

export const b = (s: string): Buffer => Buffer.from(s, 'latin1');
export const s = (u: Uint8Array): string => Buffer.from(u).toString('latin1');

/** A compact view of a KeyValue for assertions. */
export function kvView(kv: KeyValue): { key: string; value: string; c: number; m: number; v: number; lease: number } {
  return { key: s(kv.key), value: s(kv.value), c: kv.createRevision, m: kv.modRevision, v: kv.version, lease: kv.lease };
}

/** Applies requests with increasing indexes, through encode/decode (as entries would be). */
export class Node {
  index = 0;
  constructor(readonly store: KvStore = new KvStore()) {}

  static create(opts?: KvStoreOptions): Node {
    return new Node(new KvStore(opts));
  }

  apply(req: KvRequest): KvResponse {
    this.index++;
    return this.store.apply(decodeKvRequest(encodeKvRequest(req)), { index: this.index, term: 1 });
  }

  put(key: string, value: string, extra: Record<string, unknown> = {}): PutResponse {
    return this.ok(this.apply({ put: { key: b(key), value: b(value), ...extra } }), 'put') as PutResponse;
  }

  del(key: string, rangeEnd?: string, prevKv = false): DeleteRangeResponse {
    const r = this.apply({ deleteRange: { key: b(key), ...(rangeEnd !== undefined ? { rangeEnd: b(rangeEnd) } : {}), prevKv } });
    return this.ok(r, 'deleteRange') as DeleteRangeResponse;
  }

  range(key: string, rangeEnd?: string, extra: Record<string, unknown> = {}): RangeResponse {
    return this.store.range({ key: b(key), ...(rangeEnd !== undefined ? { rangeEnd: b(rangeEnd) } : {}), ...extra });
  }

  txn(req: Extract<KvRequest, { txn: unknown }>['txn']): TxnResponse {
    return this.ok(this.apply({ txn: req }), 'txn') as TxnResponse;
  }

  grant(TTL: number, ID = 0): LeaseGrantResponse {
    return this.ok(this.apply({ leaseGrant: { TTL, ID } }), 'leaseGrant') as LeaseGrantResponse;
  }

  /** The error of a request that must fail. */
  err(req: KvRequest): KvError {
    const r = this.apply(req);
    if (!('error' in r)) throw new Error(`expected an error, got ${JSON.stringify(r)}`);
    return r.error;
  }

  private ok(r: KvResponse, field: string): unknown {
    if ('error' in r) throw new Error(`unexpected error ${r.error.code}: ${r.error.message} ${r.error.detail ?? ''}`);
    const v = (r as Record<string, unknown>)[field];
    if (v === undefined) throw new Error(`expected ${field}, got ${JSON.stringify(r)}`);
    return v;
  }
}

/** Keys (as strings) of a range response. */
export function keysOf(r: RangeResponse): string[] {
  return r.kvs.map((kv) => s(kv.key));
}
