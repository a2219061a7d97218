/**
 * A leader stopped cleanly (SIGTERM) hands leadership to a caught-up voter before it exits,
 * as etcd does, so the survivors have a leader at once instead of after an election timeout.
 */
import t from 'tap';
import { AgentCluster, AgentProc, hasEtcdctl } from '../helpers/agents.js';

const TICK_MS = 50;
const ELECTION_TICKS = 20;

async function raftStatus(a: AgentProc): Promise<{ id: string; lead: string; term: number }> {
  const r = await fetch(`http://127.0.0.1:${a.ports.http}/v1/raft/status`);
  return (await r.json()) as { id: string; lead: string; term: number };
}

t.test('SIGTERM on the leader: leadership is handed over before it stops', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', String(TICK_MS), '--election-ticks', String(ELECTION_TICKS)]);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['g1', 'g2', 'g3']);
  const statuses = await Promise.all(cluster.agents.map(raftStatus));
  const leaderId = statuses[0]!.lead;
  const leader = cluster.agents[statuses.findIndex((s) => s.id === leaderId)]!;
  const survivors = cluster.agents.filter((a) => a !== leader);

  const stoppedAt = Date.now();
  cluster.kill(leader, 'SIGTERM');
  let newLeader = '';
  while (Date.now() - stoppedAt < 10_000) {
    const views = await Promise.all(survivors.map(raftStatus));
    if (views.every((v) => v.lead !== '0' && v.lead !== leaderId && v.lead === views[0]!.lead)) {
      newLeader = views[0]!.lead;
      break;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  const ms = Date.now() - stoppedAt;
  t.equal(await cluster.exited(leader), 0, 'the old leader exited cleanly');
  const handoff = /"to":"([0-9a-f]+)","ms":\d+,"msg":"handed leadership over before stopping"/.exec(leader.log.join(''));
  t.ok(handoff, 'it logged the handoff');
  t.equal(newLeader, handoff?.[1], `both survivors follow the member it handed over to (${ms} ms after SIGTERM; election timeout ${TICK_MS * ELECTION_TICKS} ms or more)`);
});
