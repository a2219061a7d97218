/**
 * Disaster recovery: after its quorum is lost, the member left can still save a snapshot (the
 * only way to the data for `snapshot restore`), as etcd's can: a maintenance check that waits for
 * a leader first must fall back to the member's own state. (It did not; found by a review.)
 * A watch there is told the member has no leader, as etcd tells it.
 */
import t from 'tap';
import { join } from 'node:path';
import { AgentCluster, etcdctl, hasEtcdctl, leaderAgent } from '../helpers/agents.js';

t.test('snapshot save at the only member left (quorum lost)', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', '50']);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['q1', 'q2', 'q3']);
  t.equal(etcdctl(cluster.endpoints(), ['put', 'k', 'v']).status, 0, 'a put');
  const leader = await leaderAgent(cluster);
  const survivor = cluster.agents.find((a) => a !== leader)!;
  for (const a of cluster.agents) if (a !== survivor) cluster.kill(a);
  await new Promise((r) => setTimeout(r, 2000));
  const ep = cluster.endpoints([survivor]);
  t.equal(etcdctl(ep, ['get', 'k', '--consistency=s', '--print-value-only']).stdout, 'v\n', 'the survivor still has the data');
  const snap = etcdctl(ep, ['snapshot', 'save', join(cluster.root, 'snap.db'), '--command-timeout=20s']);
  t.equal(snap.status, 0, `a snapshot from the survivor: ${snap.stderr.trim().split('\n').pop()}`);
  t.match(snap.stdout, /Snapshot saved at/);
  // etcdctl watch asks for a leader (clientv3's WithRequireLeader): told there is none, as etcd
  // tells it, instead of a watch that stays silent.
  const watch = etcdctl(ep, ['watch', 'k']);
  t.equal(watch.status, 5, 'etcdctl watch exits as against etcd without a leader');
  t.match(watch.stdout + watch.stderr, /no leader/);
});
