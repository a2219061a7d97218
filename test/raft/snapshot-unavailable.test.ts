/**
 * Storage.snapshot() may report SNAPSHOT_TEMPORARILY_UNAVAILABLE while the embedder makes
 * one (etcd's ErrSnapshotTemporarilyUnavailable): the leader must not crash or send anything
 * for that follower, and must send the snapshot on a later heartbeat response once it exists.
 */
import t from 'tap';
import { EntryType, MemoryStorage, Message, MessageType, RaftError, RawNode, Role, Snapshot, bootstrap, decodeConfChange } from '../../core/raft/index.js';
import { Prng } from '../../core/sim/prng.js';

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
  const rng = new Prng(3);
  const storages = new Map<number, SlowSnapshotStorage>();
  const nodes = new Map<number, RawNode>();
  for (const id of [1, 2, 3]) {
    const s = new SlowSnapshotStorage();
    bootstrap(s, [1, 2, 3]);
    storages.set(id, s);
    nodes.set(id, new RawNode({ id, storage: s, random: rng.fork(), electionTicks: 10, heartbeatTicks: 1 }));
  }
  const down = new Set<number>();
  const sent: Message[] = [];
  /** Runs Ready cycles and delivers messages (dropping those to or from `down`) until quiet. */
  const settle = (): void => {
    for (let round = 0; round < 200; round++) {
      let moved = false;
      const inbox: Message[] = [];
      for (const [id, rn] of nodes) {
        if (down.has(id) || !rn.hasReady()) continue;
        moved = true;
        const rd = rn.ready();
        const s = storages.get(id)!;
        if (rd.snapshot) s.applySnapshot(rd.snapshot);
        s.append(rd.entries);
        if (rd.hardState) s.setHardState(rd.hardState);
        for (const e of rd.committedEntries) if (e.type === EntryType.ConfChange) rn.applyConfChange(decodeConfChange(e.data));
        for (const m of [...rd.earlyMessages, ...rd.messages]) {
          sent.push(m);
          if (!down.has(m.to)) inbox.push(m);
        }
        rn.advance();
      }
      for (const m of inbox) nodes.get(m.to)!.step(m);
      if (!moved && inbox.length === 0) return;
    }
  };
  settle(); // apply the bootstrap configuration
  nodes.get(1)!.campaign();
  settle();
  const leader = nodes.get(1)!;
  t.equal(leader.status().role, Role.Leader);

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
