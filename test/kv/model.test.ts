// Model test: KvStore against a trivially simple reference (a full copy of the key space per
// revision) over random sequences of puts, deletes, ranges, txns, compactions and leases.
// Every response and every historical read must agree.
import t from 'tap';
import fc from 'fast-check';
import { KvStore } from '../../core/kv/store.js';
import type { Compare, KvRequest, KvResponse, RangeRequest, RequestOp } from '../../core/kv/types.js';
import { decodeKvRequest, encodeKvRequest } from '../../core/kv/codec.js';

const KEYS = ['a', 'ab', 'b', 'ba', 'c', '\xff'];
const VALUES = ['', 'x', 'y', 'zz'];
const buf = (x: string): Buffer => Buffer.from(x, 'latin1');
const str = (u: Uint8Array | undefined): string => (u ? Buffer.from(u).toString('latin1') : '');

interface MKv {
  key: string;
  value: string;
  create: number;
  mod: number;
  version: number;
  lease: number;
}
type State = Map<string, MKv>;

/** etcd's range-end convention, on strings. */
function inSpan(k: string, key: string, end: string): boolean {
  if (end === '') return k === key;
  if (end === '\0') return k >= key;
  return k >= key && k < end;
}

class ModelError {
  constructor(readonly code: string) {}
}

class Model {
  rev = 1;
  compact = -1;
  readonly history = new Map<number, State>([[1, new Map()]]);
  readonly leases = new Map<number, number>();

  get state(): State {
    return this.history.get(this.rev)!;
  }

  rangeAt(r: RangeRequest, readRev: number, st: State | undefined): unknown {
    const revision = r.revision ?? 0;
    if (revision > readRev) throw new ModelError('FUTURE_REV');
    // A negative revision reads the current one (etcd's rangeKeys); a txn's was prechecked.
    if (revision > 0 && revision < this.compact) throw new ModelError('COMPACTED');
    const at = revision > 0 ? this.history.get(revision)! : st!;
    const key = str(r.key);
    const end = str(r.rangeEnd);
    let kvs = [...at.values()].filter((kv) => inSpan(kv.key, key, end)).sort((x, y) => (x.key < y.key ? -1 : 1));
    const count = kvs.length;
    // etcd's quirk (txn/range.go rangeLimit): with sort_order NONE and no revision filters the
    // limit is applied while fetching in key order (limit + 1 keys), before any sort.
    const rawLimit = r.limit ?? 0;
    if ((r.sortOrder ?? 0) === 0 && !r.minModRevision && !r.maxCreateRevision && rawLimit > 0) kvs = kvs.slice(0, rawLimit + 1);
    if (r.minModRevision) kvs = kvs.filter((kv) => kv.mod >= r.minModRevision!);
    if (r.maxCreateRevision) kvs = kvs.filter((kv) => kv.create <= r.maxCreateRevision!);
    let order = r.sortOrder ?? 0;
    const target = r.sortTarget ?? 0;
    if (target !== 0 && order === 0) order = 1;
    if (order !== 0 && !(target === 0 && order === 1)) {
      const f = (kv: MKv): number | string => [kv.key, kv.version, kv.create, kv.mod, kv.value][target]!;
      const cmp = (x: MKv, y: MKv): number => (f(x) < f(y) ? -1 : f(x) > f(y) ? 1 : 0);
      kvs.sort(order === 2 ? (x, y) => cmp(y, x) : cmp);
    }
    if (r.countOnly) kvs = []; // etcd returns no kvs, so the limit never cuts: more is false
    const limit = r.limit ?? 0;
    const more = limit > 0 && kvs.length > limit;
    if (more) kvs = kvs.slice(0, limit);
    return {
      rev: readRev,
      count,
      more,
      kvs: kvs.map((kv) => `${kv.key}=${r.keysOnly ? '' : kv.value}/${kv.create}/${kv.mod}/${kv.version}/${kv.lease}`),
    };
  }

  /** Static duplicate check for a flat op list (no nested txns in this model). */
  static duplicate(ops: RequestOp[]): boolean {
    const puts = new Set<string>();
    const dels = ops.filter((o) => o.requestDeleteRange).map((o) => o.requestDeleteRange!);
    for (const o of ops) {
      if (!o.requestPut) continue;
      const k = str(o.requestPut.key);
      if (puts.has(k)) return true;
      puts.add(k);
      if (dels.some((d) => inSpan(k, str(d.key), str(d.rangeEnd)))) return true;
    }
    return false;
  }

