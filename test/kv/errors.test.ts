// Error strings and gRPC codes must be etcd's exactly: clients match on them.
// Expected values copied by hand from etcd api/v3rpc/rpctypes/error.go and server/storage/mvcc.
import t from 'tap';
import { KV_ERRORS, KvError, GrpcCode } from '../../core/kv/errors.js';

const ETCD: Record<string, [number, string]> = {
  EMPTY_KEY: [3, 'etcdserver: key is not provided'],
  KEY_NOT_FOUND: [3, 'etcdserver: key not found'],
  VALUE_PROVIDED: [3, 'etcdserver: value is provided'],
  LEASE_PROVIDED: [3, 'etcdserver: lease is provided'],
  TOO_MANY_OPS: [3, 'etcdserver: too many operations in txn request'],
  DUPLICATE_KEY: [3, 'etcdserver: duplicate key given in txn request'],
  INVALID_SORT_OPTION: [3, 'etcdserver: invalid sort option'],
  COMPACTED: [11, 'etcdserver: mvcc: required revision has been compacted'],
  FUTURE_REV: [11, 'etcdserver: mvcc: required revision is a future revision'],
  LEASE_NOT_FOUND: [5, 'etcdserver: requested lease not found'],
  LEASE_EXISTS: [9, 'etcdserver: lease already exists'],
  LEASE_TTL_TOO_LARGE: [11, 'etcdserver: too large lease TTL'],
  REQUEST_TOO_LARGE: [3, 'etcdserver: request is too large'],
  WATCH_CANCELED: [1, 'etcdserver: watch canceled'],
  WATCHER_RANGE_EMPTY: [3, 'mvcc: watcher range is empty'],
  WATCHER_DUPLICATE_ID: [3, 'mvcc: duplicate watch ID provided on the WatchStream'],
};

t.test('etcd error strings and codes', async (t) => {
  for (const [code, [grpc, msg]] of Object.entries(ETCD)) {
    const e = new KvError(code as keyof typeof KV_ERRORS);
    t.equal(e.message, msg, code);
    t.equal(e.grpcCode, grpc, `${code} grpc`);
    t.equal(e.code, code);
  }
});

t.test('KvError shape', async (t) => {
  const e = new KvError('COMPACTED', 'revision 2 < 5');
  t.ok(e instanceof Error);
  t.same(e.toJSON(), {
    code: 'COMPACTED',
    grpcCode: GrpcCode.OUT_OF_RANGE,
    message: 'etcdserver: mvcc: required revision has been compacted',
    detail: 'revision 2 < 5',
  });
  t.same(new KvError('EMPTY_KEY').toJSON(), { code: 'EMPTY_KEY', grpcCode: 3, message: 'etcdserver: key is not provided' });
  for (const [code, spec] of Object.entries(KV_ERRORS)) {
    t.ok(spec.message.length > 0, code);
    t.ok(Number.isInteger(spec.grpcCode) && spec.grpcCode > 0 && spec.grpcCode < 17, code);
  }
});
