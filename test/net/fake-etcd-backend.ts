/**
 * An in-memory EtcdBackend for the gRPC front end's tests: a small MVCC map with history,
 * compaction, watches, leases and members. Correct enough for etcdctl and the etcd3 client
 * to exercise the wire format; brute force everywhere (test-only, small data).
 */
import { EtcdError } from '../../core/net/etcd/errors.js';
import type {
  CallContext,
  Compare,
  DeleteRangeRequest,
  DeleteRangeResponse,
  EtcdBackend,
  KeyValue,
  Member,
  PutRequest,
  PutResponse,
  RangeRequest,
  RangeResponse,
  RequestOp,
  ResponseHeader,
  ResponseOp,
  TxnRequest,
  TxnResponse,
  WatchCreateRequest,
  WatchEvent,
  WatchHandle,
  WatchSink,
} from '../../core/net/etcd/service.js';

const k = (b: Uint8Array): string => Buffer.from(b).toString('latin1');
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function inRange(key: string, start: Uint8Array, end: Uint8Array): boolean {
  const s = k(start);
  if (end.length === 0) return key === s;
  if (end.length === 1 && end[0] === 0) return key >= s;
  return key >= s && key < k(end);
}

interface HistoryItem {
  rev: number;
  key: string;
  kv: KeyValue | undefined; // undefined: deleted at rev
  prev: KeyValue | undefined;
}

interface Watcher {
  req: WatchCreateRequest;
  sink: WatchSink;
  nextRev: number;
  active: boolean;
}

interface Lease {
  id: number;
  grantedTtl: number;
  expiresAtMs: number;
  keys: Set<string>;
}

export class FakeEtcdBackend implements EtcdBackend {
  /** A keep-alive's round trip to the leader, as the real backend has one. */
  keepAliveDelayMs = 0;
  rev = 1;
  compactRev = 0;
  term = 3;
  readonly clusterId = 0x0a1b2c3d4e5f60;
  readonly memberId = 0x1234_5678_9abc;
  private kvs = new Map<string, KeyValue>();
  private history: HistoryItem[] = [];
  private watchers = new Set<Watcher>();
  leases = new Map<number, Lease>();
  private nextLease = 2 ** 52 + 0xabc; // above 2^32, below 2^53: exercises int64 handling
  members: Member[] = [{ id: this.memberId, name: 'fake1', peerUrls: ['http://127.0.0.1:2380'], clientUrls: ['http://127.0.0.1:2379'], isLearner: false }];
  private nextMember = 0x1a2b_3c4d_5e6f;
  /** Test hooks. */
  calls: string[] = [];
  snapshotBytes = Buffer.from('fake snapshot '.repeat(5000));

  header(): ResponseHeader {
    return { clusterId: this.clusterId, memberId: this.memberId, revision: this.rev, raftTerm: this.term };
  }

  // ---------------------------------------------------------------- reads

  private stateAt(rev: number): Map<string, KeyValue> {
    if (rev <= 0 || rev === this.rev) return this.kvs;
    if (rev > this.rev) throw new EtcdError('FUTURE_REV');
    if (rev < this.compactRev) throw new EtcdError('COMPACTED');
    const m = new Map<string, KeyValue>();
    for (const h of this.history) {
      if (h.rev > rev) break;
      if (h.kv) m.set(h.key, h.kv);
      else m.delete(h.key);
    }
    return m;
  }

  private rangeNow(r: RangeRequest): RangeResponse {
    const state = this.stateAt(r.revision);
    let kvs = [...state.entries()].filter(([key]) => inRange(key, r.key, r.rangeEnd)).map(([, v]) => v);
    kvs = kvs.filter(
      (v) =>
        (r.minModRevision === 0 || v.modRevision >= r.minModRevision) &&
        (r.maxModRevision === 0 || v.modRevision <= r.maxModRevision) &&
        (r.minCreateRevision === 0 || v.createRevision >= r.minCreateRevision) &&
        (r.maxCreateRevision === 0 || v.createRevision <= r.maxCreateRevision),
    );
    kvs.sort((a, b) => cmp(k(a.key), k(b.key)));
    const target = (v: KeyValue): number | string =>
      r.sortTarget === 'VERSION' ? v.version : r.sortTarget === 'CREATE' ? v.createRevision : r.sortTarget === 'MOD' ? v.modRevision : r.sortTarget === 'VALUE' ? k(v.value) : k(v.key);
    if (r.sortOrder !== 'NONE') {
      kvs.sort((a, b) => {
        const x = target(a);
        const y = target(b);
        const c = x < y ? -1 : x > y ? 1 : 0;
        return r.sortOrder === 'DESCEND' ? -c : c;
      });
    }
    const count = kvs.length;
    if (r.limit > 0) kvs = kvs.slice(0, r.limit);
    if (r.countOnly) kvs = [];
    if (r.keysOnly) kvs = kvs.map((v) => ({ ...v, value: new Uint8Array(0) }));
    return { header: this.header(), kvs, more: count > kvs.length && !r.countOnly, count };
  }

