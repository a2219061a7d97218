/**
 * Membership churn on real agents under the fault workload (linearizability checked): each
 * round removes a voter (the leader every other round; in some rounds while it is stopped with
 * SIGSTOP, or while another member is killed with SIGKILL right after the removal is
 * proposed), waits until the removed member stops by itself, wipes its data dir and joins it
 * again at the same address (a removed member's address reused by a new one), every other round
 * after `etcdctl member add` of it (the etcd way: it takes that member's id). At the end no
 * acknowledged write is lost, every member has the same key space, and no agent died of
 * anything but the test's own kills.
 */
import { rmSync } from 'node:fs';
import t from 'tap';
import { Prng } from '../../core/sim/prng.js';
import { AgentCluster, AgentProc, etcdctl, etcdctlAsync, hasEtcdctl, hashKvOfEachAgent, raftStatus } from '../helpers/agents.js';
import { FaultWorkload } from '../helpers/fault-workload.js';
import { until } from '../helpers/wait.js';

const ROUNDS = 6;
const TEST_DEADLINE_MS = 75_000;
const TICK_MS = 50;
const ELECTION_TICKS = 10;
/** Three election timeouts at their randomized maximum (2 × ticks). */
const LEADER_BOUND_MS = 3 * 2 * TICK_MS * ELECTION_TICKS;

const alive = (a: AgentProc): boolean => a.proc !== undefined && a.proc.exitCode === null && a.proc.signalCode === null;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function memberIds(cluster: AgentCluster, via: AgentProc): Map<string, string> {
  const r = etcdctl(cluster.endpoints([via]), ['member', 'list', '-w', 'json']);
  if (r.status !== 0) throw new Error(`member list via ${via.name}: ${r.stderr}`);
  const rows = (JSON.parse(r.stdout) as { members: Array<{ ID: string | number; name: string }> }).members;
  return new Map(rows.map((m) => [m.name, BigInt(m.ID).toString(16)]));
}

/** The leader among live agents, and how long it took to find one. */
async function leaderAmong(agents: AgentProc[], timeoutMs: number): Promise<{ leader: AgentProc; ms: number }> {
  const started = Date.now();
  const leader = await until('a leader', async () => {
    const st = await Promise.all(agents.map((a) => (alive(a) ? raftStatus(a) : undefined)));
    return agents[st.findIndex((s) => s?.role === 'leader')];
  }, timeoutMs);
  return { leader, ms: Date.now() - started };
}

/**
 * 'agree' once every member, asked itself, gives the same member list (ids and names) and
 * leader (`endpoint status`); what they said otherwise, after 5 s.
 */
async function agreement(cluster: AgentCluster): Promise<string> {
  type Status = Array<{ Status: { leader?: string | number } }>;
  const view = (a: AgentProc): string => {
    const ids = [...memberIds(cluster, a).entries()].sort().join(' ');
    const st = JSON.parse(etcdctl(cluster.endpoints([a]), ['endpoint', 'status', '-w', 'json']).stdout || '[]') as Status;
    return `${ids} leader ${BigInt(st[0]?.Status.leader ?? 0).toString(16)}`;
  };
  let seen: string[] = [];
  const ok = await until('members agree', () => {
    seen = cluster.agents.map(view);
    return new Set(seen).size === 1;
  }, 5_000).catch(() => false);
  return ok ? 'agree' : seen.join(' | ');
}

/** Lines an agent wrote that are not its JSON log at level < fatal: an uncaught error's stack, a fatal. */
function crashLines(a: AgentProc): string[] {
  return a.log.join('').split('\n').filter((l) => {
    if (l.trim() === '' || l.startsWith('[test: ')) return false;
    try {
      return (JSON.parse(l) as { level?: number }).level! >= 60;
    } catch {
      return true;
    }
  });
}

