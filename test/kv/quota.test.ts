// The space quota: which requests it applies to, the alarm's hysteresis, the retained-bytes
// estimate (kept exact through writes, compaction and restore, and close to the real heap),
// and the auto-compactor's decisions.
import t from 'tap';
import v8 from 'node:v8';
import vm from 'node:vm';
import { AutoCompactor, parseAutoCompaction, REVISION_CHECK_INTERVAL_MS } from '../../core/kv/auto-compactor.js';
import { RECORD_OVERHEAD_BYTES } from '../../core/kv/mvcc.js';
import { VALUE_SLAB_BYTES, ValueSlab } from '../../core/kv/keys.js';
import { KvStore } from '../../core/kv/store.js';
import { QUOTA_BYTES_MIN, QUOTA_CLEAR_FRACTION, SpaceAlarm, clusterQuota, defaultQuotaBytes, growsStore, maxQuotaBytes, validQuota } from '../../core/kv/quota.js';
import { b, Node } from './helpers.js';

/** V8 heap in use, and heap plus external memory (which includes ArrayBuffers, the value arena's slabs), after full collections. */
function memoryNow(): { heap: number; total: number } {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  gc();
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, total: m.heapUsed + m.external };
}

t.test('growsStore: put, lease grant and txns with a put anywhere', async (t) => {
  t.ok(growsStore({ put: { key: b('k'), value: b('v') } }));
  t.ok(growsStore({ leaseGrant: { TTL: 10, ID: 0 } }));
  t.notOk(growsStore({ deleteRange: { key: b('k') } }));
  t.notOk(growsStore({ compaction: { revision: 3 } }));
  t.notOk(growsStore({ leaseRevoke: { ID: 1 } }));
  t.notOk(growsStore({ range: { key: b('k') } }));
  t.notOk(growsStore({ txn: { success: [{ requestRange: { key: b('k') } }], failure: [{ requestDeleteRange: { key: b('k') } }] } }));
  t.ok(growsStore({ txn: { failure: [{ requestPut: { key: b('k'), value: b('v') } }] } }));
  t.ok(growsStore({ txn: { success: [{ requestTxn: { failure: [{ requestTxn: { success: [{ requestPut: { key: b('k'), value: b('v') } }] } }] } }] } }), 'nested');
});

t.test('SpaceAlarm: raised at the quota, cleared below the clear fraction, reads and deletes always admitted', async (t) => {
  const q = 200_000;
  const alarm = new SpaceAlarm(q);
  const put = { put: { key: b('k'), value: b('v') } };
  const del = { deleteRange: { key: b('k') } };
  t.ok(alarm.admits(put, q - 1));
  t.notOk(alarm.admits(put, q), 'at the quota');
  t.ok(alarm.admits(del, q + 10_000), 'deletes make room');
  t.ok(alarm.admits({ compaction: { revision: 5 } }, q + 10_000));
  t.notOk(alarm.admits(put, q - 1), 'still raised just below the quota');
  t.notOk(alarm.admits(put, q * QUOTA_CLEAR_FRACTION), 'still raised at the clear fraction');
  t.ok(alarm.admits(put, q * QUOTA_CLEAR_FRACTION - 1), 'cleared below it');
  t.throws(() => new SpaceAlarm(QUOTA_BYTES_MIN - 1), RangeError);
  t.throws(() => new SpaceAlarm(1.5e6 + 0.5), RangeError);
  alarm.setQuota(q * 2);
  t.equal(alarm.quotaBytes, q * 2);
  t.ok(alarm.admits(put, q), 'a larger quota clears the alarm at the next check');
  alarm.setQuota(q / 2);
  t.notOk(alarm.admits(put, q * 0.6), 'a smaller quota raises it');
  t.throws(() => alarm.setQuota(QUOTA_BYTES_MIN - 1), RangeError);
  t.equal(alarm.quotaBytes, q / 2, 'a refused quota changes nothing');
});

const GiB = 2 ** 30;
const MiB = 2 ** 20;
/** V8's default heap limit without pointer compression: half the memory, 2 GiB at most below 16 GiB (4 GiB from 16). */
const pi = (memoryBytes: number) => ({ memoryBytes, heapLimitBytes: Math.min(memoryBytes / 2, memoryBytes >= 16 * GiB ? 4 * GiB : 2 * GiB) });

