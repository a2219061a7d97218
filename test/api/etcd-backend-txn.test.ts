/**
 * Txn through ManagerEtcdBackend behind the real gRPC server, on a member stand-in that counts
 * its proposals and read barriers: as etcd's server does, a read-only txn is answered from the
 * member's state (after a ReadIndex round unless every range is serializable) instead of being
 * written to every member's log; a txn that writes is proposed.
 */
import t, { type Test } from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ManagerEtcdBackend } from '../../core/api/etcd-backend.js';
import type { ManagerNode } from '../../core/api/manager-node.js';
import { decodeKvRequest, encodeKvRequest, type KvRequest } from '../../core/kv/index.js';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { generateToken } from '../../core/net/token.js';
import { b, Node } from '../kv/helpers.js';

type Obj = Record<string, any>;
const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true });
const KV = (grpc.loadPackageDefinition(def) as any).etcdserverpb.KV;

/** A member stand-in around `kvNode` (its other parts from `parts`), its backend behind a real server: a Txn call that settles with the response or the error. */
async function serve(t: Test, kvNode: Node, parts: Obj): Promise<(req: Obj) => Promise<{ r?: Obj; e?: grpc.ServiceError }>> {
  const member = { store: kvNode.store, driver: { node: { raft: { term: 1 } } }, id: 1, clusterId: 2, token: generateToken(), opts: {}, ...parts } as unknown as ManagerNode;
  const backend = new ManagerEtcdBackend(member);
  const server = await EtcdGrpcServer.start({ backend, port: 0 });
  const client = new KV(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  t.teardown(async () => {
    client.close();
    backend.close();
    await server.close(200);
  });
  return (req) => new Promise((resolve) => client.Txn(req, (e: grpc.ServiceError | null, r: Obj) => resolve(e ? { e } : { r })));
}

t.test('a read-only txn is answered here, after ReadIndex unless serializable; a writing txn is proposed', async (t) => {
  const kvNode = Node.create();
  kvNode.put('a', '1');
  let proposals = 0;
  let barriers = 0;
  let index = 100;
  const call = await serve(t, kvNode, {
    linearizableBarrier: async () => { barriers++; },
    propose: async (req: KvRequest) => { proposals++; return kvNode.store.apply(decodeKvRequest(encodeKvRequest(req)), { index: ++index, term: 1 }); },
    spaceAlarm: { admits: () => true },
  });
  const txn = async (req: Obj): Promise<Obj> => {
    const { r, e } = await call(req);
    if (e) throw e;
    return r!;
  };
  const isA1 = [{ key: Buffer.from('a'), target: 'VALUE', result: 'EQUAL', value: Buffer.from('1') }];
  const values = (r: Obj): string[] => r.responses.flatMap((x: Obj) => (x.responseRange?.kvs ?? []).map((kv: Obj) => Buffer.from(kv.value).toString()));

  const linear = await txn({ compare: isA1, success: [{ requestRange: { key: Buffer.from('a') } }], failure: [] });
  t.same([linear.succeeded, values(linear)], [true, ['1']], 'answered: the compare held, the range read');
  t.same([proposals, barriers], [0, 1], 'a linearizable read-only txn: one ReadIndex round, no proposal');
  t.equal(Number(linear.header.revision), kvNode.store.revision, 'at the current revision');

  const serial = await txn({ compare: isA1, success: [{ requestRange: { key: Buffer.from('a'), serializable: true } }], failure: [{ requestRange: { key: Buffer.from('b'), serializable: true } }] });
  t.same([serial.succeeded, values(serial)], [true, ['1']]);
  t.same([proposals, barriers], [0, 1], 'every range serializable: neither');

  const mixed = await txn({ compare: [], success: [{ requestRange: { key: Buffer.from('a'), serializable: true } }, { requestRange: { key: Buffer.from('a') } }], failure: [] });
  t.same(values(mixed), ['1', '1']);
  t.same([proposals, barriers], [0, 2], 'one linearizable range makes the txn linearizable');

  const writes = await txn({ compare: isA1, success: [{ requestPut: { key: Buffer.from('a'), value: Buffer.from('2') } }], failure: [] });
  t.equal(writes.succeeded, true);
  t.same([proposals, barriers], [1, 2], 'a txn that writes is proposed');
  const after = await txn({ compare: isA1, success: [], failure: [{ requestRange: { key: Buffer.from('a') } }] });
  t.same([after.succeeded, values(after)], [false, ['2']], 'and the next read-only txn sees its write');

  const bad = await txn({ compare: [], success: [{ requestRange: { key: Buffer.from('a'), revision: 999 } }], failure: [] }).then(() => undefined, (e: grpc.ServiceError) => e);
  t.match(bad, { code: grpc.status.OUT_OF_RANGE, details: 'etcdserver: mvcc: required revision is a future revision' }, "a read-only txn's errors are etcd's");
});

t.test('with auth on, a bad read-only txn is told it is bad before the caller is checked, as a bad write is', async (t) => {
  const kvNode = Node.create();
  const PW = b('scrypt$14$8$1$c2FsdA==$aGFzaA==');
  for (const auth of [{ userAdd: { name: 'root', password: PW } }, { userGrantRole: { name: 'root', role: 'root' } }, { authEnable: {} }]) kvNode.apply({ auth });
  const call = await serve(t, kvNode, {
    linearizableBarrier: async () => undefined,
    propose: async () => { throw new Error('nothing is proposed here'); },
  });
  const txn = async (req: Obj): Promise<grpc.ServiceError | undefined> => (await call(req)).e;
  const emptyKey = { compare: [], success: [{ requestRange: { key: Buffer.alloc(0) } }], failure: [] };
  t.match(await txn(emptyKey), { code: grpc.status.INVALID_ARGUMENT, details: 'etcdserver: key is not provided' }, 'read-only: the bad request');
  const emptyKeyPut = { compare: [], success: [{ requestPut: { key: Buffer.alloc(0), value: Buffer.from('v') } }], failure: [] };
  t.match(await txn(emptyKeyPut), { code: grpc.status.INVALID_ARGUMENT, details: 'etcdserver: key is not provided' }, 'writing: the same');
  const tooMany = { compare: [], success: Array.from({ length: 129 }, () => ({ requestRange: { key: Buffer.from('a') } })), failure: [] };
  t.match(await txn(tooMany), { code: grpc.status.INVALID_ARGUMENT, details: 'etcdserver: too many operations in txn request' }, 'read-only, 129 ops: the bad request');
  const good = { compare: [], success: [{ requestRange: { key: Buffer.from('a') } }], failure: [] };
  t.match(await txn(good), { details: 'etcdserver: user name is empty' }, 'a good one without a user: refused as etcd refuses it');
});
