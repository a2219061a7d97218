// Compaction: what stays readable, etcd's errors, physical removal (and its deferral while a
// snapshot is read out), and memory reclaimed for deleted keys.
import t from 'tap';
import { b, keysOf, kvView, Node } from './helpers.js';

t.test('compaction semantics', async (t) => {
  const n = Node.create();
  n.put('a', '1'); // 2
  n.put('a', '2'); // 3
  n.put('b', '1'); // 4
  n.del('b'); // 5
  n.put('c', '1'); // 6
  t.equal(n.store.compactRevision, -1);
  const r = n.apply({ compaction: { revision: 4 } });
  t.same(r, { compaction: { header: { revision: 6 } } });
  t.equal(n.store.compactRevision, 4);
  t.equal(n.err({ range: { key: b('a'), revision: 3 } }).code, 'COMPACTED');
  t.same(n.range('\0', '\0', { revision: 4 }).kvs.map(kvView), [
    { key: 'a', value: '2', c: 2, m: 3, v: 2, lease: 0 },
    { key: 'b', value: '1', c: 4, m: 4, v: 1, lease: 0 },
  ]);
  t.same(keysOf(n.range('\0', '\0', { revision: 5 })), ['a']);
  t.same(keysOf(n.range('\0', '\0')), ['a', 'c']);
  // Errors.
  let e = n.err({ compaction: { revision: 4 } });
  t.equal(e.code, 'COMPACTED', 'the same revision again');
  t.equal(n.err({ compaction: { revision: 2 } }).code, 'COMPACTED');
  e = n.err({ compaction: { revision: 7 } });
  t.equal(e.code, 'FUTURE_REV');
  // Compacting at the current revision is allowed; history then holds only live keys.
  n.apply({ compaction: { revision: 6 } });
  t.same(keysOf(n.range('\0', '\0', { revision: 6 })), ['a', 'c']);
  t.equal(n.store.keyCount, 2, 'the deleted key b is gone from the index');
  t.equal(n.store.mvcc.compactableCount, 0, 'nothing left to compact');
});

t.test('compaction at revision 0 on a fresh store, as etcd', async (t) => {
  const n = Node.create();
  t.ok('compaction' in n.apply({ compaction: { revision: 0 } }));
  t.equal(n.err({ compaction: { revision: 0 } }).code, 'COMPACTED');
  t.equal(n.err({ compaction: { revision: 2 } }).code, 'FUTURE_REV');
});

t.test('versions continue across compaction', async (t) => {
  const n = Node.create();
  for (let i = 0; i < 10; i++) n.put('k', String(i));
  n.apply({ compaction: { revision: n.store.revision } });
  n.put('k', 'after');
  t.same(kvView(n.range('k').kvs[0]!), { key: 'k', value: 'after', c: 2, m: 12, v: 11, lease: 0 });
  t.equal(n.store.mvcc.history('k')!.records.length, 2);
});

t.test('physical compaction waits for a snapshot being read', async (t) => {
  const n = Node.create();
  for (let i = 0; i < 50; i++) n.put(`k${i}`, 'v');
  for (let i = 0; i < 50; i++) n.del(`k${i}`);
  const snap = n.store.snapshot(256);
  const first = await snap.next(); // the image is pinned at revision 101
  t.notOk(first.done);
  n.apply({ compaction: { revision: n.store.revision } });
  t.equal(n.store.compactRevision, 101);
  t.equal(n.store.keyCount, 50, 'records are kept while pinned');
  t.same(n.range('\0', '\0').kvs, [], 'but reads see the compaction at once');
  t.equal(n.err({ range: { key: b('k1'), revision: 50 } }).code, 'COMPACTED');
  for (let c = await snap.next(); !c.done; c = await snap.next());
  t.equal(n.store.keyCount, 0, 'removed once the snapshot finished');
});

t.test('digest ignores physical compaction lag', async (t) => {
  const a = Node.create();
  const c = Node.create();
  for (const n of [a, c]) {
    for (let i = 0; i < 20; i++) n.put(`k${i % 5}`, String(i));
    n.del('k1');
  }
  const snap = c.store.snapshot();
  await snap.next();
  a.apply({ compaction: { revision: 15 } });
  c.apply({ compaction: { revision: 15 } });
  t.not(a.store.mvcc.history('k0')!.records.length, c.store.mvcc.history('k0')!.records.length);
  t.equal(a.store.digest(), c.store.digest());
  await snap.return();
  t.equal(a.store.mvcc.history('k0')!.records.length, c.store.mvcc.history('k0')!.records.length);
});