  /** The user the last range's client certificate named (CallContext.certUser). */
  lastRangeCertUser: string | undefined;

  /** Awaited at the start of each range, with its context (a test's hook into a call in flight). */
  beforeRange: ((ctx?: CallContext) => Promise<void>) | undefined;

  async range(r: RangeRequest, ctx?: CallContext): Promise<RangeResponse> {
    this.calls.push(`range:${r.serializable ? 's' : 'l'}`);
    this.lastRangeCertUser = ctx?.certUser;
    await this.beforeRange?.(ctx);
    return this.rangeNow(r);
  }

  // ---------------------------------------------------------------- writes

  private pending: HistoryItem[] = [];

  private doPut(r: PutRequest, rev: number): PutResponse {
    const key = k(r.key);
    const prev = this.kvs.get(key);
    let lease = r.lease;
    if (r.ignoreLease) lease = prev?.lease ?? 0;
    if (lease !== 0 && !this.leases.has(lease)) throw new EtcdError('LEASE_NOT_FOUND');
    if ((r.ignoreValue || r.ignoreLease) && prev === undefined) throw new EtcdError('KEY_NOT_FOUND');
    const kv: KeyValue = {
      key: Buffer.from(r.key),
      createRevision: prev?.createRevision ?? rev,
      modRevision: rev,
      version: (prev?.version ?? 0) + 1,
      value: r.ignoreValue ? prev!.value : Buffer.from(r.value),
      lease,
    };
    if (prev && prev.lease !== 0) this.leases.get(prev.lease)?.keys.delete(key);
    if (lease !== 0) this.leases.get(lease)!.keys.add(key);
    this.kvs.set(key, kv);
    this.pending.push({ rev, key, kv, prev });
    return { header: this.header(), prevKv: r.prevKv ? prev : undefined };
  }

  private doDelete(r: DeleteRangeRequest, rev: number): DeleteRangeResponse {
    const keys = [...this.kvs.keys()].filter((key) => inRange(key, r.key, r.rangeEnd)).sort(cmp);
    const prevKvs: KeyValue[] = [];
    for (const key of keys) {
      const prev = this.kvs.get(key)!;
      this.kvs.delete(key);
      if (prev.lease !== 0) this.leases.get(prev.lease)?.keys.delete(key);
      prevKvs.push(prev);
      this.pending.push({ rev, key, kv: undefined, prev });
    }
    return { header: this.header(), deleted: keys.length, prevKvs: r.prevKv ? prevKvs : [] };
  }

  /** Apply `f` at the next revision; publish its events if it wrote anything. */
  private write<T>(f: (rev: number) => T): T {
    const rev = this.rev + 1;
    this.pending = [];
    const result = f(rev);
    if (this.pending.length > 0) {
      this.rev = rev;
      this.history.push(...this.pending);
      // headers inside the result were taken before the bump
      fixHeaders(result, this.header());
      this.notify();
    }
    return result;
  }

  async put(r: PutRequest): Promise<PutResponse> {
    return this.write((rev) => this.doPut(r, rev));
  }

  async deleteRange(r: DeleteRangeRequest): Promise<DeleteRangeResponse> {
    return this.write((rev) => this.doDelete(r, rev));
  }

  private compareOk(c: Compare): boolean {
    const keys = [...this.kvs.keys()].filter((key) => inRange(key, c.key, c.rangeEnd));
    const vals = c.rangeEnd.length === 0 ? [this.kvs.get(k(c.key))] : keys.map((key) => this.kvs.get(key));
    return vals.every((v) => {
      let x: number | string;
      let y: number | string;
      if (c.target === 'VALUE') {
        if (v === undefined) return false;
        x = k(v.value);
        y = k(c.operand as Uint8Array);
      } else {
        x = v === undefined ? 0 : c.target === 'VERSION' ? v.version : c.target === 'CREATE' ? v.createRevision : c.target === 'MOD' ? v.modRevision : v.lease;
        y = c.operand as number;
      }
      switch (c.result) {
        case 'EQUAL':
          return x === y;
        case 'NOT_EQUAL':
          return x !== y;
        case 'GREATER':
          return x > y;
        case 'LESS':
          return x < y;
      }
    });
  }