t.test('defaultQuotaBytes / maxQuotaBytes: what a member\'s memory and heap can hold', async (t) => {
  t.equal(defaultQuotaBytes(pi(1 * GiB)), 128 * MiB, 'a 1 GiB Pi: an eighth of its memory');
  t.equal(defaultQuotaBytes(pi(4 * GiB)), 512 * MiB, 'a 4 GiB Pi: 512 MiB');
  t.equal(defaultQuotaBytes(pi(8 * GiB)), Math.floor((2 * GiB) / 3), 'an 8 GiB Pi: a third of its 2 GiB heap, below an eighth of its memory');
  t.equal(defaultQuotaBytes(pi(64 * GiB)), Math.floor((4 * GiB) / 3), 'a large machine: a third of the 4 GiB heap');
  t.equal(defaultQuotaBytes({ memoryBytes: 64 * GiB, heapLimitBytes: 16 * GiB }), 2 * GiB, 'with a larger heap: etcd\'s 2 GiB');
  t.equal(defaultQuotaBytes({ memoryBytes: 1024, heapLimitBytes: 1024 }), QUOTA_BYTES_MIN);
  t.equal(maxQuotaBytes(pi(1 * GiB)), Math.floor((512 * MiB) / 3), 'a 1 GiB Pi: a third of its 512 MiB heap');
  t.equal(maxQuotaBytes({ memoryBytes: 1 * GiB, heapLimitBytes: 4 * GiB }), Math.floor(GiB / 3), 'a heap raised beyond the memory: a third of the memory');
  t.equal(maxQuotaBytes({ memoryBytes: 1024, heapLimitBytes: 1024 }), QUOTA_BYTES_MIN);
  for (const mem of [1, 2, 4, 8, 16, 64].map((g) => g * GiB)) {
    t.ok(defaultQuotaBytes(pi(mem)) <= maxQuotaBytes(pi(mem)), `the default fits the limit with ${mem / GiB} GiB`);
  }
});

t.test('clusterQuota: the smallest member quota, unknown ones left out, ties to this member', async (t) => {
  const own = { id: 5, quotaBytes: 500 * MiB };
  t.same(clusterQuota(own, []), own);
  t.same(clusterQuota(own, [{ id: 5, quotaBytes: 500 * MiB }, { id: 2 }, { id: 3, quotaBytes: 2 * GiB }]), own, 'larger and unknown quotas do not bind');
  t.same(clusterQuota(own, [{ id: 7, quotaBytes: 100 * MiB }, { id: 3, quotaBytes: 200 * MiB }]), { id: 7, quotaBytes: 100 * MiB }, 'the smallest binds');
  t.same(clusterQuota(own, [{ id: 9, quotaBytes: 500 * MiB }]), own, 'an equal quota: the lowest id...');
  t.same(clusterQuota(own, [{ id: 9, quotaBytes: 500 * MiB }, { id: 2, quotaBytes: 500 * MiB }]), { id: 2, quotaBytes: 500 * MiB }, '...whoever asks');
  t.equal(validQuota(QUOTA_BYTES_MIN), QUOTA_BYTES_MIN);
  for (const bad of [undefined, null, '1048576', QUOTA_BYTES_MIN - 1, 1.5e6 + 0.5, -1, Number.NaN, 2 ** 60]) t.equal(validQuota(bad), undefined, `${String(bad)} is no quota`);
});

t.test('retainedBytes: grows with history, shrinks with compaction, equal after a restore', async (t) => {
  const n = Node.create();
  t.equal(n.store.retainedBytes, 0);
  n.put('a', 'x'.repeat(1000));
  const one = n.store.retainedBytes;
  t.ok(one > 1000);
  for (let i = 0; i < 9; i++) n.put('a', 'x'.repeat(1000));
  t.equal(n.store.retainedBytes - one, 9 * (RECORD_OVERHEAD_BYTES + 1000), 'each version adds its record');
  n.put('b', 'y');
  n.del('b');
  const before = n.store.retainedBytes;
  n.apply({ compaction: { revision: n.store.revision } });
  t.ok(n.store.retainedBytes < before / 5, `compaction gives memory back (${before} -> ${n.store.retainedBytes})`);
  t.equal(n.store.retainedBytes, one, 'one version of a, nothing of the deleted b');
  // A restored store counts the same.
  const copy = new KvStore();
  await copy.restore(n.store.snapshot());
  t.equal(copy.retainedBytes, n.store.retainedBytes);
});

