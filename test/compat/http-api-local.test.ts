/**
 * The agent's HTTP port takes changes (keyring rotation, tags) and shows the gossip keys only to
 * the board itself: an
 * agent in a network namespace of its own (test/helpers/netns.ts), reached by the test process
 * over the lab's bridge as a machine on the LAN would, answers reads but refuses changes; a
 * client on the agent's own host (inside its namespace) may make them. Without this, anyone on
 * the LAN could install and use a gossip key of their own.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { AgentCluster, hasEtcdctl } from '../helpers/agents.js';
import { NetLab } from '../helpers/netns.js';

const unavailable = NetLab.unavailable() ?? (hasEtcdctl() ? undefined : 'etcdctl not installed');

/** An HTTP request made by a node process inside the lab host's namespace: [status, body]. */
function fromInside(lab: NetLab, url: string, method: string, body: string): [number, string] {
  const init = method === 'GET' ? `{}` : `{ method: ${JSON.stringify(method)}, body: ${JSON.stringify(body)} }`;
  const script = `fetch(${JSON.stringify(url)}, ${init}).then(async (r) => console.log(JSON.stringify([r.status, await r.text()])), (e) => { console.error(e.message); process.exit(1); })`;
  const r = spawnSync(lab.exec(0)[0]!, [...lab.exec(0).slice(1), process.execPath, '-e', script], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`request from inside failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as [number, string];
}

t.test('changes through the HTTP port only from the board itself', { skip: unavailable ?? false }, async (t) => {
  const lab = NetLab.create(1);
  const cluster = new AgentCluster();
  t.teardown(async () => {
    await cluster.stopAll();
    lab.destroy();
  });
  await cluster.startCluster(['h1'], [{ host: lab.address(0), wrap: lab.exec(0) }]);
  const a = cluster.agents[0]!;
  const base = `http://${lab.address(0)}:${a.ports.http}`;

  const members = await fetch(`${base}/v1/agent/members`);
  t.equal(members.status, 200, 'reads are open to the LAN (members)');
  t.equal((await fetch(`${base}/metrics`)).status, 200, 'and /metrics');

  const tags = await fetch(`${base}/v1/agent/tags`, { method: 'PUT', body: JSON.stringify({ set: { zone: 'evil' } }) });
  t.equal(tags.status, 403, 'a tag change from the LAN is refused');
  const body = (await tags.json()) as { code?: string; error?: string };
  t.equal(body.code, 'NOT_LOCAL');
  t.match(body.error, /taken only from this board itself/);
  const install = await fetch(`${base}/v1/agent/keyring/install`, { method: 'POST', body: JSON.stringify({ key: Buffer.alloc(32, 1).toString('base64') }) });
  t.equal(install.status, 403, 'so is installing a gossip key');
  const listed = await fetch(`${base}/v1/agent/keyring`);
  t.equal(listed.status, 403, 'listing the gossip keys (the secrets themselves) from the LAN is refused too');
  const [kStatus, keys] = fromInside(lab, `${base}/v1/agent/keyring`, 'GET', '');
  t.equal(kStatus, 200, 'the board itself lists them');
  t.match(keys, /"primaryOn": 1/);
  t.notMatch(keys, Buffer.alloc(32, 1).toString('base64'), 'and the LAN\'s key was not installed');

  const [status, text] = fromInside(lab, `${base}/v1/agent/tags`, 'PUT', JSON.stringify({ set: { zone: 'shelf-1' } }));
  t.equal(status, 200, `the board itself may change its tags (to its own bound address): ${text}`);
  const view = (await (await fetch(`${base}/v1/agent/members`)).json()) as Array<{ name: string; meta: { tags?: Record<string, string> } }>;
  t.equal(view.find((m) => m.name === 'h1')?.meta.tags?.zone, 'shelf-1', 'and the change took');
});