  compare(c: Compare, st: State): boolean {
    const key = str(c.key);
    const kvs = [...st.values()].filter((kv) => inSpan(kv.key, key, str(c.rangeEnd)));
    const one = (kv: MKv | undefined): boolean => {
      let a: number | string;
      let x: number | string;
      switch (c.target ?? 0) {
        case 0: a = kv?.version ?? 0; x = c.version ?? 0; break;
        case 1: a = kv?.create ?? 0; x = c.createRevision ?? 0; break;
        case 2: a = kv?.mod ?? 0; x = c.modRevision ?? 0; break;
        case 3: a = kv?.value ?? ''; x = str(c.value); break;
        default: a = kv?.lease ?? 0; x = c.lease ?? 0;
      }
      const r = a < x ? -1 : a > x ? 1 : 0;
      return [r === 0, r > 0, r < 0, r !== 0][c.result ?? 0]!;
    };
    if (kvs.length === 0) return (c.target ?? 0) === 3 ? false : one(undefined);
    return kvs.every(one);
  }

  apply(req: KvRequest): unknown {
    try {
      return this.applyInner(req);
    } catch (e) {
      if (e instanceof ModelError) return { error: e.code };
      throw e;
    }
  }

  private applyInner(req: KvRequest): unknown {
    if ('range' in req) return { range: this.rangeAt(req.range, this.rev, this.state) };
    if ('compaction' in req) {
      const r = req.compaction.revision ?? 0;
      if (r <= this.compact) throw new ModelError('COMPACTED');
      if (r > this.rev) throw new ModelError('FUTURE_REV');
      this.compact = r;
      return { compaction: this.rev };
    }
    if ('leaseGrant' in req) {
      const id = req.leaseGrant.ID!;
      if (this.leases.has(id)) throw new ModelError('LEASE_EXISTS');
      const ttl = Math.max(req.leaseGrant.TTL ?? 0, 2);
      this.leases.set(id, ttl);
      return { leaseGrant: [id, ttl, this.rev] };
    }
    if ('leaseRevoke' in req) {
      const id = req.leaseRevoke.ID!;
      if (!this.leases.has(id)) throw new ModelError('LEASE_NOT_FOUND');
      this.leases.delete(id);
      const next = new Map(this.state);
      let n = 0;
      for (const [k, kv] of this.state) if (kv.lease === id) (next.delete(k), n++);
      if (n > 0) this.history.set(++this.rev, next);
      return { leaseRevoke: this.rev };
    }
    let ops: RequestOp[];
    let succeeded = true;
    const isTxn = 'txn' in req;
    if (isTxn) {
      for (const list of [req.txn.success ?? [], req.txn.failure ?? []]) if (Model.duplicate(list)) throw new ModelError('DUPLICATE_KEY');
      succeeded = (req.txn.compare ?? []).every((c) => this.compare(c, this.state));
      ops = (succeeded ? req.txn.success : req.txn.failure) ?? [];
    } else if ('put' in req) ops = [{ requestPut: req.put }];
    else ops = [{ requestDeleteRange: (req as { deleteRange: NonNullable<RequestOp['requestDeleteRange']> }).deleteRange }];
    // Prechecks against the state before the txn, in etcd's order: every put before any range
    // (checkRequests twice); a put alone checks its lease first, a txn's put its key first.
    for (const o of ops) {
      const p = o.requestPut;
      if (!p) continue;
      const leaseMissing = !!p.lease && !this.leases.has(p.lease);
      const keyMissing = (p.ignoreValue || p.ignoreLease) && !this.state.has(str(p.key));
      if (leaseMissing && !(isTxn && keyMissing)) throw new ModelError('LEASE_NOT_FOUND');
      if (keyMissing) throw new ModelError('KEY_NOT_FOUND');
    }
    for (const o of ops) {
      if (o.requestRange) {
        const rv = o.requestRange.revision ?? 0;
        if (rv > this.rev) throw new ModelError('FUTURE_REV');
        if (rv !== 0 && rv < this.compact) throw new ModelError('COMPACTED');
      }
    }
    const work = new Map(this.state);
    const next = this.rev + 1;
    let changes = 0;
    const responses: unknown[] = [];
    for (const o of ops) {
      if (o.requestRange) {
        const readRev = changes > 0 ? next : this.rev;
        if (changes > 0) this.history.set(next, work); // visible for an explicit revision == next? never: prechecked <= rev
        responses.push({ range: this.rangeAt(o.requestRange, readRev, work) });
      } else if (o.requestPut) {
        const p = o.requestPut;
        const k = str(p.key);
        const prev = work.get(k);
        work.set(k, {
          key: k,
          value: p.ignoreValue ? prev!.value : str(p.value),
          create: prev ? prev.create : next,
          mod: next,
          version: prev ? prev.version + 1 : 1,
          lease: p.ignoreLease ? prev!.lease : p.lease ?? 0,
        });
        changes++;
        responses.push({ put: next, prev: p.prevKv && prev ? `${prev.key}=${prev.value}/${prev.version}` : null });
      } else if (o.requestDeleteRange) {
        const d = o.requestDeleteRange;
        const victims = [...work.values()]
          .filter((kv) => inSpan(kv.key, str(d.key), str(d.rangeEnd)))
          .sort((x, y) => (x.key < y.key ? -1 : 1));
        for (const v of victims) work.delete(v.key);
        changes += victims.length;
        responses.push({
          del: victims.length,
          rev: changes > 0 ? next : this.rev,
          prev: d.prevKv ? victims.map((v) => `${v.key}=${v.value}/${v.version}`) : [],
        });
      }
    }
    if (changes > 0) {
      this.history.set(next, work);
      this.rev = next;
    } else {
      this.history.delete(next);
    }
    return isTxn ? { txn: { succeeded, rev: this.rev, responses } } : { op: responses[0] };
  }
}

