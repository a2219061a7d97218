import t, { type Test } from 'tap';
import fc from 'fast-check';
import { ClassicLevel } from 'classic-level';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftLogStore, entryKey } from '../../core/storage/raft-log-store.js';
import { GroupCommitter, MAX_GROUP_COMMIT_ITEMS } from '../../core/storage/group-commit.js';
import { MemoryStorage } from '../../core/raft/storage.js';
import { EntryType, type Entry } from '../../core/raft/types.js';

function ent(index: number, term: number, text = `v${index}@${term}`): Entry {
  return { index, term, type: EntryType.Normal, data: new TextEncoder().encode(text) };
}

function text(e: Entry): string {
  return new TextDecoder().decode(e.data);
}

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'picloud-log-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('hard state and entries survive close and reopen', async (t) => {
  const dir = await tempDir(t);
  let s = await RaftLogStore.open(dir);
  t.equal(s.firstIndex(), 1);
  t.equal(s.lastIndex(), 0);
  t.same(s.initialState().hardState, { term: 0, vote: 0, commit: 0 });
  await s.save({ hardState: { term: 2, vote: 3, commit: 1 }, entries: [ent(1, 1), ent(2, 2)] });
  t.equal(s.lastIndex(), 2, 'mirror updated once durable');
  await s.close();

  s = await RaftLogStore.open(dir);
  t.same(s.initialState().hardState, { term: 2, vote: 3, commit: 1 });
  t.equal(s.firstIndex(), 1);
  t.equal(s.lastIndex(), 2);
  t.equal(s.term(0), 0);
  t.equal(s.term(2), 2);
  t.same(s.entries(1, 3).map(text), ['v1@1', 'v2@2']);
  t.throws(() => s.term(3), { code: 'UNAVAILABLE' });
  t.throws(() => s.entries(1, 4), { code: 'UNAVAILABLE' });
  await s.close();
});

t.test('entries overwrite a conflicting suffix, in memory and on disk', async (t) => {
  const dir = await tempDir(t);
  let s = await RaftLogStore.open(dir);
  await s.save({ entries: [1, 2, 3, 4, 5].map((i) => ent(i, 1)) });
  await s.save({ entries: [ent(3, 2), ent(4, 2)] });
  t.equal(s.lastIndex(), 4, 'entry 5 dropped');
  t.same(s.entries(1, 5).map(text), ['v1@1', 'v2@1', 'v3@2', 'v4@2']);
  await s.close();
  s = await RaftLogStore.open(dir);
  t.equal(s.lastIndex(), 4, 'still dropped after reopen');
  t.same(s.entries(1, 5).map(text), ['v1@1', 'v2@1', 'v3@2', 'v4@2']);
  await t.rejects(s.save({ entries: [ent(7, 2)] }), { code: 'ERR_INVALID_ARGUMENT' }, 'a gap is refused');
  await t.rejects(s.save({ entries: [ent(5, 2), ent(7, 2)] }), { code: 'ERR_INVALID_ARGUMENT' }, 'non-consecutive refused');
  t.equal(s.lastIndex(), 4);
  await s.close();
});

t.test('conflicting saves queued behind an fsync apply in order', async (t) => {
  const dir = await tempDir(t);
  const s = await RaftLogStore.open(dir);
  const p1 = s.save({ entries: [1, 2, 3, 4, 5, 6].map((i) => ent(i, 1)) });
  const p2 = s.save({ entries: [ent(4, 2)] }); // truncates 5, 6 — prepared before p1 is durable
  const p3 = s.save({ entries: [ent(5, 2)], hardState: { term: 2, vote: 1, commit: 3 } });
  await Promise.all([p1, p2, p3]);
  t.equal(s.lastIndex(), 5);
  t.same(s.entries(1, 6).map(text), ['v1@1', 'v2@1', 'v3@1', 'v4@2', 'v5@2']);
  await s.close();
  const r = await RaftLogStore.open(dir);
  t.same(r.entries(1, 6).map(text), ['v1@1', 'v2@1', 'v3@1', 'v4@2', 'v5@2']);
  t.equal(r.hardState().commit, 3);
  await r.close();
});

