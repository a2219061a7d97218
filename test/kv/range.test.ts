// Range: single key, prefix, interval, from-key, limit/more, historical revision, keys_only,
// count_only, sort, revision filters, errors, and the paged form.
import t from 'tap';
import { KvError } from '../../core/kv/errors.js';
import { prefixEnd } from '../../core/kv/keys.js';
import { SortOrder, SortTarget } from '../../core/kv/types.js';
import { b, keysOf, kvView, Node, s } from './helpers.js';

function fixture(): Node {
  const n = Node.create();
  n.put('a', '1'); // rev 2
  n.put('ab', '2'); // 3
  n.put('b', '3'); // 4
  n.put('a', '4'); // 5
  n.del('ab'); // 6
  n.put('c', '5'); // 7
  n.put('abc', '6'); // 8
  return n;
}

t.test('key spans', async (t) => {
  const n = fixture();
  t.equal(n.store.revision, 8);
  t.same(n.range('a').kvs.map(kvView), [{ key: 'a', value: '4', c: 2, m: 5, v: 2, lease: 0 }]);
  t.same(keysOf(n.range('a', s(prefixEnd(b('a'))))), ['a', 'abc'], 'prefix');
  t.same(keysOf(n.range('ab', 'c')), ['abc', 'b'], 'interval [ab, c)');
  t.same(keysOf(n.range('b', '\0')), ['b', 'c'], 'from key');
  t.same(keysOf(n.range('\0', '\0')), ['a', 'abc', 'b', 'c'], 'everything');
  t.same(n.range('c', 'a').kvs, [], 'inverted interval is empty');
  t.equal(n.range('c', 'a').count, 0);
  t.same(n.range('ab').kvs, [], 'deleted key');
  t.same(n.range('zz').kvs, [], 'missing key');
  t.equal(n.range('a').header.revision, 8);
});

t.test('limit and more, count is the total', async (t) => {
  const n = fixture();
  let r = n.range('\0', '\0', { limit: 2 });
  t.same(keysOf(r), ['a', 'abc']);
  t.equal(r.more, true);
  t.equal(r.count, 4);
  r = n.range('\0', '\0', { limit: 4 });
  t.equal(r.more, false);
  t.equal(r.kvs.length, 4);
  r = n.range('\0', '\0', { limit: 10 });
  t.equal(r.more, false);
});

t.test('historical reads', async (t) => {
  const n = fixture();
  let r = n.range('\0', '\0', { revision: 4 });
  t.same(r.kvs.map(kvView), [
    { key: 'a', value: '1', c: 2, m: 2, v: 1, lease: 0 },
    { key: 'ab', value: '2', c: 3, m: 3, v: 1, lease: 0 },
    { key: 'b', value: '3', c: 4, m: 4, v: 1, lease: 0 },
  ]);
  t.equal(r.header.revision, 8, 'header carries the current revision');
  r = n.range('\0', '\0', { revision: 6 });
  t.same(keysOf(r), ['a', 'b']);
  t.same(n.range('a', undefined, { revision: 1 }).kvs, [], 'before any write');
  t.same(keysOf(n.range('\0', '\0', { revision: 8 })), ['a', 'abc', 'b', 'c']);
});

t.test('keys_only and count_only', async (t) => {
  const n = fixture();
  const r = n.range('\0', '\0', { keysOnly: true });
  t.same(keysOf(r), ['a', 'abc', 'b', 'c']);
  t.ok(r.kvs.every((kv) => kv.value.byteLength === 0));
  t.equal(r.kvs[0]!.version, 2, 'metadata kept');
  const c = n.range('\0', '\0', { countOnly: true });
  t.same(c.kvs, []);
  t.equal(c.count, 4);
  t.equal(c.more, false);
});

