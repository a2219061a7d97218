/**
 * Worker tokens on real agent processes: `picloud-node token --worker` on a manager prints a
 * token that carries the cluster's gossip key and not its secret. A worker joins with it and
 * holds nothing that speaks Raft and cannot change the cluster's gossip keyring; a manager given
 * it is refused at once; a worker given the cluster token is told it holds more than it needs. Rotating the gossip key retires the worker
 * token: a worker started with the old one does not join, `token --worker` prints the new one,
 * and the same worker joins with that.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AgentCluster, CLI, type AgentProc } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';
import { NODE_FLAGS } from '../../agent/node-flags.js';
import { generateKey } from '../../core/gossip/keyring/index.js';
import { derivePeerKey, parseToken } from '../../core/net/token.js';
import { clusterKeyringAuthority } from '../../agent/gossip-subsystem.js';

process.env.PICLOUD_GOSSIP_PROFILE = 'local'; // the agents inherit it

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...NODE_FLAGS, CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function memberState(m: AgentProc, name: string): Promise<string | undefined> {
  try {
    const r = await fetch(`http://${m.host}:${m.ports.http}/v1/agent/members`, { signal: AbortSignal.timeout(1_000) });
    return ((await r.json()) as Array<{ name: string; state: string }>).find((x) => x.name === name)?.state;
  } catch {
    return undefined;
  }
}

async function keyring(m: AgentProc, op: 'install' | 'use' | 'remove', key: string): Promise<number> {
  return (await keyringResult(m, op, key)).status;
}

/** A cluster-wide keyring change asked of `a` over its HTTP API: the status and the result. */
async function keyringResult(a: AgentProc, op: 'install' | 'use' | 'remove', key: string): Promise<{ status: number; body: { ok?: number; errors?: unknown[] } }> {
  const r = await fetch(`http://${a.host}:${a.ports.http}/v1/agent/keyring/${op}`, { method: 'POST', body: JSON.stringify({ key }), signal: AbortSignal.timeout(10_000) });
  return { status: r.status, body: (await r.json()) as { ok?: number; errors?: unknown[] } };
}

/** Every file under `dir`, as bytes. */
function filesUnder(dir: string): Array<{ path: string; bytes: Buffer }> {
  const out: Array<{ path: string; bytes: Buffer }> = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push({ path: p, bytes: readFileSync(p) });
  }
  return out;
}