  private doTxn(t: TxnRequest, rev: number): TxnResponse {
    const succeeded = t.compare.every((c) => this.compareOk(c));
    const responses = (succeeded ? t.success : t.failure).map((op: RequestOp): ResponseOp => {
      switch (op.op) {
        case 'range':
          return { op: 'range', response: this.rangeNow(op.request) };
        case 'put':
          return { op: 'put', response: this.doPut(op.request, rev) };
        case 'deleteRange':
          return { op: 'deleteRange', response: this.doDelete(op.request, rev) };
        case 'txn':
          return { op: 'txn', response: this.doTxn(op.request, rev) };
      }
    });
    return { header: this.header(), succeeded, responses };
  }

  async txn(t: TxnRequest): Promise<TxnResponse> {
    return this.write((rev) => this.doTxn(t, rev));
  }

  async compact(r: { revision: number }): Promise<{ header: ResponseHeader }> {
    if (r.revision <= this.compactRev) throw new EtcdError('COMPACTED');
    if (r.revision > this.rev) throw new EtcdError('FUTURE_REV');
    this.compactRev = r.revision;
    return { header: this.header() };
  }

  // ---------------------------------------------------------------- watch

  private notify(): void {
    for (const w of this.watchers) this.catchUp(w);
  }

  private catchUp(w: Watcher): void {
    if (!w.active) return;
    const items = this.history.filter((h) => h.rev >= w.nextRev && inRange(h.key, w.req.key, w.req.rangeEnd));
    w.nextRev = this.rev + 1;
    const events: WatchEvent[] = [];
    for (const h of items) {
      const type = h.kv ? 'PUT' : 'DELETE';
      if ((type === 'PUT' && w.req.filters.includes('NOPUT')) || (type === 'DELETE' && w.req.filters.includes('NODELETE'))) continue;
      const kv = h.kv ?? { key: Buffer.from(h.key, 'latin1'), createRevision: 0, modRevision: h.rev, version: 0, value: new Uint8Array(0), lease: 0 };
      events.push({ type, kv, prevKv: w.req.prevKv ? h.prev : undefined });
    }
    if (events.length > 0) w.sink.events(events, this.header());
  }

  /** The user the last watch's client certificate named (CallContext.certUser). */
  lastWatchCertUser: string | undefined;

  watch(req: WatchCreateRequest, sink: WatchSink, ctx?: CallContext): WatchHandle {
    this.calls.push(`watch:${req.watchId}:${ctx?.requireLeader ? 'leader' : 'any'}`);
    this.lastWatchCertUser = ctx?.certUser;
    const w: Watcher = { req, sink, nextRev: req.startRevision > 0 ? req.startRevision : this.rev + 1, active: true };
    const handle: WatchHandle = { header: this.header(), deliveredThrough: () => this.rev, resume: () => undefined, cancel: () => {
      w.active = false;
      this.watchers.delete(w);
    } };
    if (req.startRevision > 0 && req.startRevision < this.compactRev) {
      sink.cancel('etcdserver: mvcc: required revision has been compacted', this.header(), this.compactRev);
      return handle;
    }
    this.watchers.add(w);
    this.catchUp(w);
    return handle;
  }

  get watcherCount(): number {
    return this.watchers.size;
  }

  /** Test hook: whether the member knows a leader (hasLeader). */
  leaderKnown = true;

  hasLeader(): boolean {
    return this.leaderKnown;
  }

  /** Test hook: whether the member is a learner (isLearner). */
  learner = false;

  isLearner(): boolean {
    return this.learner;
  }

  /** Test hook: push events to every watcher directly. */
  blast(events: WatchEvent[]): void {
    for (const w of this.watchers) w.sink.events(events, this.header());
  }

  async watchProgress(): Promise<ResponseHeader> {
    return this.header();
  }

  // ---------------------------------------------------------------- leases

  private liveLease(id: number): Lease {
    const l = this.leases.get(id);
    if (l === undefined || l.expiresAtMs < Date.now()) throw new EtcdError('LEASE_NOT_FOUND');
    return l;
  }

  async leaseGrant(r: { ttlSeconds: number; id: number }): Promise<{ header: ResponseHeader; id: number; ttlSeconds: number }> {
    const id = r.id !== 0 ? r.id : this.nextLease++;
    if (this.leases.has(id)) throw new EtcdError('LEASE_EXIST');
    if (r.ttlSeconds > 9_000_000_000) throw new EtcdError('LEASE_TTL_TOO_LARGE');
    this.leases.set(id, { id, grantedTtl: r.ttlSeconds, expiresAtMs: Date.now() + r.ttlSeconds * 1000, keys: new Set() });
    return { header: this.header(), id, ttlSeconds: r.ttlSeconds };
  }

  async leaseRevoke(id: number): Promise<{ header: ResponseHeader }> {
    const l = this.liveLease(id);
    this.leases.delete(id);
    if (l.keys.size > 0) {
      this.write((rev) => {
        for (const key of l.keys) this.doDelete({ key: Buffer.from(key, 'latin1'), rangeEnd: new Uint8Array(0), prevKv: false }, rev);
        return {};
      });
    }
    return { header: this.header() };
  }

