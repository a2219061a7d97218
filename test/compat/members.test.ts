/**
 * Membership on real `picloud-node agent` processes: 3 managers and 5 workers on loopback
 * (gossip profile "local" for speed). A worker killed with SIGKILL is reported failed by
 * every other agent within the configured detection bound; restarted, it is alive again
 * with a higher incarnation; a worker stopped with SIGTERM is reported left; a tag change is
 * seen by all; `picloud-node members --json` shows name, address, role, state, incarnation, meta.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { LOCAL_CONFIG, detectionBoundMs } from '../../core/gossip/config.js';
import type { MemberView } from '../../agent/gossip-subsystem.js';
import { AgentCluster, AgentProc, CLI, hasEtcdctl } from '../helpers/agents.js';

process.env.PICLOUD_GOSSIP_PROFILE = 'local';
const N = 8;

type MemberRow = Pick<MemberView, 'name' | 'address' | 'port' | 'role' | 'state' | 'incarnation'> & { meta: { tags?: Record<string, string> } };

/** The CLI's view: `picloud-node members --json` (checked once for its shape). */
function membersCli(a: AgentProc): MemberRow[] {
  const r = spawnSync(process.execPath, [CLI, 'members', '--json', '--http', `127.0.0.1:${a.ports.http}`], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`members --json on ${a.name}: ${r.stderr}`);
  return JSON.parse(r.stdout) as MemberRow[];
}

/**
 * The same list from the HTTP API the CLI reads. Polling loops use this: spawning a Node CLI
 * per agent per poll costs ~0.2 s of CPU each (/usr/bin/time), 1.5 s per round of 7, enough
 * to slow the very gossip being measured.
 */
async function members(a: AgentProc): Promise<MemberRow[]> {
  const r = await fetch(`http://127.0.0.1:${a.ports.http}/v1/agent/members`);
  if (r.status !== 200) throw new Error(`GET /v1/agent/members on ${a.name}: ${r.status}`);
  return (await r.json()) as MemberRow[];
}

async function everyAgent(agents: AgentProc[], pred: (rows: MemberRow[]) => boolean): Promise<boolean> {
  const views = await Promise.all(agents.map((a) => members(a)));
  return views.every(pred);
}

/**
 * Opens `agent`'s event stream (GET /v1/agent/members?watch=1) and resolves once the agent
 * has answered: it subscribes in the same turn as it sends the headers, so no later event is
 * missed. `failedAt` resolves with the wall-clock time (the agent's own event timestamp) at
 * which it reported `name` failed.
 */
async function watchForFail(agent: AgentProc, name: string, signal: AbortSignal): Promise<{ failedAt: Promise<number> }> {
  const r = await fetch(`http://127.0.0.1:${agent.ports.http}/v1/agent/members?watch=1`, { signal });
  if (r.status !== 200 || !r.body) throw new Error(`${agent.name}: event stream answered ${r.status}`);
  const failedAt = (async () => {
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const ev = JSON.parse(buf.slice(0, nl)) as { type: string; name: string; at: string };
        buf = buf.slice(nl + 1);
        if (ev.type === 'fail' && ev.name === name) return Date.parse(ev.at);
      }
    }
    throw new Error(`${agent.name}: event stream ended before ${name} failed`);
  })();
  failedAt.catch(() => undefined); // aborted in teardown when the test fails early
  return { failedAt };
}

