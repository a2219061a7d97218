/**
 * etcd's way to grow a cluster, on real agents: `etcdctl member add NAME --peer-urls URL`
 * records an unstarted member, and the agent then started at that address (with --join) takes
 * that member's id and records its name. It used to be added a second time, under a new id,
 * beside the unstarted record: a voter that never comes, counted in every quorum (one member
 * plus one added could then commit nothing, not even the join). Voters added that have not
 * started are refused once they would outnumber a quorum, as etcd refuses them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AgentCluster, AgentProc, etcdctl, freePort, hasEtcdctl, hashKvOfEachAgent } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';

type MemberRow = { ID: string | number; name: string; isLearner?: boolean; peerURLs?: string[] };

function memberRows(cluster: AgentCluster, via: AgentProc[]): MemberRow[] {
  const r = etcdctl(cluster.endpoints(via), ['member', 'list', '-w', 'json']);
  if (r.status !== 0) throw new Error(`member list: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { members: MemberRow[] }).members;
}

/** `etcdctl member add` for agent `a` at its peer address: the id etcdctl printed. */
function memberAdd(t: Test, cluster: AgentCluster, via: AgentProc[], a: AgentProc, learner: boolean): string {
  const r = etcdctl(cluster.endpoints(via), ['member', 'add', a.name, `--peer-urls=http://127.0.0.1:${a.ports.peer}`, ...(learner ? ['--learner'] : [])]);
  t.equal(r.status, 0, `member add ${a.name}${learner ? ' --learner' : ''} ${r.stderr}`);
  return /Member\s+([0-9a-f]+)\s+added/.exec(r.stdout)![1]!;
}

/** The member list once every member has a name (a member records its own once it runs), or as it is after 15 s. */
function named(cluster: AgentCluster, via: AgentProc[]): Promise<MemberRow[]> {
  const rows = (): MemberRow[] => memberRows(cluster, via);
  return until('every member named', () => rows().every((m) => (m.name ?? '') !== '') && rows(), 15_000).catch(() => rows());
}

const describe = (rows: MemberRow[]): string[] => rows.map((m) => `${BigInt(m.ID).toString(16)}:${m.name || 'unstarted'}:${m.isLearner === true ? 'learner' : 'voter'}`).sort();

t.test('member add, then the agent started at that address: one member, named, a voter', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  const m1 = await cluster.add('m1');
  cluster.start(m1, true);
  await cluster.ready(m1);
  cluster.token = readFileSync(join(m1.dataDir, 'token'), 'utf8').trim();
  t.equal(etcdctl(cluster.endpoints([m1]), ['put', 'k', 'one member']).status, 0);

  // A voter added to a one-member cluster: no quorum until it runs.
  const m2 = await cluster.add('m2');
  const id2 = memberAdd(t, cluster, [m1], m2, false);
  cluster.start(m2, false);
  await cluster.ready(m2, 20_000);
  const two = await named(cluster, [m1]);
  t.equal(two.length, 2, `two members: ${describe(two).join(' ')}`);
  t.ok(two.some((m) => BigInt(m.ID).toString(16) === id2 && m.name === 'm2' && m.isLearner !== true), 'm2 is the voter member add made, named');
  t.equal(etcdctl(cluster.endpoints([m1, m2]), ['put', 'k', 'two members']).status, 0, 'the two commit');

  // A learner added the same way is promoted once caught up.
  const m3 = await cluster.add('m3');
  const id3 = memberAdd(t, cluster, [m1, m2], m3, true);
  cluster.start(m3, false);
  await cluster.ready(m3, 20_000);
  await cluster.waitVoters(3, 20_000);
  const three = await named(cluster, [m1, m2, m3]);
  t.equal(three.length, 3, `three members: ${describe(three).join(' ')}`);
  t.ok(three.some((m) => BigInt(m.ID).toString(16) === id3 && m.name === 'm3'), 'm3 under the id member add gave it, named');
  t.equal(etcdctl(cluster.endpoints(), ['put', 'k', 'three members']).status, 0);
  const end = await hashKvOfEachAgent(cluster, [], 10_000);
  t.equal(new Set(end.hashes).size, 1, `one key space on the three (${end.hashes.join(', ')})`);
});

t.test('member add of voters that have not started: refused once they would outnumber a quorum, as etcd refuses it; learners count toward no quorum', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['s1', 's2', 's3']);
  const ctl = (args: string[]) => etcdctl(cluster.endpoints(), args);
  // Addresses nobody listens at (a typo, a board that never comes).
  const ghosts: string[] = [];
  for (let i = 0; i < 2; i++) {
    const add = ctl(['member', 'add', `ghost${i}`, `--peer-urls=http://127.0.0.1:${await freePort()}`]);
    t.equal(add.status, 0, `voter ghost${i} added (${3 + i + 1} voters, 3 started) ${add.stderr}`);
    ghosts.push(/Member\s+([0-9a-f]+)\s+added/.exec(add.stdout)![1]!);
  }
  const third = ctl(['member', 'add', 'ghost2', `--peer-urls=http://127.0.0.1:${await freePort()}`]);
  t.not(third.status, 0, 'a third is refused: 3 started of 6 voters would be no quorum');
  t.match(third.stderr, /re-configuration failed due to not enough started members/, "etcd's error");
  t.equal(ctl(['put', 'k', 'v']).status, 0, 'the cluster still commits');
  for (const id of ghosts) t.match(ctl(['member', 'remove', id]).stdout, /removed from cluster/, `the unstarted ${id} can be removed`);
  t.equal(memberRows(cluster, cluster.agents).length, 3);

  // Learners count toward no quorum: with two unstarted learners and one voter down, the two
  // live voters of three still commit (counted as voters, it would be two of five).
  for (let i = 0; i < 2; i++) t.equal(ctl(['member', 'add', `learner${i}`, `--peer-urls=http://127.0.0.1:${await freePort()}`, '--learner']).status, 0, `learner${i} added`);
  const s3 = cluster.agents[2]!;
  cluster.kill(s3);
  await cluster.exited(s3);
  const put = etcdctl(cluster.endpoints(cluster.agents.slice(0, 2)), ['put', 'k', 'two of three voters']);
  t.equal(put.status, 0, `two voters of three and two learners commit ${put.stderr}`);
});
