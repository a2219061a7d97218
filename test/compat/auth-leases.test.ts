/**
 * Leases with auth enabled on a three-manager cluster: a follower forwards keep-alives and
 * time-to-live questions to the leader (lease time lives there) as the client, with the client's
 * token, and the leader checks them as the client's: the lease's keys must be the caller's to
 * write. Checked through a follower's client port, where the forwarding happens.
 */
import t from 'tap';
import { AgentCluster, etcdctlSteps, etcdctl, hasEtcdctl, leaderAgent } from '../helpers/agents.js';

t.test('lease keep-alive and time-to-live through a follower, with auth', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['l1', 'l2', 'l3']);
  const all = cluster.endpoints();
  const root = ['--user', 'root:rootpw'];
  etcdctlSteps(t, all, [
    ['user', 'add', 'root:rootpw'],
    ['auth', 'enable'],
    [...root, 'role', 'add', 'app'],
    [...root, 'role', 'grant-permission', 'app', 'readwrite', 'app/', '--prefix'],
    [...root, 'user', 'add', 'alice:alicepw'],
    [...root, 'user', 'grant-role', 'alice', 'app'],
    [...root, 'user', 'add', 'mallory:mallorypw'],
    [...root, 'role', 'add', 'none'],
    [...root, 'user', 'grant-role', 'mallory', 'none'],
  ]);
  const leader = await leaderAgent(cluster);
  const follower = cluster.agents.find((a) => a !== leader);
  t.ok(follower, 'found a follower');
  const ep = cluster.endpoints([follower!]);
  const alice = ['--user', 'alice:alicepw'];

  const grant = etcdctl(ep, [...alice, 'lease', 'grant', '60']);
  t.equal(grant.status, 0, `alice grants a lease through the follower: ${grant.stderr}`);
  const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
  t.ok(id, `lease id in "${grant.stdout.trim()}"`);
  t.equal(etcdctl(ep, [...alice, 'put', 'app/owned', 'v', '--lease', id!]).status, 0, 'and puts a key on it');

  const ka = etcdctl(ep, [...alice, 'lease', 'keep-alive', '--once', id!]);
  t.equal(ka.status, 0, `alice's keep-alive is forwarded to the leader and answered: ${ka.stderr}`);
  t.match(ka.stdout, new RegExp(`lease ${id} keepalived with TTL\\((5\\d|60)\\)`));
  const ttl = etcdctl(ep, [...alice, 'lease', 'timetolive', id!, '--keys']);
  t.equal(ttl.status, 0, `alice's time-to-live through the follower: ${ttl.stderr}`);
  t.match(ttl.stdout, /remaining\((5\d|60)s\), attached keys\(\[app\/owned\]\)/);

  const mal = ['--user', 'mallory:mallorypw'];
  const kaDenied = etcdctl(ep, [...mal, 'lease', 'keep-alive', '--once', id!]);
  t.not(kaDenied.status, 0, 'mallory may not keep alive a lease holding keys she cannot write');
  t.match(kaDenied.stderr, /permission denied/);
  const ttlDenied = etcdctl(ep, [...mal, 'lease', 'timetolive', id!, '--keys']);
  t.match(ttlDenied.stderr, /etcdserver: permission denied/, 'nor list its keys');
  const revokeDenied = etcdctl(ep, [...mal, 'lease', 'revoke', id!]);
  t.match(revokeDenied.stderr, /etcdserver: permission denied/, 'nor revoke it');
  const anonymous = etcdctl(ep, ['lease', 'grant', '10']);
  t.match(anonymous.stderr, /etcdserver: user name is empty/, 'a lease grant needs a user');

  const revoke = etcdctl(ep, [...alice, 'lease', 'revoke', id!]);
  t.equal(revoke.status, 0, `alice revokes her lease: ${revoke.stderr}`);
  t.equal(etcdctl(ep, [...alice, 'get', 'app/owned', '--print-value-only']).stdout, '', 'and its key is gone');
});
