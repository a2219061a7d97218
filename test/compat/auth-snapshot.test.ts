/**
 * Auth and snapshots: with auth enabled a snapshot is root's (etcdctl and picloud-node need
 * --user), and a restored snapshot founds a cluster with the same users, roles and auth switch
 * (as etcd's restore keeps its auth buckets); tokens of the old cluster mean nothing there.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { AgentCluster, etcdctlSteps, CLI, etcdctl, gatewayLogin, hasEtcdctl } from '../helpers/agents.js';

const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });

t.test('snapshots with auth enabled', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const source = new AgentCluster();
  t.teardown(() => source.stopAll());
  await source.startCluster(['s1']);
  const ep = source.endpoints();
  const root = ['--user', 'root:rootpw'];
  etcdctlSteps(t, ep, [
    ['user', 'add', 'root:rootpw'],
    ['auth', 'enable'],
    [...root, 'role', 'add', 'reader'],
    [...root, 'role', 'grant-permission', 'reader', 'read', 'app/', '--prefix'],
    [...root, 'user', 'add', 'bob:bobpw'],
    [...root, 'user', 'grant-role', 'bob', 'reader'],
    [...root, 'put', 'app/a', '1'],
  ]);
  const bobToken = await gatewayLogin(ep, 'bob', 'bobpw');

  const file = join(source.root, 'auth.db');
  const anonymous = cli(['snapshot', 'save', file, '--endpoints', ep]);
  t.equal(anonymous.status, 1, 'picloud-node snapshot save without a user fails');
  t.match(anonymous.stderr, /etcdserver: user name is empty/);
  t.notMatch(anonymous.stderr, /\n\s+at /, 'a message, no stack trace');
  const noDir = cli(['snapshot', 'save', join(source.root, 'missing', 'x.db'), '--endpoints', ep, '--user', 'root:rootpw']);
  t.equal(noDir.status, 2, 'saving into a directory that does not exist is refused before the snapshot is taken (it once crashed on an unhandled error)');
  t.match(noDir.stderr, /^picloud-node snapshot: .*missing is not a directory: cannot save .*missing\/x\.db there/);
  t.notMatch(noDir.stderr, /\n\s+at /, 'a message, no stack trace');
  const asBob = cli(['snapshot', 'save', file, '--endpoints', ep, '--user', 'bob', '--password', 'bobpw']);
  t.equal(asBob.status, 1, 'a user without the root role may not take a snapshot');
  t.match(asBob.stderr, /etcdserver: permission denied/);
  const noPassword = cli(['snapshot', 'save', file, '--endpoints', ep, '--user', 'root']);
  t.equal(noPassword.status, 2, '--user without a password is a usage error');
  t.match(noPassword.stderr, /needs a password/);
  const ok = cli(['snapshot', 'save', file, '--endpoints', ep, '--user', 'root:rootpw']);
  t.equal(ok.status, 0, `root's snapshot save: ${ok.stderr}`);
  t.equal(statSync(file).mode & 0o777, 0o600, 'the snapshot file is private (0600, as etcdctl writes it)');
  const ctl = etcdctl(ep, [...root, 'snapshot', 'save', join(source.root, 'ctl.db')]);
  t.equal(ctl.status, 0, `etcdctl --user root snapshot save: ${ctl.stderr}`);

  const target = new AgentCluster();
  t.teardown(() => target.stopAll());
  const a = await target.add('restored');
  const rr = cli(['snapshot', 'restore', file, '--data-dir', a.dataDir]);
  t.equal(rr.status, 0, `restore: ${rr.stderr}`);
  target.start(a, true);
  await target.ready(a);
  const tep = target.endpoints();
  const anon = etcdctl(tep, ['get', 'app/a']);
  t.not(anon.status, 0, 'auth is still enabled in the restored cluster');
  t.match(anon.stderr, /etcdserver: user name is empty/);
  const bob = etcdctl(tep, ['--user', 'bob:bobpw', 'get', 'app/a', '--print-value-only']);
  t.equal(bob.stdout, '1\n', `bob logs in with the same password and reads with the same role: ${bob.stderr}`);
  const bobWrite = etcdctl(tep, ['--user', 'bob:bobpw', 'put', 'app/b', '2']);
  t.match(bobWrite.stderr, /etcdserver: permission denied/, 'and may still not write');
  const old = await fetch(`http://${tep}/v3/kv/range`, { method: 'POST', headers: { authorization: bobToken }, body: JSON.stringify({ key: Buffer.from('app/a').toString('base64') }) });
  t.equal(old.status, 401, "a token of the old cluster is not good in the new one (another cluster secret)");
  t.match(await old.text(), /etcdserver: invalid auth token/);
});