t.test('hashKV: equal on members with the same history, whatever their physical compaction lag; a past revision hashes that state', async (t) => {
  const a = Node.create();
  const c = Node.create();
  for (const n of [a, c]) {
    for (let i = 0; i < 20; i++) n.put(`k${i % 5}`, String(i));
    n.del('k1');
  }
  const at10 = await a.store.hashKV(10);
  const snap = c.store.snapshot();
  await snap.next();
  a.apply({ compaction: { revision: 8 } });
  c.apply({ compaction: { revision: 8 } });
  t.not(a.store.mvcc.history('k0')!.records.length, c.store.mvcc.history('k0')!.records.length, 'c keeps records a dropped');
  t.same(await a.store.hashKV(0), await c.store.hashKV(0), 'same hash for the current revision');
  t.same(await a.store.hashKV(12), await c.store.hashKV(12), 'and for a past one');
  t.equal((await a.store.hashKV(0)).compactRevision, 8);
  t.equal((await a.store.hashKV(0)).revision, a.store.revision);
  t.not((await a.store.hashKV(10)).hash, at10.hash, 'the compaction is part of the hash (as in etcd, where it drops records)');
  t.not((await a.store.hashKV(12)).hash, (await a.store.hashKV(0)).hash, 'a past revision hashes less history');
  t.equal((await a.store.hashKV(a.store.revision)).hash, (await a.store.hashKV(0)).hash, 'revision 0 is the current one');

  const other = Node.create();
  for (let i = 0; i < 20; i++) other.put(`k${i % 5}`, i === 7 ? 'changed' : String(i));
  other.del('k1');
  other.apply({ compaction: { revision: 8 } });
  t.not((await other.store.hashKV(0)).hash, (await a.store.hashKV(0)).hash, 'one value differing changes the hash');
  t.not((await other.store.hashKV(14)).hash, (await a.store.hashKV(14)).hash, 'also in a past revision after the change');
  await t.rejects(a.store.hashKV(8), { code: 'COMPACTED' }, 'at the compacted revision: etcd\'s compacted error');
  await t.rejects(a.store.hashKV(a.store.revision + 1), { code: 'FUTURE_REV' });
  await snap.return();
});

t.test('hashKV reads a slice of keys per turn: writes, a compaction and a restore meanwhile', async (t) => {
  const keys = 12_000; // three slices
  const fill = (n: Node): void => {
    for (let i = 0; i < keys; i++) n.put(`k${String(i).padStart(5, '0')}`, String(i));
  };
  const a = Node.create();
  const quiet = Node.create();
  fill(a);
  fill(quiet);
  const want = await quiet.store.hashKV(0);
  let pauses = 0;
  // Between slices: a write to a key already read, one to a key still to come, a new key, and a
  // compaction of every key's history (its physical part waits for the walk).
  const busy = await a.store.hashKV(0, async () => {
    if (pauses++ === 0) {
      a.put('k00001', 'later');
      a.put('k11000', 'later');
      a.put('k99999', 'new');
      a.apply({ compaction: { revision: a.store.revision } });
    }
    await new Promise((r) => setImmediate(r));
  });
  t.equal(pauses, 2, 'read in three slices');
  t.same(busy, want, 'the key space as of the call, however the store moved on meanwhile');
  t.not((await a.store.hashKV(0)).hash, want.hash, 'a new call sees the writes');

  // A restore between slices starts the walk again, on the new state.
  const b2 = Node.create();
  fill(b2);
  const source = Node.create();
  fill(source);
  source.put('k00000', 'in the image'); // in the first slice, already read when the restore comes
  const image = await collectSnapshot(source.store.snapshot());
  let restored = false;
  const again = await b2.store.hashKV(0, async () => {
    if (!restored) {
      restored = true;
      await b2.store.restore([image]);
    }
  });
  t.same(again, await source.store.hashKV(0), 'the restored state, hashed from its start');
});

t.test('hashKV calls take turns: one walk holds physical compaction back at a time', async (t) => {
  const n = Node.create();
  for (let i = 0; i < 12_000; i++) n.put(`k${String(i).padStart(5, '0')}`, String(i));
  const order: string[] = [];
  const pause = (who: string) => async (): Promise<void> => {
    order.push(who);
    await new Promise((r) => setImmediate(r));
  };
  const [x, y] = await Promise.all([n.store.hashKV(0, pause('first')), n.store.hashKV(0, pause('second'))]);
  t.same(order, ['first', 'first', 'second', 'second'], 'the second walk starts once the first is done');
  t.same(x, y);
});

async function collectSnapshot(s: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of s) parts.push(c);
  return Buffer.concat(parts);
}
