/**
 * An append that only carries the commit index to a follower the leader knows is caught up
 * is marked commit-only, and the follower does not answer it when it accepts it: that answer
 * changed nothing at the leader. A rejection is still answered, and a follower the leader is
 * not sure of gets an ordinary append (test/raft/testdata/replication.txt: a lost ack).
 */
import t from 'tap';
import { ConfChangeType, MemoryStorage, Message, MessageType, Role, emptyMessage } from '../../core/raft/index.js';
import { rawNodeCluster } from './rawnode-cluster.js';

function cluster(sent: Message[]) {
  return rawNodeCluster({
    seed: 11,
    storage: () => new MemoryStorage(),
    route: (_from, m) => {
      sent.push(m);
      return true;
    },
  });
}

t.test('the commit of a write reaches a follower known to hold it as a commit-only append, which it does not answer', async (t) => {
  const sent: Message[] = [];
  const { nodes, settle } = cluster(sent);
  sent.length = 0;
  nodes.get(1)!.propose(new TextEncoder().encode('x'));
  settle();
  const last = nodes.get(1)!.status().commit;
  // The leader steps 2's ack, commits and sends the commit at once; 3's ack is stepped after.
  const carriers = sent.filter((m) => m.type === MessageType.App && m.entries.length === 0);
  t.same(carriers.map((m) => [m.to, m.commit, m.commitOnly]), [
    [2, last, true],
    [3, last, false],
  ], 'marked for 2, whose ack the leader had; not for 3, whose ack it had not yet');
  t.same(sent.filter((m) => m.type === MessageType.AppResp).map((m) => [m.from, m.index]), [
    [2, last],
    [3, last],
    [3, last],
  ], 'both acked the entry; only 3 answered the commit');
  for (const id of [2, 3]) t.equal(nodes.get(id)!.status().commit, last, `follower ${id} learned the commit`);

  sent.length = 0;
  nodes.get(1)!.propose(new TextEncoder().encode('y'));
  settle();
  t.equal(sent.filter((m) => m.type === MessageType.AppResp && m.index === last + 1).length, 3, 'the same again for the next write');
});

t.test('a follower still answers a commit-only append it rejects', async (t) => {
  const sent: Message[] = [];
  const { nodes, settle } = cluster(sent);
  const follower = nodes.get(2)!;
  const st = follower.status();
  sent.length = 0;
  const m = emptyMessage(MessageType.App, 1, 2, st.term);
  m.index = st.lastIndex + 5; // beyond the follower's log: it cannot match
  m.logTerm = st.term;
  m.commit = st.commit;
  m.commitOnly = true;
  follower.step(m);
  settle();
  const answers = sent.filter((x) => x.type === MessageType.AppResp && x.from === 2);
  t.equal(answers.length, 1, 'one answer');
  t.equal(answers[0]?.reject, true, 'a rejection');
});

// Marking an append whose prevIndex is above the known match would hide the only answer that
// can bring the match up once acks were lost and no write follows: these stall if it did.
t.test('acks of both followers lost and no further write: heartbeats alone still commit the entry', async (t) => {
  let dropAcks = false;
  const { nodes, settle, heartbeat } = rawNodeCluster({
    seed: 11,
    storage: () => new MemoryStorage(),
    route: (_from, m) => !(dropAcks && m.type === MessageType.AppResp),
  });
  const leader = nodes.get(1)!;
  const before = leader.status().commit;
  dropAcks = true;
  leader.propose(new TextEncoder().encode('x'));
  settle();
  dropAcks = false;
  t.equal(leader.status().commit, before, 'not committed while the acks are lost');
  for (let i = 0; i < 5; i++) heartbeat();
  const st = leader.status();
  t.equal(st.commit, st.lastIndex, 'committed');
  for (const id of [2, 3]) t.equal(st.progress![String(id)]!.match, st.lastIndex, `the leader knows ${id} holds it`);
});

t.test('a transfer to a follower whose last ack was lost still ends with it leading', async (t) => {
  let drop3 = false;
  const { nodes, settle, heartbeat } = rawNodeCluster({
    seed: 11,
    storage: () => new MemoryStorage(),
    route: (from, m) => !(drop3 && from === 3 && m.type === MessageType.AppResp),
  });
  const leader = nodes.get(1)!;
  drop3 = true;
  leader.propose(new TextEncoder().encode('x'));
  settle();
  drop3 = false;
  leader.transferLeadership(3);
  settle();
  for (let i = 0; i < 3; i++) heartbeat();
  t.equal(nodes.get(3)!.status().role, Role.Leader, '3 leads');
});