t.test('a worker token joins workers only, carries no secret, cannot change the keyring, and is retired by a gossip key rotation', async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  const m = await cluster.add('m');
  cluster.start(m, true);
  await cluster.ready(m);
  const clusterToken = readFileSync(join(m.dataDir, 'token'), 'utf8').trim();
  const printed = cli(['token', '--worker', '--data-dir', m.dataDir]);
  t.equal(printed.status, 0, `token --worker exits 0 ${printed.stderr}`);
  const workerToken = printed.stdout.trim();
  t.match(workerToken, new RegExp(`^PCW1-${parseToken(clusterToken).digest}-[0-9a-f]{136}$`), "a PCW1 token naming the cluster's digest");
  const { secret } = parseToken(clusterToken);
  const peerKey = derivePeerKey(secret);
  t.notOk(m.log.join('').includes(Buffer.from(secret).toString('hex')), "the bootstrap manager's log does not hold the cluster secret");
  t.match(m.log.join(''), /join token: picloud-node token --data-dir/, 'it says how to get the token');
  t.notOk(workerToken.includes(Buffer.from(secret).toString('hex')) || workerToken.includes(peerKey.toString('hex')), 'it carries neither the secret nor the peer key');

  const w = await cluster.add('w');
  w.extraArgs = ['--role', 'worker'];
  cluster.token = workerToken;
  cluster.start(w, false);
  await cluster.ready(w);
  t.equal(await until('the manager to list the worker alive', async () => (await memberState(m, 'w')) === 'alive' || undefined, 20_000), true, 'a worker joins with the worker token');
  const leaked = filesUnder(w.dataDir).filter((f) => [clusterToken, Buffer.from(secret).toString('hex')].some((s) => f.bytes.includes(s)) || f.bytes.includes(peerKey) || f.bytes.includes(peerKey.toString('hex')));
  t.same(leaked.map((f) => f.path), [], "nothing in the worker's data dir holds the cluster secret or the peer key");
  t.notMatch(w.log.join(''), /holds the cluster token/, 'no notice for a worker token');
  const fromWorker = await fetch(`http://${w.host}:${w.ports.http}/v1/agent/keyring/install`, { method: 'POST', body: JSON.stringify({ key: generateKey() }) });
  t.equal(fromWorker.status, 400, "a worker's cluster-wide keyring change is refused");
  t.match(await fromWorker.text(), /GOSSIP_KEYRING_UNSIGNED[\s\S]*made on a manager/, 'saying it is made on a manager');
  t.equal(readFileSync(join(w.dataDir, 'gossip', 'keyring-authority'), 'utf8').trim(), clusterKeyringAuthority(clusterToken).publicKey.toString('hex'), "the worker keeps the managers' public keyring key for its restarts");
  const onWorker = cli(['token', '--worker', '--data-dir', w.dataDir]);
  t.same([onWorker.status, onWorker.stdout], [2, ''], "token --worker on a worker's data dir exits 2 and prints no token");
  t.match(onWorker.stderr, /no token in .*is it the --data-dir of a manager/, 'saying it needs a manager');

  // A manager given the worker token is refused before it makes anything.
  const x = await cluster.add('x');
  cluster.start(x, false);
  t.equal(await cluster.exited(x), 2, 'a manager started with a worker token exits 2 (a configuration error)');
  t.match(x.log.join(''), /--token: this is a worker token: it joins workers only \(--role worker\); a manager needs the cluster token/, 'saying what it needs');

  // A worker given the cluster token still joins, and is told what it holds.
  const wc = await cluster.add('wc');
  wc.extraArgs = ['--role', 'worker'];
  cluster.token = clusterToken;
  cluster.start(wc, false);
  await cluster.ready(wc);
  t.match(wc.log.join(''), /this worker holds the cluster token, which also speaks Raft .*picloud-node token --worker/, 'a worker given the cluster token is told a worker token is enough');
  const fromClusterWorker = await keyringResult(wc, 'install', generateKey());
  t.same([fromClusterWorker.status, fromClusterWorker.body.ok, fromClusterWorker.body.errors], [200, 3, []], 'it holds the secret: its signed change is taken by all three, the worker-token worker included');

  // Rotation: a new key installed, used and the old one removed, cluster-wide.
  const oldKey = readFileSync(join(m.dataDir, 'gossip', 'keyring.json'), 'utf8');
  const next = generateKey();
  t.same([await keyring(m, 'install', next), await keyring(m, 'use', next)], [200, 200], 'a new gossip key installed and used');
  t.equal(await keyring(m, 'remove', (JSON.parse(oldKey) as { primary: string }).primary), 200, 'the old key removed');
  const rotated = cli(['token', '--worker', '--data-dir', m.dataDir]).stdout.trim();
  t.not(rotated, workerToken, 'token --worker now prints another token');
  t.ok(rotated.includes(Buffer.from(next, 'base64').toString('hex')), 'carrying the new key');

  const late = await cluster.add('late');
  late.extraArgs = ['--role', 'worker'];
  cluster.token = workerToken;
  cluster.start(late, false);
  t.ok(await until('the old token to fail its join', () => /gossip: join failed/.test(late.log.join('')) || undefined, 20_000), 'a worker with the retired token does not join');
  const listed = (await (await fetch(`http://${m.host}:${m.ports.http}/v1/agent/members`)).json()) as Array<{ name: string; state: string }>;
  t.ok(listed.some((x) => x.name === 'w') && !listed.some((x) => x.name === 'late' && x.state === 'alive'), 'the manager (answering) does not list it alive');
  cluster.kill(late, 'SIGTERM');
  await cluster.exited(late);
  cluster.token = rotated;
  cluster.start(late, false);
  await cluster.ready(late);
  t.equal(await until('the manager to list it alive', async () => (await memberState(m, 'late')) === 'alive' || undefined, 20_000), true, 'the same worker joins with the new token (what the failed start left is replaced)');
  t.equal(await memberState(m, 'w'), 'alive', 'the worker that joined before the rotation is still alive (it got the new key)');
  const wKeys = ((await (await fetch(`http://${w.host}:${w.ports.http}/v1/agent/keyring?local=1`)).json()) as { keys: Array<{ key: string; primaryOn: number }> }).keys;
  t.same([wKeys.find((k) => k.primaryOn === 1)?.key, wKeys.some((k) => k.key === (JSON.parse(oldKey) as { primary: string }).primary)], [next, false], "the worker-token worker took the manager's signed use and remove: it seals with the new key, the old one is gone");
});
