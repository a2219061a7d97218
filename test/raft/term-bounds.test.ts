// Terms are JavaScript numbers, exact up to 2^53 - 1. A crash hunt found that one message with
// term 2^53 - 1 (from anyone holding the cluster token) took every member there and stopped
// elections for good: term + 1 no longer grew. Now a message more than MAX_TERM_STEP above a
// node's term is dropped, and no node campaigns past MAX_TERM.
import t from 'tap';
import { MAX_TERM, MAX_TERM_STEP } from '../../core/raft/raft.js';
import { MessageType, Role, emptyMessage } from '../../core/raft/index.js';
import { RaftCluster } from './harness.js';

function cluster(): RaftCluster {
  const c = new RaftCluster();
  for (const id of [1, 2, 3]) c.addNode(id, [1, 2, 3], { preVote: true, checkQuorum: true });
  c.stabilize(false); // the bootstrap's conf changes applied: only then may a node campaign
  c.node(1).rn.campaign();
  c.stabilize(false);
  return c;
}

t.test('a message far above a member\'s term is dropped and counted; the leader keeps leading', async (t) => {
  const c = cluster();
  const term = c.node(2).rn.status().term;
  t.equal(c.node(1).rn.status().role, Role.Leader);
  for (const hostile of [Number.MAX_SAFE_INTEGER, term + MAX_TERM_STEP + 1]) {
    c.node(2).rn.step(emptyMessage(MessageType.Heartbeat, 99, 2, hostile));
    const vote = emptyMessage(MessageType.Vote, 99, 3, hostile);
    vote.index = 1_000_000;
    vote.logTerm = hostile;
    c.node(3).rn.step(vote);
  }
  c.stabilize(false);
  t.same([1, 2, 3].map((id) => c.node(id).rn.status().term), [term, term, term], 'no member took the hostile term');
  t.equal(c.node(2).rn.status().termJumpsRefused, 2);
  t.equal(c.node(3).rn.status().termJumpsRefused, 2);
  t.same([1, 2, 3].map((id) => c.node(id).rn.status().lead), [1, 1, 1], 'node 1 still leads');
  c.node(1).rn.propose(new TextEncoder().encode('after'));
  c.stabilize(false);
  t.same([1, 2, 3].map((id) => c.node(id).applied.at(-1)), ['after', 'after', 'after'], 'and commits');
});

t.test('a message MAX_TERM_STEP above is still taken (the bound, not a smaller one)', async (t) => {
  const c = cluster();
  const term = c.node(2).rn.status().term;
  c.node(2).rn.step(emptyMessage(MessageType.Heartbeat, 1, 2, term + MAX_TERM_STEP));
  t.equal(c.node(2).rn.status().term, term + MAX_TERM_STEP);
  t.equal(c.node(2).rn.status().termJumpsRefused, 0);
});

t.test('a node at MAX_TERM does not campaign: term + 1 would not be a new term', async (t) => {
  const c = new RaftCluster();
  c.addNode(1, [1], { preVote: false, checkQuorum: false });
  c.stabilize(false);
  const rn = c.node(1).rn;
  // Where a long run of allowed steps would have brought it (set directly: 2^37 messages otherwise).
  rn.raft.term = MAX_TERM - 5;
  rn.step(emptyMessage(MessageType.Heartbeat, 2, 1, MAX_TERM));
  t.equal(rn.status().term, MAX_TERM);
  for (let i = 0; i < 30; i++) {
    rn.tick();
    c.stabilize(false);
  }
  rn.campaign();
  c.stabilize(false);
  t.equal(rn.status().term, MAX_TERM, 'still MAX_TERM');
  t.not(rn.status().role, Role.Leader, 'no election won in a term it could not enter');
  t.not(rn.status().role, Role.Candidate);
});