async function until(what: string, timeoutMs: number, fn: () => Promise<boolean>): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    try {
      if (await fn()) return Date.now() - start;
    } catch {
      // an agent may be restarting
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

t.test('8 agents: fail, rejoin, leave, metadata', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['m1', 'm2', 'm3']);
  for (let i = 1; i <= N - 3; i++) {
    const w = await cluster.add(`w${i}`);
    w.extraArgs = ['--role', 'worker'];
    cluster.start(w, false);
  }
  for (const a of cluster.agents) await cluster.ready(a);
  const all = (): AgentProc[] => cluster.agents.filter((a) => a.proc && a.proc.exitCode === null && a.proc.signalCode === null);
  await until('every agent sees 8 alive members', 30_000, () => everyAgent(all(), (rows) => rows.filter((m) => m.state === 'alive').length === N));

  const view = membersCli(cluster.agents[0]!);
  const w1row = view.find((m) => m.name === 'w1')!;
  t.equal(w1row.role, 'worker');
  t.equal(view.find((m) => m.name === 'm1')!.role, 'manager');
  t.match(w1row, { name: 'w1', address: '127.0.0.1', state: 'alive' }, 'members --json shows name, address, role, state');
  t.type(w1row.incarnation, 'number');
  t.type(w1row.meta, 'object');

  // kill -9 a worker: everyone else reports it failed within the detection bound. The time
  // is each agent's own event timestamp minus the kill time (one machine, one clock), so the
  // test's polling does not count against the protocol.
  const victim = cluster.agents.find((a) => a.name === 'w1')!;
  const incarnationBefore = w1row.incarnation;
  const bound = detectionBoundMs(LOCAL_CONFIG, N);
  const watchers = new AbortController();
  const survivors = all().filter((a) => a !== victim);
  t.teardown(() => watchers.abort());
  // Every survivor is subscribed before the kill, so none can miss the event.
  const failedAt = (await Promise.all(survivors.map((a) => watchForFail(a, 'w1', watchers.signal)))).map((w) => w.failedAt);
  const killedAt = Date.now();
  cluster.kill(victim, 'SIGKILL');
  let giveUp: NodeJS.Timeout | undefined;
  const detection = await Promise.race([
    Promise.all(failedAt),
    new Promise<never>((_, reject) => {
      giveUp = setTimeout(() => reject(new Error(`w1 not reported failed by all within ${bound + 10_000} ms`)), bound + 10_000);
    }),
  ]).finally(() => clearTimeout(giveUp));
  watchers.abort();
  const took = Math.max(...detection) - killedAt;
  t.equal(detection.length, N - 1, 'a fail event for w1 from each of the other 7 agents');
  t.ok(took <= bound, `w1 reported failed by all 7 after ${took} ms (each agent's event time; detection bound ${bound} ms)`);
  t.ok(await everyAgent(survivors, (rows) => ['failed', 'dead'].includes(rows.find((m) => m.name === 'w1')?.state ?? '')), 'every member list shows w1 failed');

  // Restart it: alive again everywhere, with a higher incarnation.
  cluster.start(victim, false);
  await cluster.ready(victim);
  await until('w1 alive again everywhere', 30_000, () => everyAgent(all(), (rows) => rows.find((m) => m.name === 'w1')?.state === 'alive'));
  const inc = (await members(cluster.agents[0]!)).find((m) => m.name === 'w1')!.incarnation;
  t.ok(inc > incarnationBefore, `incarnation ${incarnationBefore} → ${inc}`);

  // Graceful stop: left, not failed.
  const leaver = cluster.agents.find((a) => a.name === 'w2')!;
  cluster.kill(leaver, 'SIGTERM');
  const stateOfOn = async (name: string): Promise<string[]> =>
    Promise.all(all().map(async (a) => `${a.name}:${(await members(a)).find((m) => m.name === name)?.state}`));
  await until('w2 reported left by all', 20_000, () => everyAgent(all(), (rows) => rows.find((m) => m.name === 'w2')?.state === 'left')).catch(() => undefined);
  t.same(await stateOfOn('w2'), all().map((a) => `${a.name}:left`), 'w2 reported left, not failed, by every other agent');

  // Metadata change on w3 is seen by all.
  const w3 = cluster.agents.find((a) => a.name === 'w3')!;
  const r = await fetch(`http://127.0.0.1:${w3.ports.http}/v1/agent/tags`, { method: 'PUT', body: JSON.stringify({ set: { zone: 'shelf-2' } }) });
  t.equal(r.status, 200);
  const zoneOf = (rows: MemberRow[]): string | undefined => rows.find((m) => m.name === 'w3')?.meta.tags?.zone;
  await until('the tag change reaches everyone', 20_000, () => everyAgent(all(), (rows) => zoneOf(rows) === 'shelf-2')).catch(() => undefined);
  const zones = await Promise.all(all().map(async (a) => `${a.name}:${zoneOf(await members(a))}`));
  t.same(zones, all().map((a) => `${a.name}:shelf-2`), 'tag zone=shelf-2 seen by every agent');

  // Packets that fail authentication are dropped and counted on /metrics; the node keeps going.
  const m1 = cluster.agents[0]!;
  const authFailures = async (): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${m1.ports.http}/metrics`)).text();
    return Number(/picloud_gossip\{counter="authFailures"\} (\d+)/.exec(text)?.[1] ?? NaN);
  };
  const before = await authFailures();
  const sock = createSocket('udp4');
  for (let i = 0; i < 10; i++) await new Promise<void>((r) => sock.send(Buffer.from(`forged packet ${i} `.repeat(4)), m1.ports.gossip, '127.0.0.1', () => r()));
  sock.close();
  await new Promise((r) => setTimeout(r, 300));
  t.equal((await authFailures()) - before, 10, 'ten forged packets dropped and counted as authFailures');
  t.equal((await members(m1)).filter((m) => m.state === 'alive').length, N - 1, 'membership unchanged (w2 left)');
});