t.test('group commit: concurrent saves share fsyncs and each resolves durable', async (t) => {
  const dir = await tempDir(t);
  const s = await RaftLogStore.open(dir);
  const n = 200;
  const done: number[] = [];
  const saves: Promise<void>[] = [];
  for (let i = 1; i <= n; i++) {
    saves.push(s.save({ entries: [ent(i, 1)], hardState: { term: 1, vote: 1, commit: i } }).then(() => void done.push(i)));
  }
  await Promise.all(saves);
  const st = s.stats();
  t.equal(st.writes, n);
  t.ok(st.syncedBatches < n / 4, `${st.syncedBatches} fsyncs for ${n} saves`);
  t.ok(st.maxBatchWrites > 1, `largest batch ${st.maxBatchWrites}`);
  t.same(done, [...Array(n).keys()].map((i) => i + 1), 'resolved in submission order');
  await s.close();
  const r = await RaftLogStore.open(dir);
  t.equal(r.lastIndex(), n);
  t.equal(r.hardState().commit, n);
  await r.close();
});

t.test('GroupCommitter: batch limit, and a failed flush rejects its batch only', async (t) => {
  const flushed: number[][] = [];
  let failNext = false;
  const gc = new GroupCommitter<number>(async (items) => {
    flushed.push(items);
    await new Promise((r) => setTimeout(r, 2));
    if (failNext) {
      failNext = false;
      throw new Error('disk on fire');
    }
  });
  const all: Promise<void>[] = [];
  for (let i = 0; i < MAX_GROUP_COMMIT_ITEMS + 10; i++) all.push(gc.submit(i));
  await Promise.all(all);
  t.equal(flushed[0]!.length, 1, 'the first submission goes alone');
  t.equal(flushed[1]!.length, MAX_GROUP_COMMIT_ITEMS, 'a batch holds at most MAX_GROUP_COMMIT_ITEMS');
  t.equal(flushed[2]!.length, 9);
  failNext = true;
  const a = gc.submit(1);
  const b = gc.submit(2);
  await t.rejects(a, /disk on fire/);
  await b;
  t.equal(gc.stats.batches, 5);
});

t.test('a received snapshot replaces the log; data lives in a file', async (t) => {
  const dir = await tempDir(t);
  let s = await RaftLogStore.open(dir);
  await s.save({ entries: [1, 2, 3].map((i) => ent(i, 1)) });
  const data = new Uint8Array(300_000).map((_, i) => i % 251);
  const conf = { voters: [1, 2, 3], learners: [4] };
  await s.save({ snapshot: { metadata: { index: 10, term: 3, conf }, data }, entries: [ent(11, 3)], hardState: { term: 3, vote: 0, commit: 10 } });
  t.equal(s.firstIndex(), 11);
  t.equal(s.lastIndex(), 11);
  t.equal(s.term(10), 3);
  t.throws(() => s.term(9), { code: 'COMPACTED' });
  t.throws(() => s.entries(10, 11), { code: 'COMPACTED' });
  await t.rejects(
    s.save({ snapshot: { metadata: { index: 10, term: 3, conf }, data } }),
    { name: 'RaftError', code: 'SNAPSHOT_OUT_OF_DATE' },
  );
  await s.close();

  s = await RaftLogStore.open(dir);
  t.same(s.initialState().confState, conf);
  t.equal(s.snapshotSizeBytes(), data.length);
  const snap = s.snapshot();
  t.same(snap.metadata, { index: 10, term: 3, conf });
  t.same(snap.data, { external: true, sizeBytes: data.length }, 'Storage.snapshot() gives Raft the size, not the bytes');
  t.ok(Buffer.from(await s.readSnapshotChunk(0, data.length, snap.metadata)).equals(Buffer.from(data)), 'the bytes, read by range');
  await t.rejects(s.readSnapshotChunk(0, 10, { index: 9, term: 3 }), { code: 'ERR_SNAPSHOT_FILE' }, 'a chunk of another snapshot is refused');
  const chunk = await s.readSnapshotChunk(299_990, 1000);
  t.same([...chunk], [...data.subarray(299_990)], 'range read at the end');
  const streamed: Buffer[] = [];
  for await (const piece of s.openSnapshotStream(100)) streamed.push(piece as Buffer);
  t.ok(Buffer.concat(streamed).equals(Buffer.from(data.subarray(100))), 'streamed read');
  t.same(s.entries(11, 12).map(text), ['v11@3']);
  await s.close();
});

