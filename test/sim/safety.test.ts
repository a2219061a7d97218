import t from 'tap';
import { RaftSafetyChecker, MAX_VIOLATIONS_RECORDED } from '../../core/sim/safety.js';
import { EntryType, type Entry } from '../../core/raft/types.js';

const ent = (index: number, term: number, byte = 0): Entry => ({ index, term, type: EntryType.Normal, data: new Uint8Array([byte]) });
const logOf = (entries: Entry[]) => ({ firstIndex: 1, lastIndex: entries.length, termAt: (i: number) => entries[i - 1]!.term });

t.test('election safety', async (t) => {
  const c = new RaftSafetyChecker();
  c.observeLeader(1, 2, 0);
  c.observeLeader(1, 2, 1);
  c.observeLeader(2, 3, 2);
  t.equal(c.violations.length, 0);
  c.observeLeader(3, 2, 5);
  t.equal(c.violations[0]!.invariant, 'election-safety');
  t.same(c.violations[0]!.nodes, [1, 3]);
});

t.test('log matching', async (t) => {
  const c = new RaftSafetyChecker();
  c.observeAppend(1, [ent(1, 1), ent(2, 1), ent(3, 2)], 0, 0);
  c.observeAppend(2, [ent(1, 1), ent(2, 1)], 0, 0);
  c.observeAppend(2, [ent(3, 2)], 1, 0);
  t.equal(c.violations.length, 0);
  c.observeAppend(3, [ent(3, 2)], 2, 1); // same (3, 2) but after a term-2 entry: prefixes differ
  t.match(c.violations[0]!.message, /follows term 2 on node 3 but term 1 elsewhere/);
  c.observeAppend(3, [ent(2, 1, 9)], 1, 2); // other content at (2, 1)
  t.match(c.violations[1]!.message, /different entry at index 2 term 1/);
  c.observeAppend(4, [ent(1, 3), ent(2, 2)], 0, 3);
  t.match(c.violations[2]!.message, /term 2 at index 2 follows term 3/);
});

t.test('state machine safety and leader completeness', async (t) => {
  const c = new RaftSafetyChecker();
  const log = [ent(1, 1), ent(2, 1), ent(3, 2)];
  for (const e of log) c.observeApply(1, e, 0);
  c.observeCommit(1, 2, 3, (i) => log[i - 1]?.term, 0);
  c.observeApply(2, ent(2, 1), 0);
  t.equal(c.violations.length, 0);
  c.checkLeaderLog(2, 3, logOf(log), 0);
  t.equal(c.violations.length, 0, 'a leader holding every committed entry');
  c.checkLeaderLog(3, 3, logOf(log.slice(0, 2)), 0);
  t.match(c.violations[0]!.message, /leader 3 of term 3 lacks committed index 3/);
  c.checkLeaderLog(4, 2, logOf(log.slice(0, 2)), 0);
  t.equal(c.violations.length, 1, 'entries committed in term 2 need not be in the log of term 2\'s leader before it committed them');
  c.checkLeaderLog(5, 4, logOf([ent(1, 1), ent(2, 1), ent(3, 3)]), 0);
  t.match(c.violations[1]!.message, /has term 3 at committed index 3/);
  c.observeApply(3, ent(3, 3), 0);
  t.equal(c.violations[2]!.invariant, 'state-machine-safety');
  c.observeApply(3, ent(2, 1, 5), 0);
  t.match(c.violations[3]!.message, /with other content/);
  const before = c.violations.length;
  c.observeCommit(6, 5, 3, (i) => [1, 1, 4][i - 1], 7); // another entry at committed index 3
  t.match(c.violations[before]!.message, /node 6 \(term 5\) considers the term-4 entry at index 3 committed; another node committed a term-2 entry there/);
  for (let i = 0; i < 50; i++) c.observeLeader(i, 99, 0);
  t.equal(c.violations.length, MAX_VIOLATIONS_RECORDED);
});

t.test('leader completeness: a commit of an earlier term learned after a later leader was elected is checked against it', async (t) => {
  const c = new RaftSafetyChecker();
  const log = [ent(1, 1), ent(2, 1), ent(3, 2)];
  c.observeCommit(1, 1, 2, (i) => log[i - 1]?.term, 0);
  // Leaders of terms 3 and 4 elected while only indexes 1-2 are known committed.
  c.checkLeaderLog(2, 3, logOf(log.slice(0, 2)), 1);
  c.checkLeaderLog(3, 4, logOf(log), 1);
  t.equal(c.violations.length, 0, 'both hold everything known committed at their election');
  // Node 1, still in term 2, learns that index 3 (term 2) was committed.
  c.observeCommit(1, 2, 3, (i) => log[i - 1]?.term, 5);
  t.equal(c.violations.length, 1, 'only the leader lacking it is reported');
  t.equal(c.violations[0]!.invariant, 'leader-completeness');
  t.match(c.violations[0]!.message, /leader 2 of term 3 lacks committed index 3 \(its log ends at 2\)/);
  t.equal(c.violations[0]!.atMs, 5, 'reported when the commit is learned');
});

t.test('leader completeness re-check compares the leader\'s log as it was at its election', async (t) => {
  const c = new RaftSafetyChecker();
  const leaderLog = [ent(1, 1), ent(2, 1), ent(3, 3)];
  c.checkLeaderLog(2, 4, logOf(leaderLog), 0);
  leaderLog[2] = ent(3, 2); // the node's log changes later: the record must not follow it
  c.observeCommit(1, 2, 3, (i) => [1, 1, 2][i - 1], 3);
  t.equal(c.violations.length, 1);
  t.match(c.violations[0]!.message, /leader 2 of term 4 has term 3 at committed index 3, committed entry has term 2/);
  c.observeCommit(5, 2, 3, (i) => [1, 1, 2][i - 1], 4);
  t.equal(c.violations.length, 1, 'one report per leader');
});

t.test('state machine safety: two states at one applied index must be equal', async (t) => {
  const c = new RaftSafetyChecker();
  c.observeState(1, 10, 0xabc, 0);
  c.observeState(2, 10, 0xabc, 1);
  c.observeState(3, 11, 0xdef, 1);
  t.equal(c.violations.length, 0);
  c.observeState(3, 10, 0x123, 2);
  t.equal(c.violations.length, 1);
  t.equal(c.violations[0]!.invariant, 'state-machine-safety');
  t.match(c.violations[0]!.message, /node 3's state machine at applied index 10 differs from node 1's/);
  t.same(c.violations[0]!.nodes, [1, 3]);
});
