/**
 * A joiner killed (kill -9) right after the join handshake, before it has applied and
 * persisted any membership of its own, restarts knowing its peers (the members the join told
 * it, kept in its data dir), catches up, and is promoted. It used to restart knowing no peer:
 * its answers to the leader were dropped and it stayed a learner that never became ready.
 */
import t from 'tap';
import { AgentCluster, hasEtcdctl } from '../helpers/agents.js';

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
  await cluster.waitVoters(3);
  t.pass('k3 became ready after the restart and was promoted to voter');
});
