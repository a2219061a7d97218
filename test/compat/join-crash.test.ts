/**
 * A joiner killed (kill -9) right after the join handshake, before it has applied and
 * persisted any membership of its own, restarts knowing its peers (the members the join told
 * it, kept in its data dir), catches up, and is promoted. It used to restart knowing no peer:
 * its answers to the leader were dropped and it stayed a learner that never became ready.
 */
import t from 'tap';
import { AgentCluster, etcdctl, hasEtcdctl } from '../helpers/agents.js';

t.test('a joiner killed right after joining restarts and becomes a voter', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['k1', 'k2']);
  const k3 = await cluster.add('k3');
  cluster.start(k3, false);
  const joinedBy = Date.now() + 15_000;
  // Kill as soon as it says it joined: the window before it persists what it applies is short.
  while (!k3.log.join('').includes('joined the cluster as a learner')) {
    if (Date.now() > joinedBy) throw new Error(`k3 did not join: ${k3.log.join('').slice(-1000)}`);
    await new Promise((r) => setImmediate(r));
  }
  cluster.kill(k3);
  await cluster.exited(k3);
  cluster.start(k3, false);
  await cluster.ready(k3, 20_000);
  const ready = await fetch(`http://127.0.0.1:${k3.ports.http}/ready`);
  t.equal(ready.status, 200, 'k3 answers /ready after the restart');
  await cluster.waitVoters(3);
  const list = JSON.parse(etcdctl(cluster.endpoints(), ['member', 'list', '-w', 'json']).stdout) as { members: Array<{ name: string; isLearner?: boolean }> };
  t.same(list.members.map((m) => `${m.name}:${m.isLearner === true ? 'learner' : 'voter'}`).sort(), ['k1:voter', 'k2:voter', 'k3:voter'], 'k3 was promoted to voter');
  // It replicates: a write through the others reaches k3's own state (a serializable read on it).
  t.equal(etcdctl(cluster.endpoints(cluster.agents.slice(0, 2)), ['put', 'after-join-crash', 'v']).status, 0);
  const deadline = Date.now() + 10_000;
  let seen = '';
  while (Date.now() < deadline) {
    seen = etcdctl(cluster.endpoints([k3]), ['get', 'after-join-crash', '--print-value-only', '--consistency=s']).stdout;
    if (seen === 'v\n') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(seen, 'v\n', 'k3 applies writes made after its restart');
});
