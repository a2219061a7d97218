// Snapshot save/restore: round trip under any chunking, consistency while applies continue,
// and refusal (store untouched) of corrupt, truncated or hostile images.
import t from 'tap';
const tap = t;
import fc from 'fast-check';
import { Encoder } from 'cbor-x';
import { createHash } from 'node:crypto';
import { KvError } from '../../core/kv/errors.js';
import { SNAPSHOT_FORMAT, SNAPSHOT_VERSION } from '../../core/kv/snapshot.js';
import { KvStore } from '../../core/kv/store.js';
import { Prng } from '../../core/sim/prng.js';
import { b, keysOf, Node } from './helpers.js';

function busyNode(seed: number, ops = 400): Node {
  const n = Node.create();
  const rng = new Prng(seed);
  const leases = [n.grant(100, 11).ID, n.grant(200, 12).ID];
  for (let i = 0; i < ops; i++) {
    const k = `key${rng.int(40)}`;
    const x = rng.int(10);
    if (x < 6) n.put(k, `v${i}`.repeat(1 + rng.int(5)), rng.int(4) === 0 ? { lease: leases[rng.int(2)] } : {});
    else if (x < 8) n.del(k);
    else if (x < 9) n.del(`key${rng.int(10)}`, `key${5 + rng.int(10)}`);
    else if (i % 50 === 9) n.apply({ compaction: { revision: n.store.revision - 20 } });
  }
  return n;
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

function* rechunk(buf: Buffer, sizes: number[]): Generator<Uint8Array> {
  let o = 0;
  for (let i = 0; o < buf.length; i++) {
    const n = Math.max(1, sizes[i % sizes.length]!);
    yield buf.subarray(o, o + n);
    o += n;
  }
}

function sameHistory(t: Pick<typeof tap, "equal" | "same">, a: KvStore, c: KvStore): void {
  t.equal(c.digest(), a.digest(), 'digest');
  t.equal(c.revision, a.revision);
  t.equal(c.compactRevision, a.compactRevision);
  t.equal(c.appliedIndex, a.appliedIndex);
  t.same(c.leases(), a.leases());
  for (let rev = Math.max(1, a.compactRevision); rev <= a.revision; rev += 7) {
    const req = { key: b('\0'), rangeEnd: b('\0'), revision: rev };
    t.same(c.range(req), a.range(req));
  }
  for (const l of a.leases()) t.same(c.leaseTimeToLive(l.id, true), a.leaseTimeToLive(l.id, true));
}

t.test('round trip', async (t) => {
  const n = busyNode(1);
  t.ok(n.store.compactRevision > 0);
  const bytes = await collect(n.store.snapshot(1024));
  const c = new KvStore();
  await c.restore(rechunk(bytes, [1, 3, 1000, 7, 65536]));
  sameHistory(t, n.store, c);
  t.same(keysOf(c.range({ key: b('key'), rangeEnd: b('kez') })), keysOf(n.range('key', 'kez')));
  // A restored store keeps working like the original.
  const n2 = new Node(c);
  n2.index = n.index;
  n.put('after', '1');
  n2.put('after', '1');
  t.equal(c.digest(), n.store.digest());
  t.equal(c.revision, n.store.revision);
});

t.test('the writer\'s context travels with the image, checksummed', async (t) => {
  const n = busyNode(3, 50);
  const context = Buffer.from(JSON.stringify({ members: [{ id: 7, peerAddr: '10.0.0.7:2380' }] }));
  const bytes = await collect(n.store.snapshot(256, context));
  const c = new KvStore();
  const got = await c.restore(rechunk(bytes, [5, 300]));
  t.same(Buffer.from(got!), context, 'restore hands the context back');
  sameHistory(t, n.store, c);
  t.equal(await new KvStore().restore([await collect(n.store.snapshot())]), undefined, 'an image without one has none');
  const at = bytes.indexOf(Buffer.from('10.0.0.7'));
  t.ok(at > 0, 'the context is in the header');
  const flipped = Buffer.from(bytes);
  flipped[at] ^= 1;
  await t.rejects(new KvStore().restore([flipped]), { code: 'SNAPSHOT_CORRUPT' }, 'a changed context fails the checksum');
});

t.test('an empty store', async (t) => {
  const a = new KvStore();
  const c = new KvStore();
  await c.restore([await collect(a.snapshot())]);
  t.equal(c.revision, 1);
  t.equal(c.digest(), a.digest());
});

t.test('consistent while applies continue', async (t) => {
  const n = busyNode(2);
  const before = n.store.digest();
  const rev = n.store.revision;
  const it = n.store.snapshot(512);
  const parts: Buffer[] = [];
  for (let c = await it.next(), i = 0; !c.done; c = await it.next(), i++) {
    parts.push(Buffer.from(c.value));
    if (i < 20) {
      n.put(`new${i}`, 'x');
      n.del(`key${i}`);
    }
    if (i === 5) n.apply({ compaction: { revision: n.store.revision - 3 } });
  }
  t.not(n.store.digest(), before, 'the live store moved on');
  const c = new KvStore();
  await c.restore([Buffer.concat(parts)]);
  t.equal(c.revision, rev);
  t.equal(c.digest(), before, 'the image is the state at its start');
});

t.test('long histories are split across frames', async (t) => {
  const n = Node.create();
  for (let i = 0; i < 200; i++) n.put('k', String(i).repeat(500));
  const bytes = await collect(n.store.snapshot(4096));
  const c = new KvStore();
  await c.restore([bytes]);
  t.equal(c.digest(), n.store.digest());
  t.equal(c.mvcc.history('k')!.records.length, 200);
});

/** The lengths of the frames of an image (each a 4-byte length and its body). */
function frameLengths(bytes: Buffer): number[] {
  const out: number[] = [];
  for (let o = 0; o + 4 <= bytes.length; ) {
    const len = bytes.readUInt32BE(o);
    out.push(len);
    o += 4 + len;
  }
  return out;
}

t.test('one key whose history is larger than a frame may be is cut across frames, and restored', async (t) => {
  // 40 values of 1 MiB under one key (22 of etcd's 1.5 MiB fit within an hour's auto-compaction):
  // the whole history in one frame was past the reader's 32 MiB bound, so no image of it restored.
  const n = Node.create();
  for (let i = 0; i < 40; i++) n.put('cfg', String(i % 10).repeat(1 << 20));
  const bytes = await collect(n.store.snapshot());
  const largest = Math.max(...frameLengths(bytes));
  t.ok(largest < 4 << 20, `the largest frame is ${largest} bytes`);
  const c = new KvStore();
  await c.restore([bytes]);
  t.equal(c.digest(), n.store.digest(), 'restored whole');
  t.equal(c.mvcc.history('cfg')!.records.length, 40);
});

t.test('a txn that puts and then deletes one key (two records at one revision) round-trips', async (t) => {
  const n = Node.create();
  n.put('k', 'v0');
  n.txn({
    compare: [],
    success: [
      { requestTxn: { compare: [], success: [{ requestPut: { key: b('k'), value: b('v1') } }], failure: [] } },
      { requestTxn: { compare: [], success: [{ requestDeleteRange: { key: b('k') } }], failure: [] } },
    ],
    failure: [],
  });
  t.same(n.store.mvcc.history('k')!.records.map((r) => [r.main, r.sub, r.tombstone]), [[2, 0, false], [3, 0, false], [3, 1, true]], 'put and delete at revision 3');
  const c = new KvStore();
  await c.restore([await collect(n.store.snapshot())]);
  sameHistory(t, n.store, c);
});

t.test('corruption is refused and the store is untouched', async (t) => {
  const n = busyNode(3, 150);
  const bytes = await collect(n.store.snapshot());
  const target = busyNode(4, 50).store;
  const before = target.digest();
  const refuse = async (input: Buffer, why: string): Promise<void> => {
    await t.rejects(target.restore([input]), { code: 'SNAPSHOT_CORRUPT' }, why);
  };
  await refuse(bytes.subarray(0, bytes.length - 1), 'truncated');
  await refuse(bytes.subarray(0, 100), 'truncated early');
  await refuse(Buffer.concat([bytes, Buffer.from([0])]), 'trailing byte');
  await refuse(Buffer.alloc(0), 'empty');
  const flipped = Buffer.from(bytes);
  flipped[Math.floor(bytes.length / 2)]! ^= 0x01;
  await refuse(flipped, 'one bit flipped');
  const huge = Buffer.from([0xff, 0xff, 0xff, 0xff]);
  await refuse(huge, 'frame length beyond the limit');
  t.equal(target.digest(), before);

  fc.assert(
    fc.asyncProperty(fc.nat(), fc.integer({ min: 0, max: 255 }), async (pos, byte) => {
      const m = Buffer.from(bytes);
      const p = pos % m.length;
      if (m[p] === byte) return;
      m[p] = byte;
      const s = new KvStore();
      try {
        await s.restore([m]);
      } catch (e) {
        if (!(e instanceof KvError) || e.code !== 'SNAPSHOT_CORRUPT') throw e;
        return;
      }
      throw new Error(`mutation at ${p} accepted`);
    }),
    { numRuns: 300, seed: 5 },
  );
});

t.test('a correctly checksummed but invalid image is refused', async (t) => {
  const enc = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
  const image = (frames: unknown[]): Buffer => {
    const parts: Buffer[] = [];
    const hash = createHash('sha256');
    let records = 0;
    for (const f of frames) {
      const body = enc.encode(f);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(body.length);
      hash.update(len).update(body);
      parts.push(len, body);
      if ((f as { t: string }).t === 'k') for (const e of (f as { k: [unknown, unknown[]][] }).k) records += e[1].length;
    }
    const end = enc.encode({ t: 'e', records, sha256: hash.digest() });
    const len = Buffer.alloc(4);
    len.writeUInt32BE(end.length);
    return Buffer.concat([...parts, len, end]);
  };
  const header = { t: 'h', format: SNAPSHOT_FORMAT, version: SNAPSHOT_VERSION, revision: 5, compactRevision: -1, appliedIndex: 9, appliedTerm: 1 };
  const ok = image([header, { t: 'k', k: [[b('a'), [[2, 0, 2, 1, 0, b('x')], [3, 0, 2, 2, 0, b('y')]]]] }]);
  const s = new KvStore();
  await s.restore([ok]);
  t.equal(s.range({ key: b('a') }).kvs[0]!.version, 2, 'the hand-built image is valid');
  const bad: Array<[string, unknown[]]> = [
    ['version gap', [header, { t: 'k', k: [[b('a'), [[2, 0, 2, 1, 0, b('x')], [3, 0, 2, 3, 0, b('y')]]]] }]],
    ['record above the revision', [header, { t: 'k', k: [[b('a'), [[6, 0, 6, 1, 0, b('x')]]]] }]],
    ['tombstone first', [header, { t: 'k', k: [[b('a'), [[2, 0, 0, 0, 0, null]]]] }]],
    ['unknown lease', [header, { t: 'k', k: [[b('a'), [[2, 0, 2, 1, 77, b('x')]]]] }]],
    ['duplicate revision', [header, { t: 'k', k: [[b('a'), [[2, 0, 2, 1, 0, b('x')]]], [b('b'), [[2, 0, 2, 1, 0, b('x')]]]] }]],
    ['bad key', [header, { t: 'k', k: [['a', [[2, 0, 2, 1, 0, b('x')]]]] }]],
    ['future format', [{ ...header, version: 99 }]],
    ['not a snapshot', [{ t: 'h', format: 'etcd' }]],
    ['duplicate lease', [header, { t: 'l', l: [[1, 10], [1, 10]] }]],
    ['unknown frame', [header, { t: 'zz' }]],
    ['context not bytes', [{ ...header, context: 'members' }]],
  ];
  for (const [why, frames] of bad) await t.rejects(new KvStore().restore([image(frames)]), { code: 'SNAPSHOT_CORRUPT' }, why);
});

t.test('the image is taken when the stream is created', async (t) => {
  const n = busyNode(6, 50);
  const snap = n.store.snapshot();
  const { appliedIndex, revision } = snap;
  t.equal(appliedIndex, n.index);
  n.put('later', '1');
  const c = new KvStore();
  await c.restore(snap);
  t.equal(c.appliedIndex, appliedIndex);
  t.equal(c.revision, revision);
  t.same(c.range({ key: b('later') }).kvs, []);
  // An abandoned stream releases its hold on compaction.
  const n2 = Node.create();
  n2.put('k', '1');
  n2.put('k', '2');
  const unused = n2.store.snapshot();
  n2.apply({ compaction: { revision: 3 } });
  t.equal(n2.store.mvcc.history('k')!.records.length, 2, 'held back');
  await unused.return();
  t.equal(n2.store.mvcc.history('k')!.records.length, 1, 'released');
});

t.test('two records of a key at one revision are taken only as a put and then its delete', async (t) => {
  const { StateBuilder } = await import('../../core/kv/state-builder.js');
  const put = (sb: InstanceType<typeof StateBuilder>, main: number, sub: number, create: number, version: number, v: string): void => sb.addRecord(b('k'), main, sub, create, version, 0, b(v));
  const ok = new StateBuilder();
  put(ok, 2, 0, 2, 1, 'v0');
  put(ok, 3, 0, 2, 2, 'v1');
  t.doesNotThrow(() => ok.addRecord(b('k'), 3, 1, 0, 0, 0, null), 'put then delete at revision 3');
  const twoPuts = new StateBuilder();
  put(twoPuts, 2, 0, 2, 1, 'v0');
  t.throws(() => put(twoPuts, 2, 1, 2, 2, 'v1'), { code: 'SNAPSHOT_CORRUPT' }, 'two puts at one revision: refused');
  const deleteThenPut = new StateBuilder();
  put(deleteThenPut, 2, 0, 2, 1, 'v0');
  deleteThenPut.addRecord(b('k'), 3, 0, 0, 0, 0, null);
  t.throws(() => put(deleteThenPut, 3, 1, 3, 1, 'v1'), { code: 'SNAPSHOT_CORRUPT' }, 'a delete then a put at one revision: refused');
});
