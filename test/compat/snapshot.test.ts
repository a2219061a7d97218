/**
 * snapshot save / restore: a snapshot saved from a running member (by etcdctl and by
 * picloud-node) restores into a new data dir that founds a new cluster with the data.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { AgentCluster, CLI, etcdctl, hasEtcdctl } from '../helpers/agents.js';

const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });

t.test('save, restore into a new cluster, keep serving', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const source = new AgentCluster();
  t.teardown(() => source.stopAll());
  await source.startCluster(['s1']);
  const ep = source.endpoints();
  for (const [k, v] of [['a', '1'], ['b', '2'], ['c', '3']]) t.equal(etcdctl(ep, ['put', k!, v!]).status, 0);
  t.equal(etcdctl(ep, ['del', 'b']).status, 0);

  const ctlFile = join(source.root, 'by-etcdctl.db');
  const r1 = etcdctl(ep, ['snapshot', 'save', ctlFile]);
  t.equal(r1.status, 0, `etcdctl snapshot save${r1.status === 0 ? "" : ": " + r1.stderr}`);
  const ourFile = join(source.root, 'by-picloud.db');
  const r2 = cli(['snapshot', 'save', ourFile, '--endpoints', ep]);
  t.equal(r2.status, 0, `picloud-node snapshot save: ${r2.stderr}`);

  for (const [label, file] of [['etcdctl', ctlFile], ['picloud-node', ourFile]] as const) {
    const target = new AgentCluster();
    t.teardown(() => target.stopAll());
    const a = await target.add('restored');
    const rr = cli(['snapshot', 'restore', file, '--data-dir', a.dataDir]);
    t.equal(rr.status, 0, `restore ${label} file: ${rr.stderr}`);
    t.match(rr.stdout, /restored the state at revision 5/);
    const again = cli(['snapshot', 'restore', file, '--data-dir', a.dataDir]);
    t.equal(again.status, 1, 'refuses to restore over existing data');
    t.match(again.stderr, /already holds a member's data/);
    target.start(a, true);
    await target.ready(a);
    const tep = target.endpoints();
    t.equal(etcdctl(tep, ['get', '', '--prefix']).stdout, 'a\n1\nc\n3\n', `data restored from the ${label} file`);
    t.equal(etcdctl(tep, ['put', 'd', '4']).status, 0, 'the new cluster accepts writes');
    const j = JSON.parse(etcdctl(tep, ['get', 'd', '-w', 'json']).stdout) as { kvs: Array<{ mod_revision: number }> };
    t.equal(j.kvs[0]!.mod_revision, 6, 'revisions continue after the restored one');
    const members = etcdctl(tep, ['member', 'list']).stdout.trim().split('\n');
    t.equal(members.length, 1, 'a new one-member cluster');
  }
  const bad = cli(['snapshot', 'restore', join(source.root, 'missing.db'), '--data-dir', join(source.root, 'x')]);
  t.not(bad.status, 0, 'a missing file is a clear error');
});
