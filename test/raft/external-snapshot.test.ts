/**
 * Snapshots that are never whole in memory: a leader whose Storage returns an external
 * snapshot (only its size) sends chunk descriptors whose bytes the embedder attaches, and a
 * follower with `spoolIncomingSnapshots` hands each received chunk to the embedder in its
 * Ready instead of collecting them. If the embedder cannot attach a chunk (its snapshot was
 * replaced), reportSnapshotFailure makes the leader start over with the current snapshot.
 */
import t, { type Test } from 'tap';
import { MemoryStorage, Message, MessageType, Snapshot, SnapshotMetadata } from '../../core/raft/index.js';
import { rawNodeCluster } from './rawnode-cluster.js';

const CHUNK_BYTES = 1000;

/** MemoryStorage that keeps its snapshot's bytes to itself (as a file would) and gives Raft only their size. */
class FileLikeStorage extends MemoryStorage {
  file: { meta: SnapshotMetadata; bytes: Uint8Array } | undefined;
  override snapshot(): Snapshot {
    const s = super.snapshot();
    if (s.metadata.index === 0) return s;
    if (this.file?.meta.index !== s.metadata.index) throw new Error('test storage: snapshot without a file');
    return { metadata: s.metadata, data: { external: true, sizeBytes: this.file.bytes.length } };
  }
  makeSnapshot(index: number, conf: SnapshotMetadata['conf'], bytes: Uint8Array): void {
    this.createSnapshot(index, conf, new Uint8Array(0));
    this.file = { meta: super.snapshot().metadata, bytes };
    this.compact(index);
  }
}

function cluster(t: Test) {
  const snaps: Message[] = [];
  const spool = { bytes: Buffer.alloc(0), writes: 0 };
  const restored: Snapshot[] = [];
  /** When set, the embedder fails to attach chunks of this snapshot index. */
  const failAttach = { index: -1, failures: 0 };
  /** Chunks after this many attached are lost on the way (not reported: the network ate them). */
  const loss = { after: Infinity, attached: 0 };
  /** While set, attached chunks wait here (a slow link) instead of arriving at once. */
  const slow = { on: false, held: [] as Message[] };
  /** The embedder's part on the leader: read the chunk's bytes from "the file". */
  const attach = (from: number, m: Message): boolean => {
    const c = m.snapshot!;
    if (c.bytesToAttach === undefined) return true;
    if (loss.attached >= loss.after) return false;
    loss.attached++;
    const file = rc.storages.get(from)!.file;
    if (c.metadata.index === failAttach.index || file?.meta.index !== c.metadata.index) {
      failAttach.failures++;
      rc.nodes.get(from)!.reportSnapshotFailure(m.to, c.metadata.index);
      return false;
    }
    t.equal(c.data.length, 0, 'a chunk descriptor carries no bytes');
    c.data = file.bytes.subarray(c.offset, c.offset + c.bytesToAttach);
    delete c.bytesToAttach;
    return true;
  };
  const rc = rawNodeCluster({
    seed: 5,
    storage: () => new FileLikeStorage(),
    config: (id) => ({ snapshotChunkBytes: CHUNK_BYTES, spoolIncomingSnapshots: id === 3 }),
    // The embedder's part on the follower: spool the chunks, install the spool.
    beforePersist: (_id, rd) => {
      for (const w of rd.snapshotChunks) {
        if (w.offset === 0) spool.bytes = Buffer.alloc(0);
        t.equal(w.offset, spool.bytes.length, 'chunks reach the spool in order');
        spool.bytes = Buffer.concat([spool.bytes, w.data]);
        spool.writes++;
      }
    },
    persistSnapshot: (_id, rd, s) => {
      t.same(rd.snapshot.data, { external: true, sizeBytes: spool.bytes.length }, 'the installed snapshot is the spool');
      restored.push(rd.snapshot);
      s.applySnapshot({ metadata: rd.snapshot.metadata, data: new Uint8Array(0) });
      s.file = { meta: rd.snapshot.metadata, bytes: spool.bytes };
    },
    route: (from, m) => {
      if (m.type !== MessageType.Snap) return true;
      snaps.push({ ...m, snapshot: { ...m.snapshot! } });
      if (!attach(from, m)) return false;
      if (!slow.on) return true;
      slow.held.push(m);
      return false;
    },
  });
  const { nodes, storages, down, settle, heartbeat } = rc;
  /** Node 3 misses some entries, then the leader snapshots and compacts past them. */
  const leaveBehind = (n: number, image: Uint8Array): void => {
    down.add(3);
    for (let i = 0; i < n; i++) nodes.get(1)!.propose(new TextEncoder().encode(`v${i}`));
    settle();
    const leader = nodes.get(1)!;
    storages.get(1)!.makeSnapshot(leader.status().applied, leader.status().conf, image);
  };
  return { nodes, storages, down, snaps, spool, restored, failAttach, loss, slow, settle, heartbeat, leaveBehind };
}

