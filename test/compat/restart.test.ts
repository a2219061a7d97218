/**
 * The applied MVCC state reaches the disk on its own (in batches PERSIST_INTERVAL_MS apart),
 * not only at a clean stop: after kill -9 a member restarts from it and re-applies only the
 * Raft log entries written after the last batch, never the whole log.
 */
import t from 'tap';
import { Etcd3 } from 'etcd3';
import { PERSIST_INTERVAL_MS } from '../../core/api/manager-node.js';
import { AgentCluster, hasEtcdctl, scrapeMetrics } from '../helpers/agents.js';

const PUTS = 200;

t.test('kill -9 after writes: the restart re-applies only what came after the last applied-state batch', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['r1']);
  const a = cluster.agents[0]!;
  const client = new Etcd3({ hosts: cluster.endpoints() });
  t.teardown(() => client.close());
  for (let i = 0; i < PUTS; i++) await client.put(`restart/${i}`).value('v');
  await new Promise((r) => setTimeout(r, 5 * PERSIST_INTERVAL_MS));
  const before = await scrapeMetrics(a.ports.http);
  t.ok(before.get('picloud_raft_applied_index')! >= PUTS, `applied ${before.get('picloud_raft_applied_index')} entries`);

  cluster.kill(a);
  await cluster.exited(a);
  cluster.start(a, true);
  await cluster.ready(a);
  const after = await scrapeMetrics(a.ports.http);
  const reapplied = after.get('picloud_raft_entries_applied_total')!;
  t.ok(reapplied < PUTS / 10, `re-applied ${reapplied} entries after the restart (the log holds more than ${PUTS})`);
  t.equal(Number((await client.getAll().prefix('restart/').count())), PUTS, 'every acknowledged put is there');
});
