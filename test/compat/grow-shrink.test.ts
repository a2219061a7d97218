/**
 * A cluster grown from one agent to five and shrunk back to one, under the fault workload
 * (linearizability checked): the leader is killed with SIGKILL once three are up (the fourth
 * joins during the election), and the leader is among those removed on the way down (at five
 * and at two members). Every removed member stops by itself; the last one commits alone.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Prng } from '../../core/sim/prng.js';
import { AgentCluster, AgentProc, etcdctl, hasEtcdctl, leaderAgent } from '../helpers/agents.js';
import { FaultWorkload } from '../helpers/fault-workload.js';
import { until } from '../helpers/wait.js';

const TICK_MS = 50;
const ELECTION_TICKS = 10;
const LEADER_BOUND_MS = 3 * 2 * TICK_MS * ELECTION_TICKS;

function memberNames(cluster: AgentCluster, via: AgentProc[]): Map<string, { id: string; learner: boolean }> {
  const r = etcdctl(cluster.endpoints(via), ['member', 'list', '-w', 'json']);
  if (r.status !== 0) throw new Error(`member list: ${r.stderr}`);
  const rows = (JSON.parse(r.stdout) as { members: Array<{ ID: string | number; name?: string; isLearner?: boolean }> }).members;
  return new Map(rows.map((m) => [m.name ?? '', { id: BigInt(m.ID).toString(16), learner: m.isLearner === true }]));
}

/** Waits until `via` lists exactly `names`, all voters. */
async function voters(cluster: AgentCluster, via: AgentProc[], names: string[]): Promise<void> {
  const want = [...names].sort().join(',');
  await until(`voters ${want}`, () => {
    const m = memberNames(cluster, via);
    return [...m.keys()].sort().join(',') === want && [...m.values()].every((x) => !x.learner);
  }, 20_000);
}

/** The agents' leader among `among`, and how long it took to appear. */
async function timedLeader(cluster: AgentCluster, among: AgentProc[]): Promise<{ leader: AgentProc; ms: number }> {
  const started = Date.now();
  const view = Object.assign(Object.create(cluster) as AgentCluster, { agents: among });
  const leader = await leaderAgent(view, 10_000);
  return { leader, ms: Date.now() - started };
}

t.test('grow 1 → 5 and shrink 5 → 1 under load, with a leader kill and leader removals', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', String(TICK_MS), '--election-ticks', String(ELECTION_TICKS), '--snapshot-count', '20', '--snapshot-catchup-entries', '5']);
  t.teardown(() => cluster.stopAll());
  const all = [];
  for (let i = 1; i <= 5; i++) all.push(await cluster.add(`g${i}`));
  const [g1, ...later] = all as [AgentProc, ...AgentProc[]];
  cluster.start(g1, true);
  await cluster.ready(g1);
  cluster.token = readFileSync(join(g1.dataDir, 'token'), 'utf8').trim();
  const workload = new FaultWorkload(all.map((a) => `127.0.0.1:${a.ports.client}`), new Prng(Number(process.env.FAULT_SEED ?? 11)));
  t.teardown(() => workload.close());
  const timings: string[] = [];

  let members: AgentProc[] = [g1];
  for (const a of later) {
    a.joinVia = members[members.length - 1];
    cluster.start(a, false);
    if (members.length === 3) {
      // The fourth joins while the leader of three is killed.
      const { leader } = await timedLeader(cluster, members);
      cluster.kill(leader);
      await cluster.exited(leader);
      const after = await timedLeader(cluster, members.filter((m) => m !== leader));
      timings.push(`kill ${leader.name}: ${after.ms} ms`);
      t.ok(after.ms <= LEADER_BOUND_MS, `a leader ${after.ms} ms after ${leader.name} was killed`);
      cluster.start(leader, false);
    }
    members = [...members, a];
    for (const m of members) await cluster.ready(m, 30_000);
    await voters(cluster, members, members.map((m) => m.name));
  }
  t.equal(members.length, 5, 'grown to five voters');

  // Shrink: the leader first (at 5), then followers, then the leader of the last two.
  while (members.length > 1) {
    const { leader } = await timedLeader(cluster, members);
    const removeLeader = members.length === 5 || members.length === 2;
    const victim = removeLeader ? leader : members.find((m) => m !== leader)!;
    const rest = members.filter((m) => m !== victim);
    const id = memberNames(cluster, rest).get(victim.name)!.id;
    const r = etcdctl(cluster.endpoints(rest), ['member', 'remove', id]);
    t.equal(r.status, 0, `remove ${victim.name}${victim === leader ? ' (leader)' : ''} from ${members.length} ${r.stderr}`);
    t.equal(await cluster.exited(victim, 15_000), 0, `${victim.name} stops by itself`);
    members = rest;
    const after = await timedLeader(cluster, members);
    timings.push(`remove ${victim.name}: leader ${after.leader.name} ${after.ms} ms`);
    t.ok(after.ms <= LEADER_BOUND_MS, `a leader among ${members.length} within ${LEADER_BOUND_MS} ms (${after.ms})`);
    await voters(cluster, members, members.map((m) => m.name));
  }
  await workload.stop(all.indexOf(members[0]!));
  t.comment(timings.join('; '));
  t.equal(etcdctl(cluster.endpoints(members), ['put', 'alone', 'yes']).status, 0, `${members[0]!.name}, alone, commits`);
  workload.check(t, 50);
});
