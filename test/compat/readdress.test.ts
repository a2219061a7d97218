/**
 * Members whose addresses change, on real agents. A Pi that reboots may come back with another
 * DHCP lease: it must be reached at its new address without an operator (its handshake tells
 * every member it dials where it is now, and it records the addresses through Raft), whether it
 * was a follower or the leader. `etcdctl member update` records a stopped member's new peer URL
 * before it starts there, as with etcd.
 */
import t from 'tap';
import { AgentCluster, AgentProc, etcdctl, freePort, hasEtcdctl, hashKvOfEachAgent, raftStatus } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';
import { OWN_RECORD_CHECK_MS } from '../../core/api/manager-node.js';

interface Member {
  ID: string | number;
  name: string;
  peerURLs?: string[];
  clientURLs?: string[];
  isLearner?: boolean;
}

function members(endpoints: string): Member[] {
  const r = etcdctl(endpoints, ['member', 'list', '-w', 'json']);
  if (r.status !== 0) throw new Error(`member list: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { members: Member[] }).members;
}

function hexId(m: Member): string {
  return BigInt(m.ID).toString(16);
}

/** Stops `a` (SIGTERM, or SIGKILL for a power cut) and starts it again at `host` with new peer and client ports. */
async function restartElsewhere(cluster: AgentCluster, a: AgentProc, host: string, signal: NodeJS.Signals): Promise<void> {
  cluster.kill(a, signal);
  await cluster.exited(a);
  a.host = host;
  a.ports = { ...a.ports, peer: await freePort(), client: await freePort() };
  a.log.length = 0;
  cluster.start(a, false);
  await cluster.ready(a);
}

function recordedAt(m: Member | undefined, a: AgentProc): boolean {
  return m !== undefined && m.peerURLs?.[0] === `http://${a.host}:${a.ports.peer}` && m.clientURLs?.[0] === `http://${a.host}:${a.ports.client}` && m.isLearner !== true;
}

/** Writes `key` through `via`, then what `a` reads of it from its own state (serializable) once it has it. */
async function writtenThenReadOn(cluster: AgentCluster, via: AgentProc[], a: AgentProc, key: string): Promise<string> {
  const put = etcdctl(cluster.endpoints(via), ['put', key, `${key}-value`]);
  if (put.status !== 0) throw new Error(`put ${key}: ${put.stderr}`);
  return until(`${a.name} serves ${key}`, () => etcdctl(cluster.endpoints([a]), ['get', key, '--consistency=s', '--print-value-only']).stdout.trim() || undefined);
}

async function readyStatus(a: AgentProc): Promise<number> {
  return (await fetch(`http://${a.host}:${a.ports.http}/ready`)).status;
}

const skip = hasEtcdctl() ? false : 'etcdctl not installed';

t.test('a member restarted at a new address is reached there and recorded, follower or leader', { skip }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['d1', 'd2', 'd3']);
  const [d1, d2, d3] = cluster.agents as [AgentProc, AgentProc, AgentProc];

  await restartElsewhere(cluster, d3, '127.0.0.3', 'SIGTERM');
  t.equal(await readyStatus(d3), 200, `d3 ready again at 127.0.0.3 (peer port ${d3.ports.peer})`);
  t.equal(await writtenThenReadOn(cluster, [d1, d2], d3, 'after-d3-moved'), 'after-d3-moved-value', 'd3 applies what the others commit after its move');
  const rec3 = await until('d3 recorded at its new addresses', () => members(cluster.endpoints([d1])).find((m) => recordedAt(m, d3)));
  t.equal(rec3.name, 'd3', 'member list names the new peer and client URLs');
  // Its log lines reach us through a pipe, maybe after the others applied the change.
  t.ok(
    await until('d3 logged proposing and recording its new record', () => /recording this member's addresses and quota.*recorded this member's addresses and quota/s.test(d3.log.join(''))),
    'd3 proposed its new record itself and logged it (what the no-change check below looks for)',
  );
  const seen = await until('gossip sees d3 at 127.0.0.3', async () => {
    const list = (await (await fetch(`http://${d1.host}:${d1.ports.http}/v1/agent/members`)).json()) as Array<{ name: string; address: string; state: string }>;
    return list.find((m) => m.name === 'd3' && m.address === '127.0.0.3' && m.state === 'alive');
  });
  t.ok(seen, 'gossip on d1 has d3 alive at its new address');

  // The leader moves, hard: leadership goes to d2 (not d1, whose gossip port the restart's
  // --join names), then d2 is killed and comes back elsewhere.
  const id2 = hexId(members(cluster.endpoints([d1])).find((m) => m.name === 'd2')!);
  t.equal(etcdctl(cluster.endpoints(), ['move-leader', id2]).status, 0, 'leadership moved to d2');
  t.equal(await until('d2 reports leading', async () => ((await raftStatus(d2))?.role === 'leader' ? 'leader' : undefined), 5_000), 'leader', 'd2 leads');
  await restartElsewhere(cluster, d2, '127.0.0.4', 'SIGKILL');
  t.equal(await readyStatus(d2), 200, 'the killed leader is ready again at 127.0.0.4');
  t.equal(await writtenThenReadOn(cluster, [d2], d1, 'through-moved-d2'), 'through-moved-d2-value', 'a write through its new client address commits');
  t.equal(await writtenThenReadOn(cluster, [d1], d2, 'after-d2-moved'), 'after-d2-moved-value', 'd2 applies what the others commit');
  const rec2 = await until('d2 recorded at its new addresses', () => members(cluster.endpoints([d3])).find((m) => recordedAt(m, d2)));
  t.equal(rec2.name, 'd2', 'd2 recorded at its new addresses');
  const all = members(cluster.endpoints());
  t.equal(all.length, 3, 'three members');
  t.ok(all.every((m) => m.isLearner !== true), 'all three are still voters');
  const { revisions, hashes } = await hashKvOfEachAgent(cluster);
  t.equal(new Set(revisions).size, 1, `same revision everywhere: ${revisions.join(', ')}`);
  t.equal(new Set(hashes).size, 1, 'same hashkv everywhere');

  // Started again where it is recorded now: nothing to change, it just serves.
  cluster.kill(d3, 'SIGTERM');
  await cluster.exited(d3);
  d3.log.length = 0;
  d1.log.length = 0;
  cluster.start(d3, false);
  await cluster.ready(d3);
  t.equal(await writtenThenReadOn(cluster, [d1, d2], d3, 'after-d3-restart'), 'after-d3-restart-value', 'd3 restarted where it is recorded serves');
  // Its record is compared every OWN_RECORD_CHECK_MS: give it two checks to propose wrongly.
  await new Promise((r) => setTimeout(r, 2 * OWN_RECORD_CHECK_MS + 500));
  t.notMatch(d3.log.join(''), /record(ed|ing) this member's addresses and quota/, 'a member at its recorded addresses and quota proposes no change');
  t.notMatch(d1.log.join(''), /member record updated/, 'and no member applied a change to a record');
});

