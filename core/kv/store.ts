/**
 * KvStore: the deterministic state machine that applies committed Raft entries — Range, Put,
 * DeleteRange, Txn, Compaction, LeaseGrant, LeaseRevoke — with etcd's semantics and errors.
 * The same sequence of `apply` calls on any member gives the same state and the same
 * responses: no clock, no randomness, ordered iteration everywhere.
 *
 * Also here: reads outside Raft (`range`, `rangePages`, lease queries), change tracking for
 * the persistence layer (core/storage/mvcc-backend.ts), listeners for the watch hub, and the
 * entry points of snapshot save/restore (snapshot.ts). Not here: expiry of leases (the
 * leader's LeaseTimers), watch delivery (watch.ts), encoding (codec.ts).
 */
import { createHash } from 'node:crypto';
import { AuthState, type AuthRequest, type AuthResponse } from './auth.js';
import { checkRangeRequest, checkRequest } from './check.js';
import { KvError } from './errors.js';
import { EMPTY_BYTES, keyBytes, keyString, spanOf } from './keys.js';
import { LeaseTable, leaseIdForIndex, type LeaseEntry } from './leases.js';
import { MAX_RANGE_RESPONSE_BYTES, MIN_LEASE_TTL_SECONDS, RANGE_PAGE_BYTES_DEFAULT } from './limits.js';
import { KeyHistory, KvRecord, MvccIndex, visibleRecords, type RevisionLog } from './mvcc.js';
import { compareStored, type ValueArena } from './value-arena.js';
import { checkTxnReadRevision, executeRange, rangePages, visitLive, type RangePage } from './range.js';
import { checkRequestPermission } from './permissions.js';
import { readSnapshot, writeSnapshot, type SnapshotStream } from './snapshot.js';
import {
  CompareResult,
  CompareTarget,
  EventType,
  type Compare,
  type CompactionRequest,
  type CompactionResponse,
  type DeleteRangeRequest,
  type DeleteRangeResponse,
  type KvRequest,
  type KvResponse,
  type LeaseGrantRequest,
  type LeaseGrantResponse,
  type LeaseLeasesResponse,
  type LeaseRevokeRequest,
  type LeaseRevokeResponse,
  type LeaseTimeToLiveResponse,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type ResponseOp,
  type RequestOp,
  type TxnRequest,
  type TxnResponse,
  type WatchEvent,
} from './types.js';

export interface ApplyContext {
  /** Raft index of the entry; entries at or below the applied index are skipped. */
  index: number;
  term: number;
}

/** Told about every change, synchronously inside apply (the watch hub is one). */
export interface KvListener {
  /** All events of one new revision, in sub-revision order. prevKv is always filled when one existed. */
  onRevision(revision: number, events: readonly WatchEvent[]): void;
  /** A compaction at `revision` was applied. */
  onCompact?(revision: number): void;
  /** The whole state was replaced by a snapshot. */
  onRestore?(): void;
}

/** What changed since the last drain, for the persistence layer. */
export interface StateChanges {
  /** The whole state was replaced (snapshot restore): rewrite everything. */
  full: boolean;
  /** Records added, in revision order. */
  appended: KvRecord[];
  /** Records compacted away (may include records appended in this same batch). */
  removed: KvRecord[];
  /** Lease grants and revokes in the order they happened. */
  leaseOps: Array<{ put: { id: number; ttlSeconds: number } } | { del: number }>;
  /** The auth state changed: persist its image (AuthState.image). */
  auth: boolean;
  appliedIndex: number;
  appliedTerm: number;
  currentRevision: number;
  compactRevision: number;
}

export interface KvStoreOptions {
  /** Cap on a unary Range response held in memory (default MAX_RANGE_RESPONSE_BYTES). */
  maxRangeResponseBytes?: number;
}

/** The state a snapshot or the persistence layer installs (see StateBuilder in snapshot.ts). */
export interface InstallableState {
  hists: Map<string, KeyHistory>;
  sorted: KeyHistory[];
  revlog: RevisionLog;
  /** Holds the values of the records in `hists`. */
  arena: ValueArena;
  leases: Array<{ id: number; ttlSeconds: number }>;
  /** AuthState.image(); absent: no users, roles, auth off (state written before auth existed). */
  auth?: unknown;
  currentRevision: number;
  compactRevision: number;
  appliedIndex: number;
  appliedTerm: number;
  /** What the snapshot's writer added of its own (KvStore.snapshot's `context`). */
  context?: Uint8Array;
}