t.test('a commit-only append below what the follower has committed is still answered, with its commit index', async (t) => {
  // A duplicated or reordered older append: the answer may tell the leader more than it knows.
  const sent: Message[] = [];
  const { nodes, settle } = cluster(sent);
  nodes.get(1)!.propose(new TextEncoder().encode('x'));
  settle();
  const follower = nodes.get(2)!;
  const st = follower.status();
  sent.length = 0;
  const m = emptyMessage(MessageType.App, 1, 2, st.term);
  m.index = st.commit - 1;
  m.logTerm = st.term;
  m.commit = st.commit;
  m.commitOnly = true;
  follower.step(m);
  settle();
  t.same(
    sent.filter((x) => x.type === MessageType.AppResp && x.from === 2).map((x) => [x.index, x.reject]),
    [[st.commit, false]],
    'answered with the commit index',
  );
});

t.test('a follower asked to transfer leadership sends nothing (the transport would refuse a TransferLeader naming the transferee as its sender)', async (t) => {
  const sent: Message[] = [];
  const { nodes, settle } = cluster(sent);
  settle();
  const follower = nodes.get(2)!;
  t.equal(follower.status().role, Role.Follower);
  sent.length = 0;
  follower.transferLeadership(3);
  settle();
  t.same(sent.filter((m) => m.type === MessageType.TransferLeader), [], 'no TransferLeader sent');
  t.equal(nodes.get(1)!.status().role, Role.Leader, '1 still leads');
});

t.test('the uncommitted bytes a leader counts are what is really uncommitted, and stay under the limit while a quorum acknowledges a little at a time', async (t) => {
  const LIMIT = 10_000;
  const held: Message[] = [];
  const { nodes, settle, down } = rawNodeCluster({
    seed: 11,
    storage: () => new MemoryStorage(),
    config: () => ({ maxUncommittedEntriesBytes: LIMIT }),
    // Node 2 is slow: it takes one held append per round.
    route: (from, m) => !(from === 1 && m.to === 2 && m.type === MessageType.App && (held.push(m), true)),
  });
  down.add(3);
  const leader = nodes.get(1)!;
  const raft = leader.raft;
  let accepted = 0;
  let refused = 0;
  let worst = 0;
  for (let round = 0; round < 200; round++) {
    for (let k = 0; k < 2; k++) {
      try {
        leader.propose(new Uint8Array(900));
        accepted++;
      } catch {
        refused++;
      }
    }
    settle();
    const next = held.shift();
    if (next) nodes.get(2)!.step(next);
    settle();
    let real = 0;
    for (const e of raft.log.slice(raft.log.committed + 1, raft.log.lastIndex() + 1)) real += e.data.length;
    worst = Math.max(worst, real);
    if (real > raft.uncommittedBytes || raft.uncommittedBytes > LIMIT) {
      t.fail(`round ${round}: ${real} bytes uncommitted, ${raft.uncommittedBytes} counted (limit ${LIMIT})`);
      break;
    }
  }
  t.ok(refused > 0 && accepted > 0, `proposals refused past the limit (${accepted} accepted, ${refused} refused)`);
  t.ok(worst <= LIMIT, `at most ${worst} bytes ever uncommitted`);
});

t.test('a conf change refused by the uncommitted limit leaves none pending: the next one is taken', async (t) => {
  const { nodes, settle, down } = rawNodeCluster({ seed: 11, storage: () => new MemoryStorage(), config: () => ({ maxUncommittedEntriesBytes: 1_000 }) });
  const leader = nodes.get(1)!;
  down.add(2);
  down.add(3);
  leader.propose(new Uint8Array(900)); // nothing commits: the leader alone
  settle();
  t.throws(() => leader.proposeConfChange({ type: ConfChangeType.UpdateNode, nodeId: 1, context: new Uint8Array(200) }), { code: 'PROPOSAL_DROPPED' }, 'refused: the uncommitted log is full');
  down.clear();
  for (let i = 0; i < 4; i++) {
    leader.tick();
    settle();
  }
  t.equal(leader.status().commit, leader.status().lastIndex, 'the 900 bytes committed');
  t.doesNotThrow(() => leader.proposeConfChange({ type: ConfChangeType.UpdateNode, nodeId: 1 }), 'a conf change is taken now (none was left pending by the refused one)');
});
