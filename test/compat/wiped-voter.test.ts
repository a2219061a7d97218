/**
 * A voter whose data dir was lost (a reflashed SD card) and that is started again with --join
 * under its old name and address must not take its old member id back: it forgot its vote and
 * its log, and a voter that forgot them can elect a leader lacking committed writes (it votes
 * again in a term it voted in, and counts toward commit quorums for entries it no longer
 * holds). etcd refuses such a start too ("member has already been bootstrapped"). The way
 * back is to remove it and join again: that works at once, through a member that may not yet
 * have applied the removal. A learner that lost its data dir joins again under a new id: under
 * its old one the leader counted entries as on it that its empty log lacked, and it never
 * caught up (nor became ready).
 */
import { rmSync } from 'node:fs';
import t from 'tap';
import { AgentCluster, AgentProc, etcdctl, hasEtcdctl, hashKvOfEachAgent, raftStatus } from '../helpers/agents.js';
import { SimpleKv } from '../helpers/kv-client.js';
import { until } from '../helpers/wait.js';

type MemberRow = { ID: string | number; name: string; isLearner?: boolean };

function members(cluster: AgentCluster, via: AgentProc[]): MemberRow[] {
  const r = etcdctl(cluster.endpoints(via), ['member', 'list', '-w', 'json']);
  if (r.status !== 0) throw new Error(`member list: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { members: MemberRow[] }).members;
}

const idOf = (rows: MemberRow[], name: string): string | undefined => {
  const m = rows.find((x) => x.name === name);
  return m === undefined ? undefined : BigInt(m.ID).toString(16);
};

t.test('a voter with a wiped data dir cannot rejoin as itself; removed first, it joins as a new member', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['w1', 'w2', 'w3']);
  const [w1, w2, w3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
  const rest = [w1, w2];
  const oldId = idOf(members(cluster, rest), 'w3')!;
  t.equal(etcdctl(cluster.endpoints(rest), ['put', 'before', 'wipe']).status, 0);

  cluster.kill(w3);
  await cluster.exited(w3);
  rmSync(w3.dataDir, { recursive: true, force: true });
  w3.log.length = 0;
  cluster.start(w3, false);
  const code = await cluster.exited(w3, 30_000).catch(() => 'still running');
  t.equal(code, 1, 'the wiped voter is refused and stops');
  t.match(w3.log.join(''), /already a voter/, 'it says why');
  t.equal(idOf(members(cluster, rest), 'w3'), oldId, 'its old record stays until someone removes it');

  // Removed through w2 and started again as the refusal says (on the data dir it left), joined
  // through w1 right after: w1 must not answer from a member table that has not applied the
  // removal yet.
  t.match(etcdctl(cluster.endpoints([w2]), ['member', 'remove', oldId]).stdout, /removed from cluster/);
  w3.log.length = 0;
  w3.joinVia = w1;
  cluster.start(w3, false);
  await cluster.ready(w3, 30_000);
  await cluster.waitVoters(3);
  const newId = idOf(members(cluster, rest), 'w3');
  t.not(newId, oldId, `w3 joined as a new member (${newId})`);
  t.equal(etcdctl(cluster.endpoints([w3]), ['get', 'before', '--print-value-only']).stdout, 'wipe\n', 'and caught up');
});

t.test('a learner with a wiped data dir (stopped mid catch-up) joins again and catches up', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['l1', 'l2']);
  const [l1, l2] = cluster.agents as [AgentProc, AgentProc];
  const kv = new SimpleKv(`127.0.0.1:${l1.ports.client}`, 10_000);
  t.teardown(() => kv.close());
  const fill = async (from: number, n: number): Promise<void> => {
    for (let i = from; i < from + n; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => kv.put(`key${i + k}`, 'x'.repeat(2048))));
  };
  await fill(0, 2000);
  const l3 = await cluster.add('l3');
  cluster.start(l3, false);
  // Stopped once it has applied part of the log: the leader has counted entries as on it.
  await until('l3 applying', async () => ((await raftStatus(l3))?.applied ?? 0) > 50, 20_000);
  cluster.kill(l3, 'SIGSTOP');
  await fill(2000, 300); // far enough ahead that it is not promoted
  t.equal(members(cluster, [l1, l2]).find((m) => m.name === 'l3')?.isLearner, true, 'l3 is a learner, stopped mid catch-up');
  cluster.kill(l3);
  await cluster.exited(l3);
  rmSync(l3.dataDir, { recursive: true, force: true });
  l3.log.length = 0;
  cluster.start(l3, false);
  await cluster.ready(l3, 20_000).catch((e: Error) => t.fail(e.message.slice(0, 300)));
  await cluster.waitVoters(3, 20_000).catch((e: Error) => t.fail(e.message));
  const end = await hashKvOfEachAgent(cluster, [], 10_000);
  t.equal(new Set(end.hashes).size, 1, `l3 caught up: one key space (${end.hashes.join(', ')}; revisions ${end.revisions.join(', ')})`);
});
