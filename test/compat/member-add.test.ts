/**
 * etcd's way to grow a cluster, on real agents: `etcdctl member add NAME --peer-urls URL`
 * records an unstarted member, and the agent then started at that address (with --join) takes
 * that member's id and records its name. It used to be added a second time, under a new id,
 * beside the unstarted record: a voter that never comes, counted in every quorum (one member
 * plus one added could then commit nothing, not even the join). Voters added that have not
 * started are refused once they would outnumber a quorum, as etcd refuses them. A learner added
 * so stays one until `etcdctl member promote`, which is refused as etcd refuses it, and also
 * where etcd's promotion would leave no quorum. Joins are checked as `member add` is: a peer
 * address in use is refused, and retries of one join add one member, also when every member
 * restarted between the attempts (the join id is kept in the persisted member table).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AgentCluster, AgentProc, etcdctl, freePort, hasEtcdctl, hashKvOfEachAgent, leaderAgent } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';
import { joinCluster, type JoinRequest } from '../../core/net/join.js';
import { derivePeerKey, parseToken } from '../../core/net/token.js';

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

  // A learner added the same way stays one (as in etcd) until `member promote`.
  const m3 = await cluster.add('m3');
  const id3 = memberAdd(t, cluster, [m1, m2], m3, true);
  cluster.start(m3, false);
  await cluster.ready(m3, 20_000);
  const promote = await until('m3 caught up: promoted', () => {
    const r = etcdctl(cluster.endpoints([m1, m2]), ['member', 'promote', id3]);
    return (r.status === 0 || !/in sync with leader/.test(r.stderr)) && r;
  });
  t.equal(promote.status, 0, `member promote m3 ${promote.stderr}`);
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

t.test('a learner added with member add --learner stays one; member promote is checked as etcd checks it, and where etcd would leave no quorum', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['p1', 'p2', 'p3']);
  const voters = [...cluster.agents];
  const ctl = (via: AgentProc[], args: string[]) => etcdctl(cluster.endpoints(via), args);
  const p2Id = BigInt(memberRows(cluster, voters).find((m) => m.name === 'p2')!.ID).toString(16);
  // etcd 3.4.23's answers, word for word.
  t.match(ctl(voters, ['member', 'promote', p2Id]).stderr, /etcdserver: can only promote a learner member\n/, 'a voter');
  t.match(ctl(voters, ['member', 'promote', '1234abcd']).stderr, /etcdserver: member not found/, 'an unknown id');
  const ghost = ctl(voters, ['member', 'add', 'ghost', `--peer-urls=http://127.0.0.1:${await freePort()}`, '--learner']);
  const ghostId = /Member\s+([0-9a-f]+)\s+added/.exec(ghost.stdout)![1]!;
  t.match(ctl(voters, ['member', 'promote', ghostId]).stderr, /etcdserver: can only promote a learner member which is in sync with leader/, 'a learner that never ran');
  t.equal(ctl(voters, ['member', 'remove', ghostId]).status, 0);

  const p4 = await cluster.add('p4');
  const id4 = memberAdd(t, cluster, voters, p4, true);
  cluster.start(p4, false);
  await cluster.ready(p4, 20_000);
  t.equal(ctl(voters, ['put', 'after-p4', 'v']).status, 0);
  await until('p4 has the latest write', () => ctl([p4], ['get', 'after-p4', '--consistency=s', '--print-value-only']).stdout.trim() === 'v');
  // The leader looks for learners to promote every 500 ms (LEASE_TICK_MS): it had 4 chances.
  await new Promise((r) => setTimeout(r, 2_000));
  t.equal(memberRows(cluster, voters).find((m) => m.name === 'p4')?.isLearner, true, 'p4, caught up, is still a learner');

  // p4 then dies, and a voter too: as a voter p4 would leave 2 live of 4, no quorum. etcd 3.4
  // promotes it (its put then times out); picloud refuses.
  const leader = await leaderAgent(cluster);
  const down = voters.find((a) => a !== leader)!;
  const up = voters.filter((a) => a !== down);
  for (const a of [p4, down]) cluster.kill(a);
  for (const a of [p4, down]) await cluster.exited(a);
  const refused = await until('the leader sees p4 gone', () => {
    const r = ctl(up, ['member', 'promote', id4]);
    return !/in sync with leader/.test(r.stderr) && r;
  });
  t.not(refused.status, 0, 'promote refused');
  t.match(refused.stderr, /etcdserver: unhealthy cluster/, "etcd's error for a change that would leave no quorum");
  t.equal(ctl(up, ['put', 'k', 'two of three']).status, 0, 'the cluster still commits');

  // p4 back: 3 live of 4 once promoted.
  cluster.start(p4, false);
  await cluster.ready(p4, 20_000);
  const promoted = await until('p4 promoted', () => {
    const r = ctl(up, ['member', 'promote', id4]);
    return (r.status === 0 || !/in sync with leader|unhealthy cluster/.test(r.stderr)) && r;
  });
  t.equal(promoted.status, 0, `member promote p4 ${promoted.stderr}`);
  t.equal(ctl(up, ['put', 'k', 'three of four']).status, 0, 'p1, p2 and p4 commit');
});

t.test('joins are checked as member add is: a peer address in use is refused; retries of one join add one member', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['q1', 'q2']);
  const [q1, q2] = cluster.agents as [AgentProc, AgentProc];
  const q2Peer = `127.0.0.1:${q2.ports.peer}`;
  t.match(etcdctl(cluster.endpoints(), ['member', 'add', 'dup', `--peer-urls=http://${q2Peer}`]).stderr, /etcdserver: Peer URLs already exists/, "member add: etcd's error");
  const peerKey = derivePeerKey(parseToken(cluster.token).secret);
  const join = (request: JoinRequest, via: AgentProc = q1) => joinCluster({ address: `127.0.0.1:${via.ports.gossip}`, peerKey, request, timeoutMs: 20_000 });
  await t.rejects(join({ name: 'dup', peerAddr: q2Peer, clientAddr: `127.0.0.1:${await freePort()}` }), { message: /peer address .* is member q2's .*Peer URLs already exists/ }, 'a join at q2\'s peer address');

  // Three attempts of one join (one join id), the first answers lost, in flight at once.
  const request = { name: 'r1', peerAddr: `127.0.0.1:${await freePort()}`, clientAddr: `127.0.0.1:${await freePort()}`, joinId: 'a1b2c3d4e5f60718' };
  const answers = await Promise.all([0, 1, 2].map(() => join(request)));
  const ids = answers.map((a) => a.memberId.toString(16));
  t.equal(new Set(ids).size, 1, `one member id in every answer (${ids.join(', ')})`);
  const rows = await until('the extra learners removed', () => {
    const r = memberRows(cluster, cluster.agents);
    return r.filter((m) => m.name === 'r1').length === 1 && r;
  }).catch(() => memberRows(cluster, cluster.agents));
  t.same(rows.filter((m) => m.name === 'r1').map((m) => BigInt(m.ID).toString(16)), [ids[0]], `one member r1: ${describe(rows).join(' ')}`);
  t.equal((await join(request)).memberId.toString(16), ids[0], 'a later retry: the same member');
  // The join id travels in the conf change's context: the other member (leader or not) knows it too.
  t.equal((await join(request, q2)).memberId.toString(16), ids[0], 'a retry through the other member: the same member');

  // Every member restarted since (a power cut in the joiner's retry window): none holds the join
  // id in memory from applying the change; it is in the member table they persisted.
  for (const a of [q1, q2]) cluster.kill(a);
  for (const a of [q1, q2]) await cluster.exited(a);
  for (const a of [q1, q2]) cluster.start(a, 'restart');
  for (const a of [q1, q2]) await cluster.ready(a);
  t.equal((await join(request)).memberId.toString(16), ids[0], 'a retry after every member restarted: the same member, not a new one');
  t.same(memberRows(cluster, cluster.agents).filter((m) => m.name === 'r1').map((m) => BigInt(m.ID).toString(16)), [ids[0]], 'still one member r1, under its first id');
});