t.test('retainedBytes estimate tracks the real heap within 40% (few and many keys, small and large values)', async (t) => {
  const heap = (): number => memoryNow().total;
  for (const [keys, writes, valueBytes] of [[100, 20_000, 16], [1_000, 20_000, 100], [20_000, 20_000, 256]] as const) {
    const n = Node.create();
    const h0 = heap();
    for (let i = 0; i < writes; i++) n.put(`key/${i % keys}`, String.fromCharCode(97 + (i % 26)).repeat(valueBytes));
    const real = heap() - h0;
    const ratio = real / n.store.retainedBytes;
    t.ok(ratio > 0.7 && ratio < 1.4, `${keys} keys, ${writes} writes of ${valueBytes} B: heap ${real} B, estimate ${n.store.retainedBytes} B (ratio ${ratio.toFixed(2)})`);
  }
});

t.test('a retained revision of a 256-byte value costs under 192 bytes of memory beyond the value (heap and external), the value off the V8 heap', async (t) => {
  // A Buffer per value cost ~290 bytes more (Buffer, ArrayBuffer and backing store; measured
  // 554 bytes here, of which the backing store's own malloc'd bookkeeping is not even counted).
  const used = memoryNow;
  const n = Node.create();
  const keys = 1_000;
  const writes = 20_000;
  for (let i = 0; i < keys; i++) n.put(`bench/put/${String(i).padStart(8, '0')}`, 'v');
  const before = used();
  const value = Buffer.alloc(256);
  for (let i = 0; i < writes; i++) {
    value.writeUInt32BE(i, 0);
    n.apply({ put: { key: b(`bench/put/${String(i % keys).padStart(8, '0')}`), value } });
  }
  const after = used();
  const perRevision = (after.total - before.total) / writes;
  t.ok(perRevision < 256 + 192, `${perRevision.toFixed(0)} bytes per revision of a 256-byte value`);
  // The value itself is not on the V8 heap (value-arena.ts): as a string per value, ~390 bytes were.
  const heapPerRevision = (after.heap - before.heap) / writes;
  t.ok(heapPerRevision < 192, `${heapPerRevision.toFixed(0)} bytes of V8 heap per revision of a 256-byte value`);
  t.equal(n.store.revision, 1 + keys + writes, 'every put retained');
});

t.test('short histories are kept in exact-size arrays', async (t) => {
  // KeyHistory.append: as V8 grows a pushed-into array, each key of a few records held ~130
  // bytes more (measured 266 against 223 bytes of heap per revision here, keys included).
  const heap = (): number => memoryNow().heap;
  const value = Buffer.alloc(256);
  const n = Node.create();
  const start = heap();
  for (let i = 0; i < 60_000; i++) n.apply({ put: { key: b(`short/${String(i % 20_000).padStart(8, '0')}`), value } });
  const perRevision = (heap() - start) / 60_000;
  t.ok(perRevision < 245, `${perRevision.toFixed(0)} bytes of V8 heap per revision, 20,000 keys of three revisions each`);
  t.equal(n.store.revision, 60_001, 'every put retained');
});

t.test('AutoCompactor periodic: compacts at the revision seen one retention ago; idle proposes nothing', async (t) => {
  const c = new AutoCompactor({ mode: 'periodic', retentionMs: 10_000 });
  t.equal(c.intervalMs, 1_000);
  let rev = 1;
  const proposed: Array<[number, number]> = [];
  let compactRev = -1;
  for (let now = 0; now <= 30_000; now += 250) {
    rev += 10; // 40 revisions a second
    const r = c.tick(now, rev, compactRev);
    if (r !== undefined) {
      proposed.push([now, r]);
      compactRev = r;
    }
  }
  t.ok(proposed.length >= 15, `compactions proposed: ${proposed.length}`);
  t.equal(proposed[0]![0], 10_000, 'the first once a whole retention window is sampled');
  for (const [now, r] of proposed) {
    const revAtHorizon = 1 + 10 * (Math.floor((now - 10_000) / 250) + 1);
    t.ok(r <= revAtHorizon && r > revAtHorizon - 60, `at ${now} ms: compact at ${r} (revision ${revAtHorizon} was current 10 s ago)`);
  }
  // Idle: the revision stops moving; after one more compaction nothing further is proposed.
  let idle = 0;
  for (let now = 30_250; now <= 60_000; now += 250) if (c.tick(now, rev, compactRev) !== undefined && ++idle) compactRev = rev;
  t.ok(idle <= 1, `idle cluster: ${idle} compaction(s), then none`);
  t.equal(c.tick(90_000, rev, rev), undefined);
});

