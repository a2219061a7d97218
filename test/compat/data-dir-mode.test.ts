/**
 * A member's data dir (the key space, the Raft log, the users' password hashes, the cluster
 * token) is private to the account running the node: created 0700, and an existing one that
 * others could read is made so at start, with a warning, as etcd requires of its data dir.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AgentCluster, CLI, etcdctl, hasEtcdctl } from '../helpers/agents.js';

const modeOf = (dir: string): string => (statSync(dir).mode & 0o777).toString(8);

t.test('data dirs are private', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  const a = await cluster.add('d1');
  mkdirSync(a.dataDir, { mode: 0o755 });
  t.equal(modeOf(a.dataDir), '755', 'a data dir others can read, before the start');
  await cluster.startAdded();
  t.equal(modeOf(a.dataDir), '700', 'made private at start');
  t.match(a.log.join(''), /could be read by other accounts on this board: made it private \(0700\)/, 'and said so');
  const ep = cluster.endpoints();
  t.equal(etcdctl(ep, ['put', 'k', 'v']).status, 0);

  // A second agent on the running member's data dir (ports of its own) is refused at once,
  // before it reads or writes anything there; so is a worker on a manager's dir.
  const second = await cluster.add('d1');
  second.dataDir = a.dataDir;
  cluster.start(second, false);
  t.equal(await cluster.exited(second), 1, 'a second agent on the same data dir: refused');
  t.match(second.log.join(''), new RegExp(`is in use by another picloud-node \\(pid ${a.proc!.pid}\\): one agent per data dir`), 'naming the holder');
  const worker = spawnSync(process.execPath, [CLI, 'agent', '--name', 'w1', '--data-dir', a.dataDir, '--role', 'worker', '--join', `127.0.0.1:${a.ports.gossip}`, '--token', cluster.token], { encoding: 'utf8', timeout: 30_000 });
  t.equal(worker.status, 2, "a worker on a manager's data dir: refused");
  t.match(worker.stderr, /holds a manager's data \(identity\.json\)/);
  t.equal(etcdctl(ep, ['get', 'k', '--print-value-only']).stdout.trim(), 'v', 'the member serves on');

  const saved = join(cluster.root, 'snap.db');
  t.equal(etcdctl(ep, ['snapshot', 'save', saved]).status, 0, 'a snapshot to restore');
  const restored = join(cluster.root, 'restored');
  const r = spawnSync(process.execPath, [CLI, 'snapshot', 'restore', saved, '--data-dir', restored], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 0, `restore: ${r.stderr}`);
  t.equal(modeOf(restored), '700', 'a restored data dir is created private');
});
