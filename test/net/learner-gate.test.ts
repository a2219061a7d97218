/**
 * The learner gate of the etcd gRPC server (core/net/etcd/learner-rpcs.ts), against the fake
 * backend: while the member is a learner only Status and serializable Ranges are served, on
 * gRPC and on the JSON gateway, and no stream opens; the gateway's own /health still reads; and
 * once promoted, the very connections that were refused are served on their next call.
 * test/compat/learner-rpcs.test.ts compares the whole table with a real etcd learner.
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { learnerServesUnary } from '../../core/net/etcd/learner-rpcs.js';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';

const backend = new FakeEtcdBackend();
const server = await EtcdGrpcServer.start({ backend, port: 0, onInternalError: (e, m) => t.fail(`internal error in ${m}: ${String(e)}`) });
const endpoint = `127.0.0.1:${server.port}`;
const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true });
const pb = (grpc.loadPackageDefinition(def) as any).etcdserverpb;
const creds = grpc.credentials.createInsecure();
const kv = new pb.KV(endpoint, creds);
const maintenance = new pb.Maintenance(endpoint, creds);
const watch = new pb.Watch(endpoint, creds);
t.teardown(async () => {
  for (const c of [kv, maintenance, watch]) c.close();
  await server.close();
});

const REFUSED = `${grpc.status.UNAVAILABLE} etcdserver: rpc not supported for learner`;

function unary(client: any, method: string, req: object): Promise<string> {
  return new Promise((resolve) => client[method](req, { deadline: Date.now() + 5_000 }, (err: grpc.ServiceError | null) => resolve(err ? `${err.code} ${err.details}` : 'ok')));
}

function watchOutcome(): Promise<string> {
  return new Promise((resolve) => {
    const w = watch.Watch();
    w.once('data', () => {
      resolve('ok');
      w.cancel();
    });
    w.once('error', (e: grpc.ServiceError) => resolve(`${e.code} ${e.details}`));
    w.write({ createRequest: { key: Buffer.from('k') } });
  });
}

async function http(path: string, body?: object): Promise<string> {
  // Bounded: a watch the gate let through would stream forever.
  const r = await fetch(`http://${endpoint}${path}`, { method: body ? 'POST' : 'GET', body: body && JSON.stringify(body), signal: AbortSignal.timeout(5_000) });
  const text = await r.text();
  return `${r.status} ${text.trim()}`;
}

t.test('the rule: Status always, Range only when serializable, nothing else', async (t) => {
  t.ok(learnerServesUnary('Status', {}));
  t.ok(learnerServesUnary('Range', { serializable: true }));
  t.notOk(learnerServesUnary('Range', { serializable: false }));
  t.notOk(learnerServesUnary('Range', undefined));
  for (const m of ['Put', 'Txn', 'MemberList', 'Alarm', 'AuthStatus', 'Watch', 'Snapshot']) t.notOk(learnerServesUnary(m, { serializable: true }), m);
});

t.test('a learner refuses, then serves on the same connections once promoted', async (t) => {
  backend.learner = true;
  t.equal(await unary(kv, 'Range', { key: Buffer.from('k') }), REFUSED, 'linearizable range refused');
  t.equal(await unary(kv, 'Range', { key: Buffer.from('k'), serializable: true }), 'ok', 'serializable range served');
  t.equal(await unary(kv, 'Put', { key: Buffer.from('k'), value: Buffer.from('v') }), REFUSED, 'put refused');
  t.equal(await unary(maintenance, 'Status', {}), 'ok', 'status served');
  t.equal(await watchOutcome(), REFUSED, 'watch stream refused');
  t.match(await http('/v3/kv/put', { key: 'aw==', value: 'dg==' }), /^503 .*etcdserver: rpc not supported for learner/, 'gateway put refused, 503');
  t.match(await http('/v3/watch', { create_request: { key: 'aw==' } }), /^503 .*"grpc_code":14.*rpc not supported for learner/, 'gateway watch refused with 503 before any line');
  t.match(await http('/v3/lease/keepalive', { ID: '1' }), /^503 /, 'gateway keep-alive refused');
  t.match(await http('/health'), /^200 .*"health":"true"/, "the gateway's own /health passes the gate");

  backend.learner = false; // promoted
  t.equal(await unary(kv, 'Range', { key: Buffer.from('k') }), 'ok', 'linearizable range served at once');
  t.equal(await unary(kv, 'Put', { key: Buffer.from('k'), value: Buffer.from('v') }), 'ok', 'put served at once');
  t.equal(await watchOutcome(), 'ok', 'watch created at once');
  t.match(await http('/v3/kv/put', { key: 'aw==', value: 'dg==' }), /^200 /, 'gateway put served');
});
