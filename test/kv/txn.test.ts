// Txn: compares on value/version/create/mod/lease, success/failure, nested txns, reads that
// see the txn's own writes, the duplicate-key rule and etcd's errors.
import t from 'tap';
import { MAX_TXN_OPS } from '../../core/kv/limits.js';
import { CompareResult, CompareTarget, type Compare, type RequestOp } from '../../core/kv/types.js';
import { b, keysOf, kvView, Node, s } from './helpers.js';

const put = (key: string, value: string): RequestOp => ({ requestPut: { key: b(key), value: b(value) } });
const get = (key: string, rangeEnd?: string): RequestOp => ({
  requestRange: { key: b(key), ...(rangeEnd ? { rangeEnd: b(rangeEnd) } : {}) },
});
const del = (key: string, rangeEnd?: string): RequestOp => ({
  requestDeleteRange: { key: b(key), ...(rangeEnd ? { rangeEnd: b(rangeEnd) } : {}) },
});
const cmp = (key: string, target: number, result: number, field: Partial<Compare>, rangeEnd?: string): Compare => ({
  key: b(key),
  target,
  result,
  ...field,
  ...(rangeEnd ? { rangeEnd: b(rangeEnd) } : {}),
});

t.test('compare targets and results', async (t) => {
  const n = Node.create();
  const id = n.grant(30).ID;
  n.put('k', 'm', { lease: id }); // rev 2 (lease grant does not bump)
  n.put('k', 'n', { lease: id }); // rev 3, version 2, create 2
  const ok = (c: Compare): boolean => n.txn({ compare: [c] }).succeeded;
  t.ok(ok(cmp('k', CompareTarget.VALUE, CompareResult.EQUAL, { value: b('n') })));
  t.notOk(ok(cmp('k', CompareTarget.VALUE, CompareResult.EQUAL, { value: b('m') })));
  t.ok(ok(cmp('k', CompareTarget.VALUE, CompareResult.GREATER, { value: b('m') })));
  t.ok(ok(cmp('k', CompareTarget.VALUE, CompareResult.LESS, { value: b('o') })));
  t.ok(ok(cmp('k', CompareTarget.VALUE, CompareResult.NOT_EQUAL, { value: b('x') })));
  t.ok(ok(cmp('k', CompareTarget.VERSION, CompareResult.EQUAL, { version: 2 })));
  t.ok(ok(cmp('k', CompareTarget.VERSION, CompareResult.GREATER, { version: 1 })));
  t.ok(ok(cmp('k', CompareTarget.CREATE, CompareResult.EQUAL, { createRevision: 2 })));
  t.ok(ok(cmp('k', CompareTarget.MOD, CompareResult.EQUAL, { modRevision: 3 })));
  t.ok(ok(cmp('k', CompareTarget.MOD, CompareResult.LESS, { modRevision: 4 })));
  t.ok(ok(cmp('k', CompareTarget.LEASE, CompareResult.EQUAL, { lease: id })));
  t.notOk(ok(cmp('k', CompareTarget.LEASE, CompareResult.EQUAL, { lease: 0 })));
  // A missing key compares as zero; a value compare on it always fails.
  t.ok(ok(cmp('nope', CompareTarget.CREATE, CompareResult.EQUAL, { createRevision: 0 })), 'absent key: create == 0');
  t.ok(ok(cmp('nope', CompareTarget.VERSION, CompareResult.EQUAL, {})));
  t.notOk(ok(cmp('nope', CompareTarget.VALUE, CompareResult.EQUAL, { value: b('') })));
  t.notOk(ok(cmp('nope', CompareTarget.VALUE, CompareResult.NOT_EQUAL, { value: b('x') })));
  // Compares over a range: every key must satisfy it.
  n.put('k2', 'n');
  t.ok(ok(cmp('k', CompareTarget.VALUE, CompareResult.EQUAL, { value: b('n') }, 'l')));
  n.put('k3', 'z');
  t.notOk(ok(cmp('k', CompareTarget.VALUE, CompareResult.EQUAL, { value: b('n') }, 'l')));
  t.equal(n.store.revision, 5, 'read-only txns do not bump the revision');
});

t.test('success and failure branches', async (t) => {
  const n = Node.create();
  // Create-if-absent, the classic CAS.
  const casCreate = () =>
    n.txn({
      compare: [cmp('lock', CompareTarget.CREATE, CompareResult.EQUAL, { createRevision: 0 })],
      success: [put('lock', 'me')],
      failure: [get('lock')],
    });
  const r1 = casCreate();
  t.equal(r1.succeeded, true);
  t.equal(r1.header.revision, 2);
  t.equal(r1.responses[0]!.responsePut!.header.revision, 2);
  const r2 = casCreate();
  t.equal(r2.succeeded, false);
  t.equal(r2.header.revision, 2);
  t.same(r2.responses[0]!.responseRange!.kvs.map(kvView), [{ key: 'lock', value: 'me', c: 2, m: 2, v: 1, lease: 0 }]);
  // No compares: success.
  t.equal(n.txn({ success: [put('x', '1')] }).succeeded, true);
  // Empty txn.
  const e = n.txn({});
  t.equal(e.succeeded, true);
  t.same(e.responses, []);
});

