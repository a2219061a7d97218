import t from 'tap';
import { SimDisk, STEADY_DISK, WRITE_RECORD_OVERHEAD_BYTES } from '../../core/sim/disk.js';
import { Prng } from '../../core/sim/prng.js';
import { EntryType, type Entry } from '../../core/raft/types.js';

const ent = (index: number, term: number, byte = 0): Entry => ({ index, term, type: EntryType.Normal, data: new Uint8Array([byte]) });
const snap = (index: number, term: number) => ({ metadata: { index, term, conf: { voters: [1], learners: [] } }, data: new Uint8Array([index]) });

t.test('a crash keeps what was fsynced and loses the rest', async (t) => {
  const d = new SimDisk();
  d.write({ kind: 'append', entries: [ent(1, 1), ent(2, 1)] });
  d.write({ kind: 'hardState', hardState: { term: 1, vote: 1, commit: 1 } });
  const barrier = d.beginFsync();
  d.write({ kind: 'append', entries: [ent(3, 1)] }); // after the fsync began: not covered
  d.completeFsync(barrier);
  t.equal(d.pendingWrites, 1);
  d.write({ kind: 'hardState', hardState: { term: 2, vote: 2, commit: 3 } });
  t.equal(d.crash(), 2);
  const img = d.image();
  t.same(img.entries.map((e) => e.index), [1, 2]);
  t.same(img.hardState, { term: 1, vote: 1, commit: 1 });
  t.equal(d.stats.writesLostOnCrash, 2);
});

t.test('an fsync that completes after a crash makes nothing newer durable', async (t) => {
  const d = new SimDisk();
  d.write({ kind: 'append', entries: [ent(1, 1)] });
  const barrier = d.beginFsync();
  d.crash(); // the fsync was in flight
  d.write({ kind: 'append', entries: [ent(1, 2)] });
  d.completeFsync(barrier);
  t.same(d.image().entries, [], 'the old fsync covers neither the lost write nor the new one');
  d.completeFsync(d.beginFsync());
  t.equal(d.image().entries[0]!.term, 2);
});

t.test('appends truncate conflicting suffixes; gaps are refused', async (t) => {
  const d = new SimDisk();
  d.write({ kind: 'append', entries: [ent(1, 1), ent(2, 1), ent(3, 1)] });
  d.write({ kind: 'append', entries: [ent(2, 2)] });
  d.completeFsync(d.beginFsync());
  t.same(d.image().entries.map((e) => `${e.index}/${e.term}`), ['1/1', '2/2']);
  d.write({ kind: 'append', entries: [ent(5, 2)] });
  t.throws(() => d.completeFsync(d.beginFsync()), { code: 'SIM_DISK_INVARIANT' });
});

t.test('snapshots: installed ones replace the log, saved ones are compacted into', async (t) => {
  const d = new SimDisk();
  d.write({ kind: 'append', entries: [ent(1, 1), ent(2, 1), ent(3, 1), ent(4, 1)] });
  d.write({ kind: 'saveSnapshot', snapshot: snap(2, 1) });
  d.write({ kind: 'compact', index: 2 });
  d.completeFsync(d.beginFsync());
  let img = d.image();
  t.equal(img.snapshot!.metadata.index, 2);
  t.equal(img.offset, 2);
  t.same(img.entries.map((e) => e.index), [3, 4]);
  d.write({ kind: 'compact', index: 4 }); // beyond the snapshot: only what it covers goes
  d.completeFsync(d.beginFsync());
  t.same(d.image().entries.map((e) => e.index), [3, 4]);
  d.write({ kind: 'installSnapshot', snapshot: snap(10, 3) });
  d.write({ kind: 'append', entries: [ent(11, 3)] });
  d.completeFsync(d.beginFsync());
  img = d.image();
  t.equal(img.offset, 10);
  t.same(img.entries.map((e) => e.index), [11]);
  d.write({ kind: 'installSnapshot', snapshot: snap(5, 3) });
  t.throws(() => d.completeFsync(d.beginFsync()), { code: 'SIM_DISK_INVARIANT' }, 'stale snapshot');
});

t.test('the disk keeps its own copies and images are copies', async (t) => {
  const d = new SimDisk();
  const e = ent(1, 1, 7);
  d.write({ kind: 'append', entries: [e] });
  e.data[0] = 8;
  d.completeFsync(d.beginFsync());
  const img = d.image();
  t.equal(img.entries[0]!.data[0], 7);
  img.entries[0]!.data[0] = 9;
  t.equal(d.image().entries[0]!.data[0], 7);
  t.equal(d.stats.bytesWritten, WRITE_RECORD_OVERHEAD_BYTES + 17 + 1);
});

t.test('fsync latency follows the profile, stalls included', async (t) => {
  const d = new SimDisk(STEADY_DISK);
  const prng = new Prng(3);
  const steady = Array.from({ length: 1000 }, () => d.fsyncLatencyMs(prng));
  t.ok(steady.every((ms) => ms >= STEADY_DISK.fsyncMinMs && ms <= STEADY_DISK.fsyncMaxMs));
  d.profile = { fsyncMinMs: 1, fsyncMaxMs: 1, stallProbability: 0.1, stallMaxMs: 500 };
  const stalls = Array.from({ length: 1000 }, () => d.fsyncLatencyMs(prng)).filter((ms) => ms > 1).length;
  t.ok(stalls > 60 && stalls < 140, `stalls ${stalls}`);
});