t.test('an external snapshot goes out as descriptors and arrives in the spool, never whole in a Ready or in Raft', async (t) => {
  const c = cluster(t);
  const image = new Uint8Array(4_500).map((_, i) => i % 199);
  c.leaveBehind(10, image);
  c.down.delete(3);
  c.snaps.length = 0;
  for (let i = 0; i < 20 && c.restored.length === 0; i++) c.heartbeat();

  const follower = c.nodes.get(3)!;
  t.equal(follower.status().commit, c.nodes.get(1)!.status().commit, 'node 3 caught up through the snapshot');
  t.equal(c.restored.length, 1, 'one snapshot installed');
  t.ok(Buffer.from(image).equals(c.spool.bytes), 'the spool holds exactly the leader\'s image');
  const firstSends = c.snaps.filter((m, i) => c.snaps.findIndex((o) => o.snapshot!.offset === m.snapshot!.offset) === i);
  t.same(firstSends.map((m) => [m.snapshot!.offset, m.snapshot!.bytesToAttach, m.snapshot!.done]), [
    [0, 1000, false], [1000, 1000, false], [2000, 1000, false], [3000, 1000, false], [4000, 500, true],
  ], 'the leader sent chunk descriptors of snapshotChunkBytes each');
  t.equal(c.spool.writes, 5, 'each chunk was handed to the embedder once');
  const incoming = (follower.raft as unknown as { incomingSnapshot?: unknown }).incomingSnapshot;
  t.equal(incoming, undefined, 'nothing of the snapshot is left in the follower\'s Raft');
});

t.test('a follower keeps no chunk bytes while a transfer is under way', async (t) => {
  const c = cluster(t);
  c.leaveBehind(10, new Uint8Array(10_000).fill(3));
  c.down.delete(3);
  c.loss.after = 3; // the rest of the chunks are lost for now
  for (let i = 0; i < 5; i++) c.heartbeat();
  t.equal(c.spool.writes, 3, 'three chunks arrived');
  t.equal(c.restored.length, 0, 'the transfer is under way');
  const raft = c.nodes.get(3)!.raft as unknown as { incomingSnapshot?: { chunks?: unknown[]; receivedBytes: number } };
  t.equal(raft.incomingSnapshot?.receivedBytes, 3_000, 'the follower tracks how much it has');
  t.equal(raft.incomingSnapshot?.chunks, undefined, 'but holds none of the bytes');
  c.loss.after = Infinity;
  for (let i = 0; i < 20 && c.restored.length === 0; i++) c.heartbeat();
  t.equal(c.restored.length, 1, 'the leader resent from the last acknowledged byte');
  t.equal(c.spool.writes, 10, 'and no chunk twice');
  t.ok(Buffer.alloc(10_000, 3).equals(c.spool.bytes));
});

