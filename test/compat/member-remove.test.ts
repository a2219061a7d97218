/**
 * `etcdctl member remove` on real agents: the removed member learns it (from its own log, or
 * from a peer's authenticated notice when it never saw its removal commit), stops, and refuses
 * to start again from the same data dir; the rest of the cluster keeps serving. A member
 * removed while it is stopped (SIGSTOP) learns it once it runs again; one removed while it is
 * down learns it from a peer when it starts again. With a voter down, removing a live one is
 * refused, as etcd refuses it. A member removed through its own client port answers the call
 * before it stops.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { AgentCluster, AgentProc, etcdctl, hasEtcdctl, leaderAgent } from '../helpers/agents.js';

function memberId(cluster: AgentCluster, via: AgentProc, name: string): string {
  const r = etcdctl(cluster.endpoints([via]), ['member', 'list', '-w', 'json']);
  const m = (JSON.parse(r.stdout) as { members: Array<{ ID: string | number; name: string }> }).members.find((x) => x.name === name);
  if (!m) throw new Error(`${name} not in the member list`);
  return BigInt(m.ID).toString(16);
}

t.test('a removed member stops, and refuses its old data dir', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['r1', 'r2', 'r3', 'r4', 'r5']);
  const [r1, r2, r3, r4, r5] = cluster.agents as [AgentProc, AgentProc, AgentProc, AgentProc, AgentProc];
  const rest = cluster.endpoints([r1, r2]);
  const removeMember = (name: string) => t.match(etcdctl(rest, ['member', 'remove', memberId(cluster, r1, name)]).stdout, /removed from cluster/, `${name} removed`);

  removeMember('r5');
  t.equal(await cluster.exited(r5), 0, 'the removed member exits by itself, cleanly');
  t.match(r5.log.join(''), /this member was removed from the cluster; stopping/);

  // Stopped, r4 cannot read what the leader sends it; whether the removal's commit reached its
  // socket before the leader dropped it depends on timing, so either way of learning counts.
  cluster.kill(r4, 'SIGSTOP');
  removeMember('r4');
  cluster.kill(r4, 'SIGCONT');
  t.equal(await cluster.exited(r4), 0, 'a member removed while stopped exits once it runs again');
  t.match(r4.log.join(''), /"how":"(applied its own removal|member [0-9a-f]+ says so)"/);

  // Down while removed, r3 has no trace of its removal in its log: only a peer can tell it.
  // Its marker cannot be written (its temporary file's name is taken by a directory).
  cluster.kill(r3);
  t.equal(await cluster.exited(r3), null, 'r3 killed');
  removeMember('r3');
  mkdirSync(join(r3.dataDir, 'removed.tmp'));
  r3.log.length = 0;
  cluster.start(r3, 'restart');
  t.equal(await cluster.exited(r3, 30_000), 1, 'a member removed while down exits once started again, failing: its data dir could not be marked');
  t.match(r3.log.join(''), /"how":"member [0-9a-f]+ says so"/, 'told by a peer (it never saw its removal commit)');
  t.match(r3.log.join(''), /could not mark the data dir as removed: remove it by hand/);

  r5.log.length = 0;
  cluster.start(r5, false);
  t.equal(await cluster.exited(r5), 1, 'restarted on its old data dir, it refuses to start');
  t.match(r5.log.join(''), /was removed from the cluster: remove the data dir, then join again/);

  t.equal(etcdctl(rest, ['put', 'after', 'removal']).status, 0, 'the two remaining members still commit writes');
  const members = JSON.parse(etcdctl(rest, ['member', 'list', '-w', 'json']).stdout) as { members: Array<{ name: string }> };
  t.same(members.members.map((m) => m.name).sort(), ['r1', 'r2']);
});

t.test('removing the leader: it applies its own removal and exits; the others elect and commit', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['l1', 'l2', 'l3']);
  type Status = Array<{ Status: { header: { member_id: string | number }; leader?: string | number } }>;
  const status = JSON.parse(etcdctl(cluster.endpoints(), ['endpoint', 'status', '-w', 'json']).stdout) as Status;
  const leaderId = BigInt(status[0]!.Status.leader ?? 0).toString(16);
  const leader = cluster.agents.find((a) => memberId(cluster, a, a.name) === leaderId)!;
  const others = cluster.agents.filter((a) => a !== leader);
  t.match(etcdctl(cluster.endpoints(others), ['member', 'remove', leaderId]).stdout, /removed from cluster/);
  t.equal(await cluster.exited(leader), 0, `the removed leader (${leader.name}) exits cleanly`);
  t.match(leader.log.join(''), /"how":"applied its own removal"/);
  // A put sent to a follower during the election would be forwarded to the gone leader and
  // time out (as in etcd): wait for the new leader first.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const views = JSON.parse(etcdctl(cluster.endpoints(others), ['endpoint', 'status', '-w', 'json']).stdout || '[]') as Status;
    // During the election there is no leader, and etcdctl's JSON leaves a zero field out.
    const leads = new Set(views.map((v) => BigInt(v.Status.leader ?? 0).toString(16)));
    if (views.length === 2 && leads.size === 1 && !leads.has(leaderId) && !leads.has('0')) break;
    if (Date.now() > deadline) throw new Error(`no new leader among ${others.map((a) => a.name).join(', ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const put = etcdctl(cluster.endpoints(others), ['put', 'after', 'leader-removal']);
  t.equal(put.status, 0, `the two others elect a leader and commit ${put.stderr.slice(-400)}`);
});

t.test('a member left as the only voter (its partner removed) restarts and serves', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  // Replacing a board: v joins, w is removed, and nothing is written to the KV store after v
  // joined. On restart v re-applies the membership changes after its last KV write: its applied
  // index must have moved past them, or it replays "v joins as a learner" onto a configuration
  // where v is the only voter (fatal: removing the last voter).
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  const w = await cluster.add('w');
  const v = await cluster.add('v');
  cluster.start(w, true);
  await cluster.ready(w);
  cluster.token = readFileSync(join(w.dataDir, 'token'), 'utf8').trim();
  t.equal(etcdctl(cluster.endpoints([w]), ['put', 'before', 'v joins']).status, 0, 'a write before v joins (the last one before the restart)');
  cluster.start(v, false);
  await cluster.ready(v);
  await cluster.waitVoters(2);
  t.match(etcdctl(cluster.endpoints([v]), ['member', 'remove', memberId(cluster, v, 'w')]).stdout, /removed from cluster/, 'w removed');
  t.equal(await cluster.exited(w), 0, 'w exits once removed');
  cluster.kill(v, 'SIGTERM');
  t.equal(await cluster.exited(v), 0, 'v stops cleanly');
  v.log.length = 0;
  cluster.start(v, false);
  await cluster.ready(v);
  t.equal(etcdctl(cluster.endpoints([v]), ['put', 'after', 'restart']).status, 0, 'v, alone, commits');
  t.notMatch(v.log.join(''), /removing the last voter/, 'no membership change replayed twice');
});

t.test('with a voter down, removing a live voter is refused (it would leave no quorum); removing the down one is not', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  // etcd's strict reconfiguration check (on by default): "etcdserver: unhealthy cluster".
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['u1', 'u2', 'u3']);
  const [u1, u2, u3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
  const [id2, id3] = [memberId(cluster, u1, 'u2'), memberId(cluster, u1, 'u3')];
  cluster.kill(u3);
  await cluster.exited(u3);
  await new Promise((r) => setTimeout(r, 500)); // u1 sees its connection to u3 closed
  const refused = etcdctl(cluster.endpoints([u1]), ['member', 'remove', id2]);
  t.not(refused.status, 0, 'removing u2 (live) while u3 is down is refused');
  t.match(refused.stderr, /etcdserver: unhealthy cluster/, "etcd's error");
  t.equal(etcdctl(cluster.endpoints([u1]), ['put', 'still', 'two of three']).status, 0, 'u1 and u2 still commit');
  t.match(etcdctl(cluster.endpoints([u1]), ['member', 'remove', id3]).stdout, /removed from cluster/, 'removing u3 (down) is allowed');
  t.equal(etcdctl(cluster.endpoints([u1, u2]), ['put', 'after', 'u3 removed']).status, 0, 'and the two commit');
});

t.test('member remove of the member etcdctl is connected to: answered, then it stops', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  // A peer may tell the member it was removed before it applies the removal itself: it stopped
  // at once, and the call was cut off ("transport is closing"). etcd answers it first.
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['s1', 's2', 's3']);
  const lead = await leaderAgent(cluster);
  const self = cluster.agents.find((a) => a !== lead)!;
  const r = etcdctl(cluster.endpoints([self]), ['member', 'remove', memberId(cluster, self, self.name)]);
  t.equal(r.status, 0, `answered through ${self.name} itself ${r.stderr}`);
  t.match(r.stdout, /removed from cluster/);
  t.equal(await cluster.exited(self), 0, 'and it stops, cleanly');
});