t.test('sort order and target', async (t) => {
  const n = fixture();
  const sorted = (order: number, target: number, extra = {}): string[] =>
    keysOf(n.range('\0', '\0', { sortOrder: order, sortTarget: target, ...extra }));
  t.same(sorted(SortOrder.DESCEND, SortTarget.KEY), ['c', 'b', 'abc', 'a']);
  t.same(sorted(SortOrder.ASCEND, SortTarget.KEY), ['a', 'abc', 'b', 'c']);
  t.same(sorted(SortOrder.DESCEND, SortTarget.VALUE), ['abc', 'c', 'a', 'b']);
  t.same(sorted(SortOrder.ASCEND, SortTarget.MOD), ['b', 'a', 'c', 'abc']);
  t.same(sorted(SortOrder.NONE, SortTarget.CREATE), ['a', 'b', 'c', 'abc'], 'NONE with a non-key target sorts ascending');
  t.same(sorted(SortOrder.ASCEND, SortTarget.VERSION), ['abc', 'b', 'c', 'a'], 'ties keep key order');
  const r = n.range('\0', '\0', { sortOrder: SortOrder.DESCEND, sortTarget: SortTarget.MOD, limit: 2 });
  t.same(keysOf(r), ['abc', 'c'], 'sort before limit');
  t.equal(r.more, true);
  t.equal(r.count, 4);
  const e = n.err({ range: { key: b('a'), sortOrder: 3 } });
  t.equal(e.code, 'INVALID_SORT_OPTION');
  t.equal(n.err({ range: { key: b('a'), sortTarget: 5 } }).code, 'INVALID_SORT_OPTION');
});

t.test('revision filters (count stays the unfiltered total, as etcd)', async (t) => {
  const n = fixture();
  const f = (extra: Record<string, number>): string[] => keysOf(n.range('\0', '\0', extra));
  t.same(f({ minModRevision: 5 }), ['a', 'abc', 'c']);
  t.same(f({ maxModRevision: 5 }), ['a', 'b']);
  t.same(f({ minCreateRevision: 4 }), ['abc', 'b', 'c']);
  t.same(f({ maxCreateRevision: 4 }), ['a', 'b']);
  t.same(f({ minModRevision: 5, maxCreateRevision: 2 }), ['a']);
  const r = n.range('\0', '\0', { minModRevision: 5, limit: 2 });
  t.same(keysOf(r), ['a', 'abc']);
  t.equal(r.more, true);
  t.equal(r.count, 4);
});

t.test('revision errors', async (t) => {
  const n = fixture();
  let e = n.err({ range: { key: b('a'), revision: 9 } });
  t.equal(e.code, 'FUTURE_REV');
  t.equal(e.message, 'etcdserver: mvcc: required revision is a future revision');
  n.apply({ compaction: { revision: 5 } });
  e = n.err({ range: { key: b('a'), revision: 4 } });
  t.equal(e.code, 'COMPACTED');
  t.equal(e.grpcCode, 11);
  t.same(keysOf(n.range('\0', '\0', { revision: 5 })), ['a', 'ab', 'b'], 'the compacted revision itself is readable');
  // etcd's mvcc rangeKeys reads a revision of 0 or below at the current one; its txn check
  // (checkRequestRange) finds a negative one below the first revision.
  t.same(keysOf(n.range('\0', '\0', { revision: -1 })), keysOf(n.range('\0', '\0')), 'a negative revision: the current one');
  t.same(keysOf(n.range('\0', '\0', { revision: -5 })), keysOf(n.range('\0', '\0')), 'any negative revision');
  const txnRead = n.err({ txn: { compare: [], success: [{ requestRange: { key: b('a'), revision: -1 } }], failure: [] } });
  t.equal(txnRead.code, 'COMPACTED', 'inside a txn: compacted, as etcd answers');
  t.equal(n.err({ range: { key: b('') } }).code, 'EMPTY_KEY');
  t.throws(() => n.range('', undefined), KvError);
});

t.test("a txn's read at an earlier revision does not see the txn's own writes", async (t) => {
  const n = fixture(); // a: mod 5, abc: mod 8
  const readAt = (revision: number, rangeEnd?: string) => ({ requestRange: { key: b('a'), ...(rangeEnd ? { rangeEnd: b(rangeEnd) } : {}), revision } });
  const r = n.txn({ compare: [], success: [{ requestPut: { key: b('a'), value: b('new') } }, readAt(8, 'b'), readAt(8), readAt(0, 'b')], failure: [] });
  const mods = (i: number) => r.responses[i]!.responseRange!.kvs.map((kv) => [s(kv.key), kv.modRevision]);
  t.same(mods(1), [['a', 5], ['abc', 8]], 'a span at the revision before the txn');
  t.same(mods(2), [['a', 5]], 'one key at the revision before the txn');
  t.same(mods(3), [['a', 9], ['abc', 8]], "at the current revision: the txn's write");
});

