/**
 * Leases with auth enabled on a three-manager cluster: a follower forwards keep-alives and
 * time-to-live questions to the leader (lease time lives there) as the client, with a token it
 * makes for the verified client, and the leader checks them as the client's: the lease's keys must be the caller's to
 * write. Checked through a follower's client port, where the forwarding happens, including a
 * keep-alive stream that outlives its token and a leader change.
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { AgentCluster, etcdctlSteps, etcdctl, gatewayLogin, hasEtcdctl, leaderAgent } from '../helpers/agents.js';

const TOKEN_TTL_S = 3;

/** One LeaseKeepAlive stream to `ep` sent `token`: `renew` answers each renewal's TTL, or the error. */
function openKeepAliveStream(ep: string, token: string): { renew(id: string): Promise<number | string>; close(): void } {
  const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
  const Lease = (grpc.loadPackageDefinition(def) as any).etcdserverpb.Lease as new (addr: string, creds: grpc.ChannelCredentials) => grpc.Client & {
    LeaseKeepAlive(md: grpc.Metadata): grpc.ClientDuplexStream<{ ID: string }, { TTL: string }>;
  };
  const client = new Lease(ep, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set('token', token);
  const stream = client.LeaseKeepAlive(md);
  let failed: string | undefined;
  stream.on('error', (e: grpc.ServiceError) => (failed = e.details));
  return {
    renew: (id) => {
      if (failed !== undefined) return Promise.resolve(failed);
      return new Promise<number | string>((resolve) => {
        const timer = setTimeout(() => resolve(failed ?? 'no answer'), 8_000);
        stream.once('data', (r: { TTL: string }) => {
          clearTimeout(timer);
          resolve(Number(r.TTL));
        });
        stream.once('error', (e: grpc.ServiceError) => {
          clearTimeout(timer);
          resolve(e.details);
        });
        stream.write({ ID: id });
      });
    },
    close: () => {
      stream.cancel();
      client.close();
    },
  };
}

async function rangeWith(ep: string, token: string): Promise<{ status: number; text: string }> {
  const r = await fetch(`http://${ep}/v3/kv/range`, { method: 'POST', headers: { authorization: token }, body: JSON.stringify({ key: Buffer.from('app/owned').toString('base64') }) });
  return { status: r.status, text: await r.text() };
}

t.test('lease keep-alive and time-to-live through a follower, with auth', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  // Tokens last 3 s after their last use here (etcd's --auth-token-ttl), shorter than the
  // keep-alive stream below renews at: the stream must not need a fresh token.
  const cluster = new AgentCluster(['--tick-ms', '50', '--auth-token-ttl', String(TOKEN_TTL_S)]);
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

  const grant = etcdctl(ep, [...alice, 'lease', 'grant', '15']);
  t.equal(grant.status, 0, `alice grants a lease through the follower: ${grant.stderr}`);
  const id = /lease ([0-9a-f]+) granted/.exec(grant.stdout)?.[1];
  t.ok(id, `lease id in "${grant.stdout.trim()}"`);
  t.equal(etcdctl(ep, [...alice, 'put', 'app/owned', 'v', '--lease', id!]).status, 0, 'and puts a key on it');

  const ka = etcdctl(ep, [...alice, 'lease', 'keep-alive', '--once', id!]);
  t.equal(ka.status, 0, `alice's keep-alive is forwarded to the leader and answered: ${ka.stderr}`);
  t.match(ka.stdout, new RegExp(`lease ${id} keepalived with TTL\\(1[0-5]\\)`));
  const ttl = etcdctl(ep, [...alice, 'lease', 'timetolive', id!, '--keys']);
  t.equal(ttl.status, 0, `alice's time-to-live through the follower: ${ttl.stderr}`);
  t.match(ttl.stdout, /remaining\(1[0-5]s\), attached keys\(\[app\/owned\]\)/);

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

  // One keep-alive stream (a raw gRPC client that, unlike etcdctl, never logs in again), renewing
  // every 4.5 s, beyond the tokens' 3 s: authenticated when it opened, it goes on.
  const leaseId = BigInt(`0x${id!}`).toString();
  const stream = openKeepAliveStream(ep, await gatewayLogin(ep, 'alice', 'alicepw'));
  t.teardown(() => stream.close());
  const renewals: Array<number | string> = [];
  for (let i = 0; i < 3; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 4_500));
    renewals.push(await stream.renew(leaseId));
  }
  t.same(renewals.map((r) => (typeof r === 'number' ? r > 0 : r)), [true, true, true], `each renewal on the stream answered (${JSON.stringify(renewals)})`);
  // Leadership moves to the third member: the follower's forwarding stream is made anew, and the
  // new leader checks it afresh, long after the client's token expired. (Forwarding the client's
  // own token failed this renewal with "leader changed"; found by a review.)
  const third = cluster.agents.find((a) => a !== leader && a !== follower)!;
  const st = JSON.parse(etcdctl(cluster.endpoints([third]), [...root, 'endpoint', 'status', '-w', 'json']).stdout) as Array<{ Status: { header: { member_id: number | string } } }>;
  const thirdId = BigInt(st[0]!.Status.header.member_id).toString(16);
  const mv = etcdctl(cluster.endpoints([leader]), [...root, 'move-leader', thirdId]);
  t.equal(mv.status, 0, `move-leader: ${mv.stderr.trim()}`);
  await new Promise((r) => setTimeout(r, 1500));
  const afterMove = await stream.renew(leaseId);
  t.match(`TTL ${afterMove}`, /^TTL 1\d$/, 'a renewal after the leader change, through the same stream');
  const token = await gatewayLogin(ep, 'alice', 'alicepw');
  const fresh = await rangeWith(ep, token);
  t.equal(fresh.status, 200, 'a fresh token works over the gateway');
  await new Promise((r) => setTimeout(r, (TOKEN_TTL_S + 1) * 1000));
  const stale = await rangeWith(ep, token);
  t.equal(stale.status, 401, `a token unused for longer than --auth-token-ttl is refused: ${stale.text}`);

  const revoke = etcdctl(ep, [...alice, 'lease', 'revoke', id!]);
  t.equal(revoke.status, 0, `alice revokes her lease: ${revoke.stderr}`);
  t.equal(etcdctl(ep, [...alice, 'get', 'app/owned', '--print-value-only']).stdout, '', 'and its key is gone');
});
