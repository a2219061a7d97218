/**
 * `picloud-node agent` without --bind or --advertise, as on a Pi (`--join manager01 --token T`):
 * it binds every interface and advertises the address of the interface its default route leaves
 * through, even with a second private address on another interface. Three agents, each in a
 * network namespace of its own with a LAN address, a default route and a second address. A
 * machine with two private addresses and no default route refuses to guess and says so.
 */
import t from 'tap';
import { AgentCluster, etcdctl, hasEtcdctl } from '../helpers/agents.js';
import { NetLab } from '../helpers/netns.js';
import { until } from '../helpers/wait.js';

const unavailable = NetLab.unavailable() ?? (hasEtcdctl() ? undefined : 'etcdctl not installed');

t.test('agents bound to every interface advertise their default route\'s address', { skip: unavailable ?? false }, async (t) => {
  const lab = NetLab.create(4);
  const cluster = new AgentCluster();
  t.teardown(async () => {
    await cluster.stopAll();
    lab.destroy();
  });
  for (const i of [0, 1, 2, 3]) lab.addSecondInterface(i, `172.29.${i}.1/24`);
  for (const i of [0, 1, 2]) lab.addDefaultRoute(i);
  for (const i of [0, 1, 2]) {
    const a = await cluster.add(`w${i + 1}`, { host: lab.address(i), wrap: lab.exec(i) });
    a.bindAll = true;
  }
  await cluster.startCluster([]);

  const r = etcdctl(cluster.endpoints(), ['member', 'list', '-w', 'json']);
  t.equal(r.status, 0, `member list: ${r.stderr}`);
  const members = (JSON.parse(r.stdout) as { members: Array<{ name: string; peerURLs: string[]; clientURLs: string[] }> }).members;
  for (const a of cluster.agents) {
    const m = members.find((x) => x.name === a.name);
    t.same(m?.peerURLs, [`http://${a.host}:${a.ports.peer}`], `${a.name} is reached at its LAN address, not 172.29.x or loopback`);
    t.same(m?.clientURLs, [`http://${a.host}:${a.ports.client}`], `${a.name}'s client URL too`);
    t.match(a.log.join(''), new RegExp(`"address":"${a.host.replace(/\./g, '\\.')}","msg":"advertising this address`), `${a.name} logs the address it chose`);
  }
  const first = cluster.agents[0]!;
  const gossip = (await (await fetch(`http://${first.host}:${first.ports.http}/v1/agent/members`)).json()) as Array<{ name: string; address: string; state: string }>;
  t.same(
    gossip.map((g) => [g.name, g.address, g.state]).sort(),
    cluster.agents.map((a) => [a.name, a.host, 'alive']).sort(),
    'gossip has every member alive at its LAN address',
  );
  t.equal(etcdctl(cluster.endpoints(), ['put', 'k', 'v']).status, 0, 'the cluster commits');

  // Host 3: a LAN address and a second private one, no default route: which one is meant?
  const w4 = await cluster.add('w4', { host: lab.address(3), wrap: lab.exec(3) });
  w4.bindAll = true;
  cluster.start(w4, true);
  const code = await cluster.exited(w4);
  // Its stderr may still be draining when the exit is reported.
  await until('w4 logs why', () => /give --advertise/.test(w4.log.join('')), 5_000).catch(() => undefined);
  const err = w4.log.join('');
  t.not(code, 0, 'it refuses to start');
  t.match(err, new RegExp(`several addresses could be advertised.*${lab.address(3).replace(/\./g, '\\.')} \\(eth0\\).*172\\.29\\.3\\.1 \\(eth1\\).*give --advertise ADDR`), 'naming the candidates and the flag');
});
