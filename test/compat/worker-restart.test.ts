/**
 * A worker restarted by its unit the same way every time — with neither --join nor --token —
 * once its data dir shows it joined (its gossip keyring and the peers it saw alive), as a
 * Consul or Serf agent restarts on its keyring file and snapshot. Before, a worker needed
 * `--join HOST --token T` on every start and refused to start without them. Real agent
 * processes: one manager, one worker, killed with SIGKILL.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentCluster, type AgentProc } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';

process.env.PICLOUD_GOSSIP_PROFILE = 'local'; // the agents inherit it: a death is noticed in seconds

interface Row {
  name: string;
  state: string;
  incarnation: number;
}

/** `a`'s member list, by name (empty while it does not answer). */
async function view(a: AgentProc): Promise<Map<string, Row>> {
  try {
    const r = await fetch(`http://${a.host}:${a.ports.http}/v1/agent/members`, { signal: AbortSignal.timeout(1_000) });
    const list = (await r.json()) as Row[];
    return new Map(list.map((m) => [m.name, m]));
  } catch {
    return new Map();
  }
}

async function readyStatus(a: AgentProc): Promise<number> {
  try {
    return (await fetch(`http://${a.host}:${a.ports.http}/ready`, { signal: AbortSignal.timeout(1_000) })).status;
  } catch {
    return 0;
  }
}

/** The worker's incarnation in the manager's list once it is alive there above `above`. */
function aliveAbove(m: AgentProc, w: AgentProc, above: number, what: string): Promise<number> {
  return until(what, async () => {
    const row = (await view(m)).get(w.name);
    return row !== undefined && row.state === 'alive' && row.incarnation > above ? row.incarnation : undefined;
  }, 20_000);
}

function notAlive(m: AgentProc, w: AgentProc, what: string): Promise<true> {
  return until(what, async () => {
    const state = (await view(m)).get(w.name)?.state;
    return (state !== undefined && state !== 'alive') || undefined;
  }, 20_000);
}

t.test('a worker that joined before restarts with neither --join nor --token: after kill -9, after its manager restarted at the same address, after a clean stop', async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  const m = await cluster.add('m');
  cluster.start(m, true);
  await cluster.ready(m);
  cluster.token = readFileSync(join(m.dataDir, 'token'), 'utf8').trim();
  const w = await cluster.add('w');
  w.extraArgs = ['--role', 'worker'];
  t.ok(!cluster.args(w, 'restart').includes('--join') && !cluster.args(w, 'restart').includes('--token'), 'the restart command line has neither flag');

  // A first start with neither flag is refused, clearly, before anything else happens.
  cluster.start(w, 'restart');
  t.equal(await cluster.exited(w), 2, 'a first start without --join exits 2 (a configuration error)');
  t.match(w.log.join(''), /a worker joins an existing cluster: --join HOST\[:PORT\] --token T is required/, 'saying what it needs');

  cluster.start(w, false); // --join m --token T
  await cluster.ready(w);
  const first = await aliveAbove(m, w, -1, 'the manager to list the worker alive');
  await until('the worker to have saved its peers', () => {
    try {
      return (JSON.parse(readFileSync(join(w.dataDir, 'gossip', 'peers.json'), 'utf8')) as string[]).includes(`${m.host}:${m.ports.gossip}`) || undefined;
    } catch {
      return undefined;
    }
  }, 10_000);

  // kill -9 the worker; once the manager has noticed, restart it with neither flag.
  cluster.kill(w);
  await cluster.exited(w);
  await notAlive(m, w, 'the manager to notice the worker is gone');
  cluster.start(w, 'restart');
  await cluster.ready(w);
  t.equal(await readyStatus(w), 200, "the restarted worker's /ready is 200 (it sees a live peer: it rejoined)");
  const second = await aliveAbove(m, w, first, 'the manager to list the restarted worker alive');
  t.ok(second > first, `the manager lists it alive with a new incarnation (${first} -> ${second}): it heard the new process`);

  // Both killed; the manager restarts (same address and ports, neither flag), then the worker.
  cluster.kill(w);
  await cluster.exited(w);
  cluster.kill(m);
  await cluster.exited(m);
  cluster.start(m, 'restart');
  await cluster.ready(m);
  cluster.start(w, 'restart');
  await cluster.ready(w);
  t.equal(await readyStatus(w), 200, "after the manager's restart, the restarted worker's /ready is 200");
  const third = await aliveAbove(m, w, second, 'the restarted manager to list the restarted worker alive');
  t.ok(third > second, `the restarted manager lists it alive (incarnation ${third})`);
  t.equal((await view(w)).get('m')?.state, 'alive', 'and the worker lists the manager alive');

  // Stopped by its unit (SIGTERM: it leaves gossip, as at a reboot), it comes back the same way:
  // a leave is not for good here (Consul would need rejoin_after_leave), a removal is.
  cluster.kill(w, 'SIGTERM');
  t.equal(await cluster.exited(w), 0, 'the worker stops cleanly');
  await notAlive(m, w, 'the manager to list the worker left');
  cluster.start(w, 'restart');
  await cluster.ready(w);
  const fourth = await aliveAbove(m, w, third, 'the manager to list the worker alive after its stop and restart');
  t.ok(fourth > third, `after a clean stop too (incarnation ${fourth})`);
});