t.test("a txn's read revision before any compaction, and which check wins (etcd's order)", async (t) => {
  const n = fixture();
  const txnRead = (revision: number, extra: object[] = []) => ({ txn: { compare: [], success: [{ requestRange: { key: b('a'), revision } }, ...extra], failure: [] } });
  // etcd's checkRequestRange holds the revision against the compacted one, -1 until a compaction.
  const r = n.txn(txnRead(-1).txn);
  t.same(keysOf(r.responses[0]!.responseRange!), ['a'], 'never compacted: -1 reads the current revision');
  t.equal(n.err(txnRead(-2)).code, 'COMPACTED', 'below -1: compacted even so');
  t.equal(n.err(txnRead(9)).code, 'FUTURE_REV');
  // etcd checks every put of the txn before any range: the put's error wins, wherever it stands.
  const ignoreMissing = { requestPut: { key: b('zz'), ignoreValue: true } };
  t.equal(n.err(txnRead(9, [ignoreMissing])).code, 'KEY_NOT_FOUND', "a later put's error before an earlier range's");
  // In a txn the put's key is checked before its lease; a put alone checks its lease first.
  const both = { key: b('zz'), ignoreValue: true, lease: 999 };
  t.equal(n.err({ txn: { compare: [], success: [{ requestPut: both }], failure: [] } }).code, 'KEY_NOT_FOUND', 'in a txn: the key');
  t.equal(n.err({ put: both }).code, 'LEASE_NOT_FOUND', 'a put alone: the lease');
});

t.test('a range through apply is read-only', async (t) => {
  const n = fixture();
  const before = n.store.digest();
  const r = n.apply({ range: { key: b('a') } });
  t.ok('range' in r);
  t.equal(n.store.digest(), before);
  t.equal(n.store.revision, 8);
  t.equal(n.store.appliedIndex, n.index, 'applied index advances');
});

t.test('unary range response cap', async (t) => {
  const n = Node.create({ maxRangeResponseBytes: 2000 });
  for (let i = 0; i < 30; i++) n.put(`k${String(i).padStart(2, '0')}`, 'x'.repeat(100));
  const e = n.err({ range: { key: b('k'), rangeEnd: b('l') } });
  t.equal(e.code, 'RANGE_TOO_LARGE');
  t.equal(e.grpcCode, 8);
  t.equal(n.range('k', 'l', { limit: 5 }).kvs.length, 5, 'a limit keeps it under the cap');
  t.equal(n.range('k', 'l', { countOnly: true }).count, 30, 'count_only holds nothing');
});

t.test('paged range', async (t) => {
  const n = Node.create();
  for (let i = 0; i < 100; i++) n.put(`k${String(i).padStart(3, '0')}`, 'v'.repeat(100));
  const full = keysOf(n.range('k', 'l'));
  const pages = [...n.store.rangePages({ key: b('k'), rangeEnd: b('l') }, 1000)];
  t.ok(pages.length >= 10, `${pages.length} pages`);
  for (const p of pages) {
    const bytes = p.kvs.reduce((a, kv) => a + kv.key.byteLength + kv.value.byteLength + 32, 0);
    t.ok(bytes <= 1000, 'page within its byte budget');
  }
  t.same(pages.flatMap((p) => p.kvs.map((kv) => s(kv.key))), full);
  t.same(pages.map((p) => p.more), [...pages.slice(1).map(() => true), false]);

  // Writes between pages do not disturb the fixed-revision read.
  const it = n.store.rangePages({ key: b('k'), rangeEnd: b('l') }, 1000);
  const first = it.next().value!;
  n.put('k000x', 'new');
  n.del('k050');
  const rest = [...it];
  const keys = [first, ...rest].flatMap((p) => p.kvs.map((kv) => s(kv.key)));
  t.same(keys, full, 'a consistent snapshot at the first page revision');
  t.equal(rest[0]!.revision, first.revision);

  // Limit and filters.
  const limited = [...n.store.rangePages({ key: b('k'), rangeEnd: b('l'), limit: 15 }, 1000)];
  t.equal(limited.flatMap((p) => p.kvs).length, 15);
  t.equal(limited[limited.length - 1]!.more, true, 'the limit cut the result');

  // Compaction past the read revision between pages.
  const it2 = n.store.rangePages({ key: b('k'), rangeEnd: b('l') }, 1000);
  it2.next();
  n.put('x', '1');
  n.apply({ compaction: { revision: n.store.revision } });
  t.throws(() => it2.next(), { code: 'COMPACTED' });
  t.throws(() => n.store.rangePages({ key: b('k'), sortOrder: SortOrder.DESCEND }).next(), { code: 'STREAM_UNSUPPORTED' });
});
