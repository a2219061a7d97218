/**
 * A join retried through a member that learned of the first attempt's member only from a
 * snapshot (it was down while the learner was added, and the entry was compacted away) gets
 * that member. The join id is in the conf change's context, which a member applying the entry
 * sees, but the member table a snapshot carries dropped it: such a member took the retry for a
 * learner joining again, removed the first member and added another under a new id.
 */
import t from 'tap';
import { AgentCluster, AgentProc, etcdctl, etcdctlAsync, freePort, hasEtcdctl } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';
import { joinCluster, type JoinRequest } from '../../core/net/join.js';
import { derivePeerKey, parseToken } from '../../core/net/token.js';

const SNAPSHOT_COUNT = 20;
const SNAPSHOT_CATCHUP_ENTRIES = 5;
/** Entries written while s3 is down: past the compaction window, so it catches up by snapshot. */
const LATE_KEYS = 40;

t.test('a join retried through a member that caught up by snapshot gets the member its first attempt added', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', '50', '--snapshot-count', String(SNAPSHOT_COUNT), '--snapshot-catchup-entries', String(SNAPSHOT_CATCHUP_ENTRIES)]);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['s1', 's2', 's3']);
  const [s1, s2, s3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
  cluster.kill(s3, 'SIGTERM');
  await cluster.exited(s3);

  const peerKey = derivePeerKey(parseToken(cluster.token).secret);
  const join = (request: JoinRequest, via: AgentProc) => joinCluster({ address: `127.0.0.1:${via.ports.gossip}`, peerKey, request, timeoutMs: 20_000 });
  const request = { name: 'r1', peerAddr: `127.0.0.1:${await freePort()}`, clientAddr: `127.0.0.1:${await freePort()}`, joinId: '0f1e2d3c4b5a6978' };
  const first = (await join(request, s1)).memberId.toString(16);

  const others = cluster.endpoints([s1, s2]);
  // A few at a time; one that fails (a timeout on a loaded machine) only means fewer entries:
  // the wait for s3's snapshot below is what the test needs of them.
  for (let i = 0; i < LATE_KEYS; i += 4) {
    const batch = await Promise.all(Array.from({ length: 4 }, (_, j) => etcdctlAsync(others, ['put', `late/${i + j}`, 'v'])));
    for (const p of batch) if (p.status !== 0) t.comment(`a put failed: ${p.stderr.trim()}`);
  }
  cluster.start(s3, 'restart');
  await cluster.ready(s3);
  await until('s3 to install a snapshot', () => s3.log.join('').includes('installed a snapshot received from the leader'), 20_000);

  t.equal((await join(request, s3)).memberId.toString(16), first, 'the retry through s3: the first member, not a new one');
  const r = etcdctl(cluster.endpoints([s1, s2, s3]), ['member', 'list', '-w', 'json']);
  t.equal(r.status, 0, `member list ${r.stderr}`);
  const r1 = (JSON.parse(r.stdout) as { members: Array<{ ID: string | number; name: string }> }).members.filter((m) => m.name === 'r1');
  t.same(r1.map((m) => BigInt(m.ID).toString(16)), [first], 'one member r1, under its first id');
});