function cmpNum(a: number, b: number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export class KvStore {
  private readonly idx = new MvccIndex();
  private readonly leaseTable = new LeaseTable();
  /** Users, roles and whether auth is on (etcd's auth store), replicated like the keys. */
  readonly auth = new AuthState();
  private readonly listeners: KvListener[] = [];
  private readonly maxRangeBytes: number;
  private changes: StateChanges | undefined;
  private pins = 0;
  private epoch = 0;
  private _appliedIndex = 0;
  private _appliedTerm = 0;

  constructor(opts: KvStoreOptions = {}) {
    this.maxRangeBytes = opts.maxRangeResponseBytes ?? MAX_RANGE_RESPONSE_BYTES;
  }

  /** Index of the last applied Raft entry (etcd's consistent index). */
  get appliedIndex(): number {
    return this._appliedIndex;
  }
  get appliedTerm(): number {
    return this._appliedTerm;
  }
  /** The current revision (1 for an empty store). */
  get revision(): number {
    return this.idx.currentRevision;
  }
  /** The compacted revision; -1 before any compaction. */
  get compactRevision(): number {
    return this.idx.compactRevision;
  }
  /** Estimated memory held by retained history (what the space quota counts; see quota.ts). */
  get retainedBytes(): number {
    return this.idx.retainedBytes;
  }
  /**
   * retainedBytes plus what the value arena holds beyond the values in use (space compaction
   * freed that relocation has not yet given back): etcd's db size to retainedBytes' size in use.
   */
  get allocatedBytes(): number {
    return this.idx.retainedBytes + this.idx.valueSlackBytes;
  }

  /** Number of keys with any retained history (live or not yet compacted). */
  get keyCount(): number {
    return this.idx.keyCount;
  }

  // ---------------------------------------------------------------- apply

  /**
   * An entry with nothing for the store (a membership change, a leader's no-op) was applied:
   * the applied index moves past it, as etcd's consistent index does.
   */
  noteApplied(index: number, term: number): void {
    if (index <= this._appliedIndex) return;
    this._appliedIndex = index;
    this._appliedTerm = term;
    if (this.changes) {
      this.changes.appliedIndex = index;
      this.changes.appliedTerm = term;
    }
  }

  /**
   * Applies one committed entry. Errors a client must see (etcd's) come back as
   * `{ error }` — they are part of the deterministic outcome; anything thrown is a bug.
   */
  apply(req: KvRequest, ctx: ApplyContext): KvResponse {
    if (ctx.index <= this._appliedIndex) return { alreadyApplied: true };
    this._appliedIndex = ctx.index;
    this._appliedTerm = ctx.term;
    if (this.changes) {
      this.changes.appliedIndex = ctx.index;
      this.changes.appliedTerm = ctx.term;
    }
    const err = checkRequest(req);
    if (err) return { error: err };
    try {
      // A client's request is checked against the permissions as they are at this point of the log.
      // (Auth off, the common case: no check and no closure on the put path.)
      if (req.client === true && this.auth.enabled) checkRequestPermission(this.auth, req.user, req, (id) => this.leaseKeys(id));
      if ('auth' in req) return { auth: this.applyAuth(req.auth) };
      if ('range' in req) return { range: this.rangeAt(req.range) };
      if ('put' in req) return { put: this.applyPut(req.put) };
      if ('deleteRange' in req) return { deleteRange: this.applyDelete(req.deleteRange) };
      if ('txn' in req) return { txn: this.applyTxn(req.txn) };
      if ('compaction' in req) return { compaction: this.applyCompaction(req.compaction) };
      if ('leaseGrant' in req) return { leaseGrant: this.applyLeaseGrant(req.leaseGrant, ctx.index) };
      return { leaseRevoke: this.applyLeaseRevoke(req.leaseRevoke) };
    } catch (e) {
      // Every KvError is raised before the first mutation (prechecks), so state is untouched.
      if (e instanceof KvError) return { error: e };
      throw e;
    }
  }

  // ---------------------------------------------------------------- reads

  /** A Range at the current state, outside Raft (serializable, or after ReadIndex). Throws KvError. */
  range(r: RangeRequest): RangeResponse {
    const e = checkRangeRequest(r);
    if (e) throw e;
    return this.rangeAt(r);
  }

  private rangeAt(r: RangeRequest): RangeResponse {
    return executeRange(this.idx, r, this.idx.currentRevision, this.maxRangeBytes);
  }

  /**
   * A Range as pages of at most `pageBytes` key+value bytes, read at one revision, for
   * streaming huge ranges in bounded memory. Throws KvError (also between pages: COMPACTED).
   */
  rangePages(r: RangeRequest, pageBytes: number = RANGE_PAGE_BYTES_DEFAULT): Generator<RangePage, void, void> {
    const e = checkRangeRequest(r);
    if (e) throw e;
    return rangePages(this.idx, r, pageBytes);
  }

  /** Lease metadata; `TTL` is the granted TTL here — the leader's LeaseTimers knows the remaining time. */
  leaseTimeToLive(id: number, withKeys: boolean): LeaseTimeToLiveResponse {
    const l = this.leaseTable.get(id);
    const header = { revision: this.idx.currentRevision };
    if (!l) return { header, ID: id, TTL: -1, grantedTTL: 0, keys: [] };
    const keys = withKeys ? [...l.keys].sort().map((k) => this.idx.history(k)!.key) : [];
    return { header, ID: id, TTL: l.ttlSeconds, grantedTTL: l.ttlSeconds, keys };
  }

  leaseLeases(): LeaseLeasesResponse {
    return {
      header: { revision: this.idx.currentRevision },
      leases: this.leaseTable.sorted().map((l) => ({ ID: l.id })),
    };
  }

  /** Every lease with its granted TTL, in ID order (for LeaseTimers on election). */
  leases(): Array<{ id: number; ttlSeconds: number }> {
    return this.leaseTable.sorted().map((l) => ({ id: l.id, ttlSeconds: l.ttlSeconds }));
  }

  hasLease(id: number): boolean {
    return this.leaseTable.has(id);
  }

  // ---------------------------------------------------------------- writes

  /**
   * A put's lease must exist, and ignore_value / ignore_lease need a live key. Which error wins
   * when both fail is etcd's: a put checks its lease first, a put inside a txn (etcd's
   * checkRequestPut) its key first.
   */
  private precheckPut(p: PutRequest, inTxn = false): void {
    const lease = p.lease ?? 0;
    const leaseMissing = lease !== 0 && !this.leaseTable.has(lease);
    const keyMissing = (p.ignoreValue || p.ignoreLease) && this.idx.history(keyString(p.key))?.live() === undefined;
    if (leaseMissing && !(inTxn && keyMissing)) throw new KvError('LEASE_NOT_FOUND');
    if (keyMissing) throw new KvError('KEY_NOT_FOUND');
  }

  private applyPut(p: PutRequest): PutResponse {
    this.precheckPut(p);
    this.idx.beginWrite();
    const events: WatchEvent[] | undefined = this.listeners.length > 0 ? [] : undefined;
    const resp = this.doPut(p, events);
    this.finishWrite(events);
    return resp;
  }

  private doPut(p: PutRequest, events: WatchEvent[] | undefined): PutResponse {
    const skey = keyString(p.key);
    const h = this.idx.history(skey);
    const prev = h?.live();
    // ignore_value / ignore_lease were prechecked to have a live key.
    const value = p.ignoreValue ? prev!.storedValue! : p.value ?? EMPTY_BYTES;
    const lease = p.ignoreLease ? prev!.lease : p.lease ?? 0;
    const rec = this.idx.put(skey, value, lease);
    if (prev === undefined || prev.lease !== lease) {
      if (prev !== undefined && prev.lease !== 0) this.leaseTable.detach(prev.lease, skey);
      if (lease !== 0) this.leaseTable.attach(lease, skey);
    }
    if (events) {
      const ev: WatchEvent = { type: EventType.PUT, kv: rec.toKeyValue() };
      if (prev) ev.prevKv = prev.toKeyValue();
      events.push(ev);
    }
    const resp: PutResponse = { header: { revision: this.idx.writeRevision } };
    if (p.prevKv && prev) resp.prevKv = prev.toKeyValue();
    return resp;
  }

  private applyDelete(d: DeleteRangeRequest): DeleteRangeResponse {
    this.idx.beginWrite();
    const events: WatchEvent[] | undefined = this.listeners.length > 0 ? [] : undefined;
    const resp = this.doDelete(d, events);
    this.finishWrite(events);
    return resp;
  }

  private doDelete(d: DeleteRangeRequest, events: WatchEvent[] | undefined): DeleteRangeResponse {
    const span = spanOf(d.key, d.rangeEnd);
    const victims: KvRecord[] = [];
    // Reading at the write's own revision sees changes made earlier in the same txn.
    visitLive(this.idx, span, this.idx.writeRevision, (rec) => {
      victims.push(rec);
    });
    const prevKvs = [];
    for (const prev of victims) {
      const rec = this.idx.delete(prev.hist);
      if (prev.lease !== 0) this.leaseTable.detach(prev.lease, prev.hist.skey);
      const prevKv = prev.toKeyValue();
      if (d.prevKv) prevKvs.push(prevKv);
      // The watch event's prevKv is the key before this revision, as etcd's (a read at rev - 1):
      // not a put made earlier in this same txn.
      const before = prev.main === this.idx.writeRevision ? prev.hist.liveAt(prev.main - 1)?.toKeyValue() : prevKv;
      if (events) events.push({ type: EventType.DELETE, kv: rec.toKeyValue(), ...(before ? { prevKv: before } : {}) });
    }
    const changed = victims.length > 0 || this.idx.writeChanges > 0;
    return {
      header: { revision: changed ? this.idx.writeRevision : this.idx.writeRevision - 1 },
      deleted: victims.length,
      prevKvs,
    };
  }

  private finishWrite(events: WatchEvent[] | undefined): void {
    const recs = this.idx.endWrite();
    if (recs.length === 0) return;
    if (this.changes) for (const r of recs) this.changes.appended.push(r);
    if (events && events.length > 0) {
      const rev = this.idx.currentRevision;
      for (const l of this.listeners) l.onRevision(rev, events);
    }
  }

  // ---------------------------------------------------------------- txn

  /**
   * A read-only txn (ranges only, on both branches) outside Raft, as etcd answers one: the
   * compares and the chosen branch's ranges at the current state (serializable, or after
   * ReadIndex). A write txn is refused here: it goes through Raft. Throws KvError.
   */
  readTxn(t: TxnRequest): TxnResponse {
    const e = checkRequest({ txn: t });
    if (e) throw e;
    if (!isTxnReadOnly(t)) throw new Error('readTxn: the txn writes; it must be proposed');
    const path: boolean[] = [];
    this.comparePath(t, path);
    this.precheckTxn(t, path);
    const succeeded = path[0]!;
    const rev = this.idx.currentRevision;
    const responses: ResponseOp[] = [];
    for (const op of (succeeded ? t.success : t.failure) ?? []) responses.push({ responseRange: executeRange(this.idx, op.requestRange!, rev, this.maxRangeBytes) });
    return { header: { revision: rev }, succeeded, responses };
  }

  private applyTxn(t: TxnRequest): TxnResponse {
    // etcd evaluates every compare of the chosen path first, against the state before the txn.
    const path: boolean[] = [];
    this.comparePath(t, path);
    this.precheckTxn(t, path);
    const readOnly = isTxnReadOnly(t);
    this.idx.beginWrite();
    const events: WatchEvent[] | undefined = this.listeners.length > 0 ? [] : undefined;
    let resp: TxnResponse;
    try {
      // The response cap can only fail a read-only txn: a write txn must not stop half-applied.
      resp = this.execTxn(t, path, { i: 0 }, events, readOnly ? this.maxRangeBytes : Infinity);
    } finally {
      this.finishWrite(events);
    }
    resp.header.revision = this.idx.currentRevision;
    return resp;
  }

  private comparePath(t: TxnRequest, path: boolean[]): void {
    let ok = true;
    for (const c of t.compare ?? []) {
      if (!this.applyCompare(c)) {
        ok = false;
        break;
      }
    }
    path.push(ok);
    for (const op of (ok ? t.success : t.failure) ?? []) {
      if (op.requestTxn) this.comparePath(op.requestTxn, path);
    }
  }

  /** etcd's applyCompare: every key of the range must satisfy it; no key compares as a zero KeyValue. */
  private applyCompare(c: Compare): boolean {
    let seen = false;
    let all = true;
    visitLive(this.idx, spanOf(c.key, c.rangeEnd), this.idx.currentRevision, (rec) => {
      seen = true;
      if (!compareRecord(c, rec)) {
        all = false;
        return false;
      }
      return true;
    });
    if (!seen) {
      // A value cannot be compared on a missing key (nil == empty in gRPC).
      if ((c.target ?? 0) === CompareTarget.VALUE) return false;
      return compareRecord(c, undefined);
    }
    return all;
  }

  /** etcd's order: every put on the path taken is checked, then every range (so a put's error wins). */
  private precheckTxn(t: TxnRequest, path: boolean[]): void {
    this.visitTxnPath(t, path, { i: 0 }, (op) => op.requestPut && this.precheckPut(op.requestPut, true));
    this.visitTxnPath(t, path, { i: 0 }, (op) => op.requestRange && checkTxnReadRevision(this.idx, op.requestRange.revision ?? 0, this.idx.currentRevision));
  }

  /** Calls visit on each non-txn op the txn (and its nested txns) runs, given the compares' path. */
  private visitTxnPath(t: TxnRequest, path: boolean[], cur: { i: number }, visit: (op: RequestOp) => void): void {
    const ok = path[cur.i++]!;
    for (const op of (ok ? t.success : t.failure) ?? []) {
      if (op.requestTxn) this.visitTxnPath(op.requestTxn, path, cur, visit);
      else visit(op);
    }
  }

  private execTxn(
    t: TxnRequest,
    path: boolean[],
    cur: { i: number },
    events: WatchEvent[] | undefined,
    maxRangeBytes: number,
  ): TxnResponse {
    const ok = path[cur.i++]!;
    const responses: ResponseOp[] = [];
    for (const op of (ok ? t.success : t.failure) ?? []) {
      if (op.requestRange) {
        const readRev = this.idx.writeChanges > 0 ? this.idx.writeRevision : this.idx.writeRevision - 1;
        responses.push({ responseRange: executeRange(this.idx, op.requestRange, readRev, maxRangeBytes) });
      } else if (op.requestPut) {
        responses.push({ responsePut: this.doPut(op.requestPut, events) });
      } else if (op.requestDeleteRange) {
        responses.push({ responseDeleteRange: this.doDelete(op.requestDeleteRange, events) });
      } else if (op.requestTxn) {
        // Nested txn responses carry an empty header, as etcd's do.
        responses.push({ responseTxn: this.execTxn(op.requestTxn, path, cur, events, maxRangeBytes) });
      }
    }
    return { header: { revision: 0 }, succeeded: ok, responses };
  }

  // ---------------------------------------------------------------- compaction

  private applyCompaction(c: CompactionRequest): CompactionResponse {
    const rev = c.revision ?? 0;
    if (rev <= this.idx.compactRevision) throw new KvError('COMPACTED');
    if (rev > this.idx.currentRevision) throw new KvError('FUTURE_REV');
    this.idx.compactRevision = rev;
    if (this.changes) this.changes.compactRevision = rev;
    this.physicalCompactIfUnpinned();
    for (const l of this.listeners) l.onCompact?.(rev);
    return { header: { revision: this.idx.currentRevision } };
  }

  /** Physical removal waits while a snapshot is being streamed; reads never see the difference. */
  private physicalCompactIfUnpinned(): void {
    if (this.pins > 0 || this.idx.physicalCompactRevision >= this.idx.compactRevision) return;
    const removed = this.idx.physicalCompact(this.idx.compactRevision);
    if (this.changes) for (const r of removed) this.changes.removed.push(r);
  }

  // ---------------------------------------------------------------- leases

  private applyLeaseGrant(g: LeaseGrantRequest, index: number): LeaseGrantResponse {
    const id = g.ID ? g.ID : leaseIdForIndex(index, (x) => this.leaseTable.has(x));
    if (this.leaseTable.has(id)) throw new KvError('LEASE_EXISTS');
    const ttlSeconds = Math.max(g.TTL ?? 0, MIN_LEASE_TTL_SECONDS);
    this.leaseTable.grant(id, ttlSeconds);
    this.changes?.leaseOps.push({ put: { id, ttlSeconds } });
    return { header: { revision: this.idx.currentRevision }, ID: id, TTL: ttlSeconds, error: '' };
  }

  /** Deletes the lease's keys (in key order, at one revision) and the lease. */
  private applyLeaseRevoke(r: LeaseRevokeRequest): LeaseRevokeResponse {
    const l: LeaseEntry | undefined = this.leaseTable.get(r.ID ?? 0);
    if (!l) throw new KvError('LEASE_NOT_FOUND');
    const keys = [...l.keys].sort();
    this.idx.beginWrite();
    const events: WatchEvent[] | undefined = this.listeners.length > 0 ? [] : undefined;
    for (const k of keys) {
      const h = this.idx.history(k);
      const prev = h?.live();
      if (!h || !prev) continue;
      const rec = this.idx.delete(h);
      events?.push({ type: EventType.DELETE, kv: rec.toKeyValue(), prevKv: prev.toKeyValue() });
    }
    this.leaseTable.remove(l.id);
    this.changes?.leaseOps.push({ del: l.id });
    this.finishWrite(events);
    return { header: { revision: this.idx.currentRevision } };
  }

  /** The keys attached to a lease (for the permission a revoke needs). */
  leaseKeys(id: number): Uint8Array[] {
    const l = this.leaseTable.get(id);
    return l === undefined ? [] : [...l.keys].map((k) => keyBytes(k));
  }

  // ---------------------------------------------------------------- auth

  private applyAuth(req: AuthRequest): AuthResponse {
    const resp = this.auth.apply(req);
    if (this.changes) this.changes.auth = true;
    return resp;
  }

  // ---------------------------------------------------------------- listeners, tracking

  /** Registers a listener; returns its removal. */
  subscribe(listener: KvListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** Starts recording changes for `drainChanges` (the persistence layer calls this once). */
  trackChanges(): void {
    if (!this.changes) this.changes = this.emptyChanges(false);
  }

  /** Changes since the last drain; recording continues. */
  drainChanges(): StateChanges {
    const c = this.changes ?? this.emptyChanges(false);
    c.appliedIndex = this._appliedIndex;
    c.appliedTerm = this._appliedTerm;
    c.currentRevision = this.idx.currentRevision;
    c.compactRevision = this.idx.compactRevision;
    if (this.changes) this.changes = this.emptyChanges(false);
    return c;
  }

  private emptyChanges(full: boolean): StateChanges {
    return {
      full,
      appended: [],
      removed: [],
      leaseOps: [],
      auth: false,
      appliedIndex: this._appliedIndex,
      appliedTerm: this._appliedTerm,
      currentRevision: this.idx.currentRevision,
      compactRevision: this.idx.compactRevision,
    };
  }

  // ---------------------------------------------------------------- internals for snapshot / persistence

  /** @internal Holds physical compaction back while a consistent image is read out. */
  pin(): void {
    this.pins++;
  }

  /** @internal */
  unpin(): void {
    this.pins--;
    if (this.pins === 0) this.physicalCompactIfUnpinned();
  }

  /** @internal The MVCC index (read-only use: snapshot writer, watch hub). */
  get mvcc(): MvccIndex {
    return this.idx;
  }

  /** @internal Incremented whenever the whole state is replaced. */
  get stateEpoch(): number {
    return this.epoch;
  }

  /**
   * The whole state as a stream of chunks (with a SHA-256 trailer), consistent at this call's
   * revision and applied index (`stream.appliedIndex`); applies may continue meanwhile.
   * Iterate to the end or call `return()`.
   */
  snapshot(chunkBytes?: number, context?: Uint8Array): SnapshotStream {
    return writeSnapshot(this, chunkBytes, context);
  }

  /**
   * Replaces the whole state with a snapshot stream (any chunking). Verified completely
   * before anything is replaced: on error (KvError SNAPSHOT_CORRUPT) the store is unchanged.
   * Watchers are told (onRestore); the persistence layer rewrites everything on its next persist.
   * Resolves with the snapshot's context, if its writer added one.
   */
  async restore(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<Uint8Array | undefined> {
    const state = await readSnapshot(source);
    this.restoreState(state);
    return state.context;
  }

  /** restore() with a snapshot already decoded (readSnapshot), e.g. checked before it was installed. */
  restoreState(state: InstallableState): void {
    this.install(state, true);
  }

  /** @internal Replaces the whole state (snapshot restore, persistence load). */
  install(s: InstallableState, fromSnapshot: boolean): void {
    this.auth.load(s.auth); // first: it is the part that can refuse a malformed image
    this.epoch++;
    this.idx.install(s.hists, s.sorted, s.revlog, s.currentRevision, s.compactRevision, s.arena);
    this.leaseTable.clear();
    for (const l of s.leases) this.leaseTable.grant(l.id, l.ttlSeconds);
    for (const h of s.hists.values()) {
      const live = h.live();
      if (live && live.lease !== 0) this.leaseTable.attach(live.lease, h.skey);
    }
    this._appliedIndex = s.appliedIndex;
    this._appliedTerm = s.appliedTerm;
    // Old records below the compaction point may have come along (an unpinned source drops them).
    this.physicalCompactIfUnpinned();
    if (this.changes) this.changes = this.emptyChanges(fromSnapshot);
    if (fromSnapshot) for (const l of this.listeners) l.onRestore?.();
  }

  /**
   * SHA-256 over the logical state: revisions, every key's visible history and the leases.
   * Equal on every member that applied the same entries (whatever their physical compaction
   * lag); the applied index is not included.
   */
  digest(): string {
    const h = new StateHasher();
    h.num(this.idx.currentRevision);
    h.num(this.idx.compactRevision);
    this.hashKeySpace(h, this.idx.currentRevision);
    for (const l of this.leaseTable.sorted()) {
      h.num(l.id);
      h.num(l.ttlSeconds);
    }
    h.bytes(Buffer.from(this.auth.describe()));
    return h.hex();
  }

  /**
   * etcd's HashKV: a hash of the key space as of `revision` (0: the current one), equal on
   * members that applied the same entries, for checking replicas agree (`etcdctl endpoint
   * hashkv`). Not etcd's CRC-32 of its bbolt records: only comparable between picloud members.
   * Read a slice of HASH_SLICE_KEYS keys at a time with `pause` between (etcd hashes beside its
   * apply loop): a million keys would otherwise hold the event loop, and Raft, for seconds.
   * Physical compaction waits meanwhile (pin), so the key space is read as of the call however
   * the store moves on; a restore from a snapshot meanwhile starts the walk again. One walk at a
   * time: calls wait their turn, so physical compaction runs between them however many come.
   */
  hashKV(revision = 0, pause: () => Promise<void> = nextTurn): Promise<{ hash: number; revision: number; compactRevision: number }> {
    const turn = this.hashing.then(() => this.hashKVNow(revision, pause));
    this.hashing = turn.catch(() => undefined);
    return turn;
  }

  private hashing: Promise<unknown> = Promise.resolve();

  private async hashKVNow(revision: number, pause: () => Promise<void>): Promise<{ hash: number; revision: number; compactRevision: number }> {
    for (;;) {
      const epoch = this.epoch;
      const current = this.idx.currentRevision;
      const compacted = this.idx.compactRevision;
      if (revision > current) throw new KvError('FUTURE_REV');
      if (revision > 0 && revision <= compacted) throw new KvError('COMPACTED');
      const upTo = revision === 0 ? current : revision;
      const h = new StateHasher();
      h.num(upTo);
      h.num(compacted);
      this.pin();
      try {
        let after: string | undefined;
        for (let more = true; more; ) {
          more = false;
          let n = 0;
          this.idx.scan(after ?? '', after !== undefined, '', (hist) => {
            if (n++ === HASH_SLICE_KEYS) return !(more = true);
            after = hist.skey;
            hashHistory(h, hist, compacted, upTo);
          });
          if (!more) return { hash: h.uint32(), revision: current, compactRevision: compacted };
          await pause();
          if (this.epoch !== epoch) break;
        }
      } finally {
        this.unpin();
      }
    }
  }

  /** Every key's visible records up to revision `upTo`, in key order. */
  private hashKeySpace(h: StateHasher, upTo: number): void {
    for (const hist of this.idx.historiesInOrder()) hashHistory(h, hist, this.idx.compactRevision, upTo);
  }
}

/** Keys HashKV reads in one turn. */
const HASH_SLICE_KEYS = 5_000;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A key's records visible past the compaction at `compacted`, up to revision `upTo`; nothing for a key without any. */
function hashHistory(h: StateHasher, hist: KeyHistory, compacted: number, upTo: number): void {
  const recs = visibleRecords(hist, compacted).filter((r) => r.main <= upTo);
  if (recs.length === 0) return;
  h.num(hist.key.byteLength);
  h.bytes(hist.key);
  h.num(recs.length);
  for (const r of recs) {
    h.num(r.main);
    h.num(r.sub);
    h.num(r.createRevision);
    h.num(r.version);
    h.num(r.lease);
    const value = r.storedValue;
    if (value === null) h.num(-1);
    else {
      h.num(value.byteLength);
      h.bytes(value);
    }
  }
}

/** SHA-256 over numbers (as 8-byte doubles) and bytes, for the state digests above. */
class StateHasher {
  private readonly h = createHash('sha256');
  private readonly buf = Buffer.alloc(8);
  num(n: number): void {
    this.buf.writeDoubleBE(n);
    this.h.update(this.buf);
  }
  bytes(b: Uint8Array): void {
    this.h.update(b);
  }
  hex(): string {
    return this.h.digest('hex');
  }
  uint32(): number {
    return this.h.digest().readUInt32BE(0);
  }
}

/** Ranges only, in both branches (a nested txn counts as a write, as in etcd 3.4's isTxnReadonly). */
export function isTxnReadOnly(t: TxnRequest): boolean {
  for (const op of t.success ?? []) if (!op.requestRange) return false;
  for (const op of t.failure ?? []) if (!op.requestRange) return false;
  return true;
}

/** Read-only with every range serializable (vacuously so without ops): answered without ReadIndex, as etcd's isTxnSerializable. */
export function isTxnSerializable(t: TxnRequest): boolean {
  for (const op of t.success ?? []) if (!op.requestRange?.serializable) return false;
  for (const op of t.failure ?? []) if (!op.requestRange?.serializable) return false;
  return true;
}

/** etcd's compareKV; a missing key compares as a zero KeyValue. */
function compareRecord(c: Compare, rec: KvRecord | undefined): boolean {
  let result: number;
  switch (c.target ?? CompareTarget.VERSION) {
    case CompareTarget.VALUE: {
      // A missing key or a tombstone compares as an empty value.
      const b = c.value ?? EMPTY_BYTES;
      result = rec === undefined || rec.tombstone ? (b.byteLength > 0 ? -1 : 0) : compareStored(rec, b);
      break;
    }
    case CompareTarget.CREATE:
      result = cmpNum(rec?.createRevision ?? 0, c.createRevision ?? 0);
      break;
    case CompareTarget.MOD:
      result = cmpNum(rec?.main ?? 0, c.modRevision ?? 0);
      break;
    case CompareTarget.VERSION:
      result = cmpNum(rec?.version ?? 0, c.version ?? 0);
      break;
    case CompareTarget.LEASE:
      result = cmpNum(rec?.lease ?? 0, c.lease ?? 0);
      break;
    default:
      result = 0;
  }
  switch (c.result ?? CompareResult.EQUAL) {
    case CompareResult.EQUAL:
      return result === 0;
    case CompareResult.NOT_EQUAL:
      return result !== 0;
    case CompareResult.GREATER:
      return result > 0;
    case CompareResult.LESS:
      return result < 0;
    default:
      return true;
  }
}