t.test('a received snapshot that fails the embedder\'s check is refused: spool removed, nothing written, the store still usable', async (t) => {
  const dir = await tempDir(t);
  const s = await RaftLogStore.open(dir);
  t.teardown(() => s.close());
  await s.save({ entries: [1, 2, 3].map((i) => ent(i, 1)), hardState: { term: 1, vote: 1, commit: 3 } });
  const good = new Uint8Array(30_000).map((_, i) => i % 251);
  const checked: Array<{ index: number; bytes: number }> = [];
  s.checkIncomingSnapshots(async (meta, stream) => {
    const pieces: Uint8Array[] = [];
    for await (const piece of stream) pieces.push(piece);
    const bytes = Buffer.concat(pieces);
    checked.push({ index: meta.index, bytes: bytes.length });
    if (!bytes.equals(Buffer.from(good))) throw new Error('checksum mismatch');
  });
  const metadata = { index: 20, term: 4, conf: { voters: [1, 2, 3], learners: [] } };
  const receive = (data: Uint8Array) =>
    s.save({
      snapshotChunks: [{ metadata, offset: 0, data }],
      snapshot: { metadata, data: { external: true, sizeBytes: data.length } },
      entries: [ent(21, 4)],
      hardState: { term: 4, vote: 0, commit: 21 },
    });
  const bad = Uint8Array.from(good);
  bad[12_345] ^= 0x40;
  await t.rejects(receive(bad), { code: 'ERR_SNAPSHOT_REFUSED', message: /checksum mismatch/ });
  t.same(checked, [{ index: 20, bytes: good.length }], 'the check saw the whole spool');
  t.same(await readdir(join(dir, 'snap')), [], 'the refused spool is gone');
  t.equal(s.snapshotMetadata().index, 0, 'no snapshot recorded');
  t.equal(s.firstIndex(), 1);
  t.equal(s.lastIndex(), 3, 'the log is untouched (entry 21 of the refused save not written)');
  t.same(s.hardState(), { term: 1, vote: 1, commit: 3 }, 'nor its hard state');

  await s.save({ entries: [ent(4, 1)] });
  t.equal(s.lastIndex(), 4, 'the store takes writes after a refusal');
  await receive(good);
  t.equal(s.snapshotMetadata().index, 20, 'the same snapshot sent again, intact, is installed');
  t.equal(s.firstIndex(), 21);
  t.equal(s.lastIndex(), 21);
  t.same(await readdir(join(dir, 'snap')), ['snap-0000000000000004-0000000000000014.snap']);
});

t.test('a snapshot received chunk by chunk is spooled to a file and installed by the save that names it', async (t) => {
  const dir = await tempDir(t);
  let s = await RaftLogStore.open(dir);
  await s.save({ entries: [1, 2, 3].map((i) => ent(i, 1)) });
  const data = new Uint8Array(250_000).map((_, i) => (i * 7) % 253);
  const metadata = { index: 20, term: 4, conf: { voters: [1, 2, 3], learners: [] } };
  const chunk = (offset: number, end: number) => ({ metadata, offset, data: data.subarray(offset, end) });
  // A first attempt that stops half way, then the transfer starts over (offset 0 again).
  await s.save({ entries: [], snapshotChunks: [chunk(0, 100_000)] });
  await s.save({ entries: [], snapshotChunks: [chunk(0, 100_000)] });
  await s.save({ entries: [], snapshotChunks: [chunk(100_000, 200_000)] });
  t.equal(s.snapshotMetadata().index, 0, 'nothing installed while chunks arrive');
  await t.rejects(
    s.save({ snapshot: { metadata, data: { external: true, sizeBytes: data.length } } }),
    { code: 'ERR_SNAPSHOT_FILE' },
    'a spool shorter than the snapshot is not installed',
  );
  await s.close();

  s = await RaftLogStore.open(dir);
  t.same(await readdir(join(dir, 'snap')), [], 'a half-received spool is removed at open');
  // A transfer of another snapshot abandoned half way (the leader changed): its spool goes as
  // soon as the next transfer starts, not at the next open.
  const older = { index: 15, term: 3, conf: metadata.conf };
  await s.save({ entries: [], snapshotChunks: [{ metadata: older, offset: 0, data: data.subarray(0, 120_000) }] });
  t.same(await readdir(join(dir, 'snap')), ['snap-0000000000000003-000000000000000f.snap.spool'], 'the abandoned transfer spooled');
  await s.save({ entries: [], snapshotChunks: [chunk(0, 150_000)] });
  t.same(await readdir(join(dir, 'snap')), ['snap-0000000000000004-0000000000000014.snap.spool'], 'a new transfer removes the abandoned spool');
  await s.save({
    snapshotChunks: [chunk(150_000, data.length)],
    snapshot: { metadata, data: { external: true, sizeBytes: data.length } },
    entries: [ent(21, 4)],
    hardState: { term: 4, vote: 0, commit: 20 },
  });
  t.equal(s.firstIndex(), 21);
  t.equal(s.snapshotSizeBytes(), data.length);
  t.same(await readdir(join(dir, 'snap')), ['snap-0000000000000004-0000000000000014.snap'], 'the spool became the snapshot file');
  await s.close();

  s = await RaftLogStore.open(dir);
  t.same(s.snapshot(), { metadata, data: { external: true, sizeBytes: data.length } });
  const streamed: Buffer[] = [];
  for await (const piece of s.openSnapshotStream()) streamed.push(piece as Buffer);
  t.ok(Buffer.concat(streamed).equals(Buffer.from(data)), 'the installed file holds exactly the chunks sent');
  t.same(s.entries(21, 22).map(text), ['v21@4']);
  await s.close();
});

