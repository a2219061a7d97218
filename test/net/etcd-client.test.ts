/**
 * The etcd v3 front end against the npm `etcd3` client (its own copy of etcd's protos), with
 * the in-memory fake backend.
 */
import t from 'tap';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Etcd3, type IKeyValue } from 'etcd3';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';

const backend = new FakeEtcdBackend();
const server = await EtcdGrpcServer.start({ backend, port: 0, onInternalError: (e, m) => t.fail(`internal error in ${m}: ${String(e)}`) });
const client = new Etcd3({ hosts: `127.0.0.1:${server.port}` });
t.teardown(async () => {
  client.close();
  await server.close();
});

t.test('put / get / getAll / delete', async (t) => {
  await client.put('a/1').value('one');
  await client.put('a/2').value('two');
  await client.put('b').value('bee');
  t.equal(await client.get('a/1').string(), 'one');
  t.equal(await client.get('missing').string(), null);
  t.same(await client.getAll().prefix('a/').strings(), { 'a/1': 'one', 'a/2': 'two' });
  t.same(await client.getAll().prefix('a/').keys(), ['a/1', 'a/2']);
  t.equal(await client.getAll().prefix('a/').count(), 2);
  t.same(await client.getAll().prefix('a/').limit(1).keys(), ['a/1']);
  const del = await client.delete().key('a/2').getPrevious();
  t.equal(del.length, 1);
  t.equal(del[0]!.value.toString(), 'two');
  t.equal(await client.getAll().prefix('a/').count(), 1);
  const buf = await client.get('b').buffer();
  t.equal(buf?.toString(), 'bee');
});

t.test('transactions', async (t) => {
  const won = await client.if('b', 'Value', '==', 'bee').then(client.put('b').value('bee2')).else(client.put('c').value('lost')).commit();
  t.equal(won.succeeded, true);
  t.equal(await client.get('b').string(), 'bee2');
  const lost = await client.if('b', 'Version', '>', 5).then(client.put('x').value('1')).else(client.get('b')).commit();
  t.equal(lost.succeeded, false);
  t.equal(lost.responses[0]!.response_range!.kvs[0]!.value.toString(), 'bee2');
});

t.test('leases: grant, attach, keep alive, revoke; int64 ids as strings', async (t) => {
  const lease = client.lease(30, { autoKeepAlive: false });
  const id = await lease.grant();
  t.equal(id, String(2 ** 52 + 0xabc), 'id above 2^32 intact');
  await lease.put('lk').value('lv');
  t.equal(await client.get('lk').string(), 'lv');
  const kv = (await client.get('lk').exec()).kvs[0] as IKeyValue;
  t.equal(kv.lease, id, 'key carries the lease id');
  const ka = await lease.keepaliveOnce();
  t.equal(ka.TTL, '30');
  await lease.revoke();
  t.equal(await client.get('lk').string(), null, 'keys go with the lease');
});

t.test('watch: events arrive, cancel works', async (t) => {
  const watcher = await client.watch().prefix('w/').withPreviousKV().create();
  const seen: string[] = [];
  watcher.on('put', (kv, prev) => seen.push(`put ${kv.key.toString()}=${kv.value.toString()} prev=${prev?.value.toString() ?? '-'}`));
  watcher.on('delete', (kv) => seen.push(`delete ${kv.key.toString()}`));
  await client.put('w/x').value('1');
  await client.put('w/x').value('2');
  await client.put('other').value('no');
  await client.delete().key('w/x');
  const deadline = Date.now() + 5_000;
  while (seen.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.same(seen, ['put w/x=1 prev=-', 'put w/x=2 prev=1', 'delete w/x']);
  await watcher.cancel();
  t.equal(backend.watcherCount, 0, 'backend watcher removed on cancel');
});

t.test('maintenance and cluster calls', async (t) => {
  const st = await client.maintenance.status();
  t.equal(st.version, '3.4.0');
  t.equal(st.leader, String(backend.memberId));
  const ml = await client.cluster.memberList({});
  t.equal(ml.members[0]!.name, 'fake1');
  t.equal(ml.members[0]!.ID, String(backend.memberId));
  // python-etcd3's hash() calls Hash (etcd 3.4 serves it): the key space's hash, as HashKV's at the current revision.
  const [hash, hashKV] = (await Promise.all([unaryFromEtcdProto('Maintenance', 'Hash', {}), unaryFromEtcdProto('Maintenance', 'HashKV', { revision: '0' })])) as Array<{ hash: number }>;
  t.equal(hash!.hash, hashKV!.hash, 'Hash answers with the current key space hash');
  t.not(hash!.hash, 0);
});

/** A call by etcd's own rpc.proto (the npm client's copy), for methods the npm client does not wire up. */
function unaryFromEtcdProto(service: string, method: string, req: object): Promise<unknown> {
  const def = protoLoader.loadSync(join(process.cwd(), 'node_modules/etcd3/proto/rpc.proto'), { longs: String, defaults: true });
  const Client = (grpc.loadPackageDefinition(def) as any).etcdserverpb[service] as typeof grpc.Client;
  const c = new Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
  return new Promise((resolve, reject) => c[method]!(req, (err: Error | null, res: unknown) => (c.close(), err ? reject(err) : resolve(res))));
}

t.test('etcd errors map to the client library error classes', async (t) => {
  const failure = async (p: PromiseLike<unknown>): Promise<string> => {
    try {
      await p;
      return 'resolved';
    } catch (err) {
      return `${(err as Error).constructor.name}: ${(err as Error).message}`;
    }
  };
  t.match(await failure(client.get('b').revision(10_000).exec()), /required revision is a future revision/);
  t.match(await failure(client.put('k').value('v').lease('12345').exec()), /requested lease not found/);
});
