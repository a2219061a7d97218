// Put and DeleteRange: revisions, versions, prev_kv, leases, ignore_value/ignore_lease,
// etcd's errors, idempotent replay by Raft index.
import t from 'tap';
import { KvStore } from '../../core/kv/store.js';
import { b, keysOf, kvView, Node } from './helpers.js';

t.test('revisions and versions', async (t) => {
  const n = Node.create();
  t.equal(n.store.revision, 1, 'an empty store is at revision 1');
  t.equal(n.put('k', 'v1').header.revision, 2);
  t.equal(n.put('k', 'v2').header.revision, 3);
  t.same(kvView(n.range('k').kvs[0]!), { key: 'k', value: 'v2', c: 2, m: 3, v: 2, lease: 0 });
  const d = n.del('k');
  t.equal(d.deleted, 1);
  t.equal(d.header.revision, 4);
  t.equal(n.put('k', 'v3').header.revision, 5);
  t.same(kvView(n.range('k').kvs[0]!), { key: 'k', value: 'v3', c: 5, m: 5, v: 1, lease: 0 }, 'recreated: version 1 again');
  t.same(n.put('e', '').header, { revision: 6 }, 'empty value is a value');
  t.equal(n.range('e').kvs.length, 1);
});

t.test('prev_kv', async (t) => {
  const n = Node.create();
  t.equal(n.put('k', 'a', { prevKv: true }).prevKv, undefined, 'no previous');
  const r = n.put('k', 'b', { prevKv: true });
  t.same(kvView(r.prevKv!), { key: 'k', value: 'a', c: 2, m: 2, v: 1, lease: 0 });
  t.equal(n.put('k', 'c').prevKv, undefined, 'only when asked');
  n.put('k2', 'x');
  const d = n.del('k', 'k3', true);
  t.equal(d.deleted, 2);
  t.same(d.prevKvs.map(kvView).map((x) => x.key + '=' + x.value), ['k=c', 'k2=x']);
  t.same(n.del('k', 'k3', true).prevKvs, []);
});

t.test('delete of nothing does not bump the revision', async (t) => {
  const n = Node.create();
  n.put('a', '1');
  const d = n.del('zz');
  t.equal(d.deleted, 0);
  t.equal(d.header.revision, 2);
  t.equal(n.store.revision, 2);
  t.equal(n.del('a', '\0').deleted, 1, 'from-key delete');
  t.equal(n.store.revision, 3);
  n.put('p/1', '1');
  n.put('p/2', '1');
  n.put('q', '1');
  t.equal(n.del('p/', 'p0').deleted, 2, 'prefix delete');
  t.same(keysOf(n.range('\0', '\0')), ['q']);
  t.equal(n.store.revision, 7, 'a multi-key delete takes one revision');
});

t.test('ignore_value and ignore_lease', async (t) => {
  const n = Node.create();
  let e = n.err({ put: { key: b('k'), ignoreValue: true } });
  t.equal(e.code, 'KEY_NOT_FOUND');
  t.equal(e.message, 'etcdserver: key not found');
  t.equal(n.err({ put: { key: b('k'), ignoreLease: true } }).code, 'KEY_NOT_FOUND');
  t.equal(n.store.revision, 1, 'errors change nothing');
  const id = n.grant(60).ID;
  n.put('k', 'v', { lease: id });
  n.put('k', '', { ignoreValue: true, lease: id });
  t.same(kvView(n.range('k').kvs[0]!), { key: 'k', value: 'v', c: 2, m: 3, v: 2, lease: id });
  n.put('k', 'w', { ignoreLease: true });
  t.same(kvView(n.range('k').kvs[0]!), { key: 'k', value: 'w', c: 2, m: 4, v: 3, lease: id });
  e = n.err({ put: { key: b('k'), value: b('x'), ignoreValue: true } });
  t.equal(e.code, 'VALUE_PROVIDED');
  t.equal(e.message, 'etcdserver: value is provided');
  e = n.err({ put: { key: b('k'), lease: id, ignoreLease: true } });
  t.equal(e.code, 'LEASE_PROVIDED');
  t.equal(e.message, 'etcdserver: lease is provided');
  n.del('k');
  t.equal(n.err({ put: { key: b('k'), ignoreValue: true } }).code, 'KEY_NOT_FOUND', 'a deleted key is not found');
});

t.test('put with a lease', async (t) => {
  const n = Node.create();
  const e = n.err({ put: { key: b('k'), value: b('v'), lease: 12345 } });
  t.equal(e.code, 'LEASE_NOT_FOUND');
  t.equal(e.grpcCode, 5);
  t.equal(e.message, 'etcdserver: requested lease not found');
  const id = n.grant(10).ID;
  n.put('k', 'v', { lease: id });
  t.same(n.store.leaseTimeToLive(id, true).keys.map((k) => Buffer.from(k).toString()), ['k']);
  n.put('k', 'v2');
  t.same(n.store.leaseTimeToLive(id, true).keys, [], 'a put without lease detaches');
});

t.test('empty keys and bad requests', async (t) => {
  const n = Node.create();
  t.equal(n.err({ put: { key: b(''), value: b('v') } }).code, 'EMPTY_KEY');
  t.equal(n.err({ deleteRange: { key: b('') } }).code, 'EMPTY_KEY');
  t.equal(n.store.appliedIndex, 2, 'failed entries still count as applied');
});

t.test('entries at or below the applied index are skipped', async (t) => {
  const store = new KvStore();
  const put = { put: { key: b('k'), value: b('v') } };
  t.ok('put' in store.apply(put, { index: 5, term: 1 }));
  t.same(store.apply(put, { index: 5, term: 1 }), { alreadyApplied: true });
  t.same(store.apply(put, { index: 3, term: 1 }), { alreadyApplied: true });
  t.equal(store.revision, 2);
  t.equal(store.appliedIndex, 5);
  t.equal(store.appliedTerm, 1);
  t.ok('put' in store.apply(put, { index: 6, term: 2 }));
  t.equal(store.revision, 3);
  t.equal(store.appliedTerm, 2);
});

t.test('stored bytes are copies of the request', async (t) => {
  const store = new KvStore();
  const key = Buffer.from('key');
  const value = Buffer.from('value');
  store.apply({ put: { key, value } }, { index: 1, term: 1 });
  key.fill(0);
  value.fill(0);
  const kv = store.range({ key: b('key') }).kvs[0]!;
  t.equal(Buffer.from(kv.value).toString(), 'value');
});