/** The store's response in the model's shape. */
function view(r: KvResponse): unknown {
  const rng = (x: { header: { revision: number }; count: number; more: boolean; kvs: Array<{ key: Uint8Array; value: Uint8Array; createRevision: number; modRevision: number; version: number; lease: number }> }) => ({
    rev: x.header.revision,
    count: x.count,
    more: x.more,
    kvs: x.kvs.map((kv) => `${str(kv.key)}=${str(kv.value)}/${kv.createRevision}/${kv.modRevision}/${kv.version}/${kv.lease}`),
  });
  const op = (o: Record<string, unknown>): unknown => {
    if ('range' in o || 'responseRange' in o) return { range: rng((o.range ?? o.responseRange) as Parameters<typeof rng>[0]) };
    const p = (o.put ?? o.responsePut) as { header: { revision: number }; prevKv?: { key: Uint8Array; value: Uint8Array; version: number } } | undefined;
    if (p) return { put: p.header.revision, prev: p.prevKv ? `${str(p.prevKv.key)}=${str(p.prevKv.value)}/${p.prevKv.version}` : null };
    const d = (o.deleteRange ?? o.responseDeleteRange) as { header: { revision: number }; deleted: number; prevKvs: Array<{ key: Uint8Array; value: Uint8Array; version: number }> };
    return { del: d.deleted, rev: d.header.revision, prev: d.prevKvs.map((kv) => `${str(kv.key)}=${str(kv.value)}/${kv.version}`) };
  };
  if ('error' in r) return { error: r.error.code };
  if ('range' in r) return { range: rng(r.range) };
  if ('compaction' in r) return { compaction: r.compaction.header.revision };
  if ('leaseGrant' in r) return { leaseGrant: [r.leaseGrant.ID, r.leaseGrant.TTL, r.leaseGrant.header.revision] };
  if ('leaseRevoke' in r) return { leaseRevoke: r.leaseRevoke.header.revision };
  if ('txn' in r) {
    return { txn: { succeeded: r.txn.succeeded, rev: r.txn.header.revision, responses: r.txn.responses.map((x) => op(x as Record<string, unknown>)) } };
  }
  return { op: op(r as Record<string, unknown>) };
}

// ---------------------------------------------------------------- generators

const key = fc.constantFrom(...KEYS);
const value = fc.constantFrom(...VALUES);
const rangeEnd = fc.constantFrom('', '', '\0', 'b', 'c', '\xff');
const leaseId = fc.constantFrom(0, 0, 0, 1, 2, 3);
const smallRev = fc.integer({ min: 0, max: 40 });