t.test('a chunk that cannot be attached (the snapshot was replaced) restarts the transfer with the current snapshot', async (t) => {
  const c = cluster(t);
  const first = new Uint8Array(3_000).fill(1);
  c.leaveBehind(10, first);
  const oldIndex = c.storages.get(1)!.file!.meta.index;
  c.failAttach.index = oldIndex;
  c.down.delete(3);
  for (let i = 0; i < 5 && c.failAttach.failures === 0; i++) c.heartbeat();
  t.ok(c.failAttach.failures > 0, 'the embedder reported the failure');
  // The leader moves on: a newer snapshot replaces the old one.
  c.failAttach.index = -1;
  c.down.add(3);
  const second = new Uint8Array(2_500).fill(2);
  c.leaveBehind(5, second);
  c.down.delete(3);
  c.snaps.length = 0;
  for (let i = 0; i < 20 && c.restored.length === 0; i++) c.heartbeat();
  t.equal(c.restored.length, 1, 'node 3 installed a snapshot');
  t.ok(c.restored[0]!.metadata.index > oldIndex, 'the newer one');
  t.ok(Buffer.from(second).equals(c.spool.bytes), 'with the newer image');
  t.equal(c.snaps[0]!.snapshot!.offset, 0, 'sent from its start');
  t.equal(c.nodes.get(3)!.status().commit, c.nodes.get(1)!.status().commit, 'node 3 caught up');
});

t.test('on a slow link heartbeats do not start extra copies of the transfer; a stalled one is resent', async (t) => {
  const c = cluster(t);
  c.leaveBehind(10, new Uint8Array(8_000).fill(9));
  c.down.delete(3);
  c.slow.on = true;
  c.snaps.length = 0;
  // Each chunk takes two heartbeat intervals to arrive.
  for (let round = 0; round < 40 && c.restored.length === 0; round++) {
    c.nodes.get(1)!.tick();
    c.settle();
    const next = round % 2 === 1 ? c.slow.held.shift() : undefined;
    if (next !== undefined) {
      c.nodes.get(3)!.step(next);
      c.settle();
    }
  }
  t.equal(c.restored.length, 1, 'the snapshot arrived');
  t.ok(c.snaps.length <= 9, `8 chunks took ${c.snaps.length} sends (at most one resend)`);
  t.equal(c.spool.writes, 8, 'each chunk spooled once');

  // A transfer whose chunk was lost is resent after a few heartbeats without progress.
  const c2 = cluster(t);
  c2.leaveBehind(10, new Uint8Array(3_000).fill(4));
  c2.down.delete(3);
  c2.loss.after = 1; // the second chunk is lost
  c2.heartbeat();
  t.equal(c2.spool.writes, 1);
  c2.loss.after = Infinity;
  for (let i = 0; i < 10 && c2.restored.length === 0; i++) c2.heartbeat();
  t.equal(c2.restored.length, 1, 'the lost chunk was resent and the transfer finished');
});

t.test('a chunk of a snapshot the follower already has is answered with its commit index, not a request to start over', async (t) => {
  const c = cluster(t);
  c.leaveBehind(10, new Uint8Array(2_500).fill(5));
  c.down.delete(3);
  for (let i = 0; i < 20 && c.restored.length === 0; i++) c.heartbeat();
  t.equal(c.restored.length, 1);
  // A resent last chunk arrives after the install (the leader had not heard back yet).
  const last = c.snaps.find((m) => m.snapshot!.done)!;
  const { bytesToAttach: _, ...chunk } = last.snapshot!;
  const follower = c.nodes.get(3)!;
  follower.step({ ...last, snapshot: { ...chunk, data: new Uint8Array(500).fill(5) } });
  const rd = follower.ready();
  follower.advance();
  t.same(
    rd.messages.map((m) => [m.type, m.index, m.reject]),
    [[MessageType.AppResp, follower.status().commit, false]],
    'an AppResp with the commit index, which ends the leader\'s transfer',
  );
  t.same(rd.snapshotChunks, [], 'nothing spooled');
});
