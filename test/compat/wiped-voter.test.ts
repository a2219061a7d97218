/**
 * A voter whose data dir was lost (a reflashed SD card) and that is started again with --join
 * under its old name and address must not take its old member id back: it forgot its vote and
 * its log, and a voter that forgot them can elect a leader lacking committed writes (it votes
 * again in a term it voted in, and counts toward commit quorums for entries it no longer
 * holds). etcd refuses such a start too ("member has already been bootstrapped"). The way
 * back is to remove it and join again: that works at once, through a member that may not yet
 * have applied the removal.
 */
import { rmSync } from 'node:fs';
import t from 'tap';
import { AgentCluster, AgentProc, etcdctl, hasEtcdctl } from '../helpers/agents.js';

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

  // Removed through w2 and joined through w1 right after: w1 must not answer from a member
  // table that has not applied the removal yet.
  rmSync(w3.dataDir, { recursive: true, force: true });
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