  async leaseKeepAlive(id: number): Promise<{ header: ResponseHeader; id: number; ttlSeconds: number }> {
    if (this.keepAliveDelayMs > 0) await new Promise((r) => setTimeout(r, this.keepAliveDelayMs));
    const l = this.liveLease(id);
    l.expiresAtMs = Date.now() + l.grantedTtl * 1000;
    return { header: this.header(), id, ttlSeconds: l.grantedTtl };
  }

  async leaseTimeToLive(id: number, keys: boolean) {
    const l = this.leases.get(id);
    if (l === undefined) return { header: this.header(), id, ttlSeconds: -1, grantedTtlSeconds: 0, keys: [] };
    return {
      header: this.header(),
      id,
      ttlSeconds: Math.max(0, Math.round((l.expiresAtMs - Date.now()) / 1000)),
      grantedTtlSeconds: l.grantedTtl,
      keys: keys ? [...l.keys].map((x) => Buffer.from(x, 'latin1')) : [],
    };
  }

  async leaseLeases() {
    return { header: this.header(), ids: [...this.leases.keys()] };
  }

  // ---------------------------------------------------------------- cluster

  private memberIndex(id: number): number {
    const i = this.members.findIndex((m) => m.id === id);
    if (i < 0) throw new EtcdError('MEMBER_NOT_FOUND');
    return i;
  }

  async memberList() {
    return { header: this.header(), members: this.members };
  }

  async memberAdd(peerUrls: string[], isLearner: boolean) {
    if (peerUrls.length === 0 || peerUrls.some((u) => !/^https?:\/\/[^/]+$/.test(u))) throw new EtcdError('MEMBER_BAD_URLS');
    if (this.members.some((m) => m.peerUrls.some((u) => peerUrls.includes(u)))) throw new EtcdError('PEER_URL_EXIST');
    const member: Member = { id: this.nextMember++, name: '', peerUrls, clientUrls: [], isLearner };
    this.members = [...this.members, member];
    return { header: this.header(), member, members: this.members };
  }

  async memberRemove(id: number) {
    const i = this.memberIndex(id);
    this.members = this.members.filter((_, j) => j !== i);
    return { header: this.header(), members: this.members };
  }

  async memberUpdate(id: number, peerUrls: string[]) {
    const i = this.memberIndex(id);
    this.members = this.members.map((m, j) => (j === i ? { ...m, peerUrls } : m));
    return { header: this.header(), members: this.members };
  }

  async memberPromote(id: number) {
    const i = this.memberIndex(id);
    if (!this.members[i]!.isLearner) throw new EtcdError('MEMBER_NOT_LEARNER');
    this.members = this.members.map((m, j) => (j === i ? { ...m, isLearner: false } : m));
    return { header: this.header(), members: this.members };
  }

  // ---------------------------------------------------------------- maintenance

  async status() {
    return {
      header: this.header(),
      version: '3.4.0',
      dbSizeBytes: 24_576,
      leader: this.memberId,
      raftIndex: this.rev + 10,
      raftTerm: this.term,
      raftAppliedIndex: this.rev + 10,
      errors: [],
      dbSizeInUseBytes: 20_480,
      isLearner: false,
    };
  }

  async alarm() {
    return { header: this.header(), alarms: [] };
  }

  async defragment() {
    return { header: this.header() };
  }

  async hashKV(revision: number) {
    let h = 0;
    for (const [key, v] of this.stateAt(revision)) for (const c of key + k(v.value)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return { header: this.header(), hash: h, compactRevision: this.compactRev };
  }

  /** Snapshot streams released (their spool freed), and pieces read from them. */
  snapshotReleases = 0;
  snapshotPiecesRead = 0;

  async snapshot() {
    const data = this.snapshotBytes;
    const self = this;
    async function* pieces(): AsyncIterable<Uint8Array> {
      for (let i = 0; i < data.length; i += 10_000) {
        self.snapshotPiecesRead++;
        yield data.subarray(i, i + 10_000);
      }
    }
    return { header: this.header(), sizeBytes: data.length, data: pieces(), release: async () => void this.snapshotReleases++ };
  }
}

/** Responses built during a write carry the pre-write revision; etcd reports the new one. */
function fixHeaders(o: unknown, h: ResponseHeader): void {
  if (o === null || typeof o !== 'object') return;
  if (o instanceof Uint8Array) return;
  for (const [key, v] of Object.entries(o)) {
    if (key === 'header' && v !== null && typeof v === 'object') Object.assign(v, h);
    else fixHeaders(v, h);
  }
}