t.test('AutoCompactor revision: keeps the last N revisions, checks every 5 minutes; off never compacts', async (t) => {
  const c = new AutoCompactor({ mode: 'revision', retentionRevisions: 1_000 });
  t.equal(c.tick(0, 500, -1), undefined, 'fewer revisions than retained');
  t.equal(c.tick(1_000, 5_000, -1), undefined, 'not yet time to check');
  t.equal(c.tick(REVISION_CHECK_INTERVAL_MS, 5_000, -1), 4_000);
  t.equal(c.tick(2 * REVISION_CHECK_INTERVAL_MS, 5_000, 4_000), undefined, 'nothing new');
  c.reset();
  t.equal(c.tick(2 * REVISION_CHECK_INTERVAL_MS + 1, 9_000, 4_000), 8_000, 'a new leader checks at once');
  const off = new AutoCompactor({ mode: 'off' });
  t.equal(off.tick(1e9, 1e6, -1), undefined);
});

t.test('parseAutoCompaction: etcd-style flags, clear errors', async (t) => {
  t.same(parseAutoCompaction('periodic', '1h'), { mode: 'periodic', retentionMs: 3_600_000 });
  t.same(parseAutoCompaction('periodic', '30m'), { mode: 'periodic', retentionMs: 1_800_000 });
  t.same(parseAutoCompaction('periodic', '2'), { mode: 'periodic', retentionMs: 7_200_000 }, 'a bare number is hours, as etcd');
  t.same(parseAutoCompaction('periodic', '1.5s'), { mode: 'periodic', retentionMs: 1_500 });
  t.same(parseAutoCompaction('revision', '5000'), { mode: 'revision', retentionRevisions: 5_000 });
  t.same(parseAutoCompaction('off', undefined), { mode: 'off' });
  t.throws(() => parseAutoCompaction('periodic', '1d'), /expected a duration/);
  t.throws(() => parseAutoCompaction('periodic', '10ms'), /at least 100 ms/);
  t.throws(() => parseAutoCompaction('revision', '0'), /positive number of revisions/);
  t.throws(() => parseAutoCompaction('revision', undefined), /positive number of revisions/);
  t.throws(() => parseAutoCompaction('hourly', '1h'), /periodic, revision or off/);
  t.throws(() => new AutoCompactor({ mode: 'periodic' }), RangeError);
});

t.test('ValueSlab: bulk-load copies are independent of their source and of each other; large values get their own memory', async (t) => {
  const slab = new ValueSlab();
  const src = Buffer.from('abc');
  const a = slab.copy(src);
  const b = slab.copy(Buffer.from('xyz'));
  src.write('ZZZ');
  t.equal(a.toString(), 'abc', 'a copy, not a view of the source');
  t.equal(b.toString(), 'xyz', 'packed values do not overlap');
  t.equal(a.buffer, b.buffer, 'small values share a slab');
  t.equal(a.buffer.byteLength, VALUE_SLAB_BYTES);
  const big = slab.copy(Buffer.alloc(VALUE_SLAB_BYTES / 8 + 1, 7));
  t.equal(big.buffer.byteLength, VALUE_SLAB_BYTES / 8 + 1, 'a large value has its own memory');
  let last = a;
  for (let i = 0; i < 100; i++) last = slab.copy(Buffer.alloc(1000, i));
  t.not(last.buffer, a.buffer, 'a full slab is followed by a new one');
  t.same([...last.subarray(0, 3)], [99, 99, 99]);
});