t.test('remove a voter (the leader, a stopped one), wipe it, join it again; under load and kills', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const started = Date.now();
  const cluster = new AgentCluster(['--tick-ms', String(TICK_MS), '--election-ticks', String(ELECTION_TICKS), '--snapshot-count', '20', '--snapshot-catchup-entries', '5']);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['c1', 'c2', 'c3']);
  const rng = new Prng(Number(process.env.FAULT_SEED ?? 7));
  const workload = new FaultWorkload(cluster.agents.map((a) => `127.0.0.1:${a.ports.client}`), rng);
  t.teardown(() => workload.close());

  const actions: string[] = [];
  const leaderTimes: number[] = [];
  const exits: string[] = [];
  const views: string[] = [];
  for (let round = 0; round < ROUNDS && Date.now() - started < TEST_DEADLINE_MS; round++) {
    await sleep(300);
    const { leader } = await leaderAmong(cluster.agents, 10_000);
    const followers = cluster.agents.filter((a) => a !== leader);
    const victim = round % 2 === 0 ? leader : rng.pick(followers);
    const [via, third] = rng.shuffle(cluster.agents.filter((a) => a !== victim)) as [AgentProc, AgentProc];
    const id = memberIds(cluster, via).get(victim.name)!;
    const stop = round % 3 === 2;
    const kill = round % 3 === 1;
    if (stop) cluster.kill(victim, 'SIGSTOP');
    const removal = etcdctlAsync(cluster.endpoints([via]), ['member', 'remove', id]);
    if (kill) {
      await sleep(rng.int(150));
      cluster.kill(third);
      await cluster.exited(third);
      await sleep(300);
      third.log.push('[test: killed with SIGKILL]\n');
      cluster.start(third, false);
    }
    let r = await removal;
    // A removal cut off by the kill may or may not have been applied: ask again until it is.
    await until(`${victim.name} out of the member list`, async () => {
      if (!memberIds(cluster, via).has(victim.name)) return true;
      if (r.status !== 0) r = await etcdctlAsync(cluster.endpoints([via]), ['member', 'remove', id]);
      return false;
    }, 20_000);
    if (stop) cluster.kill(victim, 'SIGCONT');
    exits.push(`${victim.name}:${await cluster.exited(victim, 15_000).catch(() => 'running')}`);
    const remaining = cluster.agents.filter((a) => a !== victim);
    const after = await leaderAmong(remaining, 10_000);
    leaderTimes.push(after.ms);
    actions.push(`remove ${victim.name}${victim === leader ? ' (leader)' : ''}${stop ? ' stopped' : ''}${kill ? `, kill ${third.name}` : ''}: leader ${after.leader.name} after ${after.ms} ms`);

    if (alive(victim)) cluster.kill(victim);
    rmSync(victim.dataDir, { recursive: true, force: true });
    victim.log.push('[test: data dir wiped, joining again]\n');
    // Every other round the etcd way: `member add` first (a voter: three of four started).
    if (round % 2 === 1) {
      const add = etcdctl(cluster.endpoints([via]), ['member', 'add', victim.name, `--peer-urls=http://127.0.0.1:${victim.ports.peer}`]);
      t.equal(add.status, 0, `member add ${victim.name} ${add.stderr}`);
    }
    victim.joinVia = via;
    cluster.start(victim, false);
    for (const a of cluster.agents) await cluster.ready(a, 20_000);
    await cluster.waitVoters(3, 20_000);
    views.push(await agreement(cluster));
  }
  t.same(views.filter((v) => v !== 'agree'), [], `each member, asked itself, lists the same members and leader after every round (${views.length} rounds)`);
  await workload.stop();
  t.ok(actions.length >= 4, `${actions.length} rounds: ${actions.join('; ')}`);
  t.same(exits.filter((e) => !e.endsWith(':0')), [], `every removed member stopped by itself, cleanly (${exits.join(', ')})`);
  t.ok(leaderTimes.every((ms) => ms <= LEADER_BOUND_MS), `a leader within ${LEADER_BOUND_MS} ms of each removal: ${leaderTimes.join(', ')} ms`);

  const end = await hashKvOfEachAgent(cluster, [], 20_000);
  t.equal(new Set(end.revisions).size, 1, `members at one revision (${end.revisions.join(', ')})`);
  t.equal(new Set(end.hashes).size, 1, `with the same key space (${end.hashes.join(', ')})`);
  workload.check(t, 50);
  for (const a of cluster.agents) t.same(crashLines(a), [], `${a.name} logged no uncaught error or fatal`);
});
