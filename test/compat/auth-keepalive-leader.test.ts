/**
 * A keep-alive stream through a follower outlives its token (3 s here) and a leader change: the
 * follower forwards as the client with a token it makes for it, so the new leader, which checks
 * afresh, takes it. (Forwarding the client's own expired token failed renewal 3 with "leader
 * changed"; found by a review.)
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { AgentCluster, etcdctlSteps, etcdctl, gatewayLogin, hasEtcdctl, leaderAgent } from '../helpers/agents.js';

t.test('keep-alive stream through a follower after a leader change, token expired', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster(['--tick-ms', '50', '--auth-token-ttl', '3']);
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
  ]);
  const leader = await leaderAgent(cluster);
  const [f, other] = cluster.agents.filter((a) => a !== leader);
  const ep = cluster.endpoints([f!]);
  const alice = ['--user', 'alice:alicepw'];
  const grant = etcdctl(ep, [...alice, 'lease', 'grant', '30']);
  const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)![1]!;
  const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
  const Lease = (grpc.loadPackageDefinition(def) as any).etcdserverpb.Lease;
  const client = new Lease(ep, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set('token', await gatewayLogin(ep, 'alice', 'alicepw'));
  const stream = client.LeaseKeepAlive(md);
  const renew = (): Promise<string> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => resolve('no answer'), 8000);
      stream.once('data', (r: any) => { clearTimeout(timer); resolve(`TTL ${r.TTL}`); });
      stream.once('error', (e: any) => { clearTimeout(timer); resolve(`error: ${e.details}`); });
      stream.write({ ID: BigInt(`0x${id}`).toString() });
    });
  const r1 = await renew();
  t.match(r1, /^TTL [1-3]\d$/, 'renewal 1');
  await new Promise((r) => setTimeout(r, 4500));
  const r2 = await renew();
  t.match(r2, /^TTL [1-3]\d$/, 'renewal 2, the token expired, same leader');
  const st = JSON.parse(etcdctl(cluster.endpoints([other!]), [...root, 'endpoint', 'status', '-w', 'json']).stdout);
  const otherId = BigInt(st[0].Status.header.member_id).toString(16);
  const mv = etcdctl(cluster.endpoints([leader]), [...root, 'move-leader', otherId]);
  t.equal(mv.status, 0, `move-leader: ${mv.stderr.trim()}`);
  await new Promise((r) => setTimeout(r, 1500));
  const r3 = await renew();
  stream.cancel();
  client.close();
  t.match(r3, /^TTL [1-3]\d$/, 'renewal 3, after the leader change, through the same stream');
});