t.test('one revision for all writes; reads see the txn own writes', async (t) => {
  const n = Node.create();
  n.put('a', '0');
  const r = n.txn({ success: [get('a'), put('a', '1'), put('b', '2'), get('a', 'z'), del('c'), get('a', 'z')] });
  t.equal(r.header.revision, 3);
  const [g1, p1, p2, g2, d1, g3] = r.responses;
  t.equal(g1!.responseRange!.header.revision, 2, 'before any write: the old revision');
  t.same(g1!.responseRange!.kvs.map((kv) => s(kv.value)), ['0']);
  t.equal(p1!.responsePut!.header.revision, 3);
  t.equal(p2!.responsePut!.header.revision, 3);
  t.same(keysOf(g2!.responseRange!), ['a', 'b']);
  t.same(g2!.responseRange!.kvs.map((kv) => s(kv.value)), ['1', '2']);
  t.equal(g2!.responseRange!.header.revision, 3);
  t.equal(d1!.responseDeleteRange!.deleted, 0);
  t.equal(d1!.responseDeleteRange!.header.revision, 3, 'after writes, a no-op delete reports the txn revision');
  t.equal(g3!.responseRange!.count, 2);
  t.equal(n.store.revision, 3);
  const hist = n.range('\0', '\0', { revision: 2 });
  t.same(keysOf(hist), ['a'], 'the txn is atomic: revision 2 has none of it');
  // Sub-revisions: events come out in op order.
  t.same(n.range('a').kvs[0]!.modRevision, 3);
});

t.test('nested txns', async (t) => {
  const n = Node.create();
  n.put('x', '1');
  const r = n.txn({
    compare: [cmp('x', CompareTarget.VALUE, CompareResult.EQUAL, { value: b('1') })],
    success: [
      put('y', 'outer'),
      {
        requestTxn: {
          // Compares of nested txns see the state before the whole txn: y does not exist yet.
          compare: [cmp('y', CompareTarget.VERSION, CompareResult.EQUAL, { version: 0 })],
          success: [put('z', 'inner'), get('y')],
          failure: [put('w', 'no')],
        },
      },
    ],
  });
  t.equal(r.succeeded, true);
  const inner = r.responses[1]!.responseTxn!;
  t.equal(inner.succeeded, true);
  t.equal(inner.header.revision, 0, 'nested headers are empty, as etcd');
  t.same(keysOf(inner.responses[1]!.responseRange!), ['y'], 'nested reads see outer writes');
  t.same(keysOf(n.range('\0', '\0')), ['x', 'y', 'z']);
  t.equal(n.store.revision, 3);
});

t.test('prechecks fail the whole txn before any write', async (t) => {
  const n = Node.create();
  let e = n.err({ txn: { success: [put('a', '1'), { requestPut: { key: b('b'), value: b('v'), lease: 999 } }] } });
  t.equal(e.code, 'LEASE_NOT_FOUND');
  e = n.err({ txn: { success: [put('a', '1'), { requestPut: { key: b('b'), ignoreValue: true } }] } });
  t.equal(e.code, 'KEY_NOT_FOUND');
  e = n.err({ txn: { success: [put('a', '1'), { requestRange: { key: b('a'), revision: 50 } }] } });
  t.equal(e.code, 'FUTURE_REV');
  t.equal(n.store.revision, 1);
  t.same(n.range('a').kvs, []);
  // Only the chosen branch is checked.
  const ok = n.txn({
    compare: [cmp('a', CompareTarget.VERSION, CompareResult.EQUAL, { version: 0 })],
    success: [put('a', '1')],
    failure: [{ requestPut: { key: b('b'), value: b('v'), lease: 999 } }],
  });
  t.equal(ok.succeeded, true);
});