t.test('etcdctl member update: a stopped member gets its new peer URL, then starts there', { skip }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['u1', 'u2', 'u3']);
  const [u1, u2, u3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
  const id3 = hexId(members(cluster.endpoints([u1])).find((m) => m.name === 'u3')!);
  cluster.kill(u3, 'SIGTERM');
  await cluster.exited(u3);
  const peer = await freePort();
  const rest = cluster.endpoints([u1, u2]);
  const upd = etcdctl(rest, ['member', 'update', id3, `--peer-urls=http://127.0.0.5:${peer}`]);
  t.equal(upd.status, 0, `member update: ${upd.stderr}`);
  t.match(upd.stdout, new RegExp(`Member\\s+${id3} updated in cluster`));
  t.same(members(rest).find((m) => hexId(m) === id3)?.peerURLs, [`http://127.0.0.5:${peer}`], 'the new peer URL is on record');

  const unknown = etcdctl(rest, ['member', 'update', 'abcdef', '--peer-urls=http://127.0.0.6:2380']);
  t.not(unknown.status, 0, 'an unknown member is refused');
  t.match(unknown.stderr, /member not found/, 'an unknown member: etcd\'s error');
  const taken = etcdctl(rest, ['member', 'update', id3, `--peer-urls=http://${u1.host}:${u1.ports.peer}`]);
  t.not(taken.status, 0, 'a taken peer URL is refused');
  t.match(taken.stderr, /Peer URLs already exists/, 'another member\'s peer URL: etcd\'s error');

  u3.host = '127.0.0.5';
  u3.ports = { ...u3.ports, peer };
  u3.log.length = 0;
  cluster.start(u3, false);
  await cluster.ready(u3);
  t.equal(await writtenThenReadOn(cluster, [u1, u2], u3, 'after-update'), 'after-update-value', 'u3 started at the updated address catches up');
  const rec = await until('u3 recorded with its client URL too', () => members(rest).find((m) => recordedAt(m, u3)));
  t.equal(rec.name, 'u3', 'and records its new client URL itself');
});

