/**
 * Storage.snapshot() may report SNAPSHOT_TEMPORARILY_UNAVAILABLE while the embedder makes
 * one (etcd's ErrSnapshotTemporarilyUnavailable): the leader must not crash or send anything
 * for that follower, and must send the snapshot on a later heartbeat response once it exists.
 */
import t from 'tap';
import { MemoryStorage, Message, MessageType, RaftError, Snapshot } from '../../core/raft/index.js';
import { rawNodeCluster } from './rawnode-cluster.js';

/** MemoryStorage whose snapshot is unavailable until `ready` is set. */
class SlowSnapshotStorage extends MemoryStorage {
  ready = true;
  asked = 0;
  override snapshot(): Snapshot {
    this.asked++;
    if (!this.ready) throw new RaftError('SNAPSHOT_TEMPORARILY_UNAVAILABLE', 'being made');
    return super.snapshot();
  }
}

t.test('a leader waits for a snapshot that is being made, then sends it', async (t) => {
  const sent: Message[] = [];
  const { nodes, storages, down, settle } = rawNodeCluster({
    seed: 3,
    storage: () => new SlowSnapshotStorage(),
    route: (_from, m) => {
      sent.push(m);
      return true;
    },
  });
  const leader = nodes.get(1)!;

  // Node 3 misses ten entries; the leader then compacts its log past them with no snapshot
  // reaching that far yet.
  down.add(3);
  for (let i = 0; i < 10; i++) leader.propose(new TextEncoder().encode(`v${i}`));
  settle();
  const s1 = storages.get(1)!;
  const applied = leader.status().applied;
  s1.createSnapshot(applied, leader.status().conf, new Uint8Array([7]));
  s1.compact(applied);
  s1.ready = false;
  down.delete(3);
  sent.length = 0;
  const heartbeat = (): void => {
    for (let i = 0; i < 2; i++) leader.tick();
    settle();
  };
  heartbeat();
  t.ok(s1.asked > 0, 'the leader asked its storage for a snapshot');
  t.notOk(sent.some((m) => m.type === MessageType.Snap), 'and sent none while it was unavailable');
  t.ok(nodes.get(3)!.status().commit < applied, 'node 3 is still behind');

  s1.ready = true;
  for (let i = 0; i < 5 && nodes.get(3)!.status().commit < applied; i++) heartbeat();
  t.ok(sent.some((m) => m.type === MessageType.Snap && m.to === 3), 'the snapshot went out once it existed');
  t.equal(nodes.get(3)!.status().commit, leader.status().commit, 'node 3 caught up');
});
