// Persistence of the applied MVCC state in LevelDB: apply, persist, close, reopen, same state;
// compaction and snapshot restores persisted; interrupted rewrites and lost unsynced batches.
import t from 'tap';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { MvccBackend } from '../../core/storage/mvcc-backend.js';
import { seal } from '../../core/storage/value-checksum.js';
import { KvStore } from '../../core/kv/store.js';
import { Prng } from '../../core/sim/prng.js';
import type { KvRequest } from '../../core/kv/types.js';
import { checkRequest } from '../../core/kv/check.js';
import { MIN_LEASE_ID } from '../../core/kv/limits.js';
import { b, Node } from './helpers.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'picloud-kv-'));
  dirs.push(d);
  return d;
}
t.teardown(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A deterministic workload of `count` requests. */
function dirBytes(dir: string): number {
  // LevelDB's background compaction may delete a file between the listing and its stat.
  return readdirSync(dir).reduce((sum, f) => sum + (statSync(join(dir, f), { throwIfNoEntry: false })?.size ?? 0), 0);
}

function workload(seed: number, count: number): KvRequest[] {
  const rng = new Prng(seed);
  const out: KvRequest[] = [{ leaseGrant: { TTL: 60, ID: 5 } }, { leaseGrant: { TTL: 60, ID: 6 } }];
  let rev = 1;
  for (let i = 0; i < count; i++) {
    const k = b(`key${rng.int(60)}`);
    const x = rng.int(20);
    if (x < 11) {
      out.push({ put: { key: k, value: b(`v${i}`), lease: rng.int(5) === 0 ? 5 : 0 } });
      rev++;
    } else if (x < 14) out.push({ deleteRange: { key: k } });
    else if (x < 16) {
      out.push({
        txn: {
          compare: [{ key: k, target: 0, result: 1, version: 0 }],
          success: [{ requestPut: { key: k, value: b('t') } }, { requestDeleteRange: { key: b('key1'), rangeEnd: b('key2') } }],
          failure: [{ requestPut: { key: k, value: b('f') } }],
        },
      });
      rev++;
    } else if (x < 17) out.push({ compaction: { revision: Math.max(1, rev - 10 - rng.int(5)) } });
    else if (x < 18 && i > count / 2) out.push({ leaseRevoke: { ID: 5 } });
    else out.push({ range: { key: k } });
  }
  return out;
}

function applyAll(store: KvStore, reqs: KvRequest[], from = 1): void {
  reqs.forEach((r, i) => store.apply(r, { index: from + i, term: 3 }));
}

t.test('persist, close, reopen: the same state', async (t) => {
  const dir = tmp();
  const reqs = workload(1, 600);
  const reference = new KvStore();
  applyAll(reference, reqs);

  let be = await MvccBackend.open(dir);
  t.equal(be.store.revision, 1);
  t.equal(be.store.appliedIndex, 0);
  t.equal(be.confState, undefined);
  // Groups of entries, one batch each.
  for (let i = 0; i < reqs.length; i += 37) {
    applyAll(be.store, reqs.slice(i, i + 37), i + 1);
    await be.persist({ confState: Buffer.from(`conf@${i}`) });
  }
  t.equal(be.store.digest(), reference.digest());
  await be.close();

  be = await MvccBackend.open(dir);
  const s = be.store;
  t.equal(s.digest(), reference.digest(), 'digest after reopen');
  t.equal(s.revision, reference.revision);
  t.equal(s.compactRevision, reference.compactRevision);
  t.equal(s.appliedIndex, reqs.length);
  t.equal(s.appliedTerm, 3);
  t.equal(Buffer.from(be.confState!).toString(), `conf@${Math.floor((reqs.length - 1) / 37) * 37}`);
  t.same(s.leases(), reference.leases());
  for (let rev = Math.max(1, reference.compactRevision); rev <= reference.revision; rev += 5) {
    const req = { key: b('\0'), rangeEnd: b('\0'), revision: rev };
    t.same(s.range(req), reference.range(req));
  }
  t.equal(be.loadStats.keys, s.keyCount);
  t.same(s.apply(reqs[0]!, { index: 1, term: 3 }), { alreadyApplied: true }, 'replayed entries are skipped');
  // Keeps going after a reopen.
  s.apply({ put: { key: b('after'), value: b('x') } }, { index: reqs.length + 1, term: 4 });
  reference.apply({ put: { key: b('after'), value: b('x') } }, { index: reqs.length + 1, term: 4 });
  await be.persist();
  await be.close();
  be = await MvccBackend.open(dir);
  t.equal(be.store.digest(), reference.digest());
  await be.close();
});

t.test('negative lease IDs (etcd grants them) persist, reload and travel in snapshots', async (t) => {
  const dir = tmp();
  const lowest = MIN_LEASE_ID;
  const reqs: KvRequest[] = [
    { leaseGrant: { TTL: 60, ID: -5 } },
    { leaseGrant: { TTL: 70, ID: lowest } },
    { leaseGrant: { TTL: 80, ID: 2 ** 32 + 7 } },
    { put: { key: b('neg'), value: b('v'), lease: -5 } },
    { put: { key: b('low'), value: b('v'), lease: lowest } },
  ];
  for (const r of reqs) t.equal(checkRequest(r), undefined, `${JSON.stringify(r)}: passes the request checks`);
  t.equal(checkRequest({ leaseGrant: { TTL: 60, ID: lowest - 1 } })?.code, 'MALFORMED_REQUEST', 'one below the lowest: refused');
  const reference = new KvStore();
  applyAll(reference, reqs);
  let be = await MvccBackend.open(dir);
  applyAll(be.store, reqs);
  await be.persist();
  await be.close();
  be = await MvccBackend.open(dir);
  t.same(be.store.leases(), reference.leases(), 'the leases after reopen');
  t.same(be.store.leases().map((l) => l.id), [lowest, -5, 2 ** 32 + 7]);
  t.equal(be.store.digest(), reference.digest(), 'keys and their leases after reopen');
  // A snapshot of it restores into another store.
  const chunks: Uint8Array[] = [];
  for await (const c of be.store.snapshot()) chunks.push(c);
  const copy = new KvStore();
  await copy.restore(chunks);
  t.equal(copy.digest(), reference.digest(), 'restored from a snapshot');
  t.same(copy.leases(), reference.leases());
  await be.close();
});

t.test('compaction removes records on disk', async (t) => {
  const dir = tmp();
  const be = await MvccBackend.open(dir);
  const n = new Node(be.store);
  for (let i = 0; i < 100; i++) n.put('k', String(i));
  for (let i = 0; i < 20; i++) n.put(`d${i}`, 'x');
  n.del('d', 'e');
  await be.persist();
  n.apply({ compaction: { revision: n.store.revision } });
  await be.persist({ sync: true });
  t.equal(be.durableAppliedIndex, n.index);
  await be.close();
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  let records = 0;
  for await (const k of db.keys()) if (k[0] === 0x64 && k[5] === 0x72) records++;
  await db.close();
  t.equal(records, 1, 'only the live record of k remains');
  const be2 = await MvccBackend.open(dir);
  t.equal(be2.store.keyCount, 1);
  t.equal(be2.store.revision, 122);
  await be2.close();
});

t.test('defragment returns the disk space of compacted history (etcdctl defrag)', async (t) => {
  const dir = tmp();
  const be = await MvccBackend.open(dir);
  const n = new Node(be.store);
  const big = 'v'.repeat(4096);
  for (let i = 0; i < 2000; i++) n.put(`k${i % 10}`, big + i);
  await be.persist({ sync: true });
  n.apply({ compaction: { revision: n.store.revision } });
  await be.persist({ sync: true });
  const before = dirBytes(dir);
  await be.defragment();
  const after = dirBytes(dir);
  t.ok(after < before / 4, `on disk ${before} bytes before, ${after} after (10 live records of 4 KiB)`);
  t.equal(n.store.keyCount, 10, 'the live keys stay');
  await be.close();
  const again = await MvccBackend.open(dir);
  t.equal(again.store.keyCount, 10, 'and reopen');
  await again.close();
});

t.test('a restored snapshot is rewritten under a new generation', async (t) => {
  const dir = tmp();
  const src = new KvStore();
  applyAll(src, workload(2, 300));
  const be = await MvccBackend.open(dir);
  applyAll(be.store, workload(3, 100));
  await be.persist();
  const chunks: Uint8Array[] = [];
  for await (const c of src.snapshot()) chunks.push(c);
  await be.store.restore(chunks);
  const p = be.persist({ confState: Buffer.from('restored') });
  // Applies continue while the rewrite runs; they land after it.
  be.store.apply({ put: { key: b('during'), value: b('1') } }, { index: src.appliedIndex + 1, term: 9 });
  src.apply({ put: { key: b('during'), value: b('1') } }, { index: src.appliedIndex + 1, term: 9 });
  await p;
  t.equal(be.durableAppliedIndex, src.appliedIndex - 1, 'the rewrite is synced at the image index');
  await be.persist();
  await be.close();
  const be2 = await MvccBackend.open(dir);
  t.equal(be2.store.digest(), src.digest());
  t.equal(Buffer.from(be2.confState!).toString(), 'restored');
  await be2.close();
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  const gens = new Set<number>();
  for await (const k of db.keys()) if (k[0] === 0x64) gens.add(k.readUInt32BE(1));
  await db.close();
  t.same([...gens], [1], 'the old generation was cleared');
});

t.test('leftovers of an interrupted rewrite are ignored and cleared', async (t) => {
  const dir = tmp();
  const be = await MvccBackend.open(dir);
  applyAll(be.store, workload(4, 100));
  await be.persist();
  const digest = be.store.digest();
  await be.close();
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  const junk = Buffer.from([0x64, 0, 0, 0, 1, 0x72, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
  // As a rewrite writes its records: sealed (a leftover's checksum is checked before it is cleared).
  await db.put(junk, seal(junk, Buffer.from('partial')));
  await db.close();
  const be2 = await MvccBackend.open(dir);
  t.equal(be2.store.digest(), digest);
  await be2.close();
  const db2 = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  t.equal(await db2.get(junk), undefined);
  await db2.close();
});

t.test('a lost unpersisted tail is re-applied from the log', async (t) => {
  const dir = tmp();
  const reqs = workload(5, 200);
  const reference = new KvStore();
  applyAll(reference, reqs);
  const be = await MvccBackend.open(dir);
  applyAll(be.store, reqs.slice(0, 120));
  await be.persist();
  applyAll(be.store, reqs.slice(120), 121); // applied, never persisted: a crash loses it
  t.equal(be.durableAppliedIndex, 0, 'nothing synced yet');
  await be.close();
  const be2 = await MvccBackend.open(dir);
  t.equal(be2.store.appliedIndex, 120);
  applyAll(be2.store, reqs, 1); // Raft replays from its log; entries <= 120 are skipped
  t.equal(be2.store.digest(), reference.digest());
  await be2.close();
});

t.test('a failed write poisons the backend', async (t) => {
  const dir = tmp();
  const be = await MvccBackend.open(dir);
  be.store.apply({ put: { key: b('k'), value: b('v') } }, { index: 1, term: 1 });
  await (be as unknown as { db: ClassicLevel<Buffer, Buffer> }).db.close(); // the disk goes away
  await t.rejects(be.persist());
  be.store.apply({ put: { key: b('k'), value: b('w') } }, { index: 2, term: 1 });
  await t.rejects(be.persist(), 'later batches are refused too');
  await be.close().catch(() => undefined);
});

t.test('a restore during a rewrite supersedes it', async (t) => {
  const dir = tmp();
  const big = new KvStore();
  for (let i = 0; i < 6000; i++) big.apply({ put: { key: b(`big${i}`), value: Buffer.alloc(1000, 1) } }, { index: i + 1, term: 1 });
  const small = new KvStore();
  applyAll(small, workload(6, 50));
  const snapOf = async (s: KvStore): Promise<Uint8Array[]> => {
    const out: Uint8Array[] = [];
    for await (const c of s.snapshot()) out.push(c);
    return out;
  };
  const [bigSnap, smallSnap] = [await snapOf(big), await snapOf(small)];
  const be = await MvccBackend.open(dir);
  await be.store.restore(bigSnap);
  const first = be.persist();
  await be.store.restore(smallSnap); // while the big image is being written
  await first;
  await be.persist();
  t.equal(be.store.digest(), small.digest());
  await be.close();
  const be2 = await MvccBackend.open(dir);
  t.equal(be2.store.digest(), small.digest(), 'the last restore wins on disk');
  t.equal(be2.store.keyCount, small.keyCount);
  await be2.close();
});