t.test('duplicate key rule', async (t) => {
  const n = Node.create();
  const dup = (success: RequestOp[], failure: RequestOp[] = []) => n.err({ txn: { success, failure } });
  t.equal(dup([put('a', '1'), put('a', '2')]).code, 'DUPLICATE_KEY');
  t.equal(dup([put('a', '1'), put('a', '2')]).message, 'etcdserver: duplicate key given in txn request');
  t.equal(dup([put('b', '1'), del('a', 'c')]).code, 'DUPLICATE_KEY', 'put inside a deleted range');
  t.equal(dup([del('b'), put('b', '1')]).code, 'DUPLICATE_KEY');
  t.equal(dup([put('m', '1'), del('a', '\0')]).code, 'DUPLICATE_KEY', 'from-key delete covers later keys');
  t.equal(dup([put('a', '1'), { requestTxn: { success: [put('a', '2')] } }]).code, 'DUPLICATE_KEY', 'across levels');
  t.equal(dup([del('a', 'c'), { requestTxn: { failure: [put('b', '2')] } }]).code, 'DUPLICATE_KEY');
  // Allowed: then- and else-branches of one nested txn may put the same key.
  const r = n.txn({ success: [{ requestTxn: { success: [put('a', '1')], failure: [put('a', '2')] } }] });
  t.equal(r.succeeded, true);
  // Allowed: the same key in the success and failure lists of the top level.
  t.equal(n.txn({ success: [put('q', '1')], failure: [put('q', '2')] }).succeeded, true);
  // Allowed: two deletes of the same key, and a put next to a non-overlapping delete.
  t.equal(n.txn({ success: [del('a'), del('a'), put('b', '1')] }).succeeded, true);
  t.equal(n.range('a').kvs.length, 0);
});

t.test('op count limits and empty ops', async (t) => {
  const n = Node.create();
  const many = (k: number): RequestOp[] => Array.from({ length: k }, (_, i) => put(`k${i}`, 'v'));
  t.equal(n.txn({ success: many(MAX_TXN_OPS) }).succeeded, true, `${MAX_TXN_OPS} ops pass`);
  const e = n.err({ txn: { success: many(MAX_TXN_OPS + 1) } });
  t.equal(e.code, 'TOO_MANY_OPS');
  t.equal(e.message, 'etcdserver: too many operations in txn request');
  const cmps = Array.from({ length: MAX_TXN_OPS + 1 }, () => cmp('a', CompareTarget.VERSION, CompareResult.EQUAL, {}));
  t.equal(n.err({ txn: { compare: cmps } }).code, 'TOO_MANY_OPS', 'compares count too');
  // A nested txn's budget is what the parent leaves (etcd's rule).
  const nested = { requestTxn: { success: Array.from({ length: MAX_TXN_OPS / 2 + 1 }, (_, i) => put(`n${i}`, 'x')) } };
  t.equal(n.err({ txn: { success: [...many(MAX_TXN_OPS / 2 - 1), nested] } }).code, 'TOO_MANY_OPS');
  t.equal(n.err({ txn: { success: [{}] } }).code, 'KEY_NOT_FOUND', 'an empty RequestOp, as etcd answers');
  t.equal(n.err({ txn: { compare: [{ key: b('') }] } }).code, 'EMPTY_KEY');
});

t.test('readTxn: a read-only txn answered outside Raft as apply answers it, changing nothing', async (t) => {
  const n = Node.create();
  n.put('a', '1');
  n.put('b', '2');
  n.put('a', '3');
  n.del('b');
  n.put('c', '4');
  const txns = [
    { compare: [cmp('a', CompareTarget.VALUE, CompareResult.EQUAL, { value: b('3') })], success: [get('a'), get('a', 'z')], failure: [get('c')] },
    { compare: [cmp('a', CompareTarget.VALUE, CompareResult.EQUAL, { value: b('1') })], success: [get('a')], failure: [get('c'), get('b')] },
    { compare: [cmp('b', CompareTarget.VERSION, CompareResult.EQUAL, { version: 0 })], success: [{ requestRange: { key: b('a'), revision: 2 } }] },
    { compare: [], success: [], failure: [] },
  ];
  for (const [i, txn] of txns.entries()) {
    const rev = n.store.revision;
    const applied = n.store.appliedIndex;
    const local = n.store.readTxn(txn);
    t.equal(n.store.revision, rev, `txn ${i}: the revision is unchanged`);
    t.equal(n.store.appliedIndex, applied, `txn ${i}: nothing applied`);
    t.same(local, n.txn(txn), `txn ${i}: the same answer as through apply`);
  }
  t.throws(() => n.store.readTxn({ success: [get('a'), put('x', 'y')] }), /the txn writes/, 'a txn that writes is refused');
  t.throws(() => n.store.readTxn({ success: [{ requestTxn: { success: [get('a')] } }] }), /the txn writes/, 'a nested txn counts as a write, as in etcd 3.4');
  t.throws(() => n.store.readTxn({ success: [{ requestRange: { key: b('a'), revision: 99 } }] }), { code: 'FUTURE_REV' }, "etcd's errors");
});