t.test('every member restarted at a new address at once: they find each other through gossip', { skip }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['g1', 'g2', 'g3']);
  const [g1, g2, g3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
  t.equal(etcdctl(cluster.endpoints(), ['put', 'before-the-move', 'kept']).status, 0, 'written before');
  // A power cut and new DHCP leases for every board: no member is where the others recorded it,
  // so only gossip (whose seeds, --join, name the first board's new address) can bring them together.
  for (const a of cluster.agents) cluster.kill(a, 'SIGKILL');
  for (const a of cluster.agents) await cluster.exited(a);
  for (const [i, a] of cluster.agents.entries()) {
    a.host = `127.0.0.${5 + i}`;
    a.ports = { ...a.ports, peer: await freePort(), client: await freePort() };
    a.log.length = 0;
  }
  for (const a of cluster.agents) cluster.start(a, false);
  for (const a of cluster.agents) await cluster.ready(a, 30_000);
  t.equal(await readyStatus(g3), 200, 'all three ready again');
  t.equal(etcdctl(cluster.endpoints([g2]), ['get', 'before-the-move', '--print-value-only']).stdout.trim(), 'kept', 'what was written before is there');
  t.equal(await writtenThenReadOn(cluster, [g1], g3, 'after-the-move'), 'after-the-move-value', 'the cluster commits, every member applies');
  for (const a of cluster.agents) {
    const rec = await until(`${a.name} recorded at its new addresses`, () => members(cluster.endpoints([g1])).find((m) => recordedAt(m, a)));
    t.equal(rec.name, a.name, `${a.name} recorded at ${a.host}`);
  }
});

t.test('a member away while others move and join catches up by snapshot and knows where they all are', { skip }, async (t) => {
  // Snapshots every 20 entries, 5 kept behind: the entries that moved s3 and added a learner are
  // compacted away before s1 returns, so only the snapshot can tell it.
  const cluster = new AgentCluster(['--tick-ms', '50', '--snapshot-count', '20', '--snapshot-catchup-entries', '5']);
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['s1', 's2', 's3']);
  const [s1, s2, s3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
  const id2 = hexId(members(cluster.endpoints([s1])).find((m) => m.name === 's2')!);
  t.equal(etcdctl(cluster.endpoints(), ['move-leader', id2]).status, 0, 'leadership to s2 (s1 is about to stop)');
  cluster.kill(s1, 'SIGTERM');
  await cluster.exited(s1);

  await restartElsewhere(cluster, s3, '127.0.0.3', 'SIGTERM');
  await until('s3 recorded on s2', () => members(cluster.endpoints([s2])).find((m) => recordedAt(m, s3)));
  const learnerUrl = `http://127.0.0.9:${await freePort()}`;
  const added = etcdctl(cluster.endpoints([s2, s3]), ['member', 'add', 'l4', `--peer-urls=${learnerUrl}`, '--learner']);
  t.equal(added.status, 0, `a learner added while s1 is away: ${added.stderr}`);
  for (let i = 0; i < 120; i++) {
    const r = etcdctl(cluster.endpoints([s2]), ['put', `filler-${i}`, 'v']);
    if (r.status !== 0) throw new Error(`put: ${r.stderr}`);
  }

  s1.log.length = 0;
  cluster.start(s1, false);
  await cluster.ready(s1);
  t.equal(await writtenThenReadOn(cluster, [s2], s1, 'after-s1-returned'), 'after-s1-returned-value', 's1 caught up');
  const installed = await until('s1 logs a snapshot installed', () => /installed a snapshot received from the leader/.test(s1.log.join('')) || undefined, 5_000).catch(() => false);
  t.ok(installed, 's1 caught up from a snapshot');
  const onS1 = members(cluster.endpoints([s1]));
  const onS2 = members(cluster.endpoints([s2]));
  const view = (list: Member[]): string[] => list.map((m) => `${m.name || '(unstarted)'} ${String(m.peerURLs)} ${String(m.clientURLs)} ${m.isLearner === true ? 'learner' : 'voter'}`).sort();
  t.same(view(onS1), view(onS2), 's1\'s member table is the leader\'s');
  t.ok(recordedAt(onS1.find((m) => m.name === 's3'), s3), 's1 has s3 at its new addresses');
  t.same(onS1.find((m) => m.peerURLs?.[0] === learnerUrl)?.isLearner, true, 's1 knows the learner added while it was away');
});