t.test('local snapshot streamed to a file, then compaction; orphan files removed at open', async (t) => {
  const dir = await tempDir(t);
  let s = await RaftLogStore.open(dir);
  await s.save({ entries: [1, 2, 3, 4, 5, 6].map((i) => ent(i, i < 4 ? 1 : 2)) });
  async function* pieces(): AsyncIterable<Uint8Array> {
    for (let i = 0; i < 8; i++) yield new Uint8Array(64 * 1024).fill(i);
  }
  await t.rejects(s.createSnapshot(9, { voters: [1], learners: [] }, new Uint8Array(1)), { code: 'ERR_INVALID_ARGUMENT' });
  await t.rejects(s.compact(7), { code: 'ERR_INVALID_ARGUMENT' }, 'cannot compact beyond the last entry');
  const meta = await s.createSnapshot(4, { voters: [1], learners: [] }, pieces());
  t.same(meta, { index: 4, term: 2, conf: { voters: [1], learners: [] } });
  t.equal(s.firstIndex(), 1, 'creating a snapshot keeps the log');
  await s.compact(4);
  t.equal(s.firstIndex(), 5);
  t.equal(s.term(4), 2);
  t.same(s.entries(5, 7).map(text), ['v5@2', 'v6@2']);
  await s.compact(3); // below the offset: nothing to do
  await s.close();

  await writeFile(join(dir, 'snap', 'snap-0000000000000009-0000000000000009.snap'), 'orphan');
  await writeFile(join(dir, 'snap', 'snap-0000000000000009-000000000000000a.snap.tmp'), 'half');
  s = await RaftLogStore.open(dir);
  t.equal(s.firstIndex(), 5);
  t.equal(s.lastIndex(), 6);
  t.equal(s.term(4), 2);
  t.equal(s.snapshotSizeBytes(), 8 * 64 * 1024);
  t.equal((await s.readSnapshotChunk(7 * 64 * 1024, 1))[0], 7);
  t.same(await readdir(join(dir, 'snap')), ['snap-0000000000000002-0000000000000004.snap'], 'orphans removed');
  // A second snapshot replaces the first file.
  await s.createSnapshot(6, { voters: [1, 2], learners: [] }, new Uint8Array([1, 2, 3]));
  t.same(await readdir(join(dir, 'snap')), ['snap-0000000000000002-0000000000000006.snap']);
  await s.close();
});

t.test('closed store refuses writes with a typed error', async (t) => {
  const dir = await tempDir(t);
  const s = await RaftLogStore.open(dir);
  await s.close();
  await t.rejects(s.save({ entries: [ent(1, 1)] }), { name: 'StorageError', code: 'ERR_STORE_CLOSED' });
});