const putReq = fc.record({
  key,
  value,
  lease: leaseId,
  prevKv: fc.boolean(),
  ignore: fc.constantFrom('none', 'none', 'none', 'value', 'lease'),
}).map((p) => ({
  key: buf(p.key),
  ...(p.ignore === 'value' ? { ignoreValue: true } : { value: buf(p.value) }),
  ...(p.ignore === 'lease' ? { ignoreLease: true } : { lease: p.lease }),
  prevKv: p.prevKv,
}));
const delReq = fc.record({ key, end: rangeEnd, prevKv: fc.boolean() }).map((d) => ({ key: buf(d.key), rangeEnd: buf(d.end), prevKv: d.prevKv }));
const rangeReq = fc
  .record({
    key,
    end: rangeEnd,
    revision: fc.oneof(fc.constant(0), fc.constant(0), smallRev),
    limit: fc.constantFrom(0, 0, 1, 2),
    keysOnly: fc.boolean(),
    countOnly: fc.constantFrom(false, false, false, true),
    sortOrder: fc.constantFrom(0, 0, 1, 2),
    sortTarget: fc.constantFrom(0, 0, 1, 2, 3, 4),
    minModRevision: fc.constantFrom(0, 0, 0, 3, 6),
    maxCreateRevision: fc.constantFrom(0, 0, 0, 4, 8),
  })
  .map((r) => ({ ...r, key: buf(r.key), rangeEnd: buf(r.end), end: undefined }));
const compare = fc
  .record({ key, end: fc.constantFrom('', '', 'c'), target: fc.integer({ min: 0, max: 4 }), result: fc.integer({ min: 0, max: 3 }), n: fc.integer({ min: 0, max: 6 }), value })
  .map((c) => ({
    key: buf(c.key),
    rangeEnd: buf(c.end),
    target: c.target,
    result: c.result,
    version: c.n,
    createRevision: c.n * 2,
    modRevision: c.n * 3,
    lease: c.n % 4,
    value: buf(c.value),
  }));
const op: fc.Arbitrary<RequestOp> = fc.oneof(
  putReq.map((requestPut) => ({ requestPut })),
  delReq.map((requestDeleteRange) => ({ requestDeleteRange })),
  rangeReq.map((requestRange) => ({ requestRange })),
);
const request: fc.Arbitrary<KvRequest> = fc.oneof(
  { arbitrary: putReq.map((put) => ({ put })), weight: 6 },
  { arbitrary: delReq.map((deleteRange) => ({ deleteRange })), weight: 2 },
  { arbitrary: rangeReq.map((range) => ({ range })), weight: 3 },
  {
    arbitrary: fc
      .record({ compare: fc.array(compare, { maxLength: 2 }), success: fc.array(op, { maxLength: 3 }), failure: fc.array(op, { maxLength: 3 }) })
      .map((txn) => ({ txn })),
    weight: 4,
  },
  { arbitrary: smallRev.map((revision) => ({ compaction: { revision } })), weight: 1 },
  { arbitrary: fc.record({ ID: fc.constantFrom(1, 2, 3), TTL: fc.integer({ min: 0, max: 100 }) }).map((leaseGrant) => ({ leaseGrant })), weight: 1 },
  { arbitrary: fc.constantFrom(1, 2, 3).map((ID) => ({ leaseRevoke: { ID } })), weight: 1 },
);

t.test('KvStore agrees with the reference model', async (t) => {
  let steps = 0;
  fc.assert(
    fc.property(fc.array(request, { minLength: 1, maxLength: 60, size: 'max' }), (reqs) => {
      const store = new KvStore();
      const model = new Model();
      reqs.forEach((req, i) => {
        const got = view(store.apply(decodeKvRequest(encodeKvRequest(req)), { index: i + 1, term: 1 }));
        const want = model.apply(req);
        if (JSON.stringify(got) !== JSON.stringify(want)) {
          throw new Error(`step ${i}: ${JSON.stringify(req)}\n store: ${JSON.stringify(got)}\n model: ${JSON.stringify(want)}`);
        }
        steps++;
      });
      // Every revision still readable agrees too.
      if (store.revision !== model.rev) throw new Error('revision differs');
      for (let rev = Math.max(1, model.compact); rev <= model.rev; rev++) {
        const all: RangeRequest = { key: buf('\0'), rangeEnd: buf('\0'), revision: rev };
        const got = JSON.stringify(view({ range: store.range(all) }));
        const want = JSON.stringify({ range: model.rangeAt(all, model.rev, undefined) });
        if (got !== want) throw new Error(`history at ${rev}: ${got} != ${want}`);
      }
    }),
    { numRuns: 1000, seed: 42 },
  );
  t.ok(steps > 5000, `${steps} steps compared`);
});