t.test('a corrupt record is reported as ERR_CORRUPT at open', async (t) => {
  const dir = await tempDir(t);
  const s = await RaftLogStore.open(dir);
  await s.save({ entries: [ent(1, 1)] });
  await s.close();
  const { ClassicLevel } = await import('classic-level');
  const db = new ClassicLevel<Buffer, Buffer>(join(dir, 'log'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.put(Buffer.from('h'), Buffer.from([0xff, 0xff, 0xff]));
  await db.close();
  await t.rejects(RaftLogStore.open(dir), { code: 'ERR_CORRUPT' });
});

t.test('model check against MemoryStorage: random appends, conflicts, snapshots, compaction, reopen', async (t) => {
  type Op =
    | { kind: 'append'; back: number; count: number; termBump: boolean }
    | { kind: 'snapshot'; back: number }
    | { kind: 'compact' }
    | { kind: 'reopen' };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('append' as const), back: fc.nat(4), count: fc.integer({ min: 1, max: 5 }), termBump: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('snapshot' as const), back: fc.nat(3) }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'compact' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  );
  const root = await tempDir(t);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
      const dir = join(root, String(run++));
      let s = await RaftLogStore.open(dir);
      const model = new MemoryStorage();
      let term = 1;
      let snapIndex = 0;
      try {
        for (const op of ops) {
          if (op.kind === 'append') {
            if (op.termBump) term++;
            // Raft never overwrites what a snapshot covers (snapshots are of applied = committed entries).
            const start = Math.max(model.firstIndex(), snapIndex + 1, model.lastIndex() + 1 - op.back);
            const es = Array.from({ length: op.count }, (_, k) => ent(start + k, term));
            await s.save({ entries: es });
            model.append(es);
          } else if (op.kind === 'snapshot') {
            const idx = model.lastIndex() - op.back;
            if (idx <= snapIndex || idx < model.firstIndex()) continue;
            await s.createSnapshot(idx, { voters: [1], learners: [] }, new Uint8Array([idx & 0xff]));
            model.createSnapshot(idx, { voters: [1], learners: [] }, new Uint8Array([idx & 0xff]));
            snapIndex = idx;
          } else if (op.kind === 'compact') {
            await s.compact(snapIndex);
            model.compact(snapIndex);
          } else {
            await s.close();
            s = await RaftLogStore.open(dir);
          }
          if (s.firstIndex() !== model.firstIndex() || s.lastIndex() !== model.lastIndex()) return false;
          for (let i = model.firstIndex() - 1; i <= model.lastIndex(); i++) if (s.term(i) !== model.term(i)) return false;
          if (model.lastIndex() >= model.firstIndex()) {
            const a = s.entries(model.firstIndex(), model.lastIndex() + 1).map(text);
            const b = model.entries(model.firstIndex(), model.lastIndex() + 1).map(text);
            if (JSON.stringify(a) !== JSON.stringify(b)) return false;
          }
        }
        return true;
      } finally {
        await s.close();
        await rm(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: 60 },
  );
});

t.test('compaction beyond the snapshot (the applied state covers it): snapshot() asks for a new one until one reaches the log', async (t) => {
  const dir = await tempDir(t);
  const s = await RaftLogStore.open(dir);
  let asked = 0;
  s.onSnapshotNeeded(() => asked++);
  await s.save({ entries: [1, 2, 3, 4, 5, 6].map((i) => ent(i, 1)) });
  t.equal(s.snapshot().metadata.index, 0, 'nothing compacted, no snapshot needed: the empty one');
  await s.createSnapshot(2, { voters: [1], learners: [] }, new Uint8Array([2]));
  await s.compact(4);
  t.equal(s.firstIndex(), 5);
  t.throws(() => s.snapshot(), { code: 'SNAPSHOT_TEMPORARILY_UNAVAILABLE' }, 'the snapshot at 2 does not reach the log at 5');
  t.equal(asked, 1, 'the embedder was asked for one');
  await t.rejects(s.createSnapshot(3, { voters: [1], learners: [] }, new Uint8Array([3])), 'a snapshot below the compaction point has no term to record');
  await s.createSnapshot(5, { voters: [1], learners: [] }, new Uint8Array([5]));
  t.same(s.snapshot().metadata, { index: 5, term: 1, conf: { voters: [1], learners: [] } });
  t.same(s.snapshot().data, { external: true, sizeBytes: 1 });
  t.same([...(await s.readSnapshotChunk(0, 10))], [5]);
  t.equal(asked, 1);
  await s.close();
});

t.test('compaction deletes the compacted entries from LevelDB (in the background), and a reopen starts after them', async (t) => {
  const dir = await tempDir(t);
  const s = await RaftLogStore.open(dir);
  await s.save({ entries: Array.from({ length: 50 }, (_, i) => ent(i + 1, 1)) });
  await s.createSnapshot(10, { voters: [1], learners: [] }, new Uint8Array([1]));
  await s.compact(30); // beyond the snapshot: the caller's applied state covers it
  await s.close();
  const db = new ClassicLevel<Buffer, Buffer>(join(dir, 'log'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  const left: number[] = [];
  for await (const key of db.keys({ gte: entryKey(0), lte: entryKey(Number.MAX_SAFE_INTEGER) })) left.push(Number(key.readBigUInt64BE(1)));
  await db.close();
  t.same(left, Array.from({ length: 20 }, (_, i) => i + 31), 'only entries 31-50 remain on disk');
  const again = await RaftLogStore.open(dir);
  t.equal(again.firstIndex(), 31);
  t.equal(again.lastIndex(), 50);
  await again.close();
});
